"""postproc."""
