"""The storage unit's script for real, as root: loop images made, checked, grown and mounted in a temp dir, local
disks found by label (a loop device stands in for the partition), the fallbacks, and hostile configuration."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.render.storage import SCRIPT_TEXT
from tests.prereq import need, require_program

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MIB = 1 << 20


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    need(os.geteuid() == 0, "needs root (loop devices, mount)")
    for program in ("mkfs.ext4", "losetup", "findmnt", "dash"):
        require_program(program)
    (tmp_path / "storage").write_text(SCRIPT_TEXT)
    (tmp_path / "mnt").mkdir()
    yield tmp_path
    # Whatever a failed assertion left mounted under the temp dir goes, deepest first.
    listed = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False)
    for target in sorted((t for t in listed.stdout.split() if t.startswith(str(tmp_path))), reverse=True):
        subprocess.run(["umount", target], check=False)


def storage(
    place: Path, action: str, *lines: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    conf = place / "storage.conf"
    if lines:
        conf.write_text("".join(line + "\n" for line in lines))
    return subprocess.run(
        [require_program("dash"), str(place / "storage"), action, str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": PATH, **(env or {})},
    )


def mounted(path: Path) -> tuple[str, str] | None:
    found = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--mountpoint", str(path)], capture_output=True, text=True
    )
    if found.returncode != 0:
        return None
    fstype, source = found.stdout.split()[:2]
    return fstype, source


def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def image_line(place: Path, size: int, fs: str = "ext4") -> str:
    return f"image {place}/mnt {size} {fs} {place}/node/images{place}/mnt.img - -"


def test_an_ext4_image_is_made_checked_grown_and_kept(place: Path) -> None:
    image = place / f"node/images{place}/mnt.img"
    first = storage(place, "start", image_line(place, 64 * MIB))
    assert first.returncode == 0, first.stderr
    assert f"made {image} ({64 * MIB} bytes, ext4)" in first.stderr
    assert mounted(place / "mnt") is not None and mounted(place / "mnt")[0] == "ext4"  # type: ignore[index]
    assert image.stat().st_size == 64 * MIB
    assert image.stat().st_blocks * 512 < 64 * MIB  # sparse: the gateway stores what was written
    (place / "mnt/kept").write_text("image data\n")
    stopped = storage(place, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert mounted(place / "mnt") is None

    again = storage(place, "start")
    assert again.returncode == 0, again.stderr
    assert "clean" in again.stderr  # e2fsck -p ran on the existing image
    assert (place / "mnt/kept").read_text() == "image data\n"
    before = fs_bytes(place / "mnt")
    assert storage(place, "start").returncode == 0  # a restart with it mounted changes nothing
    assert storage(place, "stop").returncode == 0

    grown = storage(place, "start", image_line(place, 128 * MIB))
    assert grown.returncode == 0, grown.stderr
    assert f"grew {image} from {64 * MIB} to {128 * MIB} bytes" in grown.stderr
    assert image.stat().st_size == 128 * MIB
    assert fs_bytes(place / "mnt") > before + 50 * MIB
    assert (place / "mnt/kept").read_text() == "image data\n"
    assert storage(place, "stop").returncode == 0

    smaller = storage(place, "start", image_line(place, 32 * MIB))
    assert smaller.returncode == 0, smaller.stderr
    assert "images are never shrunk" in smaller.stderr and image.stat().st_size == 128 * MIB
    assert storage(place, "stop").returncode == 0


def test_a_damaged_image_is_repaired_or_refused(place: Path) -> None:
    image = place / f"node/images{place}/mnt.img"
    assert storage(place, "start", image_line(place, 64 * MIB)).returncode == 0
    assert storage(place, "stop").returncode == 0
    with image.open("r+b") as f:  # wipe the primary superblock: e2fsck -p refuses to guess
        f.seek(1024)
        f.write(b"\0" * 1024)
    broken = storage(place, "start")
    assert broken.returncode != 0
    assert "left errors" in broken.stderr and "cannot set up the image" in broken.stderr
    assert mounted(place / "mnt") is None


def test_an_xfs_image_is_made_and_grown_mounted(place: Path) -> None:
    require_program("mkfs.xfs")
    first = storage(place, "start", image_line(place, 300 * MIB, "xfs"))
    assert first.returncode == 0, first.stderr
    assert mounted(place / "mnt")[0] == "xfs"  # type: ignore[index]
    before = fs_bytes(place / "mnt")
    assert storage(place, "stop").returncode == 0
    grown = storage(place, "start", image_line(place, 400 * MIB, "xfs"))
    assert grown.returncode == 0, grown.stderr
    assert fs_bytes(place / "mnt") > before + 50 * MIB
    assert storage(place, "stop").returncode == 0


@pytest.fixture
def labelled_disk(place: Path) -> Iterator[str]:
    """A loop device holding an ext4 file system with a fresh label: the node's local partition."""
    label = "nrt" + secrets.token_hex(4)
    disk = place / "disk.img"
    with disk.open("wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, str(disk)], check=True, env={"PATH": PATH})
    dev = subprocess.run(["losetup", "-f", "--show", str(disk)], capture_output=True, text=True, check=True)
    yield label
    subprocess.run(["umount", str(place / "mnt")], capture_output=True, check=False)
    subprocess.run(["losetup", "-d", dev.stdout.strip()], check=False)


def test_a_disk_is_found_by_label_checked_and_mounted(place: Path, labelled_disk: str) -> None:
    done = storage(place, "start", f"disk {place}/mnt - - - LABEL={labelled_disk} fail")
    assert done.returncode == 0, done.stderr
    fstype, source = mounted(place / "mnt")  # type: ignore[misc]
    assert fstype == "ext4" and source.startswith("/dev/loop")
    assert storage(place, "stop").returncode == 0


def test_an_absent_disk_falls_back_or_fails(place: Path) -> None:
    absent = "LABEL=nrt" + secrets.token_hex(4)
    quick = {"NFSROOT_DISK_WAIT": "0"}
    failed = storage(place, "start", f"disk {place}/mnt - - - {absent} fail", env=quick)
    assert failed.returncode != 0 and f"no partition {absent} on this node" in failed.stderr
    assert mounted(place / "mnt") is None

    tmpfs = storage(place, "start", f"disk {place}/mnt {16 * MIB} - - {absent} tmpfs", env=quick)
    assert tmpfs.returncode == 0, tmpfs.stderr
    assert mounted(place / "mnt")[0] == "tmpfs"  # type: ignore[index]
    assert fs_bytes(place / "mnt") == 16 * MIB
    assert storage(place, "stop").returncode == 0

    line = f"disk {place}/mnt {64 * MIB} ext4 {place}/node/images/d.img {absent} image"
    image = storage(place, "start", line, env=quick)
    assert image.returncode == 0, image.stderr
    assert mounted(place / "mnt")[0] == "ext4" and (place / "node/images/d.img").is_file()  # type: ignore[index]
    assert storage(place, "stop").returncode == 0


@pytest.mark.parametrize(
    "line",
    [
        "image {mnt} 1048576 ext4 {tmp}/x$(touch${{IFS}}{tmp}/PWNED).img - -",
        "image {mnt} 1048576 ext4 {tmp}/`touch {tmp}/PWNED`.img - -",
        "image {mnt};touch {tmp}/PWNED 1048576 ext4 {tmp}/x.img - -",
        "image {mnt} 1048576 ext4 {tmp}/x.img - - extra",
        "image {mnt} 1048576 ext4",
    ],
)
def test_a_malformed_line_is_refused_and_nothing_runs(place: Path, line: str) -> None:
    done = storage(place, "start", line.format(mnt=place / "mnt", tmp=place))
    assert done.returncode != 0
    assert "ignoring a malformed line" in done.stderr
    assert not (place / "PWNED").exists()
    assert not list(place.glob("*.img")) and mounted(place / "mnt") is None


def test_a_missing_mount_point_fails_and_makes_nothing(place: Path) -> None:
    done = storage(place, "start", f"image {place}/absent {64 * MIB} ext4 {place}/x.img - -")
    assert done.returncode != 0 and "does not exist in the read-only root" in done.stderr
    assert not (place / "x.img").exists()


def test_without_a_configuration_it_does_nothing(place: Path) -> None:
    done = storage(place, "start")
    assert done.returncode == 0 and "nothing to do" in done.stderr


def test_the_script_is_shellcheck_clean(place: Path) -> None:
    done = subprocess.run(
        [require_program("shellcheck"), "-s", "sh", str(place / "storage")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
