"""Where a spec field stands in cluster.yaml, for errors found later (at plan time, against the target root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.spec.yamlload import YamlProblems, load_yaml


def spec_locator(path: Path, shown: str | None = None) -> Callable[[str], str]:
    """A function from a dotted field (`boot.kernel`) to `FILE:LINE:COL: `, or "" when it cannot be found."""
    try:
        doc = load_yaml(path.read_bytes(), shown or str(path))
    except (OSError, YamlProblems):
        return lambda field: ""

    def locate(field: str) -> str:
        loc = tuple(int(p) if p.isdigit() else p for p in field.split("."))
        origin = doc.origins.get(loc)
        return f"{shown or path}:{origin.line}:{origin.column}: " if origin else ""

    return locate
