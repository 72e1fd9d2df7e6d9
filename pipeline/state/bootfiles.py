"""Resolve the manifest's boot files against the target root: the root's own kernel and distro initrd.

The build names them by the spec's choice (`rootfile` entries: `/srv/tftp/boot/vmlinuz-6.1.0-21-amd64` or
`…/vmlinuz-newest`, see pipeline/render/bootfiles.py). Here, with the target root open, each becomes a file
entry whose bytes are copied from the root (`source`), served under a name holding its version and content
hash (`vmlinuz-6.1.0-21-amd64.<sha12>`), and the pxelinux configs are rewritten to those names. A version is
only accepted if its modules are in the root: a kernel without /lib/modules/<version> boots a node that
cannot load a single driver.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace

from pipeline.errors import PipelineError
from pipeline.spec.kernel import NEWEST, version_key
from pipeline.state.manifest import Desired, DirEntry, FileEntry, RootFileEntry, SymlinkEntry
from pipeline.state.observe import observe_path
from pipeline.state.pxecfg import rewrite_boot_names
from pipeline.state.rootfs import ParentNotDirectory, TargetRoot, split_path

Locate = Callable[[str], str]  # spec field -> "cluster.yaml:LINE:COL: " (or "" when unknown)


class BootFileError(PipelineError):
    """The boot files the spec chooses are not in the target root (or their modules are not)."""


@dataclass(frozen=True)
class Resolved:
    request: RootFileEntry
    version: str
    entry: FileEntry


def _no_locate(field: str) -> str:
    return ""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _list_dir(root: TargetRoot, path: str) -> list[str]:
    try:
        opened = root.open_dir(split_path(path))
    except ParentNotDirectory:
        return []
    if opened is None:
        return []
    fd, _ = opened
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def _regular(root: TargetRoot, path: str) -> bool:
    with root.parent(path) as found:
        if found is None:
            return False
        try:
            st = os.stat(found[1], dir_fd=found[0], follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode)


def _where(request: RootFileEntry, locate: Locate) -> str:
    field = request.fields[0] if request.fields else "boot.kernel"
    return f"{locate(field)}{field}"


def _version(root: TargetRoot, requests: list[RootFileEntry], locate: Locate) -> str:
    """The one version all requests of a source directory resolve to: the spec's, or the newest complete one."""
    first = requests[0]
    if first.version != NEWEST:
        return first.version
    names = set(_list_dir(root, first.source_dir))
    complete = [
        n.removeprefix(first.prefix)
        for n in names
        if n.startswith(first.prefix)
        and all(f"{r.prefix}{n.removeprefix(first.prefix)}" in names for r in requests)
        and _regular(root, f"{first.source_dir}/{n}")
    ]
    if not complete:
        wanted = " and ".join(f"{r.prefix}<version>" for r in requests)
        raise BootFileError(
            f"{_where(first, locate)}: newest: the target root has no kernel in {first.source_dir} "
            f"(looked for {wanted}); install a linux-image package in the root"
        )
    return max(complete, key=version_key)


def _resolve_one(root: TargetRoot, request: RootFileEntry, version: str, locate: Locate) -> FileEntry:
    source = f"{request.source_dir}/{request.prefix}{version}"
    fact = observe_path(root, source)
    if fact.kind != "file" or fact.sha256 is None or fact.size is None:
        found = f" (it has a {fact.kind} there)" if fact.kind != "missing" else ""
        raise BootFileError(
            f"{_where(request, locate)}: {version}: the target root has no {request.role} {source}{found}; "
            f"install linux-image-{version} in the root, or choose another version"
        )
    modules = f"{request.modules_dir}/{version}"
    if observe_path(root, modules).kind != "dir":
        raise BootFileError(
            f"{_where(request, locate)}: {version}: {modules} is missing from the target root, so the kernel "
            f"{source} would boot without its modules (reinstall linux-image-{version} in the root, or "
            "choose a version whose modules are there)"
        )
    head = request.path.rsplit("/", 1)[0]
    fields = request.fields
    if request.version == NEWEST:  # the plan's reason says which version "newest" meant this time
        fields = tuple(f"{f}: newest is {version}" if f == "boot.kernel" else f for f in fields)
    return FileEntry(
        path=f"{head}/{request.prefix}{version}.{fact.sha256[:12]}",
        kind="file",
        role=request.role,
        fields=fields,
        mode=request.mode,
        sha256=fact.sha256,
        size=fact.size,
        source=source,
    )


def resolve_bootfiles(desired: Desired, root: TargetRoot | None, locate: Locate = _no_locate) -> Desired:
    """`desired` with every rootfile entry resolved in `root` and the pxelinux configs naming the results.

    `root` is None when the target does not exist yet; a manifest with boot files then cannot be planned.
    """
    requests = [e for e in desired.entries if isinstance(e, RootFileEntry)]
    if not requests:
        return desired
    if root is None:
        raise BootFileError(
            f"{_where(requests[0], locate)}: the target root does not exist, and the nodes' kernel comes from "
            f"the root's {requests[0].source_dir} (adopt or build the root there first)"
        )
    # One version per source directory and requested version: node groups may boot different kernels.
    by_dir: dict[tuple[str, str], list[RootFileEntry]] = {}
    for request in requests:
        by_dir.setdefault((request.source_dir, request.version), []).append(request)
    resolved: list[Resolved] = []
    for group in by_dir.values():
        group.sort(key=lambda r: r.role != "kernel")  # a missing kernel is the message, not its initrd
        version = _version(root, group, locate)
        resolved += [Resolved(r, version, _resolve_one(root, r, version, locate)) for r in group]
    # Two requests for one file ("newest" and the version it is): served once.
    resolved = list({r.entry.path: r for r in reversed(resolved)}.values())[::-1]
    mapping = {_basename(r.request.path): _basename(r.entry.path) for r in resolved}
    texts = dict(desired.texts)
    rewritten: set[str] = set(desired.rewritten)
    entries: list[FileEntry | SymlinkEntry | DirEntry] = []
    for entry in desired.entries:
        if isinstance(entry, RootFileEntry):
            continue
        if isinstance(entry, FileEntry) and entry.role == "pxelinux" and entry.path in texts:
            new = rewrite_boot_names(texts[entry.path], mapping)
            if new != texts[entry.path]:
                data = new.encode()
                entry = entry.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
                texts[entry.path] = new
                rewritten.add(entry.path)
        entries.append(entry)
    entries += [r.entry for r in resolved]
    ordered = tuple(sorted(entries, key=lambda e: e.path))
    manifest = desired.manifest.model_copy(update={"entries": ordered})
    return replace(desired, manifest=manifest, texts=texts, rewritten=frozenset(rewritten))
