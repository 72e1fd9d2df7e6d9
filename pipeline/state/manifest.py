"""The desired state: `build/manifest.json` (format in docs/architecture.md), validated as untrusted input.

The manifest decides what gets written where on the gateway, so a bad entry ("..", a relative path, a NUL
or newline that would split a line of the plan) is rejected here, before anything looks at the target.
Staged files are read through `TargetRoot` confined to build/ and checked against their sha256.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import PipelineError
from pipeline.state.rootfs import TargetRoot, split_path

MANIFEST_FORMAT = 1
TEXT_LIMIT = 512 * 1024  # larger files are compared by hash only; no diff is shown for them


class ManifestError(PipelineError):
    """build/manifest.json (or a staged file it names) is missing, malformed or inconsistent."""


def check_gateway_path(value: str) -> str:
    """An absolute, normalised path: no '..', '.', '//', trailing '/', NUL or newline."""
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ValueError("must not contain NUL or newline characters")
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if value == "/" or value.endswith("/"):
        raise ValueError(f"must name something below / without a trailing slash, got {value!r}")
    parts = value[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"must not contain '..', '.' or empty components, got {value!r}")
    if len(value) > 4095:
        raise ValueError("is longer than PATH_MAX")
    return value


def _check_staged(value: str) -> str:
    if "\x00" in value or "\n" in value:
        raise ValueError("must not contain NUL or newline characters")
    if value.startswith("/"):
        raise ValueError(f"must be relative to the build directory, got {value!r}")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError(f"must not contain '..', '.' or empty components, got {value!r}")
    return value


def _check_link(value: str) -> str:
    if not value or "\x00" in value or "\n" in value:
        raise ValueError("must be non-empty without NUL or newline characters")
    return value


def _check_mode(value: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise ValueError(f"must be an octal string like '0644', got {value!r}")
    return value


GatewayPath = Annotated[str, AfterValidator(check_gateway_path)]
Mode = Annotated[str, AfterValidator(_check_mode)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Word = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/@-]{1,200}$")]
Text = Annotated[str, Field(max_length=1000), AfterValidator(_check_link)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    path: GatewayPath
    role: Word
    fields: tuple[Text, ...] = ()


class FileEntry(_Entry):
    """A file with known bytes: staged in build/, or (`source`, made by plan from a RootFileEntry) a file of the
    target root that apply copies, checked against `sha256`."""

    kind: Literal["file"]
    mode: Mode
    sha256: Sha256
    size: int = Field(ge=0)
    staged: Annotated[str, AfterValidator(_check_staged)] | None = None
    source: GatewayPath | None = None


class RootFileEntry(_Entry):
    """A file of the target root chosen by version (`<source_dir>/<prefix><version>`, version or "newest"),
    whose bytes only plan can see; pipeline/state/bootfiles.py turns it into a FileEntry with a `source`."""

    kind: Literal["rootfile"]
    mode: Mode
    # Narrow on purpose: a tampered manifest must not make plan copy any other file of the target (say,
    # /etc/shadow) into the world-readable TFTP root.
    source_dir: Annotated[GatewayPath, Field(pattern=r"/boot$")]
    prefix: Literal["vmlinuz-", "initrd.img-"]
    version: Annotated[Word, Field(pattern=r"^(newest|[0-9]+\.[0-9]+[A-Za-z0-9.+~_-]*)$")]
    modules_dir: Annotated[GatewayPath, Field(pattern=r"/lib/modules$")]


class SymlinkEntry(_Entry):
    kind: Literal["symlink"]
    target: Annotated[str, Field(max_length=4095), AfterValidator(_check_link)]
    preserve: GatewayPath | None = None


class DirEntry(_Entry):
    kind: Literal["dir"]
    mode: Mode


Entry = Annotated[FileEntry | SymlinkEntry | DirEntry | RootFileEntry, Field(discriminator="kind")]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal[1]
    cluster: Word
    entries: tuple[Entry, ...]


def mode_of(entry: FileEntry | DirEntry) -> int:
    return int(entry.mode, 8)


@dataclass(frozen=True)
class Desired:
    """The validated manifest plus what the planner needs of the staged files (their text, for diffs)."""

    manifest: Manifest
    build_dir: Path
    texts: dict[str, str]  # gateway path -> staged text, for text files up to TEXT_LIMIT
    # Files whose bytes are `texts[path]` as the plan rewrote them (pxelinux configs naming resolved boot
    # files), not the staged file: apply writes them from the plan's content.
    rewritten: frozenset[str] = frozenset()

    @property
    def entries(self) -> tuple[FileEntry | SymlinkEntry | DirEntry | RootFileEntry, ...]:
        return self.manifest.entries


def _consistency(manifest: Manifest) -> list[str]:
    problems: list[str] = []
    paths = [e.path for e in manifest.entries]
    for i, (a, b) in enumerate(itertools.pairwise(paths)):
        if a == b:
            problems.append(f"entries.{i + 1}: duplicate path {b}")
        elif a > b:
            problems.append(f"entries.{i + 1}: {b} is out of order (entries must be sorted by path)")
    leaves = {e.path for e in manifest.entries if e.kind != "dir"}
    for i, entry in enumerate(manifest.entries):
        parts = split_path(entry.path)
        for n in range(1, len(parts)):
            parent = "/" + "/".join(parts[:n])
            if parent in leaves:
                problems.append(f"entries.{i}: {entry.path} lies below {parent}, which is not a directory entry")
        if isinstance(entry, SymlinkEntry) and entry.preserve is not None and entry.preserve in set(paths):
            problems.append(f"entries.{i}: preserve {entry.preserve} collides with a manifest entry")
    return problems


def parse_manifest(data: bytes, source: str = "manifest.json") -> Manifest:
    """Validate manifest bytes; every problem is reported at once, one line each."""
    try:
        manifest = Manifest.model_validate_json(data)  # JSON mode: arrays are tuples
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            # The discriminated union adds the kind name to the location; keep only data keys.
            loc = ".".join(str(p) for p in err["loc"] if p not in ("file", "symlink", "dir", "rootfile"))
            lines.append(f"{source}: {loc}: {err['msg']}")
        raise ManifestError("\n".join(lines)) from None
    problems = _consistency(manifest)
    for i, entry in enumerate(manifest.entries):
        if isinstance(entry, FileEntry) and (entry.staged is None or entry.source is not None):
            # `source` (copy from the target) is only ever set by plan, from a checked rootfile entry.
            problems.append(f"entries.{i}: {entry.path}: a file needs `staged` and no `source`")
    if problems:
        raise ManifestError("\n".join(f"{source}: {p}" for p in problems))
    return manifest


def read_staged(build: TargetRoot, entry: FileEntry) -> bytes | None:
    """Check a file entry's staged bytes against the manifest (confined to build/); returns them when small
    enough to diff (TEXT_LIMIT), else None. Streamed: a staged file of any size costs 1 MiB of memory."""
    if entry.staged is None:
        raise ManifestError(f"{entry.path}: not a staged file")
    where = f"staged file {entry.staged} (for {entry.path})"
    with build.parent("/" + entry.staged) as found:
        if found is None:
            raise ManifestError(f"{where} is missing from {build.path}")
        dirfd, name = found
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:
            raise ManifestError(f"{where} is missing from {build.path}") from None
        except OSError as exc:
            raise ManifestError(f"{where} cannot be opened: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ManifestError(f"{where} is not a regular file")
            hasher = hashlib.sha256()
            size = 0
            small: list[bytes] | None = []
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
                if small is not None and size <= TEXT_LIMIT:
                    small.append(chunk)
                else:
                    small = None
    digest = hasher.hexdigest()
    if digest != entry.sha256 or size != entry.size:
        raise ManifestError(
            f"{where} does not match the manifest (sha256 {digest[:12]}…, {size} bytes; "
            f"expected {entry.sha256[:12]}…, {entry.size} bytes): rebuild with `doit`"
        )
    return b"".join(small) if small is not None else None


def as_text(data: bytes) -> str | None:
    """Text worth diffing: UTF-8, no NUL, not huge."""
    if len(data) > TEXT_LIMIT or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def load_desired(build_dir: Path) -> Desired:
    manifest_path = build_dir / "manifest.json"
    try:
        data = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{manifest_path} does not exist: run `doit` first") from None
    manifest = parse_manifest(data, str(manifest_path))
    texts: dict[str, str] = {}
    with TargetRoot(build_dir) as build:
        for entry in manifest.entries:
            if isinstance(entry, FileEntry) and entry.staged is not None:
                content = read_staged(build, entry)
                text = as_text(content) if content is not None else None
                if text is not None:
                    texts[entry.path] = text
    return Desired(manifest=manifest, build_dir=build_dir, texts=texts)
