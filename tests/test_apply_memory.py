"""Apply keeps an original of any size without reading it whole (issue 12 defect 7, apply's backup)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.deploy_helpers import make_build, make_tree

ORIGINAL_SIZE = 400 << 20  # a large initrd or image, sparse so the test costs no disk until it is copied
PEAK_LIMIT_KB = 160 << 10  # the interpreter with pydantic is ~60 MB; reading the original whole would add 400


def test_backing_up_a_large_original_keeps_memory_flat(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/srv/big.img": "small replacement\n"})
    target = make_tree(tmp_path / "t", {"/srv/.keep": ""})
    with open(target / "srv/big.img", "wb") as handle:
        handle.truncate(ORIGINAL_SIZE)
        handle.seek(ORIGINAL_SIZE // 2)
        handle.write(b"marker")
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
    assert (target / "srv/big.img").read_text() == "small replacement\n"
    kept = target / backup_dir.lstrip("/") / "srv/big.img"
    assert kept.stat().st_size == ORIGINAL_SIZE
    with open(kept, "rb") as handle:
        handle.seek(ORIGINAL_SIZE // 2)
        assert handle.read(6) == b"marker"
    assert int(peak_kb) < PEAK_LIMIT_KB, f"apply peaked at {int(peak_kb) >> 10} MiB"
    print(f"apply peak VmHWM: {int(peak_kb) >> 10} MiB")
