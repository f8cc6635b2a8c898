"""The options of ``servekit gpu-report`` (and of ``python -m servekit.measure.gpu_report`` on a GPU machine).

Apart from the report itself, which imports torch, so that ``servekit --help`` does not.
"""
from __future__ import annotations

import argparse
from pathlib import Path

BATCH_SIZES = (1, 16, 64, 256)
DEFAULT_SECONDS = 0.25  # per configuration, batch size and round
ROUNDS = 3


def batch_sizes(text: str) -> tuple[int, ...]:
    """``1,16,64`` -> (1, 16, 64)."""
    return tuple(int(b) for b in text.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``servekit gpu-report``."""
    parser.add_argument("--build-dir", type=Path, default=Path("build"),
                        help="where the artifacts are built, under gpu/ (default: %(default)s)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where gpu.{md,json,png} are written (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=BATCH_SIZES, metavar="N[,N...]",
                        help="batch sizes to time (default: 1,16,64,256)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="seconds per row, batch size and round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build and check the artifacts on this machine (CPU), measure nothing")
