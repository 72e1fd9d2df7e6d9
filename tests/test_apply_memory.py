"""Plan and apply handle files of any size without reading them whole (issue 12 defect 7): the original kept
as a backup and the staged file deployed are both streamed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.deploy_helpers import make_build, make_tree

ORIGINAL_SIZE = 256 << 20  # a large initrd or image, sparse so the test costs no disk until it is copied
PEAK_LIMIT_KB = 160 << 10  # the interpreter with pydantic is ~60 MB; reading a file whole would add 256


def _sparse(path: Path) -> bytes:
    """Make a large sparse file with a marker in the middle; returns its content (for the manifest)."""
    with open(path, "wb") as handle:
        handle.truncate(ORIGINAL_SIZE)
        handle.seek(ORIGINAL_SIZE // 2)
        handle.write(b"marker")
    return path.read_bytes()


def _apply_in_child(build: Path, target: Path) -> tuple[str, int]:
    """Apply in a fresh interpreter; (backup dir, peak resident set in KiB)."""
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from pipeline.state.apply import ApplyOptions
        from pipeline.state.deploy import apply_target
        result = apply_target(Path({str(build)!r}), Path({str(target)!r}), ApplyOptions(reload_argv=None))
        print(result.backup_dir)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                print(line.split()[1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    backup_dir, peak_kb = proc.stdout.split()
    return backup_dir, int(peak_kb)


def _assert_is_the_big_file(path: Path) -> None:
    """`path` holds what _sparse wrote: its size, and the marker in the middle."""
    assert path.stat().st_size == ORIGINAL_SIZE
    with open(path, "rb") as handle:
        handle.seek(ORIGINAL_SIZE // 2)
        assert handle.read(6) == b"marker"


def test_backing_up_a_large_original_keeps_memory_flat(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/srv/big.img": "small replacement\n"})
    target = make_tree(tmp_path / "t", {"/srv/.keep": ""})
    _sparse(target / "srv/big.img")
    backup_dir, peak_kb = _apply_in_child(build, target)
    assert (target / "srv/big.img").read_text() == "small replacement\n"
    _assert_is_the_big_file(target / backup_dir.lstrip("/") / "srv/big.img")
    assert peak_kb < PEAK_LIMIT_KB, f"apply peaked at {peak_kb >> 10} MiB"
    print(f"apply (large original) peak VmHWM: {peak_kb >> 10} MiB")


def test_deploying_a_large_staged_file_keeps_memory_flat(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    data = _sparse(tmp_path / "src/big.img")
    build = make_build(tmp_path / "build", {"/srv/big.img": data, "/srv/small": "x\n"})
    del data
    target = make_tree(tmp_path / "t", {"/srv/.keep": ""})
    _backup_dir, peak_kb = _apply_in_child(build, target)
    _assert_is_the_big_file(target / "srv/big.img")
    assert peak_kb < PEAK_LIMIT_KB, f"plan + apply peaked at {peak_kb >> 10} MiB"
    print(f"apply (large staged file) peak VmHWM: {peak_kb >> 10} MiB")
