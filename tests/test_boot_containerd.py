"""containerd on diskless nodes (issue 11 item 4): the real Debian root of test_boot_debian.py plus containerd and
runc (a second cached root), the shipped cluster.yaml with `preset: kubernetes` and /var/lib/containerd on a 2G
per-node ext4 image; the second node is in a second node group, control-plane (its own host names, kernel
argument and a 1G image). `doit`, `nfsroot plan`, `nfsroot apply`, then two nodes boot it twice. In each guest the
verdict unit (pipeline/boottest/verdictunit.py) imports a local image tarball with whiteouts (no registry:
pipeline/boottest/imagetar.py) on the first boot, runs a container with the overlayfs snapshotter on both, and
reports; on the second boot the image must still be there. systemd is the judge, as in test_boot_debian.py.

Slow (each two-node boot takes a minute or two under TCG): marked `boot`. Prerequisites missing: skipped locally,
failed in CI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.boottest.debianroot import clone_root, containerd_recipe, debian_root, installed_kernel
from pipeline.boottest.harness import BootOptions, boot_target
from pipeline.boottest.imagetar import COMMAND, EXPECTED, build_image_tar
from pipeline.boottest.prereqs import missing_prerequisites
from pipeline.boottest.qemu import VmSettings
from pipeline.boottest.realroot import read_verdict
from pipeline.boottest.target import from_cluster
from pipeline.boottest.verdict import GuestReport
from pipeline.boottest.verdictunit import VERDICT_FILE
from pipeline.boottest.verdictunit import install as install_verdict
from pipeline.spec.load import load_cluster
from tests.prereq import need

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parents[1]
MACS = ("52:54:00:c7:d0:01", "52:54:00:c7:d0:02")
IMAGE_TAR = "/usr/local/share/nfsroot-test-image.tar"
CTD = "/var/lib/containerd"
# The second node is in the group control-plane, with its own host names, kernel argument and a smaller image:
# one run proves both that groups reach a real root and that a group's storage is its own.
GROUP = "control-plane"
IMAGE_BYTES = {MACS[0]: 2 << 30, MACS[1]: 1 << 30}
HOSTNAMES = {MACS[0]: "worker-node-525400c7d001", MACS[1]: "control-plane-525400c7d002"}
GROUP_ARG = "nfsroot_group=control-plane"


def _spec(tmp: Path, gateway_root: Path, kernel: str) -> Path:
    """The shipped cluster.yaml on QEMU's user network, with preset: kubernetes and containerd on a 2G image
    (the preset's own 20G would work the same; 2G is what DESIGN.md measured). kubelet's image is the preset's."""
    spec = yaml.safe_load((REPO / "cluster.yaml").read_text())
    spec["gateway"] |= {"address": "10.0.2.2", "network": "10.0.2.0/24"}
    spec["boot"]["kernel"] = kernel
    spec["boot"]["cmdline"] = ["console=ttyS0", "panic=-1"]
    spec["nodes"]["known"] = [{"mac": MACS[0]}, {"mac": MACS[1], "group": GROUP}]
    spec["deploy"] |= {"root": str(gateway_root), "reload": []}
    for w in spec["writable"]:  # nfs-ganesha and NFSACL: see test_boot_debian.py
        w["options"] = ["rw", "noacl"]
    spec["writable"].append({"mount": CTD, "storage": "image", "size": "2G"})
    spec["preset"] = "kubernetes"
    control = [*spec["writable"][:-1], {"mount": CTD, "storage": "image", "size": "1G"}]
    spec["groups"] = {
        GROUP: {
            "hostname": "control-plane-{mac}",
            "boot": {"cmdline": [*spec["boot"]["cmdline"], GROUP_ARG]},
            "writable": control,
        }
    }
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _checks(image: str) -> str:
    """Bash for the verdict: the storage, containerd, the image (imported once), a container run, the preset.
    It runs inside the verdict script: no variable of its own may clobber the script's ($out is the report)."""
    q = shlex.quote
    command = " ".join(q(c) for c in COMMAND)
    return f"""echo "${{P}}host=$(hostname)"
echo "${{P}}group-arg=$(grep -c {q(GROUP_ARG)} /proc/cmdline)"
echo "${{P}}ctd-mount=$(findmnt -n -o FSTYPE,SOURCE --mountpoint {CTD} | tr -s ' ' ,)"
echo "${{P}}storage-unit=$(systemctl is-active nfsroot-storage.service)"
echo "${{P}}storage-log=$(journalctl -b -u nfsroot-storage.service --no-pager -o cat | tr '\n' '|')"
echo "${{P}}containerd=$(systemctl is-active containerd.service)"
if ctr images ls -q | grep -qx {q(image)}; then
  echo "${{P}}image-before=present"
else
  echo "${{P}}image-before=absent"
  if ctd_out=$(ctr images import --snapshotter overlayfs {IMAGE_TAR} 2>&1); then echo "${{P}}import=ok"
  else echo "${{P}}import=$(echo "$ctd_out" | tr '\\n' ' ')"; fi
fi
echo "${{P}}run=$(ctr run --rm --snapshotter overlayfs {q(image)} "nfsroot-test-$node" {command} 2>&1 | tr '\\n' ' ')"
echo "${{P}}snapshots=$(ctr snapshots --snapshotter overlayfs ls 2>/dev/null | tail -n +2 | wc -l)"
echo "${{P}}bridge-nf=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>&1)"
echo "${{P}}ip-forward=$(cat /proc/sys/net/ipv4/ip_forward)"
echo "${{P}}modules=$(grep -oE '^(overlay|br_netfilter) ' /proc/modules | sort | tr '\\n' ' ')"
echo "${{P}}swaps=$(tail -n +2 /proc/swaps | wc -l)"
echo "${{P}}kubelet-mount=$(findmnt -n -o FSTYPE --mountpoint /var/lib/kubelet)"
for d in /etc/kubernetes /etc/cni/net.d /opt/cni/bin /var/lib/cni; do
  if touch "$d/.w-$node" && rm "$d/.w-$node"; then echo "${{P}}preset-writes=$d"; fi
done
"""


def _run(argv: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode in ok, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def _verdict(path: Path) -> GuestReport:
    verdict = read_verdict(path)
    assert verdict is not None, f"no verdict at {path}"
    return verdict


def test_containerd_runs_on_per_node_image_storage_and_keeps_its_image(tmp_path: Path) -> None:
    missing = missing_prerequisites()
    kernel = installed_kernel()
    need(not missing, "missing: " + "; ".join(missing))
    need(bool(kernel), "exactly one kernel in /boot is needed (its modules go into the test root)")
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is missing")
    need(shutil.which("busybox") is not None, "busybox is missing (the container image's only program)")
    started = time.monotonic()
    cached = debian_root(containerd_recipe())
    gw = tmp_path / "gw"
    clients = clone_root(cached, gw / "clients")
    (gw / "workers").mkdir(parents=True)
    for name in (f"vmlinuz-{kernel}", f"initrd.img-{kernel}"):
        shutil.copy2(Path("/boot") / name, clients / "boot" / name)
    image = build_image_tar(clients / IMAGE_TAR.lstrip("/"))
    spec = _spec(tmp_path, gw, kernel)
    cluster, _ = load_cluster(spec)
    nfs_mounts = [w.mount for w in cluster.nfs_writable]
    install_verdict(clients, cluster.node_dir.mount, nfs_mounts, cluster.symlinks, "user", _checks(image))
    prepared = time.monotonic() - started

    doit = [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline/tasks.py"), "-d", str(tmp_path)]
    _run([*doit, "--db-file", str(tmp_path / ".doit.db")], tmp_path)
    nfsroot = [sys.executable, "-m", "pipeline"]
    plan = _run([*nfsroot, "plan", "--no-diff"], tmp_path, ok=(2,))
    assert "from preset kubernetes, /var/lib/kubelet" in plan and "from writable.2" in plan
    _run([*nfsroot, "apply"], tmp_path)
    assert (clients / "etc/systemd/system/local-fs.target.wants/nfsroot-storage.service").is_symlink()

    target = from_cluster(cluster, tmp_path / "build", MACS)
    vm = VmSettings(timeout=900, memory_mb=1024)
    options = BootOptions(share_dirs={"/clients": clients, "/workers": gw / "workers"}, vm=vm)
    verdicts: list[dict[str, GuestReport]] = []
    for boot in (1, 2):
        run = boot_target(target, tmp_path / f"boot{boot}", options)
        for r in run.results:
            print(f"boot {boot} {r.hostname}: {r.timings} {r.summary()}")
        assert all(r.failure is None for r in run.results), [(r.hostname, r.failure, r.serial_log) for r in run.results]
        verdicts.append({node.id: _verdict(gw / "workers" / node.id / VERDICT_FILE) for node in target.nodes})
        for node in target.nodes:
            os.replace(gw / "workers" / node.id / VERDICT_FILE, tmp_path / f"verdict-{boot}-{node.id}")
        for r in run.results:
            assert r.ok, f"boot {boot} {r.hostname}: {r.summary()}"

    for boot, by_node in enumerate(verdicts, start=1):
        for node in target.nodes:
            v = by_node[node.id]
            where = f"boot {boot} {node.hostname}"
            size = IMAGE_BYTES[node.mac]
            assert node.hostname == HOSTNAMES[node.mac] and v.first("host") == node.hostname, where
            assert v.first("group-arg") == ("1" if node.mac == MACS[1] else "0"), where
            assert v.first("state") == "running", f"{where}: {v.first('state')}, failed: {v.first('failed')}"
            assert (v.first("failed") or "").strip() == "", where
            fstype, _, source = (v.first("ctd-mount") or "").partition(",")
            assert fstype == "ext4" and source.startswith("/dev/loop"), f"{where}: {v.first('ctd-mount')}"
            assert v.first("storage-unit") == "active" and v.first("containerd") == "active", where
            assert v.first("image-before") == ("absent" if boot == 1 else "present"), where
            log = v.first("storage-log") or ""
            made = f"made /var/local/images{CTD}.img ({size} bytes, ext4)"
            # Made at the first boot; checked by e2fsck -p (which says "clean") at the second.
            assert (made in log) == (boot == 1), f"{where}: {log}"
            assert (f"/var/local/images{CTD}.img: clean" in log) == (boot == 2), f"{where}: {log}"
            if boot == 1:
                assert v.first("import") == "ok", f"{where}: {v.first('import')}"
            assert (v.first("run") or "").split() == EXPECTED.split(), f"{where}: {v.first('run')}"
            assert v.first("bridge-nf") == "1" and v.first("ip-forward") == "1", where
            assert (v.first("modules") or "").split() == ["br_netfilter", "overlay"], where
            assert v.first("swaps") == "0" and v.first("kubelet-mount") == "ext4", where
            assert set(v.all("preset-writes")) == {"/etc/kubernetes", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni"}
    for node in target.nodes:
        img = gw / "workers" / node.id / "images/var/lib/containerd.img"
        size = IMAGE_BYTES[node.mac]
        assert img.stat().st_size == size
        used = img.stat().st_blocks * 512
        print(f"{node.id}: {img} takes {used >> 20} MiB of {size >> 20} MiB on the gateway")
        assert used < size // 4  # sparse
    assert not (cached / "var/lib/containerd/io.containerd.metadata.v1.bolt").exists()  # the cache is untouched
    print(f"prepared in {prepared:.0f}s, total {time.monotonic() - started:.0f}s")
