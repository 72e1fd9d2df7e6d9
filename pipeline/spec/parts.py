"""The validated spec split into parts, one JSON file each, so doit can track which part changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.spec.model import Cluster


def _get(data: dict[str, Any], part: str) -> Any:
    for key in part.split("."):
        data = data[key]
    return data


def split_parts(cluster: Cluster, parts: tuple[str, ...]) -> dict[str, bytes]:
    data = cluster.model_dump(mode="json")
    return {part: (json.dumps(_get(data, part), indent=1, sort_keys=True) + "\n").encode() for part in parts}


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
