"""Install a built root as a new generation and switch to it atomically; keep the previous ones for rollback.

Layout in the target: the root share's path (`/clients`) is a symlink to `clients.generations/<key>`, a
sibling directory holding one complete root per build key. A new root is unpacked beside the live ones
(into `.<key>.partial`, renamed when complete), then the symlink is replaced by rename, so a reader sees the
old root or the new one and no file of a live generation is ever rewritten. The export and the nodes'
`nfsroot=` keep naming `/clients`; the NFS server resolves the link when it (re)exports, so apply's exports
reload makes new boots use the new generation. Nodes already running hold handles into their generation,
which stays on disk; reboot them to move them over (the kept generation is also what `rollback` returns to).
`generations.json` in that directory lists the keys, newest first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.state.observe import observe_path
from pipeline.state.rootfs import TargetRoot

SUFFIX = ".generations"
RECORD = "generations.json"


class GenerationError(PipelineError):
    """The target's root share cannot be switched to a built generation."""


@dataclass(frozen=True)
class Switch:
    current: str  # key now live
    previous: str | None
    unpacked: bool  # False when the generation was already on disk
    removed: tuple[str, ...]  # generations dropped beyond `keep`


def generations_dir(share_path: str) -> str:
    return share_path.rstrip("/") + SUFFIX


def _link_text(share_path: str, key: str) -> str:
    """Relative, so the link stays right when the target root is mounted elsewhere (a local deploy.root)."""
    return f"{generations_dir(share_path).rsplit('/', 1)[-1]}/{key}"


def _confined(target: Path, gateway_path: str) -> Path:
    """The generations directory in the target, refused if a symlink on the way leads out of the target."""
    path = target / gateway_path.lstrip("/")
    real_target = target.resolve()
    if path.is_symlink() or not path.resolve().is_relative_to(real_target):
        raise GenerationError(f"{gateway_path} in {target} is a symlink or leads out of the target root; refusing")
    return path


def read_order(target: Path, share_path: str) -> list[str]:
    path = target / generations_dir(share_path).lstrip("/") / RECORD
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise GenerationError(f"{path} is not valid JSON ({exc}); move it aside") from None
    order = doc.get("order") if isinstance(doc, dict) else None
    if not isinstance(order, list) or not all(isinstance(k, str) and k.isalnum() for k in order):
        raise GenerationError(f"{path} does not hold a list of generation keys")
    return order


def _write_order(gen_dir: Path, order: list[str]) -> None:
    from pipeline.fsutil import write_atomic

    write_atomic(gen_dir / RECORD, (json.dumps({"order": order}, indent=1) + "\n").encode())


def _point(target: Path, share_path: str, key: str) -> str | None:
    """Replace the share's symlink by one to `key` (temp link + rename); returns the key it pointed at."""
    with TargetRoot(target) as root:
        fact = observe_path(root, share_path)
        if fact.kind == "dir":
            raise GenerationError(
                f"{share_path} in {target} is a directory (an adopted root): move it to "
                f"{generations_dir(share_path)}/adopted and link {share_path} to it, or keep adopting it "
                "(drop the rootfs section)"
            )
        if fact.kind not in ("missing", "symlink"):
            raise GenerationError(f"{share_path} in {target} is a {fact.kind}, not the generation symlink")
        old = fact.target.rsplit("/", 1)[-1] if fact.kind == "symlink" and fact.target else None
        with root.parent(share_path) as found:
            if found is None:
                raise GenerationError(f"the parent of {share_path} is missing in {target}")
            dirfd, name = found
            tmp = f".{name}.{secrets.token_hex(4)}.link"
            os.symlink(_link_text(share_path, key), tmp, dir_fd=dirfd)
            os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            os.fsync(dirfd)
    return old


def install_generation(
    target: Path,
    share_path: str,
    tarball: Path,
    key: str,
    keep: int = 1,
    prepare: Callable[[str], object] | None = None,
) -> Switch:
    """Unpack `tarball` as generation `key` (unless present), switch to it, drop generations beyond `keep`.

    `prepare(gateway path of the generation)` runs after the unpack and before the switch (prepare.py)."""
    if not key.isalnum():
        raise GenerationError(f"bad generation key {key!r}")
    gen_dir = _confined(target, generations_dir(share_path))
    gen_dir.mkdir(parents=True, exist_ok=True)
    final = gen_dir / key
    unpacked = False
    if not final.is_dir():
        partial = gen_dir / f".{key}.partial"
        if partial.exists():
            shutil.rmtree(partial)  # a killed earlier unpack (rmtree never follows symlinks)
        partial.mkdir(mode=0o755)
        # GNU tar refuses members with .. and strips leading /; owners, modes and xattrs (capabilities) kept.
        run(["tar", "--extract", "--numeric-owner", "--same-permissions", "--xattrs", "--xattrs-include=*",
             "--file", str(tarball), "--directory", str(partial)])  # fmt: skip
        os.rename(partial, final)
        unpacked = True
    if prepare is not None:
        prepare(f"{generations_dir(share_path)}/{key}")
    order = [key] + [k for k in read_order(target, share_path) if k != key]
    previous = _point(target, share_path, key)
    kept, dropped = order[: keep + 1], order[keep + 1 :]
    _write_order(gen_dir, kept)
    for old in dropped:
        if (gen_dir / old).is_dir() and not (gen_dir / old).is_symlink():
            shutil.rmtree(gen_dir / old)
    return Switch(key, previous, unpacked, tuple(dropped))


def rollback_generation(target: Path, share_path: str) -> Switch:
    """Point the share back at the previous generation (which becomes the newest in the record)."""
    order = read_order(target, share_path)
    if len(order) < 2:
        raise GenerationError(f"no previous generation of {share_path} is kept in {target}")
    gen_dir = target / generations_dir(share_path).lstrip("/")
    if not (gen_dir / order[1]).is_dir():
        raise GenerationError(f"the kept generation {order[1]} is missing from {gen_dir}")
    previous = _point(target, share_path, order[1])
    _write_order(gen_dir, [order[1], order[0], *order[2:]])
    return Switch(order[1], previous, False, ())
