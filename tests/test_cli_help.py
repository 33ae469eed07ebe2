"""Every subcommand explains itself: ``wsss-napari COMMAND --help`` prints and exits 0."""

from __future__ import annotations

import pytest

from wsss_napari.cli import SUBCOMMANDS, main


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in SUBCOMMANDS])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: wsss-napari {command}")
    if command in ("predict", "tune", "pseudo"):  # the post-processing flags, '%' included
        assert "--min-area-pct" in out and "% of a sub-patch" in out
