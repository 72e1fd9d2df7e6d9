"""`nfsroot validate` and `nfsroot schema`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.spec.load import load_cluster
from pipeline.spec.schema import schema_bytes


def _validate(args: argparse.Namespace) -> int:
    cluster, warnings = load_cluster(Path(args.file))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.strict and warnings:
        n = len(warnings)
        counted = "1 warning counts as an error" if n == 1 else f"{n} warnings count as errors"
        fix = "fix it, or run without --strict to accept it" if n == 1 else "fix them, or run without --strict"
        print(f"{args.file}: validation failed because of --strict: {counted} ({fix})", file=sys.stderr)
        return EXIT_ERROR
    nodes = len(cluster.nodes.known)
    print(f"{args.file}: cluster {cluster.name!r} is valid ({len(cluster.shares)} shares, {nodes} known nodes)")
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(schema_bytes())
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check cluster.yaml and report every problem with its line")
    p.add_argument("--strict", action="store_true", help="treat lint warnings as errors")
    p.set_defaults(handler=_validate)
    p = sub.add_parser("schema", help="print the JSON Schema of cluster.yaml")
    p.set_defaults(handler=_schema)
