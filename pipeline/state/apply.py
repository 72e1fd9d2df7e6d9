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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.state import homes, hostkeys
from pipeline.state.changes import Change, Plan
from pipeline.state.observe import observe_path
from pipeline.state.record import BACKUP_ROOT, STATE_PATH
from pipeline.state.rootfs import PathConflictError, TargetRoot, dir_is_empty, join_path, split_path

CRASH_ENV = "NFSROOT_APPLY_CRASH_AFTER"  # tests only: os._exit after this many steps (fault injection)
TMP_PREFIX = ".nfsroot-tmp."
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class StalePlanError(PipelineError):
    """A saved plan no longer describes the target (it changed since the plan was made)."""


class ApplyOSError(PipelineError):
    """The system refused a step (disk full, immutable file, read-only filesystem): the user's to fix."""


@dataclass(frozen=True)
class ApplyOptions:
    reload_argv: tuple[str, ...] | None = ("exportfs", "-ra")  # None: never reload
    force: bool = False  # move non-empty directories that are in the way to the backups
    verify: bool = False  # check every observed fingerprint first (for plans saved earlier)
    # role -> reload argv of the owned services (pipeline.state.services), run when their configuration changed
    service_reloads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[Change, ...]
    backup_dir: str | None  # gateway path of this run's backups, if anything was backed up
    reloaded: bool
    services_reloaded: tuple[str, ...] = ()  # roles whose reload command ran


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
        def fill(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        self._replace(dirfd, name, fill, mode, owner)

    def _replace(
        self,
        dirfd: int,
        name: str,
        fill: Callable[[int], None],
        mode: int,
        owner: tuple[int, int] | None = None,
        like: int | None = None,
    ) -> None:
        """Land a new regular file at `name` by temp file + rename: the old inode (and its other names) is never
        written. `fill` writes the content; `like` is an open file whose xattrs and times the new one copies."""
        self.remove_stale_tmp(dirfd)
        tmp = _tmp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        try:
            try:
                fill(fd)
                if owner is not None:
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, *owner)
                if like is not None:
                    _copy_xattrs(like, fd)  # after chown, which clears security.capability
                os.fchmod(fd, mode)  # after chown, which clears setuid bits
                if like is not None:
                    st = os.fstat(like)
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)
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
        """Create a directory with exactly `mode`; one that exists already keeps its mode and owner (issue 9:
        /var/tmp is 1777, /var/local 2775 in a Debian root, and a mount point over them must not change that)."""
        old_umask = os.umask(0)  # so the mode is exact from the start: a crash before any chmod leaves it right
        try:
            os.mkdir(name, mode & 0o1777, dir_fd=dirfd)
        except FileExistsError:
            return
        finally:
            os.umask(old_umask)
        os.fsync(dirfd)
        self.step()
        if mode & 0o6000:  # setuid/setgid are not taken from mkdir's mode
            self.chmod(dirfd, name, mode)

    def chmod(self, dirfd: int, name: str, mode: int) -> None:
        """Set the mode of an existing file or directory; the one place apply changes an existing object.

        A regular file with other hard links (a root made with `cp -al`, `rsync --link-dest`) may share its
        inode with a file outside the target, so it is never changed in place: a copy with the new mode (same
        owner, xattrs and times) replaces this name, and the other names keep the old inode untouched.
        """
        fd = os.open(name, _READ, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise PathConflictError(f"{name}: chmod refused on a non-regular file")
            if stat.S_IMODE(st.st_mode) == mode:
                return
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                self._replace(dirfd, name, lambda out: _copy_fd(fd, out), mode, (st.st_uid, st.st_gid), like=fd)
                return
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
            try:  # streamed: an original of any size is kept without holding it in memory
                owner = (st.st_uid, st.st_gid)
                self._replace(dfd, dname, lambda out: _copy_fd(fd, out), stat.S_IMODE(st.st_mode), owner, like=fd)
            finally:
                os.close(fd)

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
            if fact.kind == "file" and _sha256_at(src_dirfd, src_name) == fact.sha256:
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
    def execute(self, c: Change, data: Payload) -> None:
        with self.root.parent(c.path) as found:
            if found is None:
                raise PathConflictError(f"{c.path}: parent directory is missing in the target")
            dirfd, name = found
            if c.op == "chmod":
                assert c.mode is not None
                self.chmod(dirfd, name, c.mode)
            elif c.op == "mkhome":
                homes.create_home(self.root, c, self.step)
            elif c.op == "keygen":
                hostkeys.generate(self.write_file, self.root, c)
            elif c.op == "known_hosts":
                assert c.mode is not None
                text = hostkeys.assemble(self.root, c)  # read before the original is moved away
                if _lstat(dirfd, name) is not None:
                    self.keep_original(c, dirfd, name)
                self.write_file(dirfd, name, text, c.mode)
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
                elif isinstance(data, _Staged):
                    assert c.mode is not None
                    self._replace(dirfd, name, data.fill, c.mode)
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


def _copy_fd(src: int, dst: int) -> None:
    """Copy the rest of `src` into `dst` in the kernel where it can, else in 1 MiB chunks: memory stays flat."""
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
            raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def _copy_xattrs(src: int, dst: int) -> None:
    """Carry extended attributes (file capabilities, ACLs) over to a copy; those the filesystem refuses are
    dropped, as `cp -a` does."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for key in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, key, os.getxattr(src, key))


def _sha256_at(dirfd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, _READ, dir_fd=dirfd)
    try:
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _Staged:
    """New content that stays where it is until it is written (build/ for rendered files, the target root for
    files copied from it, such as the root's kernel): streamed into place and hashed on the way, so a file of any
    size costs 1 MiB of memory (issue 12 defect 7), and bytes changed since the check are caught."""

    where: TargetRoot
    source: str
    path: str
    sha256: str | None
    missing: str
    changed: str

    def _open(self) -> int:
        with self.where.parent(self.source) as found:
            if found is None:
                raise StalePlanError(self.missing)
            try:
                return os.open(found[1], _READ, dir_fd=found[0])
            except FileNotFoundError:
                raise StalePlanError(self.missing) from None

    def _stream(self, out: int | None) -> None:
        digest = hashlib.sha256()
        fd = self._open()
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StalePlanError(f"{self.path}: {self.source} is not a regular file; plan again")
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
                view = memoryview(chunk)
                while out is not None and view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(fd)
        if self.sha256 is not None and digest.hexdigest() != self.sha256:
            raise StalePlanError(self.changed)

    def check(self) -> None:
        self._stream(None)

    def fill(self, out: int) -> None:
        self._stream(out)


Payload = bytes | _Staged | None


def _content(c: Change, build: TargetRoot | None, root: TargetRoot) -> Payload:
    """The new content of a file change, checked against the plan's hash before anything is written."""
    if c.kind != "file" or c.op in ("chmod", "remove", "keygen", "known_hosts"):
        return None
    if c.content is not None:
        data = c.content.encode()
        if c.sha256 is not None and hashlib.sha256(data).hexdigest() != c.sha256:
            raise StalePlanError(f"{c.path}: the plan's content does not match its sha256; plan again")
        return data
    if c.copy_from is not None:
        staged = _Staged(
            root,
            c.copy_from,
            c.path,
            c.sha256,
            missing=f"{c.path}: {c.copy_from} is gone from the target; plan again",
            changed=f"{c.path}: {c.copy_from} changed in the target since the plan was made; plan again",
        )
    else:
        if build is None or c.staged is None:
            raise PipelineError(f"{c.path}: the plan names no content for this file")
        staged = _Staged(
            build,
            "/" + c.staged,
            c.path,
            c.sha256,
            missing=f"{c.path}: staged file {c.staged} is missing from {build.path}",
            changed=f"{c.path}: the build changed since the plan was made (sha256 mismatch); plan again",
        )
    staged.check()
    return staged


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
    """Carry out `plan` in `target`; returns what was done. A plan without changes touches nothing.

    An OS error (disk full, an immutable file, a read-only filesystem) stops the run with ApplyOSError naming
    the path: every path is then old or new, and the journal lets the next run finish the job.
    """
    if not plan.changes:
        return ApplyResult((), None, False)
    if opts.verify and os.path.abspath(plan.target) != os.path.abspath(target):
        # Checked before the target is created: a plan for another target must leave no trace here.
        raise StalePlanError(f"the plan was made for target {plan.target}, not {target}")
    at = "the target root"
    try:
        # A local deploy.root (the example cluster) may not exist yet; the plan treated it as empty.
        target.mkdir(parents=True, exist_ok=True)
        with TargetRoot(target) as root, _maybe_root(build_dir) as build:
            _lock(root)
            if opts.verify:
                verify_plan(plan, root)
            if any(c.op == "keygen" for c in plan.changes):
                hostkeys.check_keygen()
            for change in plan.changes:
                if change.op == "keygen":
                    hostkeys.check_change(change)
                elif change.op == "mkhome":
                    homes.check_change(change)
            payloads = []
            for change in plan.changes:  # read and checked before the first write, not halfway
                at = change.path
                payloads.append(_content(change, build, root))
            hostkeys.sweep(root)  # after every check: a refused apply writes nothing
            writer = _Writer(root, opts)
            journal_written = not plan.journal
            final = [c for c in plan.changes if c.path == STATE_PATH]
            for change, data in zip(plan.changes, payloads, strict=True):
                if change.path == STATE_PATH:
                    continue
                if not journal_written and change.kind != "dir":
                    at = STATE_PATH
                    _write_journal(writer, plan.journal)
                    journal_written = True
                at = change.path
                writer.execute(change, data)
            at = STATE_PATH
            if not journal_written:
                _write_journal(writer, plan.journal)
            reloaded = False
            if plan.reload_exports and opts.reload_argv:
                run(list(opts.reload_argv))
                reloaded = True
            services_reloaded = []
            for role in plan.reload_services:  # in the services' order, each failure stops the run before the record
                if opts.service_reloads.get(role):
                    run(list(opts.service_reloads[role]))
                    services_reloaded.append(role)
            for change in final:
                writer.execute(change, _content(change, build, root))
    except OSError as exc:
        raise ApplyOSError(
            f"apply stopped at {at} in {target}: {exc.strerror or exc}; every path is "
            "old or new, so fix that and rerun apply to finish"
        ) from exc
    return ApplyResult(plan.changes, writer.backup_dir, reloaded, tuple(services_reloaded))


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
