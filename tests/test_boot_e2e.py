"""End-to-end boot tests: `doit` builds the test cluster (tests/boot/cluster.yaml), then two nodes PXE-boot
the result in QEMU (TCG) against nfs-ganesha on loopback, with the overlay and the repack method, one after
the other and in parallel. Checked on the gateway side (what landed in the writable share) and through
each guest's own report. A wrong export path must fail fast with a diagnosis.

Slow (about a minute per boot): marked `boot`. Prerequisites missing: skipped locally, failed in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.boottest.harness import BootOptions, BootRun, boot_target, run_boottest
from pipeline.boottest.prereqs import installed_kernels, missing_prerequisites
from pipeline.boottest.target import BootNode, BootTarget, WritableMount
from pipeline.cli import main
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.prereq import need

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parents[1]
SPEC_TEMPLATE = REPO / "tests" / "boot" / "cluster.yaml"
HANDMADE = REPO / "tests" / "boot" / "handmade"
MACS = ("52:54:00:b0:07:01", "52:54:00:b0:07:02")
EXPECTED_HOSTNAMES = {"52:54:00:b0:07:01": "bt-525400b00701", "52:54:00:b0:07:02": "second-node"}


@pytest.fixture(scope="module")
def kver() -> str:
    missing = missing_prerequisites()
    need(not missing, "missing: " + "; ".join(missing))
    return installed_kernels()[-1]


_BUILDS: dict[str, tuple[Path, Path]] = {}


def built(method: str, kver: str, base: Path) -> tuple[Cluster, Path]:
    """Run the real `doit` on the test spec for `method`; returns the cluster and its build directory."""
    if method not in _BUILDS:
        work = base / f"build-{method}"
        work.mkdir()
        text = SPEC_TEMPLATE.read_text().replace("@KVER@", kver).replace("@METHOD@", method)
        (work / "cluster.yaml").write_text(text)
        env = {**os.environ, "NFSROOT_SPEC": "cluster.yaml", "NFSROOT_BUILD": "build", "NFSROOT_GENERATED": "gen"}
        argv = [sys.executable, "-m", "doit", "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(work)]
        proc = subprocess.run(
            [*argv, "--db-file", str(work / ".doit.db"), "build"], env=env, capture_output=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
        _BUILDS[method] = (work / "cluster.yaml", work / "build")
    spec, build = _BUILDS[method]
    cluster, _ = load_cluster(spec)
    return cluster, build


@pytest.fixture(scope="module")
def build_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boot-builds")


def assert_booted(run: BootRun) -> None:
    details = "\n".join(f"{r.mac}: {r.summary()} (log {r.serial_log})" for r in run.results)
    assert run.ok, details
    assert sorted(r.mac for r in run.results) == list(MACS)
    workers = run.workdir / "shares" / "workers"
    # The manifest was applied to the read-only root as `apply` would: symlinks, originals in the skeleton.
    root = run.workdir / "clientroot"
    assert os.readlink(root / "etc" / "hostname") == "/var/local/hostname"
    assert (root / "usr/lib/nfsroot/skel/etc/hosts").read_text() == "127.0.0.1\tlocalhost\n"
    for r in run.results:
        hostname = EXPECTED_HOSTNAMES[r.mac]
        # Gateway side: what the boot script and the node wrote over NFS.
        node_dir = workers / r.node_id
        assert (node_dir / "hostname").read_text().strip() == hostname
        assert hostname in (node_dir / "hosts").read_text().split()
        cmdline = (node_dir / "cmdline").read_text()
        assert f"BOOTIF=01-{r.mac.replace(':', '-')}" in cmdline and "nfsroot=10.0.2.2:/clients,ro" in cmdline
        assert (workers / "home" / f"boottest-{r.node_id}").read_text().split() == [
            f"node={r.node_id}",
            f"hostname={hostname}",
        ]
        # Guest side: the node's own report.
        assert r.report is not None and r.report.first("hostname") == hostname
        assert r.serial_log.is_file()
        assert 0 < r.timings["kernel"] < r.timings["init"] <= r.timings["exit"]
        print(f"{r.mac} {r.hostname} " + " ".join(f"{k}={v}" for k, v in r.timings.items()))


@pytest.mark.parametrize("method", ["overlay", "repack"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_two_nodes_boot(method: str, parallel: bool, kver: str, build_base: Path, tmp_path: Path) -> None:
    cluster, build = built(method, kver, build_base)
    start = time.monotonic()
    run = run_boottest(build, cluster, MACS, workdir=tmp_path / "work", options=BootOptions(parallel=parallel))
    print(f"{method} {'parallel' if parallel else 'sequential'}: {time.monotonic() - start:.1f}s wall")
    assert_booted(run)
    tftp = tmp_path / "work" / "tftp"
    served = sorted(p.relative_to(tftp).as_posix() for p in tftp.rglob("*") if p.is_file())
    initrds = [n for n in served if n.rsplit("/", 1)[-1].startswith(("initrd", "nfsroot-"))]
    if method == "overlay":  # the root's untouched distro initrd (boot/) plus our small archive
        assert initrds[0] == f"boot/initrd.img-{kver}" and initrds[1].startswith("nfsroot-") and len(initrds) == 2
    else:  # one rewritten initrd
        assert len(initrds) == 1 and initrds[0].startswith("initrd-nfsroot-"), initrds
    assert {"pxelinux.0", "ldlinux.c32", f"boot/vmlinuz-{kver}"} <= set(served)


GROUPS = """
groups:
  second:
    hostname: "grp-{mac}"
    boot: {cmdline: [console=ttyS0, panic=-1, nfsroot_group=second]}
    writable:
      - {mount: /var/local, share: workers, per_node: true, subdir: second}
      - {mount: /home, share: workers, subdir: home}
      - {mount: /srv/second, share: workers, per_node: true, subdir: extra}
