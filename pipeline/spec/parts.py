"""The validated spec split into parts, one JSON file each, so doit can track which part changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.spec.model import Cluster


def _get(data: dict[str, Any], part: str) -> Any:
    for key in part.split("."):
        data = data[key]
    return data


def _dump(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def split_parts(
    cluster: Cluster, parts: tuple[str, ...], derived: Mapping[str, Callable[[dict[str, Any]], Any]]
) -> dict[str, bytes]:
    """The part files: each part of the spec, plus derived views of them."""
    data = cluster.model_dump(mode="json")
    files = {part: _dump(_get(data, part)) for part in parts}
    return files | {name: _dump(view(data)) for name, view in derived.items()}


def assemble(directory: Path, parts: tuple[str, ...]) -> Cluster:
    """Rebuild the Cluster from the part files (validated again: they are files anyone could edit)."""
    data: dict[str, Any] = {}
    for part in parts:
        value = json.loads((directory / f"{part}.json").read_bytes())
        *parents, last = part.split(".")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return Cluster.model_validate(data)
