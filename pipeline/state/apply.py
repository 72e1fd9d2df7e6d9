"""The only writer to a target root: carries out a Plan, one atomic step at a time.

Every file lands by temp file + fsync + rename, every symlink by temp symlink + rename, all through directory
descriptors from `TargetRoot` (so a symlink swapped into a parent cannot redirect a write; `pipeline.fsutil`
works on paths and is used for files outside the target). Nothing is replaced before its original is safe:
copied to the manifest's `preserve` path, to `<name>.<sha12>` for initrds, or to the timestamped backup
directory. Before the first change the deployed-state record is rewritten as a journal (the union of old
and new paths, the exports reload still owed), so a run killed at any point is finished by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.state.changes import Change, Plan
from pipeline.state.observe import observe_path
from pipeline.state.record import BACKUP_ROOT, STATE_PATH
from pipeline.state.rootfs import PathConflictError, TargetRoot, dir_is_empty, join_path, split_path

CRASH_ENV = "NFSROOT_APPLY_CRASH_AFTER"  # tests only: os._exit after this many steps (fault injection)
TMP_PREFIX = ".nfsroot-tmp."
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class StalePlanError(PipelineError):
    """A saved plan no longer describes the target (it changed since the plan was made)."""


@dataclass(frozen=True)
class ApplyOptions:
    reload_argv: tuple[str, ...] | None = ("exportfs", "-ra")  # None: never reload
    force: bool = False  # move non-empty directories that are in the way to the backups
    verify: bool = False  # check every observed fingerprint first (for plans saved earlier)
    dnsmasq_reload_argv: tuple[str, ...] | None = None  # run when the dnsmasq configuration changed


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[Change, ...]
    backup_dir: str | None  # gateway path of this run's backups, if anything was backed up
    reloaded: bool
    dnsmasq_reloaded: bool = False


def _tmp_name(name: str) -> str:
    return f"{TMP_PREFIX}{name[:180]}.{secrets.token_hex(4)}"


class _Writer:
    def __init__(self, root: TargetRoot, opts: ApplyOptions) -> None:
        self.root = root
        self.opts = opts
        crash = os.environ.get(CRASH_ENV)
        self.crash_after = int(crash) if crash else None
        self.steps = 0
        self.backup_dir: str | None = None

    def step(self) -> None:
        """Count one durable step; the fault-injection hook kills the process here, like a power cut."""
        self.steps += 1
        if self.crash_after is not None and self.steps >= self.crash_after:
            os._exit(137)

    # -- primitives, all relative to an open directory -------------------------------------------------
    def write_file(self, dirfd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
        self.remove_stale_tmp(dirfd)
        tmp = _tmp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if owner is not None:
                    with contextlib.suppress(PermissionError):
                        os.fchown(handle.fileno(), *owner)
                os.fchmod(handle.fileno(), mode)  # after chown, which clears setuid bits
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dirfd)
            raise
        self._commit(dirfd, tmp, name)

    def symlink(self, dirfd: int, name: str, target: str) -> None:
        self.remove_stale_tmp(dirfd)
        tmp = _tmp_name(name)
        os.symlink(target, tmp, dir_fd=dirfd)
        self._commit(dirfd, tmp, name)

    def _commit(self, dirfd: int, tmp: str, name: str) -> None:
        """Rename a complete temporary file or symlink over `name`: readers see the old object or the new one."""
        try:
            self.step()
            os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dirfd)
            raise
        os.fsync(dirfd)
        self.step()

    def mkdir(self, dirfd: int, name: str, mode: int) -> None:
        with contextlib.suppress(FileExistsError):  # a rerun after a crash between mkdir and chmod
            os.mkdir(name, mode & 0o777, dir_fd=dirfd)  # the umask can only make it stricter until the chmod
            os.fsync(dirfd)
            self.step()
        self.chmod(dirfd, name, mode)

    def chmod(self, dirfd: int, name: str, mode: int) -> None:
        fd = os.open(name, _READ, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise PathConflictError(f"{name}: chmod refused on a non-regular file")
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
                os.fsync(fd)
                self.step()
        finally:
            os.close(fd)

    # -- keeping originals -----------------------------------------------------------------------------
    def _copy_to(self, src_dirfd: int, src_name: str, dest: str) -> None:
        """Copy a regular file or symlink (never following it) to gateway path `dest`, atomically."""
        st = os.stat(src_name, dir_fd=src_dirfd, follow_symlinks=False)
        self.root.ensure_dir(join_path(split_path(dest)[:-1]))
        with self.root.parent(dest) as found:
            assert found is not None
            dfd, dname = found
            if stat.S_ISLNK(st.st_mode):
                self.symlink(dfd, dname, os.readlink(src_name, dir_fd=src_dirfd))
                return
            fd = os.open(src_name, _READ, dir_fd=src_dirfd)
            with os.fdopen(fd, "rb") as handle:
                data = handle.read()
            self.write_file(dfd, dname, data, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))

    def _backup_path(self, path: str) -> str:
        if self.backup_dir is None:
            self.root.ensure_dir(BACKUP_ROOT)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            for n in range(1000):
                candidate = f"{BACKUP_ROOT}/{stamp}" + (f"-{n}" if n else "")
                with self.root.parent(candidate) as found:
                    assert found is not None
                    try:
                        os.mkdir(found[1], 0o700, dir_fd=found[0])
                    except FileExistsError:
                        continue
                self.backup_dir = candidate
                break
            else:
                raise PipelineError(f"cannot create a backup directory under {BACKUP_ROOT}")
        return f"{self.backup_dir}{path}"

    def keep_original(self, c: Change, dirfd: int, name: str) -> None:
        """Make sure the object about to be replaced or removed survives somewhere."""
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.move_dir_away(c, dirfd, name)
            return
        if c.preserve and stat.S_ISREG(st.st_mode):
            self._keep_existing(c.preserve, dirfd, name)
            self._copy_to(dirfd, name, c.preserve)
        elif c.keep_as and stat.S_ISREG(st.st_mode):
            self._copy_to(dirfd, name, c.keep_as)
        elif c.backup or c.preserve or c.keep_as:
            self._copy_to(dirfd, name, self._backup_path(c.path))

    def _keep_existing(self, dest: str, src_dirfd: int, src_name: str) -> None:
        """A skeleton file already at `dest` with other content is an original too: back it up first."""
        fact = observe_path(self.root, dest)
        if fact.kind == "missing":
            return
        with self.root.parent(dest) as found:
            assert found is not None
            if fact.kind == "file":
                fd = os.open(src_name, _READ, dir_fd=src_dirfd)
                with os.fdopen(fd, "rb") as handle:
                    if hashlib.sha256(handle.read()).hexdigest() == fact.sha256:
                        return  # the same bytes (a rerun after a crash): nothing to keep
            if fact.kind == "dir":
                raise PathConflictError(f"{dest}: a directory is in the way of the skeleton copy")
            self._copy_to(found[0], found[1], self._backup_path(dest))

    def move_dir_away(self, c: Change, dirfd: int, name: str) -> None:
        empty = dir_is_empty(dirfd, name)
        if empty and not c.backup:
            os.rmdir(name, dir_fd=dirfd)
            self.step()
            return
        if not empty and not self.opts.force:
            raise PathConflictError(f"{c.path}: a non-empty directory is in the way; rerun with --force")
        dest = self._backup_path(c.path)
        self.root.ensure_dir(join_path(split_path(dest)[:-1]))
        with self.root.parent(dest) as found:
            assert found is not None
            try:
                os.rename(name, found[1], src_dir_fd=dirfd, dst_dir_fd=found[0])
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise PathConflictError(
                        f"{c.path}: cannot move this directory to {dest} (another filesystem); move it yourself"
                    ) from None
                raise
            os.fsync(found[0])
        os.fsync(dirfd)
        self.step()

    # -- one change ------------------------------------------------------------------------------------
    def execute(self, c: Change, data: bytes | None) -> None:
        with self.root.parent(c.path) as found:
            if found is None:
                raise PathConflictError(f"{c.path}: parent directory is missing in the target")
            dirfd, name = found
            if c.op == "chmod":
                assert c.mode is not None
                self.chmod(dirfd, name, c.mode)
            elif c.op == "remove":
                self.keep_original(c, dirfd, name)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(name, dir_fd=dirfd)
                    os.fsync(dirfd)
                    self.step()
            elif c.kind == "dir":
                st = _lstat(dirfd, name)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    self.keep_original(c, dirfd, name)
                    os.unlink(name, dir_fd=dirfd)
                    self.step()
                assert c.mode is not None
                self.mkdir(dirfd, name, c.mode)
            else:
                if c.op != "create":
                    self.keep_original(c, dirfd, name)
                if c.kind == "symlink":
                    assert c.target is not None
                    self.symlink(dirfd, name, c.target)
                else:
                    assert data is not None and c.mode is not None
                    self.write_file(dirfd, name, data, c.mode)

    def remove_stale_tmp(self, dirfd: int) -> None:
        """Temp files a killed run left behind; ours by their prefix, never anything else."""
        with os.scandir(dirfd) as it:
            stale = [e.name for e in it if e.name.startswith(TMP_PREFIX)]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dirfd)


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_confined(where: TargetRoot, path: str, missing: str) -> bytes:
    with where.parent(path) as found:
        if found is None:
            raise StalePlanError(missing)
        try:
            fd = os.open(found[1], _READ, dir_fd=found[0])
        except FileNotFoundError:
            raise StalePlanError(missing) from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise StalePlanError(f"{path} is no longer a regular file; plan again")
            return handle.read()


def _content(c: Change, build: TargetRoot | None, root: TargetRoot) -> bytes | None:
    """The new bytes of a file change, checked against the plan's hash before anything is written."""
    if c.kind != "file" or c.op in ("chmod", "remove"):
        return None
    if c.content is not None:
        data = c.content.encode()
    elif c.copy_from is not None:
        data = _read_confined(root, c.copy_from, f"{c.path}: {c.copy_from} is gone from the target; plan again")
        if hashlib.sha256(data).hexdigest() != c.sha256:
            raise StalePlanError(f"{c.path}: {c.copy_from} changed in the target since the plan was made; plan again")
    else:
        if build is None or c.staged is None:
            raise PipelineError(f"{c.path}: the plan names no content for this file")
        with build.parent("/" + c.staged) as found:
            if found is None:
                raise StalePlanError(f"{c.path}: staged file {c.staged} is missing from {build.path}")
            fd = os.open(found[1], _READ, dir_fd=found[0])
            with os.fdopen(fd, "rb") as handle:
                data = handle.read()
    if c.sha256 is not None and hashlib.sha256(data).hexdigest() != c.sha256:
        raise StalePlanError(f"{c.path}: the build changed since the plan was made (sha256 mismatch); plan again")
    return data


