"""The `nfsroot` console script. Only this package prints and chooses exit codes.

Each area registers its subcommands from a module of its own (`pipeline/cli/<area>.py` with a
`register(subparsers)` function); a handler returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError, SpecError
from pipeline.runtime import tune_gc

# Exit codes, documented in the README. `plan` additionally uses EXIT_CHANGES like terraform's -detailed-exitcode.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64

AREAS = ("spec", "initrd", "deploy", "boottest", "rootfs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfsroot", description="Inspect, validate and deploy what nfsroot-pipeline builds from cluster.yaml."
    )
    parser.add_argument("-f", "--file", default="cluster.yaml", help="the cluster spec (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        try:
            module = importlib.import_module(f"pipeline.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pipeline.cli.{area}":
                raise
            continue  # that area has no commands yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_gc()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was written", file=sys.stderr)
        return EXIT_ERROR
    except PipelineError as exc:
        print(f"nfsroot: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nfsroot: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
