"""Users' homes on a shared writable mount, created by apply (issue 9).

A shared writable mount over /home hides the root's own /home/<user> on every node. For each user of the
root's /etc/passwd (uid 1000-59999, a login shell) whose home lies under a shared writable mount of the spec,
plan proposes `mkhome <share path>` while it is missing there, and apply creates it: a copy of the root's own
home when the root has one (what the root was built with: /etc/skel plus, say, .ssh/authorized_keys, which the
mount hides), else of the root's /etc/skel; owned by the user's uid and gid throughout, with the mode of the
root's home, else adduser.conf's DIR_MODE (bookworm's default: 0700). An existing home is never touched.

The home is built under a temporary name in the share directory (mode 0700, so nobody looks into a half-made
home) and renamed into place when complete: a killed apply leaves no partial home, and the next run starts
over. The boot script's first-boot creation stays as the fallback for users added to the root after the last
apply (a node can boot before anyone reruns apply).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.render import profile
from pipeline.spec.model import Cluster
from pipeline.state.changes import Change
from pipeline.state.observe import observe_path
from pipeline.state.rootfs import PathConflictError, TargetRoot, split_path

UID_MIN, UID_MAX = 1000, 59999  # Debian's range of ordinary users (adduser.conf FIRST_UID/LAST_UID)
NO_LOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", "")
DEFAULT_DIR_MODE = 0o700  # adduser.conf DIR_MODE when unset (bookworm: "Default: DIR_MODE=0700")
ROLE = "homes"
TMP_PREFIX = ".nfsroot-home."
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_CONF = 1 << 20
Step = Callable[[], None]


def _read(root: TargetRoot, path: str) -> str | None:
    """A small regular file of the target as text, never through a symlink at the leaf; None when missing."""
    with root.parent(path) as found:
        if found is None:
            return None
        try:
            fd = os.open(found[1], _READ, dir_fd=found[0])
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read(MAX_CONF).decode("utf-8", errors="replace")


def dir_mode(adduser_conf: str | None) -> int:
    """adduser.conf's DIR_MODE (the last uncommented one), else adduser's default 0700."""
    mode = DEFAULT_DIR_MODE
    for line in (adduser_conf or "").splitlines():
        key, _, value = line.strip().partition("=")
        value = value.strip().strip("\"'")
        if key.strip() == "DIR_MODE" and value and all(c in "01234567" for c in value) and len(value) <= 4:
            mode = int(value, 8) & 0o7777
    return mode


def users(passwd: str) -> list[tuple[str, int, int, str]]:
    """(name, uid, gid, home) of the ordinary login users in a passwd text, in file order."""
    found = []
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) != 7 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        name, _, uid, gid, _, home, shell = parts
        if not UID_MIN <= int(uid) <= UID_MAX or shell.strip() in NO_LOGIN:
            continue
        if not home.startswith("/") or any(p in (".", "..") for p in home.split("/")):
            continue
        found.append((name, int(uid), int(gid), "/" + "/".join(split_path(home))))
    return found


def home_changes(target: Path, cluster: Cluster) -> list[Change]:
    """A `mkhome` change for each missing home of a root user under a shared writable mount."""
    if not profile.enabled(cluster) or not os.path.isdir(target):
        return []
    root_dir = cluster.root_share.path.rstrip("/")
    changes: list[Change] = []
    with TargetRoot(target) as root:
        passwd = _read(root, root_dir + "/etc/passwd")
        if passwd is None:
            return []  # no root deployed yet: the nodes' boot script makes the homes
        default_mode = dir_mode(_read(root, root_dir + "/etc/adduser.conf"))
        for name, uid, gid, home in users(passwd):
            for i, w in enumerate(cluster.writable):
                if w.per_node or not home.startswith(w.mount.rstrip("/") + "/"):
                    continue
                path = cluster.writable_export(w).rstrip("/") + home[len(w.mount.rstrip("/")) :]
                fact = observe_path(root, path)
                if fact.kind != "missing":
                    continue  # an existing home is the user's: never touched
                own = observe_path(root, root_dir + home)
                if own.kind == "dir":
                    source, mode, how = root_dir + home, own.mode or default_mode, "the root's own home"
                else:
                    source, mode, how = root_dir + "/etc/skel", default_mode, "the root's /etc/skel"
                changes.append(
                    Change(
                        "mkhome",
                        path,
                        "dir",
                        f"home of user {name} (uid {uid}) in the root's /etc/passwd, under the shared {w.mount}, "
                        f"which hides the root's {home} on the nodes: a copy of {how} ({source}) owned by "
                        f"{uid}:{gid}; from root.profile, writable[{i}]",
                        ROLE,
                        (profile.FIELD, f"writable[{i}]"),
                        mode=mode,
                        copy_from=source,
                        content=f"{uid}:{gid}",
                    )
                )
    return changes


def _copy_tree(src: int, dst: int, owner: tuple[int, int]) -> None:
    """Copy directory `src` into the (empty) directory `dst`: directories, regular files and symlinks, with
    their modes, every entry owned by `owner`; nothing is followed. An explicit stack, not recursion."""
    stack = [(os.dup(src), os.dup(dst))]
    while stack:
        s, d = stack.pop()
        try:
            with os.scandir(s) as it:
                entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
            for name, st in entries:
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(name, 0o700, dir_fd=d)
                    os.chown(name, *owner, dir_fd=d, follow_symlinks=False)
                    os.chmod(name, mode, dir_fd=d)
                    stack.append((os.open(name, _DIR, dir_fd=s), os.open(name, _DIR, dir_fd=d)))
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(name, dir_fd=s), name, dir_fd=d)
                    os.chown(name, *owner, dir_fd=d, follow_symlinks=False)
                elif stat.S_ISREG(st.st_mode):
                    inp = os.open(name, _READ, dir_fd=s)
                    try:
                        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=d)
                        try:
                            shutil.copyfileobj(os.fdopen(os.dup(inp), "rb"), os.fdopen(os.dup(out), "wb"))
                            os.fchown(out, *owner)
                            os.fchmod(out, mode & 0o777)  # no setuid bits in a home copy
                            os.fsync(out)
                        finally:
                            os.close(out)
                    finally:
                        os.close(inp)
            os.fsync(d)
        finally:
            os.close(s)
            os.close(d)


def check_change(change: Change) -> tuple[int, int]:
    """The owner of a mkhome change; checked before apply writes anything (a saved plan can be edited)."""
    uid, _, gid = (change.content or "").partition(":")
    if not (uid.isdigit() and gid.isdigit()) or change.copy_from is None or change.mode is None:
        raise PipelineError(f"{change.path}: the plan names no owner uid:gid, source or mode for this home; plan again")
    return int(uid), int(gid)


def create_home(root: TargetRoot, change: Change, step: Step) -> None:
    """Carry out a mkhome change: build the home under a temporary name, then rename it into place."""
    owner = check_change(change)
    assert change.copy_from is not None and change.mode is not None
    opened = root.open_dir(split_path(change.copy_from))
    if opened is None:
        raise PathConflictError(f"{change.path}: {change.copy_from} is gone from the target; plan again")
    src = opened[0]
    try:
        with root.parent(change.path) as found:
            if found is None:
                raise PathConflictError(f"{change.path}: parent directory is missing in the target")
            parent, name = found
            with os.scandir(parent) as it:  # what a killed run left half-made
                stale = [e.name for e in it if e.name.startswith(TMP_PREFIX) and e.is_dir(follow_symlinks=False)]
            for old in stale:
                shutil.rmtree(old, dir_fd=parent)
            with contextlib.suppress(FileNotFoundError):
                os.lstat(name, dir_fd=parent)
                return  # made since the plan (a node's first boot): the user's now, never touched
            tmp = f"{TMP_PREFIX}{name[:100]}.{secrets.token_hex(4)}"
            os.mkdir(tmp, 0o700, dir_fd=parent)
            try:
                fd = os.open(tmp, _DIR, dir_fd=parent)
                try:
                    _copy_tree(src, fd, owner)
                    os.fchown(fd, *owner)
                    os.fchmod(fd, change.mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                step()
                with contextlib.suppress(FileNotFoundError):
                    os.lstat(name, dir_fd=parent)
                    shutil.rmtree(tmp, dir_fd=parent)
                    return
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    shutil.rmtree(tmp, dir_fd=parent)
                raise
            os.fsync(parent)
            step()
    finally:
        os.close(src)