def verify_plan(plan: Plan, root: TargetRoot) -> None:
    if os.path.abspath(plan.target) != str(root.path):
        raise StalePlanError(f"the plan was made for target {plan.target}, not {root.path}")
    for path, fingerprint in plan.observed.items():
        now = observe_path(root, path).fingerprint
        if now != fingerprint:
            raise StalePlanError(
                f"the target changed since the plan was made: {path} was {fingerprint}, now {now}; plan again"
            )


def apply_plan(
    plan: Plan,
    target: Path,
    build_dir: Path | None,
    opts: ApplyOptions = ApplyOptions(),
) -> ApplyResult:
    """Carry out `plan` in `target`; returns what was done. A plan without changes touches nothing."""
    if not plan.changes:
        return ApplyResult((), None, False)
    # A local deploy.root (the example cluster) may not exist yet; the plan treated it as empty.
    target.mkdir(parents=True, exist_ok=True)
    with TargetRoot(target) as root, _maybe_root(build_dir) as build:
        _lock(root)
        if opts.verify:
            verify_plan(plan, root)
        payloads = [_content(c, build, root) for c in plan.changes]  # fail before the first write, not halfway
        writer = _Writer(root, opts)
        journal_written = not plan.journal
        final = [c for c in plan.changes if c.path == STATE_PATH]
        for change, data in zip(plan.changes, payloads, strict=True):
            if change.path == STATE_PATH:
                continue
            if not journal_written and change.kind != "dir":
                _write_journal(writer, plan.journal)
                journal_written = True
            writer.execute(change, data)
        if not journal_written:
            _write_journal(writer, plan.journal)
        reloaded = False
        if plan.reload_exports and opts.reload_argv:
            run(list(opts.reload_argv))
            reloaded = True
        dnsmasq_reloaded = False
        if plan.reload_dnsmasq and opts.dnsmasq_reload_argv:
            run(list(opts.dnsmasq_reload_argv))
            dnsmasq_reloaded = True
        for change in final:
            writer.execute(change, _content(change, build, root))
    return ApplyResult(plan.changes, writer.backup_dir, reloaded, dnsmasq_reloaded)


def _lock(root: TargetRoot) -> None:
    """One apply (or rollback) per target at a time; the lock goes with the root's descriptor."""
    try:
        fcntl.flock(root.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PipelineError(f"another nfsroot apply is running on {root.path}; try again when it is done") from None


def _write_journal(writer: _Writer, journal: str) -> None:
    with writer.root.parent(STATE_PATH) as found:
        if found is None:
            return  # its directory comes later in the plan; nothing we do before then needs finishing
        writer.write_file(found[0], found[1], journal.encode(), 0o644)


@contextlib.contextmanager
def _maybe_root(path: Path | None) -> Iterator[TargetRoot | None]:
    if path is None:
        yield None
    else:
        with TargetRoot(path) as opened:
            yield opened
