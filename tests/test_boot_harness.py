"""The boot-test harness's parts, without booting a VM: config rendering, serial-log diagnosis, verdicts,
the client root, and the real NFS server's lifecycle and failure diagnoses (these need root, ganesha and
rpcbind: they skip without them locally and fail in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.boottest.clientroot import ClientRootLayout, build_client_root, render_init
from pipeline.boottest.errors import BootTestError, NfsServerError
from pipeline.boottest.harness import BootOptions, boot_target
from pipeline.boottest.nfsserver import Export, NfsServer, nfs_server, render_ganesha_config
from pipeline.boottest.prereqs import installed_kernels, missing_prerequisites
from pipeline.boottest.proc import NETNS_PREFIX, Daemon, network_sandbox, sweep_stale_namespaces
from pipeline.boottest.qemu import VmRun, diagnose
from pipeline.boottest.target import BootNode, BootTarget, WritableMount
from pipeline.boottest.tftp import add_required_args, parse_pxelinux_cfg
from pipeline.boottest.verdict import gateway_checks, guest_checks, parse_report
from tests.prereq import need

LAYOUT = ClientRootLayout(
    {"/etc/hostname": "/var/local/hostname", "/etc/hosts": "/var/local/hosts"}, ["/var/local", "/home"]
)
NODE = BootNode("52:54:00:b0:07:01", "bt-525400b00701")


def need_server() -> None:
    missing = [m for m in missing_prerequisites() if "kernel" not in m and "qemu" not in m.lower()]
    need(not missing, "; ".join(missing))


def target(tmp: Path, *, tftp: Path | None = None) -> BootTarget:
    return BootTarget(
        tftp_source=tftp or tmp / "tftp-src",
        gateway="10.0.2.2",
        network="10.0.2.0/24",
        shares={"/clients": "ro", "/workers": "rw"},
        root_share="/clients",
        writable=(WritableMount("/var/local", "/workers/{node}"), WritableMount("/home", "/workers/home")),
        symlinks=dict(LAYOUT.symlinks),
        nodes=(NODE,),
    )


# -- ganesha config -------------------------------------------------------------------------------------


def test_ganesha_config_serves_each_share_to_loopback_only(tmp_path: Path) -> None:
    text = render_ganesha_config(
        [Export("/workers", tmp_path / "rw", "rw"), Export("/clients", tmp_path / "ro", "ro")],
        bind_loopback=True,
        plugins="/usr/lib/x86_64-linux-gnu/ganesha",
    )
    assert "Bind_addr = 127.0.0.1;" in text
    assert "mount_path_pseudo = true;" in text and "Protocols = 3;" in text and "Enable_UDP = false;" in text
    blocks = text.split("EXPORT {")[1:]
    assert len(blocks) == 2
    clients, workers = blocks  # sorted by gateway path
    assert f'Path = "{tmp_path / "ro"}";' in clients and 'Pseudo = "/clients";' in clients
    assert "CLIENT { Clients = 127.0.0.1; Access_Type = RO; }" in clients
    assert "CLIENT { Clients = 127.0.0.1; Access_Type = RW; }" in workers
    for block in blocks:
        assert "Access_Type = None;" in block and "Transports = TCP;" in block and "Squash = No_Root_Squash;" in block


def test_ganesha_config_without_bind_address_inside_a_namespace(tmp_path: Path) -> None:
    text = render_ganesha_config([Export("/clients", tmp_path, "ro")], bind_loopback=False, plugins="/p")
    assert "Bind_addr" not in text


def test_ganesha_config_refuses_duplicate_paths_and_unquotable_values(tmp_path: Path) -> None:
    with pytest.raises(NfsServerError, match="share a gateway path"):
        render_ganesha_config(
            [Export("/clients", tmp_path, "ro"), Export("/clients", tmp_path, "rw")], bind_loopback=True, plugins="/p"
        )
    with pytest.raises(NfsServerError, match="ganesha config string"):
        render_ganesha_config([Export('/a"b', tmp_path, "ro")], bind_loopback=True, plugins="/p")


# -- pxelinux.cfg ---------------------------------------------------------------------------------------

RENDERED_CFG = """# pxelinux configuration of cluster boottest.
DEFAULT linux
LABEL linux
KERNEL vmlinuz-6.1.0-56-amd64
INITRD initrd.img-6.1.0-56-amd64,nfsroot-0123.img
APPEND root=/dev/nfs nfsroot=10.0.2.2:/clients,ro ip=dhcp
SYSAPPEND 2
"""


def test_pxelinux_cfg_parsed() -> None:
    cfg = parse_pxelinux_cfg("default", RENDERED_CFG)
    assert cfg.kernel == "vmlinuz-6.1.0-56-amd64"
    assert cfg.initrds == ("initrd.img-6.1.0-56-amd64", "nfsroot-0123.img")
    assert cfg.append == ("root=/dev/nfs", "nfsroot=10.0.2.2:/clients,ro", "ip=dhcp")
    assert cfg.sysappend == 2


def test_required_args_added_once() -> None:
    text, added = add_required_args(RENDERED_CFG)
    assert added == ["console=ttyS0", "panic=-1"]
    assert "APPEND root=/dev/nfs nfsroot=10.0.2.2:/clients,ro ip=dhcp console=ttyS0 panic=-1\n" in text
    again, added_again = add_required_args(text)
    assert (again, added_again) == (text, [])
    custom = RENDERED_CFG.replace("ip=dhcp", "ip=dhcp console=ttyS0,115200 panic=10")
    assert add_required_args(custom) == (custom, [])


# -- serial log diagnosis -------------------------------------------------------------------------------


def test_diagnose_gives_up_on_a_failing_nfs_root_after_three_retries() -> None:
    log = "Begin: Running /scripts/nfs-premount ... done.\nmount call failed - server replied: Permission denied.\n"
    assert diagnose(log + "Begin: Retrying nfs mount ... " * 2) is None
    problem = diagnose(
        log + "Begin: Retrying nfs mount ... mount call failed - server replied: Permission denied.\n" * 3
    )
    assert problem is not None
    assert problem.startswith("the NFS root mount keeps failing (3 retries)")
    assert "Permission denied" in problem


def test_diagnose_panics_and_rescue_shell() -> None:
    assert diagnose("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n") == (
        "kernel panic: VFS: Unable to mount root fs"
    )
    problem = diagnose("nfsroot: cannot mount 10.0.2.2:/workers\nRebooting automatically due to panic= boot argument\n")
    assert problem == "the initramfs gave up: nfsroot: cannot mount 10.0.2.2:/workers"
    assert diagnose("Gave up waiting for root file system device.\n(initramfs) ") is not None
    assert diagnose("[    0.000000] Linux version 6.1.0\nBegin: Running /scripts/init-bottom ... done.\n") is None


# -- verdicts -------------------------------------------------------------------------------------------


def report_text(hostname: str = NODE.hostname, home: str = "10.0.2.2:/workers/home") -> str:
    p = "nfsroot-boottest: "
    node = NODE.id
    lines = [
        "NFSROOT-BOOTTEST-REPORT-BEGIN",
        f"{p}node={node}",
        f"{p}hostname={hostname}",
        f"{p}mount=/ nfs 10.0.2.2:/clients ro,relatime,vers=3",
        f"{p}mount=/var/local nfs 10.0.2.2:/workers/{node} rw,relatime,vers=3",
        f"{p}mount=/home nfs {home} rw,relatime,vers=3",
        f"{p}link=/etc/hostname -> /var/local/hostname resolves /var/local/hostname",
        f"{p}link-readable=/etc/hostname",
        f"{p}link=/etc/hosts -> /var/local/hosts resolves /var/local/hosts",
        f"{p}link-readable=/etc/hosts",
        f"{p}wrote=/var/local/boottest-{node}",
        f"{p}wrote=/home/boottest-{node}",
        "NFSROOT-BOOTTEST-REPORT-END",
    ]
    return "[    3.1] noise\n" + "\r\n".join(lines) + "\r\n"


def test_guest_checks_pass_on_a_good_report(tmp_path: Path) -> None:
    checks = guest_checks(target(tmp_path), NODE, parse_report(report_text()))
    assert [c for c in checks if not c.ok] == []
    assert len(checks) == 1 + 1 + 1 + 2 * 2 + 2


def test_guest_checks_catch_wrong_hostname_and_mount(tmp_path: Path) -> None:
    report = parse_report(report_text(hostname="(none)", home="10.0.2.2:/workers"))
    failed = {c.name for c in guest_checks(target(tmp_path), NODE, report) if not c.ok}
    assert failed == {"guest hostname", "guest mount /home"}
    assert parse_report("NFSROOT-BOOTTEST-REPORT-BEGIN\nnfsroot-boottest: hostname=x\n") is None  # cut short
    assert [c.name for c in guest_checks(target(tmp_path), NODE, None) if not c.ok] == ["guest report"]


def test_gateway_checks_read_the_writable_share(tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    node_dir = rw / NODE.id
    node_dir.mkdir(parents=True)
    (rw / "home").mkdir()
    exports = {"/clients": tmp_path / "ro", "/workers": rw}
    failed = [c.name for c in gateway_checks(target(tmp_path), exports, NODE) if not c.ok]
    assert len(failed) == 5  # hostname, hosts, cmdline, two markers
    (node_dir / "hostname").write_text(NODE.hostname + "\n")
    (node_dir / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{NODE.hostname}\n")
    (node_dir / "cmdline").write_text(f"root=/dev/nfs nfsroot=10.0.2.2:/clients,ro BOOTIF={NODE.bootif}\n")
    for d in (node_dir, rw / "home"):
        (d / f"boottest-{NODE.id}").write_text(f"node={NODE.id} hostname={NODE.hostname}\n")
    assert [c for c in gateway_checks(target(tmp_path), exports, NODE) if not c.ok] == []
    (node_dir / "hostname").write_text("localhost\n")
    assert [c.name for c in gateway_checks(target(tmp_path), exports, NODE) if not c.ok] == [
        f"gateway /workers/{NODE.id}/hostname"
    ]


def test_target_refuses_a_gateway_outside_its_network(tmp_path: Path) -> None:
    with pytest.raises(BootTestError, match="not in"):
        BootTarget(**{**target(tmp_path).__dict__, "gateway": "192.168.0.254"})


# -- client root ----------------------------------------------------------------------------------------


def test_client_root_init_is_clean_posix_sh() -> None:
    need(shutil.which("shellcheck") is not None, "shellcheck not installed")
    proc = subprocess.run(["shellcheck", "-s", "sh", "-"], input=render_init(LAYOUT).encode(), capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode()


def test_client_root_carries_the_spec_and_runs(tmp_path: Path) -> None:
    need(shutil.which("busybox") is not None or "NFSROOT_BUSYBOX_STATIC" in os.environ, "no busybox")
    root = build_client_root(tmp_path / "root", LAYOUT)
    assert os.readlink(root / "etc/hostname") == "/var/local/hostname"
    assert os.readlink(root / "etc/hosts") == "/var/local/hosts"
    assert (root / "var/local").is_dir() and (root / "home").is_dir()
    assert os.access(root / "sbin/init", os.X_OK)
    assert (root / "usr/lib/nfsroot/skel/etc/hostname").is_file()
    need(os.geteuid() == 0, "chroot needs root")
    # The busybox inside must run on its own (static, or with the libraries copied next to it).
    proc = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "echo ok; readlink /etc/hosts"], capture_output=True)
    assert proc.stdout.decode().split() == ["ok", "/var/local/hosts"], proc.stderr.decode()
    with pytest.raises(BootTestError, match="not empty"):
        build_client_root(root, LAYOUT)


# -- the real NFS server --------------------------------------------------------------------------------


def _exports(tmp_path: Path) -> list[Export]:
    (tmp_path / "ro").mkdir()
    (tmp_path / "rw").mkdir()
    return [Export("/clients", tmp_path / "ro", "ro"), Export("/workers", tmp_path / "rw", "rw")]


def test_nfs_server_starts_serves_and_stops(tmp_path: Path) -> None:
    need_server()
    with network_sandbox() as sandbox, nfs_server(_exports(tmp_path), tmp_path / "nfs", sandbox) as server:
        assert server.health() is None
        assert server.exported() == ["/clients", "/workers"]
        pids = [server.rpcbind.pid, server.ganesha.pid]
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not server.rpcbind.alive() and not server.ganesha.alive()


def test_nfs_server_without_rpcbind_fails_fast_and_says_why(tmp_path: Path) -> None:
    need_server()
    start = time.monotonic()
    with (
        network_sandbox() as sandbox,
        pytest.raises(NfsServerError, match="rpcbind was not started") as err,
        nfs_server(_exports(tmp_path), tmp_path / "nfs", sandbox, with_rpcbind=False),
    ):
        pass
    assert time.monotonic() - start < 45, "the diagnosis took too long"
    assert "ganesha" in str(err.value)


def test_rpcbind_lost_before_boot_fails_every_node_without_booting(tmp_path: Path) -> None:
    need_server()
    kernels = installed_kernels()
    need(bool(kernels), "no kernel in /boot")
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 not installed")
    kver = kernels[-1]
    src = tmp_path / "tftp-src"
    (src / "pxelinux.cfg").mkdir(parents=True)
    (src / "pxelinux.cfg/default").write_text(
        f"DEFAULT linux\nLABEL linux\nKERNEL vmlinuz-{kver}\nINITRD initrd.img-{kver}\n"
        "APPEND root=/dev/nfs nfsroot=10.0.2.2:/clients,ro ip=dhcp\nSYSAPPEND 2\n"
    )
    stopped: list[float] = []

    def lose_rpcbind(server: NfsServer) -> None:
        # Timed from here, not from the call: waiting for the machine-wide boot-test lock is not the harness's
        # reaction time.
        stopped.append(time.monotonic())
        server.rpcbind.stop()

    run = boot_target(target(tmp_path, tftp=src), tmp_path / "work", BootOptions(before_boot=lose_rpcbind))
    assert stopped and time.monotonic() - stopped[0] < 60
    assert not run.ok
    [result] = run.results
    assert result.failure is not None and result.failure.startswith("NFS server: rpcbind is not running")
    assert not (tmp_path / "work/logs" / f"{NODE.id}.qemu.log").exists()  # no VM was started


def test_missing_tftp_file_is_named_before_any_boot(tmp_path: Path) -> None:
    need(shutil.which("busybox") is not None or "NFSROOT_BUSYBOX_STATIC" in os.environ, "no busybox")
    src = tmp_path / "tftp-src"
    (src / "pxelinux.cfg").mkdir(parents=True)
    (src / "pxelinux.cfg/default").write_text("DEFAULT l\nLABEL l\nKERNEL vmlinuz-none\nAPPEND ip=dhcp\n")
    with pytest.raises(BootTestError, match="names vmlinuz-none, which is in none of"):
        boot_target(target(tmp_path, tftp=src), tmp_path / "work")


def test_cli_without_a_build_says_run_doit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    template = Path(__file__).parent / "boot" / "cluster.yaml"
    spec = tmp_path / "cluster.yaml"
    spec.write_text(template.read_text().replace("@KVER@", "6.1.0-0-amd64").replace("@METHOD@", "overlay"))
    code = main(["-f", str(spec), "boottest", "--build", str(tmp_path / "build")])
    assert code == 1
    assert "pxelinux.cfg does not exist: run `doit` first" in capsys.readouterr().err


# -- the build's manifest applied to the served shares ---------------------------------------------------


def _manifest(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    import json

    path = tmp_path / "build" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 1, "cluster": "t", "entries": entries}))
    return path


def test_manifest_entries_under_the_shares_are_applied_like_apply(tmp_path: Path) -> None:
    from pipeline.boottest.shares import apply_share_entries

    ro, rw = tmp_path / "ro", tmp_path / "rw"
    (ro / "etc").mkdir(parents=True)
    rw.mkdir()
    (ro / "etc/hostname").write_text("localhost\n")
    (tmp_path / "build/gateway/clients/etc").mkdir(parents=True)
    (tmp_path / "build/gateway/clients/etc/motd").write_text("hi\n")
    skel = "/clients/usr/lib/nfsroot/skel/etc/hostname"
    manifest = _manifest(
        tmp_path,
        [
            {"path": "/clients/etc/hostname", "kind": "symlink", "target": "/var/local/hostname", "preserve": skel},
            {"path": "/clients/var/local", "kind": "dir", "mode": "0755"},
            {"path": "/workers/home", "kind": "dir", "mode": "0755"},
            {"path": "/clients/etc/motd", "kind": "file", "mode": "0600", "staged": "gateway/clients/etc/motd"},
            {"path": "/srv/tftp/pxelinux.cfg", "kind": "dir", "mode": "0755"},
        ],
    )
    applied = apply_share_entries(manifest, manifest.parent, {"/clients": ro, "/workers": rw})
    assert applied == ["/clients/etc/hostname", "/clients/etc/motd", "/clients/var/local", "/workers/home"]
    assert os.readlink(ro / "etc/hostname") == "/var/local/hostname"
    assert (ro / "usr/lib/nfsroot/skel/etc/hostname").read_text() == "localhost\n"
    assert (ro / "var/local").is_dir() and (rw / "home").is_dir()
    assert (ro / "etc/motd").read_text() == "hi\n" and (ro / "etc/motd").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "srv").exists()


def test_manifest_entry_escaping_its_share_is_refused(tmp_path: Path) -> None:
    from pipeline.boottest.shares import apply_share_entries

    (tmp_path / "ro").mkdir()
    manifest = _manifest(tmp_path, [{"path": "/clients/../etc/evil", "kind": "dir", "mode": "0755"}])
    with pytest.raises(BootTestError, match="escapes its share"):
        apply_share_entries(manifest, manifest.parent, {"/clients": tmp_path / "ro"})
    assert not (tmp_path / "etc").exists()


# -- watching a VM (a stand-in process writes the serial log) ----------------------------------------------


def _vm(tmp_path: Path, argv: list[str], serial: str) -> VmRun:
    log = tmp_path / "serial.log"
    log.write_text(serial)
    run = VmRun(NODE, log, Daemon("stand-in", argv, tmp_path / "proc.log").start())
    run.started = time.monotonic()
    return run


def _until_over(run: VmRun, timeout: float) -> None:
    deadline = time.monotonic() + 20
    while not run.poll(timeout):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_vm_that_exits_after_a_panic_is_diagnosed(tmp_path: Path) -> None:
    run = _vm(tmp_path, ["true"], "Linux version 6.1\nKernel panic - not syncing: Attempted to kill init!\n")
    _until_over(run, timeout=60)
    assert run.failure == "kernel panic: Attempted to kill init!"
    assert run.milestones.keys() == {"kernel"}


def test_vm_that_exits_before_reporting_fails(tmp_path: Path) -> None:
    run = _vm(tmp_path, ["true"], "Linux version 6.1\nBegin: Running /scripts/init-bottom ... done.\n")
    _until_over(run, timeout=60)
    assert run.failure == "the node powered off or reset early (last milestone: init_bottom)"


def test_vm_that_hangs_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    run = _vm(tmp_path, ["sleep", "60"], "Linux version 6.1\n")
    _until_over(run, timeout=1)
    assert run.failure == "timed out after 1s (last milestone: kernel)"
    assert not run.daemon.alive()
    (tmp_path / "s").mkdir()
    silent = _vm(tmp_path / "s", ["sleep", "60"], "")
    _until_over(silent, timeout=1)
    assert silent.failure is not None and silent.failure.startswith("nothing on the serial console after 1s")
    assert not silent.daemon.alive()


def test_stale_namespaces_of_killed_runs_are_swept_and_live_ones_kept() -> None:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "root and iproute2 for network namespaces")
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    dead = f"{NETNS_PREFIX}{pid_max + 1}-abcdef"  # above pid_max: no process can have it
    alive = f"{NETNS_PREFIX}{os.getpid()}-abcdef"
    other = f"someone-else-{pid_max + 1}"
    for name in (dead, alive, other):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert dead in sweep_stale_namespaces()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert dead not in left and alive in left and other in left
    finally:
        for name in (dead, alive, other):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
