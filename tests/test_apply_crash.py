"""Fault injection: apply killed after every possible step (os._exit, like SIGKILL or a power cut).

After each kill: every path is either as before or as after (never partial, never a mix of content and
mode), a rerun converges to exactly what an uninterrupted apply gives, and no original is lost. A second
test kills a real subprocess with SIGKILL at arbitrary moments while it writes a large file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from pipeline.state.apply import CRASH_ENV, TMP_PREFIX, ApplyOptions
from pipeline.state.record import BACKUP_ROOT, STATE_PATH
from tests.deploy_helpers import D, F, L, Spec, deploy, make_build, make_tree, plan_for, record_of, snapshot

ORIGINALS = {
    "/clients/etc/hostname": "debian\n",  # becomes a symlink; the original goes to the skeleton
    "/etc/exports.d/nfsroot.exports": "/srv/old *(rw)\n",  # not ours: updated, original backed up
    "/etc/motd": "not in the manifest\n",
}
V1: dict[str, Spec] = {
    "/srv/tftp/nfsroot/initrd-1.img": F(b"\x00initrd one" * 100, role="initrd"),
    "/srv/tftp/pxelinux.cfg/default": F("INITRD nfsroot/initrd-1.img\n", role="pxelinux"),
    "/etc/nfsroot/old-ours": F("ours v1\n"),
    "/etc/nfsroot/hosts": F("10.0.0.1 a\n"),
}
V2: dict[str, Spec] = {
    "/clients/etc/hostname": L("/var/local/hostname", preserve="/clients/usr/lib/nfsroot/skel/etc/hostname"),
    "/clients/etc/hosts": L("/var/local/hosts", preserve="/clients/usr/lib/nfsroot/skel/etc/hosts"),
    "/etc/exports.d/nfsroot.exports": F("/clients *(ro)\n/workers *(rw)\n", role="exports"),
    "/srv/tftp/nfsroot/initrd-2.img": F(b"\x00initrd two" * 100, role="initrd"),
    "/srv/tftp/pxelinux.cfg/default": F("INITRD nfsroot/initrd-2.img\n", role="pxelinux"),
    "/etc/nfsroot/hosts": F("10.0.0.1 a\n10.0.0.2 b\n", mode="0640"),
    "/workers": D("0750"),
    "/workers/home": D("0755"),
}
USER_EDIT = "edited by the admin after v1\n"  # /etc/nfsroot/old-ours, removed by v2: must be kept


def _prepared(tmp_path: Path, scenario: str) -> tuple[Path, Path, list[str]]:
    """The target before the apply under test, the build to apply, and the originals that must survive.

    "upgrade": originals plus a v1 deployment (one of its files edited by hand), then v2.
    "first-deploy": only the originals, then v2.
    """
    base = make_tree(tmp_path / "base", {**ORIGINALS, "/clients/etc/hosts": "127.0.0.1 localhost\n"})
    originals = [*ORIGINALS.values(), "127.0.0.1 localhost\n"]
    if scenario == "upgrade":
        deploy(make_build(tmp_path / "b1", V1), base)
        (base / "etc/nfsroot/old-ours").write_text(USER_EDIT)
        originals.append(USER_EDIT)
    return base, make_build(tmp_path / "b2", V2), originals


def _state(snap: dict[str, tuple[str, int, int, str]]) -> dict[str, tuple[str, int, str]]:
    """Drop mtimes, backups and our temp files: what a reader of the target sees."""
    return {
        p: (kind, mode, content)
        for p, (kind, mode, _mtime, content) in snap.items()
        if not p.startswith("/var/backups") and not Path(p).name.startswith(TMP_PREFIX)
    }


def _contents(target: Path) -> set[str]:
    return {v[3] for v in snapshot(target).values() if v[0] == "file"}


def _run_killed(build: Path, target: Path, steps: int) -> int:
    """Fork; the child applies with the crash hook set and dies after `steps` steps. Returns its status."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.environ[CRASH_ENV] = str(steps)
            deploy(build, target, ApplyOptions(reload_argv=None))
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("scenario", ["upgrade", "first-deploy"])
def test_killed_after_every_step_is_old_or_new_and_converges(tmp_path: Path, scenario: str) -> None:
    base, build, kept = _prepared(tmp_path, scenario)
    before = _state(snapshot(base))
    reference = tmp_path / "reference"
    shutil.copytree(base, reference, symlinks=True)
    deploy(build, reference)
    after = _state(snapshot(reference))
    originals = {hashlib.sha256(t.encode()).hexdigest() for t in kept}

    crashes = 0
    for steps in range(1, 500):
        target = tmp_path / f"run{steps}"
        shutil.copytree(base, target, symlinks=True)
        code = _run_killed(build, target, steps)
        if code == 0:
            break  # the apply finished before reaching this many steps: every step point was covered
        assert code == 137, f"apply failed (not killed) at step {steps}"
        crashes += 1
        seen = _state(snapshot(target))
        record_of(target)  # the record may hold the journal (a third state), but always a whole one
        for path in (set(seen) | set(before) | set(after)) - {STATE_PATH}:
            assert seen.get(path) in (before.get(path), after.get(path)), f"step {steps}: {path} is neither"
        assert originals <= _contents(target), f"step {steps}: an original was lost"
        deploy(build, target)  # the rerun
        assert _state(snapshot(target)) == after, f"step {steps}: the rerun did not converge"
        assert originals <= _contents(target)
        assert plan_for(build, target).changes == ()
        leftovers = [p for p in snapshot(target) if Path(p).name.startswith(TMP_PREFIX)]
        assert leftovers == [] or all(p.startswith(BACKUP_ROOT) for p in leftovers)
        shutil.rmtree(target)
    assert crashes > 20  # the scenario really has many steps


