"""The `nfsroot` console script. Only this package prints and chooses exit codes.

Each area registers its subcommands from a module of its own (`pipeline/cli/<area>.py` with a
`register(subparsers)` function); a handler returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pipeline.errors import PipelineError, SpecError
from pipeline.runtime import tune_gc
from pipeline.textsafe import printable
from pipeline.workspace import Workspace

# Exit codes, documented in the README. `plan` additionally uses EXIT_CHANGES like terraform's -detailed-exitcode;
# a usage error (unknown option, a number out of range) is EXIT_USAGE (sysexits' EX_USAGE).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64

AREAS = ("spec", "initrd", "deploy", "boottest", "rootfs")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `plan` uses for "changes pending": use EXIT_USAGE instead."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)}\n")


def bounded_int(lo: int, hi: int, like: str) -> Callable[[str], int]:
    """An argparse type: a whole number from lo to hi, else a usage error (EXIT_USAGE) saying so; `like`
    says where the range comes from. Every numeric option should use one (issue 12 defect 10)."""

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"[+-]?[0-9]+", text.strip()) else None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a whole number from {lo} to {hi} ({like}), got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def build_parser() -> argparse.ArgumentParser:
    # NFSROOT_SPEC / NFSROOT_BUILD choose the spec and build directory for `nfsroot` as they do for `doit`.
    workspace = Workspace.from_env()
    parser = _Parser(
        prog="nfsroot", description="Inspect, validate and deploy what nfsroot-pipeline builds from cluster.yaml."
    )
    parser.add_argument(
        "-f", "--file", default=str(workspace.spec_file), help="the cluster spec (default: %(default)s; NFSROOT_SPEC)"
    )
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
            print(printable(str(problem)), file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found; nothing was written", file=sys.stderr)
        return EXIT_ERROR
    except PipelineError as exc:
        print(f"nfsroot: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("nfsroot: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
