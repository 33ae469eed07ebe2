"""Reading slides and writing results (no Qt, no napari)."""
