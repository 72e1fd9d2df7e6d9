"""The rendered boot script, run under dash and busybox sh against a fake node and a fake gateway."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.render.bootscript import render_bootscript
from tests.bootscript.harness import (
    CMDLINE,
    HOSTILE_SPEC,
    NODE_ID,
    SKEL_HOSTS,
    Boot,
    FakeNode,
    ci,
    cluster_from,
    shell_argv,
    spec,
)

SHELLS = ["dash", "busybox"]
HOSTNAME = f"worker-node-{NODE_ID}"
OTHER_MAC = "52:54:00:AB:cd:01"
OTHER_ID = "525400abcd01"
CMDLINE_WITHOUT_BOOTIF = CMDLINE.replace(" BOOTIF=01-00-23-24-94-34-ae", "")


def make_node(tmp_path: Path, **changes: Any) -> FakeNode:
    node = FakeNode(tmp_path, cluster_from(spec(**changes)))
    node.write_root("usr/lib/nfsroot/skel/etc/adjtime", "0.0 0 0.0\n0\nUTC\n")
    node.write_root("usr/lib/nfsroot/skel/etc/ssh/ssh_host_ed25519_key", "PRIVATE\n", mode=0o600)
    return node


def boot(node: FakeNode, shell: str, env: dict[str, str] | None = None, kmsg: bool = True, tools: str = "host") -> Boot:
    before = node.root_snapshot()
    result = node.boot(shell, render_bootscript(node.cluster), env, kmsg=kmsg, tools=tools)
    # Whatever happened, nothing was written to the read-only root: its only change is the mounts.
    after = node.root_snapshot()
    mounted = {path for path, kind in after.items() if kind == "mounted"}
    assert {p: k for p, k in after.items() if p not in mounted} == {
        p: k for p, k in before.items() if p not in mounted and not any(p.startswith(m + "/") for m in mounted)
    }
    return result


def record(node: FakeNode, node_id: str = NODE_ID) -> dict[str, str]:
    lines = (node.node_dir(node_id) / "nfsroot-boot").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def assert_booted(
    node: FakeNode, result: Boot, node_id: str = NODE_ID, hostname: str | None = None, tools: str = "host"
) -> None:
    hostname = hostname or f"worker-node-{node_id}"
    assert result.returncode == 0, result.stderr
    # Nothing from the shell itself (no "not found"): at most our log, when /dev/kmsg is missing.
    assert all(line.startswith("nfsroot: ") for line in result.stderr.splitlines()), result.stderr
    d = node.node_dir(node_id)
    assert (d / "hostname").read_text() == hostname + "\n"
    assert (d / "hosts").read_text() == SKEL_HOSTS + f"127.0.0.1 {hostname}\n::1 {hostname}\n"
    assert (d / "cmdline").read_text() == (node.proc / "cmdline").read_text()
    if tools == "klibc":  # no hostname program: straight to the kernel
        assert (node.proc / "sys/kernel/hostname").read_text() == hostname + "\n"
    else:
        assert f"hostname {hostname}" in result.calls
    assert record(node, node_id)["result"] == "ok"
    assert record(node, node_id)["hostname"] == hostname
    assert not [p for p in node.gateway.rglob("*") if "nfsroot-tmp" in p.name]


@pytest.mark.parametrize("shell", SHELLS)
def test_first_boot_with_bootif(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert_booted(node, result)
    root, run = node.root, node.run
    assert result.calls == [
        f"hostname {HOSTNAME}",
        f"nfsmount -o rw 192.168.0.254:/workers {run}/nfsroot/share",
        f"umount {run}/nfsroot/share",
        f"nfsmount -o rw 192.168.0.254:/workers/{NODE_ID} {root}/var/local",
        f"nfsmount -o rw 192.168.0.254:/workers/home {root}/home",
    ]
    d = node.node_dir()
    # Seeded from the skeleton, mode kept (a private key stays private).
    assert (d / "adjtime").read_text() == "0.0 0 0.0\n0\nUTC\n"
    key = d / "ssh" / "ssh_host_ed25519_key"
    assert key.read_text() == "PRIVATE\n"
    assert key.stat().st_mode & 0o777 == 0o600
    assert record(node) == {
        "cluster": "homelab",
        "id": NODE_ID,
        "id_source": "bootif",
        "hostname": HOSTNAME,
        "hostname_source": "pattern",
        "mounts": "/var/local /home",
        "result": "ok",
    }
    # Every step is logged to /dev/kmsg with the prefix; none to the console.
    assert not (node.run / "nfsroot").exists()  # the temporary mount point is gone
    assert result.kmsg and all(line.startswith("nfsroot: ") for line in result.kmsg)
    assert f"nfsroot: node id {NODE_ID} from BOOTIF (environment)" in result.kmsg
    assert "nfsroot: done: ok" in result.kmsg
    assert result.stderr == ""


@pytest.mark.parametrize("shell", SHELLS)
def test_bootif_from_the_kernel_command_line(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.remove_interface("eth0")  # the id must come from the command line, not an interface
    result = boot(node, shell)
    assert_booted(node, result)
    assert f"nfsroot: node id {NODE_ID} from BOOTIF (kernel command line)" in result.kmsg


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("bootif", ["01-00-23-24-94-34-AE", "00:23:24:94:34:Ae"], ids=["upper", "grub"])
def test_bootif_forms(shell: str, bootif: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE_WITHOUT_BOOTIF)
    assert_booted(node, boot(node, shell, {"BOOTIF": bootif}))


@pytest.mark.parametrize("shell", SHELLS)
def test_without_bootif_the_interface_ipconfig_configured(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE_WITHOUT_BOOTIF)
    node.add_interface("eth1", OTHER_MAC)
    (node.run / "net-eth1.conf").write_text("DEVICE='eth1'\nPROTO='dhcp'\nIPV4ADDR='192.168.0.4'\n")
    result = boot(node, shell)
    assert_booted(node, result, OTHER_ID)
    assert record(node, OTHER_ID)["id_source"] == "ipconfig:eth1"
    assert "nfsroot: no BOOTIF (pxelinux SYSAPPEND 2 not set, or not booted by pxelinux)" in result.kmsg


@pytest.mark.parametrize("shell", SHELLS)
def test_exported_device_picks_among_ipconfig_results(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE_WITHOUT_BOOTIF)
    node.add_interface("eth1", OTHER_MAC)
    (node.run / "net-eth0.conf").write_text("DEVICE='eth0'\n")
    (node.run / "net-eth1.conf").write_text("DEVICE='eth1'\n")
    result = boot(node, shell, {"DEVICE": "eth1"})
    assert_booted(node, result, OTHER_ID)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "bootif",
    [
        "01-00-23-24-94-34",  # truncated: must not be read as the bare MAC 01:00:23:24:94:34
        "00-23-24-94-34-ae",  # no ARP type
        "06-00-23-24-94-34-ae",  # not Ethernet
        "01-00-23-24-94-34-ae-ff",
        "01-00-23-24-94-3g-ae",
        "01-00-00-00-00-00-00",
        "01-00:23-24-94-34-ae",
        "01-$(touch${IFS}PWNED)-*",
    ],
)
def test_malformed_bootif_falls_back_to_the_first_non_loopback_interface(
    shell: str, bootif: str, tmp_path: Path
) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE.replace("BOOTIF=01-00-23-24-94-34-ae", f"BOOTIF={bootif}"))
    node.remove_interface("eth0")
    node.add_interface("a-loop", "02:00:00:00:00:01", flags="0x9")  # sorts first, but a loopback
    node.add_interface("b-virtual", "00:00:00:00:00:00")  # no address to speak of
    node.add_interface("eth7", OTHER_MAC)
    result = boot(node, shell)
    assert_booted(node, result, OTHER_ID)
    assert record(node, OTHER_ID)["id_source"] == "interface:eth7"
    assert f"nfsroot: ignoring malformed BOOTIF={bootif} (kernel command line)" in result.kmsg
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("policy", ["panic", "continue"])
def test_no_node_id_at_all(shell: str, policy: str, tmp_path: Path) -> None:
    node = make_node(tmp_path, boot={"merge": {"on_failure": policy}})
    node.set_cmdline(CMDLINE_WITHOUT_BOOTIF)
    node.remove_interface("eth0")
    result = boot(node, shell, {"BOOTIF": "01-zz-23-24-94-34-ae"})
    assert not [c for c in result.calls if c.startswith("nfsmount")]
    message = "cannot determine this node's id: no usable BOOTIF, ipconfig result or network interface"
    assert f"nfsroot: ERROR: {message}" in result.kmsg
    if policy == "panic":
        assert result.returncode == 1
        assert result.calls[-1] == f"panic nfsroot: {message} (boot.on_failure is panic)"
    else:
        assert result.returncode == 0
        assert not [c for c in result.calls if c.startswith("panic")]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_mount_that_fails_then_succeeds_is_retried_with_backoff(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.fail_mount(f"/workers/{NODE_ID}", 3)
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert_booted(node, result)
    attempts = [c for c in result.calls if c.startswith(f"nfsmount -o rw 192.168.0.254:/workers/{NODE_ID} ")]
    assert len(attempts) == 4
    assert [c for c in result.calls if c.startswith("sleep")] == ["sleep 1", "sleep 2", "sleep 4"]
    assert any("failed (attempt 3): nfsmount: portmap: timed out" in line for line in result.kmsg)


@pytest.mark.parametrize("shell", SHELLS)
def test_permanent_failure_panics(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)  # on_failure defaults to panic
    node.fail_mount("/workers/home", "always")
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 1
    tries = [c for c in result.calls if c.startswith("nfsmount -o rw 192.168.0.254:/workers/home ")]
    assert len(tries) == 1 + 3  # boot.mount_retries is 3
    assert [c for c in result.calls if c.startswith("sleep")] == ["sleep 1", "sleep 2", "sleep 4"]
    message = "cannot mount 192.168.0.254:/workers/home on /home"
    assert result.calls[-1] == f"panic nfsroot: {message} (boot.on_failure is panic)"
    # Stopped right there: no generated files, but the record tells the gateway why.
    assert not (node.node_dir() / "hosts").exists()
    assert record(node)["result"] == f"failed: {message}"
    assert record(node)["mounts"] == "/var/local"


@pytest.mark.parametrize("shell", SHELLS)
def test_permanent_failure_with_continue_boots_on(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path, boot={"merge": {"on_failure": "continue"}})
    node.fail_mount("/workers/home", "always")
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0
    assert not [c for c in result.calls if c.startswith("panic")]
    # What did not depend on /home was done.
    assert (node.node_dir() / "hosts").read_text().endswith(f"::1 {HOSTNAME}\n")
    assert (node.node_dir() / "adjtime").exists()
    assert record(node)["result"] == "failed: cannot mount 192.168.0.254:/workers/home on /home"
    assert "nfsroot: boot.on_failure is continue: booting on" in result.kmsg


@pytest.mark.parametrize("shell", SHELLS)
def test_node_directory_failure_with_continue_skips_per_node_work(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path, boot={"merge": {"on_failure": "continue"}})
    node.fail_mount("/workers", "always")
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0
    assert not node.node_dir().exists()
    assert not [c for c in result.calls if f"/workers/{NODE_ID}" in c]
    assert f"nfsmount -o rw 192.168.0.254:/workers/home {node.root}/home" in result.calls
    assert "nfsroot: skipping /var/local: this node's directory could not be created" in result.kmsg
    assert "nfsroot: skipping /var/local/hosts: /var/local is not mounted" in result.kmsg


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_mount_point_is_a_clear_failure(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node.root / "home").rmdir()
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 1
    message = "mount point /home does not exist in the read-only root (create it in the root share)"
    assert f"nfsroot: ERROR: {message}" in result.kmsg
    assert result.calls[-1] == f"panic nfsroot: {message} (boot.on_failure is panic)"
    assert not [c for c in result.calls if c.endswith(f"{node.root}/home")]


@pytest.mark.parametrize("shell", SHELLS)
def test_second_boot_is_idempotent_and_keeps_the_nodes_changes(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    env = {"BOOTIF": "01-00-23-24-94-34-ae"}
    assert_booted(node, boot(node, shell, env))
    d = node.node_dir()
    first = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    # The node changes a seeded file and its ssh key; the skeleton changes too (a new image).
    (d / "adjtime").write_text("changed by the node\n")
    (d / "ssh" / "ssh_host_ed25519_key").write_text("NODE'S OWN KEY\n")
    node.write_root("usr/lib/nfsroot/skel/etc/adjtime", "new image\n")
    node.reboot()
    node.set_cmdline(CMDLINE + " quiet")
    second = boot(node, shell, env)
    assert_booted(node, second)
    assert (d / "adjtime").read_text() == "changed by the node\n"
    assert (d / "ssh" / "ssh_host_ed25519_key").read_text() == "NODE'S OWN KEY\n"
    assert "nfsroot: keeping this node's /var/local/adjtime" in second.kmsg
    # Generated files are rewritten, not appended to.
    assert (d / "hosts").read_bytes() == first[Path("hosts")]
    assert (d / "hostname").read_bytes() == first[Path("hostname")]
    assert (d / "cmdline").read_text() == CMDLINE + " quiet\n"
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == sorted(
        [*first, Path("ssh")]  # nothing new appeared
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_hostname_override_from_the_command_line(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE + " nfsroot.hostname=db-1")
    result = boot(node, shell)
    assert_booted(node, result, hostname="db-1")
    assert record(node)["hostname_source"] == "cmdline"
    assert node.node_dir().name == NODE_ID  # the directory still follows the MAC


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "hostile",
    [
        "$(touch${IFS}PWNED)",
        "`touch${IFS}PWNED`",
        "-rf",
        "a'b",
        "db-1.example.org",
        "*",
        "trailing-",
        "",
        "x" * 64,
        "a;touch${IFS}PWNED",
    ],
)
def test_hostile_hostname_override_is_ignored(shell: str, hostile: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.set_cmdline(CMDLINE + f" nfsroot.hostname={hostile}")
    result = boot(node, shell)
    assert_booted(node, result)
    assert record(node)["hostname_source"] == "pattern"
    assert f"nfsroot: ignoring nfsroot.hostname={hostile}: not an RFC 1123 label" in result.kmsg
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_hosts_without_a_skeleton_falls_back_to_localhost(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node.root / "usr/lib/nfsroot/skel/etc/hosts").unlink()
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0
    assert (node.node_dir() / "hosts").read_text() == (
        f"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.0.1 {HOSTNAME}\n::1 {HOSTNAME}\n"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_hosts_skeleton_without_final_newline(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.write_root("usr/lib/nfsroot/skel/etc/hosts", "127.0.0.1 localhost")
    boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert (node.node_dir() / "hosts").read_text() == f"127.0.0.1 localhost\n127.0.0.1 {HOSTNAME}\n::1 {HOSTNAME}\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_skeleton_leaves_the_target_absent(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (node.root / "usr/lib/nfsroot/skel/etc/adjtime").unlink()
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert_booted(node, result)
    assert not (node.node_dir() / "adjtime").exists()
    assert "nfsroot: no skeleton /usr/lib/nfsroot/skel/etc/adjtime; /var/local/adjtime stays absent" in result.kmsg


@pytest.mark.parametrize("shell", SHELLS)
def test_without_kmsg_the_log_goes_to_stderr(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"}, kmsg=False)
    assert_booted(node, result)
    assert not (tmp_path / "no-kmsg").exists()  # never created
    assert f"nfsroot: node id {NODE_ID} from BOOTIF (environment)" in result.stderr.splitlines()
    assert "nfsroot: done: ok" in result.stderr.splitlines()


@pytest.mark.parametrize("shell", SHELLS)
def test_prereqs_only_answers(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    script = tmp_path / "nfsroot"
    script.write_bytes(render_bootscript(node.cluster))
    done = subprocess.run(
        [*shell_argv(shell), str(script), "prereqs"], capture_output=True, text=True, check=False, env={}
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "\n", "")


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_but_valid_spec_boots(shell: str, tmp_path: Path) -> None:
    cluster = cluster_from(HOSTILE_SPEC)
    node = FakeNode(tmp_path, cluster)
    node.write_root("usr/lib/nfsroot/skel/etc/-x", "dash-x\n")
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0, result.kmsg
    root, run = node.root, node.run
    assert [c for c in result.calls if c.startswith("nfsmount")] == [
        f"nfsmount -o rw,nolock,vers=3,port=2049 192.168.0.254:/srv/@a+b/.x {run}/nfsroot/share",
        f"nfsmount -o tcp,rw 192.168.0.254:/-b {run}/nfsroot/share",
        f"nfsmount -o rw,nolock,vers=3,port=2049 192.168.0.254:/srv/@a+b/.x/{NODE_ID} {root}/var/-local",
        f"nfsmount -o tcp,rw 192.168.0.254:/-b/.../{NODE_ID} {root}/-o",
        f"nfsmount -o rw,soft,timeo=600 192.168.0.254:/srv/@a+b/.x/h/-- {root}/home/+@",
    ]
    name = f"n{NODE_ID}-{NODE_ID}"
    assert f"hostname {name}" in result.calls
    assert (node.gateway / f"srv/@a+b/.x/{NODE_ID}/hostname").read_text() == name + "\n"
    assert (node.gateway / f"-b/.../{NODE_ID}/h").read_text().endswith(f"::1 {name}\n")
    assert (node.gateway / "srv/@a+b/.x/h/--/-x").read_text() == "dash-x\n"
    assert (node.gateway / f"srv/@a+b/.x/{NODE_ID}/nfsroot-boot").read_text().endswith("result=ok\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_spec_without_seeded_symlinks(shell: str, tmp_path: Path) -> None:
    # The seed's own shape: only hostname and hosts are symlinked, so the script has no seeding code.
    node = FakeNode(
        tmp_path,
        cluster_from(spec(symlinks={"/etc/hostname": "/var/local/hostname", "/etc/hosts": "/var/local/hosts"})),
    )
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert_booted(node, result)
    assert sorted(p.name for p in node.node_dir().iterdir()) == ["cmdline", "hostname", "hosts", "nfsroot-boot"]


@pytest.mark.parametrize(
    ("shell", "tools"), [("busybox", "busybox"), ("klibc", "klibc"), ("dash", "klibc"), ("busybox", "klibc")]
)
def test_with_only_the_tools_of_an_initramfs(shell: str, tools: str, tmp_path: Path) -> None:
    # busybox's applets, or klibc's few tools (no cp, rm, chmod, hostname, tr), instead of the host's.
    node = make_node(tmp_path)
    node.fail_mount(f"/workers/{NODE_ID}", 1)
    env = {"BOOTIF": "01-00-23-24-94-34-AE"}
    first = boot(node, shell, env, tools=tools)
    assert_booted(node, first, tools=tools)
    assert "sleep 1" in first.calls
    key = node.node_dir() / "ssh" / "ssh_host_ed25519_key"
    assert key.read_text() == "PRIVATE\n"
    assert key.stat().st_mode & 0o777 == 0o600
    if tools == "klibc":
        assert any(line.endswith("with mode 0600 (no cp in this initramfs)") for line in first.kmsg)
    (node.node_dir() / "adjtime").write_text("node's own\n")
    node.reboot()
    second = boot(node, shell, env, tools=tools)
    assert_booted(node, second, tools=tools)
    assert (node.node_dir() / "adjtime").read_text() == "node's own\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_generated_file_whose_content_cannot_be_read_is_not_written(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path, boot={"merge": {"on_failure": "continue"}})
    (node.proc / "cmdline").unlink()
    (node.proc / "cmdline").mkdir()  # cat fails on it, as it would on an unreadable /proc
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0
    assert not (node.node_dir() / "cmdline").exists()
    assert (node.node_dir() / "hosts").exists()
    assert record(node)["result"] == "failed: cannot write /var/local/cmdline"


REAL_FUNCTIONS = Path("/usr/share/initramfs-tools/scripts/functions")


@pytest.mark.parametrize("shell", SHELLS)
def test_sourcing_the_real_initramfs_tools_functions(shell: str, tmp_path: Path) -> None:
    # The script sources /scripts/functions for panic; nothing in it may clash with the script's names.
    if not REAL_FUNCTIONS.exists():
        message = f"{REAL_FUNCTIONS} is missing (apt package initramfs-tools)"
        if ci():
            pytest.fail(message)
        pytest.skip(message)
    node = make_node(tmp_path)
    env = {"BOOTIF": "01-00-23-24-94-34-ae", "NFSROOT_FUNCTIONS": str(REAL_FUNCTIONS), "quiet": "n", "panic": ""}
    assert_booted(node, boot(node, shell, env))


@pytest.mark.parametrize("shell", SHELLS)
def test_panic_policy_without_initramfs_tools_panic_still_stops(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.fail_mount("/workers/home", "always")
    env = {"BOOTIF": "01-00-23-24-94-34-ae", "NFSROOT_FUNCTIONS": str(tmp_path / "none")}
    result = boot(node, shell, env)
    assert result.returncode == 1
    assert result.kmsg[-1] == "nfsroot: panic is not available; stopping this script"
    assert not (node.node_dir() / "hosts").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_temporary_file_planted_by_the_node_is_not_followed(shell: str, tmp_path: Path) -> None:
    node = make_node(tmp_path)
    victim = node.gateway / "workers" / "home" / "victim"
    victim.write_text("untouched\n")
    d = node.node_dir()
    d.mkdir(parents=True)
    (d / "hosts.nfsroot-tmp").symlink_to(node.root / "home" / "victim")  # where /home will be mounted
    (d / "cmdline.nfsroot-tmp").write_text("stale half file")
    result = boot(node, shell, {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert_booted(node, result)
    assert victim.read_text() == "untouched\n"