def test_sigkill_at_arbitrary_moments_never_leaves_a_partial_file(tmp_path: Path) -> None:
    big_old, big_new = b"o" * (16 << 20), b"n" * (16 << 20)
    build = make_build(
        tmp_path / "build",
        {"/srv/tftp/initrd.img": F(big_new, role="big"), "/etc/exports.d/x.exports": F("x\n", role="big")},
    )
    old_sha = hashlib.sha256(big_old).hexdigest()
    allowed = {old_sha, hashlib.sha256(big_new).hexdigest()}
    script = (
        "import sys; from pathlib import Path; from pipeline.state.deploy import apply_target;"
        "from pipeline.state.apply import ApplyOptions;"
        "apply_target(Path(sys.argv[1]), Path(sys.argv[2]), ApplyOptions(reload_argv=None))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop(CRASH_ENV, None)

    def start(target: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", script, str(build), str(target)], env=env)

    interrupted = 0
    for n in range(8):
        target = make_tree(tmp_path / f"t{n}", {"/srv/tftp/initrd.img": big_old})
        initial = snapshot(target)
        proc = start(target)
        # Python start-up time varies with load; wait until the apply has begun writing (its first
        # directory appears), then let it run a little longer each time before the SIGKILL.
        deadline = time.monotonic() + 30
        while not (target / "etc").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.005 * n)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = (target / "srv/tftp/initrd.img").read_bytes()
        assert hashlib.sha256(data).hexdigest() in allowed, f"partial initrd after SIGKILL (try {n})"
        if snapshot(target) != initial and plan_for(build, target).changes:
            interrupted += 1
        deploy(build, target)
        assert (target / "srv/tftp/initrd.img").read_bytes() == big_new
        assert plan_for(build, target).changes == ()
        if snapshot(target) != initial:
            assert old_sha in _contents(target), f"the original initrd was lost (try {n})"
        shutil.rmtree(target)
    print(f"sigkill: {interrupted}/8 kills landed inside an apply")
    assert interrupted >= 2, f"only {interrupted} of 8 kills landed inside the apply"
