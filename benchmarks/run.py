"""Run benchmarks: ``python benchmarks/run.py [--only NAME ...]``.

Each benchmark is a module ``benchmarks/<name>.py`` with a ``main()`` that prints its
figures, the last line ``<metric>=<value>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCHMARKS_DIR.parent


def available() -> list[str]:
    return sorted(path.stem for path in BENCHMARKS_DIR.glob("*.py") if path.stem != "run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=available(), help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    # Run as a script, sys.path holds benchmarks/ but not the project the benchmarks import.
    sys.path[:0] = [str(PROJECT_ROOT), str(BENCHMARKS_DIR)]
    for name in args.only or available():
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
