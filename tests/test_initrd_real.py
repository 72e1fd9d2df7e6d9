"""A real Debian initrd built by mkinitramfs: repack and overlay checked with Debian's own tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.archive.compression import Compression
from pipeline.archive.initrd import (
    build_overlay,
    content_name,
    effective_tree,
    order_lines,
    overlay_files,
    repack,
    split_segments,
)
from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from tests.test_initrd_support import real_initrd, require

SCRIPT = b"#!/bin/sh\n# nfsroot init-bottom test script\nexit 0\n"


@pytest.fixture(scope="module")
def distro() -> Path:
    return real_initrd()


@pytest.fixture(scope="module")
def repacked(distro: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repack") / "initrd.repacked.img"
    repack(distro, overlay_files(SCRIPT), out, mtime=0)
    return out


def test_repacked_initrd_is_listed_and_unpacked_by_debian_tools(repacked: Path, tmp_path: Path) -> None:
    listing = subprocess.run([require("lsinitramfs"), str(repacked)], capture_output=True, check=True, text=True)
    names = set(listing.stdout.split())
    assert {"scripts/init-bottom/nfsroot", "conf/conf.d/nfsroot-order", "usr/bin/busybox"} <= names
    dest = tmp_path / "unpacked"
    subprocess.run([require("unmkinitramfs"), str(repacked), str(dest)], capture_output=True, check=True)
    main_dir = dest / "main" if (dest / "main").is_dir() else dest
    script = main_dir / "scripts/init-bottom/nfsroot"
    assert script.read_bytes() == SCRIPT and script.stat().st_mode & 0o777 == 0o755
    order = (main_dir / "scripts/init-bottom/ORDER").read_bytes()
    assert order.endswith(order_lines("nfsroot")) and order.count(b"/scripts/init-bottom/") >= 2
    assert (main_dir / "bin").is_symlink()


def test_repack_changes_nothing_else(distro: Path, repacked: Path) -> None:
    before, after = effective_tree([distro]), effective_tree([repacked])
    assert set(after) - set(before) == {"scripts/init-bottom/nfsroot", "conf/conf.d/nfsroot-order"}
    changed = {n for n in before if not before[n].same_object(after[n])}
    assert changed == {"scripts/init-bottom/ORDER"}
    assert split_segments(repacked)[-1].compression is Compression.ZSTD


def test_repack_is_byte_identical_from_the_same_inputs(distro: Path, repacked: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.img"
    repack(distro, overlay_files(SCRIPT), again, mtime=0, threads=1)
    assert again.read_bytes() == repacked.read_bytes()


def test_early_segments_of_the_real_initrd_survive_repack(distro: Path, repacked: Path) -> None:
    segments = split_segments(distro)
    start = segments[-1].offset
    assert repacked.read_bytes()[:start] == distro.read_bytes()[:start]


def test_overlay_shows_up_in_the_effective_tree(
    distro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = build_overlay(overlay_files(SCRIPT), mtime=0)
    assert data == build_overlay(overlay_files(SCRIPT), mtime=0)
    overlay = tmp_path / content_name(data)
    overlay.write_bytes(data)
    assert main(["initrd", "ls", str(distro), str(overlay)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{overlay}: 1 segment" in out
    assert f"-rwxr-xr-x {len(SCRIPT):>10}  scripts/init-bottom/nfsroot\n" in out
    assert "conf/conf.d/nfsroot-order" in out and "bin -> usr/bin" in out
    assert main(["initrd", "diff", str(distro), f"{distro},{overlay}"]) == EXIT_CHANGES
    diff = capsys.readouterr().out
    assert f"+ -rwxr-xr-x {len(SCRIPT):>9}" in diff and "2 added, 0 removed, 0 changed" in diff
    assert main(["initrd", "diff", f"{distro},{overlay}", f"{distro},{overlay}"]) == EXIT_OK


def test_extract_of_the_real_initrd_matches_unmkinitramfs(repacked: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    assert main(["initrd", "extract", str(repacked), str(ours)]) == EXIT_OK
    theirs = tmp_path / "theirs"
    subprocess.run([require("unmkinitramfs"), str(repacked), str(theirs)], capture_output=True, check=True)
    theirs = theirs / "main" if (theirs / "main").is_dir() else theirs
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(ours), str(theirs)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout[-2000:]


REPACK_CHILD = """
import re, sys
from pathlib import Path
from pipeline.archive.initrd import overlay_files, repack
repack(Path(sys.argv[1]), overlay_files(b"#!/bin/sh\\n"), Path(sys.argv[2]), mtime=0)
print(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
"""


def test_repack_peak_memory_stays_under_200_mb(distro: Path, tmp_path: Path) -> None:
    """The whole process, interpreter included, while a 130 MB archive streams through.

    The peak is the child's own VmHWM: ru_maxrss would also count the parent's memory, which Linux carries
    across the fork and exec that start the child.
    """
    out = tmp_path / "o.img"
    proc = subprocess.run(
        [sys.executable, "-c", REPACK_CHILD, str(distro), str(out)], capture_output=True, text=True, check=True
    )
    peak_kb = int(proc.stdout.strip())
    assert out.stat().st_size > 0
    assert peak_kb < 200 * 1024, f"peak RSS {peak_kb // 1024} MB"