"""


def test_two_nodes_in_two_groups_boot_their_groups_settings(kver: str, tmp_path: Path) -> None:
    """One run, one node per node group: each gets its group's kernel argument, host name and writable set."""
    text = SPEC_TEMPLATE.read_text().replace("@KVER@", kver).replace("@METHOD@", "overlay")
    text = text.replace("hostname: second-node}", "group: second}") + GROUPS
    (tmp_path / "cluster.yaml").write_text(text)
    env = {**os.environ, "NFSROOT_SPEC": "cluster.yaml", "NFSROOT_BUILD": "build", "NFSROOT_GENERATED": "gen"}
    argv = [sys.executable, "-m", "doit", "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(tmp_path)]
    proc = subprocess.run([*argv, "--db-file", str(tmp_path / ".doit.db")], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    cluster, _ = load_cluster(tmp_path / "cluster.yaml")
    run = run_boottest(tmp_path / "build", cluster, MACS, workdir=tmp_path / "work")
    assert run.ok, "\n".join(f"{r.mac}: {r.summary()} (log {r.serial_log})" for r in run.results)
    first, second = sorted(run.results, key=lambda r: r.mac)
    shares = run.workdir / "shares" / "workers"
    assert first.report is not None and second.report is not None
    assert (first.report.first("hostname"), second.report.first("hostname")) == ("bt-525400b00701", "grp-525400b00702")
    assert "nfsroot_group=second" in (second.report.first("cmdline") or "")
    assert "nfsroot_group" not in (first.report.first("cmdline") or "")
    mounted = {m.split()[0]: m.split()[2] for m in second.report.all("mount")}  # mount point -> device
    assert mounted["/srv/second"] == f"10.0.2.2:/workers/extra/{second.node_id}"
    assert mounted["/var/local"] == f"10.0.2.2:/workers/second/{second.node_id}"
    assert not any(m.startswith("/srv/second ") for m in first.report.all("mount"))
    # Gateway side: each node's directory where its group puts it.
    assert (shares / first.node_id / "hostname").read_text().strip() == "bt-525400b00701"
    assert (shares / "second" / second.node_id / "hostname").read_text().strip() == "grp-525400b00702"
    assert (shares / "extra" / second.node_id).is_dir() and not (shares / "extra" / first.node_id).exists()


def test_cli_reports_each_node(kver: str, build_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, build = built("overlay", kver, build_base)
    spec = build.parent / "cluster.yaml"
    argv = ["-f", str(spec), "boottest", "--build", str(build), "--workdir", str(tmp_path / "w"), "--mac", MACS[0]]
    code = main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    [node] = out["nodes"]
    assert node["ok"] and node["hostname"] == "bt-525400b00701"
    assert Path(node["serial_log"]).is_file() and node["timings"]["exit"] > 0


def handmade_target(kver: str, tmp_path: Path, nfsroot: str) -> BootTarget:
    """The harness's input contract with hand-made pieces: a pxelinux.cfg and an overlay made with GNU cpio."""
    need(shutil.which("cpio") is not None, "GNU cpio not installed")
    src = tmp_path / "tftp-src"
    (src / "pxelinux.cfg").mkdir(parents=True)
    names = (
        subprocess.run(["find", "scripts", "conf"], cwd=HANDMADE, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
        cwd=HANDMADE,
        input="\n".join(sorted(names)).encode() + b"\n",
        capture_output=True,
        check=True,
    ).stdout
    (src / "handmade-overlay.img").write_bytes(archive)
    (src / "pxelinux.cfg" / "default").write_text(
        f"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz-{kver}\n  INITRD initrd.img-{kver},handmade-overlay.img\n"
        f"  APPEND root=/dev/nfs nfsroot={nfsroot} ip=dhcp console=ttyS0 panic=-1\n  SYSAPPEND 2\n"
    )
    return BootTarget(
        tftp_source=src,
        gateway="10.0.2.2",
        network="10.0.2.0/24",
        shares={"/clients": "ro", "/workers": "rw"},
        root_share="/clients",
        writable=(WritableMount("/var/local", "/workers/{node}"), WritableMount("/home", "/workers/home")),
        symlinks={"/etc/hostname": "/var/local/hostname", "/etc/hosts": "/var/local/hosts"},
        nodes=(BootNode("52:54:00:b0:07:09", "worker-node-525400b00709"),),
    )


def test_wrong_export_path_fails_fast_with_a_diagnosis(kver: str, tmp_path: Path) -> None:
    target = handmade_target(kver, tmp_path, "10.0.2.2:/nonexistent,ro")
    start = time.monotonic()
    run = boot_target(target, tmp_path / "work")
    elapsed = time.monotonic() - start
    [result] = run.results
    assert not result.ok
    assert result.failure is not None
    assert result.failure.startswith("the NFS root mount keeps failing"), result.failure
    assert "nfsroot=10.0.2.2:/nonexistent,ro; the server exports /clients, /workers" in result.failure
    # initramfs-tools would retry for 180 s and the harness's own timeout is 240 s: this must end well before.
    assert elapsed < 150, f"took {elapsed:.0f}s"
    assert "init" not in result.timings


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(proc.name))
    return pids


def test_sigterm_stops_vms_and_servers(kver: str, build_base: Path, tmp_path: Path) -> None:
    _, build = built("overlay", kver, build_base)
    work = tmp_path / "w"
    argv = ["-f", str(build.parent / "cluster.yaml"), "boottest", "--build", str(build), "--workdir", str(work)]
    cli = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in (work / "logs").glob("*.serial.log")):
            assert cli.poll() is None, cli.communicate()
            assert time.monotonic() < deadline, "no node started within 120s"
            time.sleep(0.5)
        assert _processes_mentioning(str(work)), "expected QEMU and ganesha to be running"
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, check=True).stdout.decode().split()
        [namespace] = [n for n in listed if n.startswith(f"nfsroot-boottest-{cli.pid}-")]
        inside = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, check=True).stdout.split()
        assert len(inside) >= 3, inside  # rpcbind, ganesha, QEMU
        cli.send_signal(15)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    assert _processes_mentioning(str(work)) == []
    assert [pid for pid in inside if Path(f"/proc/{pid.decode()}").exists()] == []  # rpcbind too
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, check=True).stdout.decode()
    assert namespace not in namespaces
