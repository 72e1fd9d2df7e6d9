"""What a renderer produces: desired files, directories and symlinks on the gateway, as values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["file", "symlink", "dir", "rootfile"]


@dataclass(frozen=True)
class RootFile:
    """A file the target root holds (the root's kernel or initrd), chosen by version at plan time.

    The build cannot hash it (the root lives on the gateway), so the manifest names how to find it:
    `<source_dir>/<prefix><version>`, with `version` a kernel version or "newest", and the directory its
    version's modules must be in. See pipeline/state/bootfiles.py.
    """

    source_dir: str
    prefix: str
    version: str
    modules_dir: str


@dataclass(frozen=True)
class Artifact:
    """One desired object at an absolute gateway path, with the spec fields it came from (the plan's reasons)."""

    path: str
    kind: Kind
    role: str
    fields: tuple[str, ...]
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlinks: the link text
    preserve: str | None = None  # symlinks: where apply keeps a file it replaces
    rootfile: RootFile | None = None  # rootfile: what to copy from the target root

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def manifest_entry(self, staged: str | None) -> dict[str, object]:
        entry: dict[str, object] = {
            "path": self.path,
            "kind": self.kind,
            "role": self.role,
            "fields": list(self.fields),
        }
        if self.kind == "file":
            entry |= {"mode": f"{self.mode:04o}", "sha256": self.sha256, "size": len(self.data), "staged": staged}
        elif self.kind == "dir":
            entry["mode"] = f"{self.mode:04o}"
        elif self.kind == "rootfile":
            assert self.rootfile is not None
            entry |= {"mode": f"{self.mode:04o}", **vars(self.rootfile)}
        else:
            entry["target"] = self.target
            if self.preserve:
                entry["preserve"] = self.preserve
        return entry


@dataclass(frozen=True)
class ReviewDoc:
    """A human-readable document for pull-request review; built and committed, never deployed."""

    name: str  # relative path under build/review/ and generated/
    data: bytes
    fields: tuple[str, ...] = field(default=())
