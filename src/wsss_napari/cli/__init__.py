"""The ``wsss-napari`` command line: one subcommand module per task, registered below.

Each subcommand module in this package defines ``register(subparsers)`` which adds its
parser and sets ``func`` (called with the parsed args; returns an exit code). User errors
(:class:`wsss_napari.WsssError`) are printed as one clear line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import WsssError, __version__

#: Subcommand modules, in the order they appear in ``--help``.
SUBCOMMANDS = (
    "demo",
    "info",
    "sample",
    "cam",
    "predict",
    "eval",
    "tune",
    "train_cls",
    "pseudo",
    "train_seg",
    "ensemble",
    "export",
    "slide",
    "batch",
    "fine_tune",
    "uncertainty",
    "explain",
    "cells",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss-napari",
        description="Weakly-supervised tissue segmentation of whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"wsss-napari {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}._{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}._{name}":
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except WsssError as err:
        print(f"wsss-napari {args.command}: error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print(f"wsss-napari {args.command}: interrupted", file=sys.stderr)  # noqa: T201
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
