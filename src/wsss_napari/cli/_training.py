"""Flags and finishing steps shared by the training subcommands (train-cls, train-seg)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """--out, --csv, --resume, --on-bad, --half, --keep-state and --config."""
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--csv", help="CSV of file,labels (paths relative to DATA_DIR)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.state.safetensors (left by an interrupted run)")
    p.add_argument("--on-bad", choices=("skip", "stop"), default="skip",
                   help="bad input files: skip them (report printed) or stop (default: skip)")
    p.add_argument("--half", action="store_true", help="store the final weights as float16")
    p.add_argument("--keep-state", action="store_true",
                   help="keep <out>.state.safetensors after a finished run (default: removed)")
    p.add_argument("--config", help="JSON/YAML file of training parameters")


def finish_training(out: Path, args: argparse.Namespace) -> int:
    """Optionally halve the stored weights, drop the resumable state, say where the model is."""
    from ..train.loop import state_path

    if args.half:
        from ..models.checkpoint import load_model, save_model

        save_model(load_model(out), out, half=True)
    if not args.keep_state:
        state_path(out).unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0
