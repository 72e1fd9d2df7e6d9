"""Issue 12, defect 11: archive member names cannot inject lines or terminal escapes into what we print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from pipeline.textsafe import printable
from tests.test_initrd_support import raw_archive

EVIL = "etc/x\nNo changes. The target matches the build.\x1b[2J\r\x85\x7f\\"
SHOWN = "etc/x\\nNo changes. The target matches the build.\\x1b[2J\\r\\x85\\x7f\\\\"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control character but the newline ending a line


def test_printable_escapes_controls_and_backslash_only() -> None:
    assert printable(EVIL) == SHOWN
    assert printable("\t\x00\x1f\x80\x9f") == "\\t\\x00\\x1f\\x80\\x9f"
    assert printable("usr/lib/x86_64-linux-gnu/é ü 日本 \u00a0") == "usr/lib/x86_64-linux-gnu/é ü 日本 \u00a0"


def _hostile(path: Path) -> Path:
    path.write_bytes(
        raw_archive(
            [
                ("etc", 0o40755, b""),
                (EVIL, 0o100644, b"data"),
                ("etc/link", 0o120777, b"target\nfake line\x1b]0;title\x07"),
                ("missing/\x1b[31mred\nline", 0o100644, b"x"),  # parent missing: reported as dropped
                ("etc/bad\udcff\udcfename", 0o100644, b""),  # bytes ff fe: not UTF-8
                ("dev", 0o40755, b""),
                ("dev/\nnull", 0o20666, b""),
            ]
        )
    )
    return path


def _check(text: str, expected_lines: int) -> list[str]:
    lines = text.splitlines()
    assert len(lines) == expected_lines, text
    assert not RAW.search(text), text
    return lines


def test_ls_escapes_member_names_and_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _hostile(tmp_path / "evil.img")
    assert main(["initrd", "ls", str(img)]) == EXIT_OK
    captured = capsys.readouterr()
    # path line, one segment, "effective tree", 6 entries, one dropped entry
    lines = _check(captured.out, 10)
    assert any(line.endswith(f"  {SHOWN}") for line in lines)
    assert any(line.endswith("etc/link -> target\\nfake line\\x1b]0;title\\x07") for line in lines)
    assert any(line.endswith("etc/bad\\udcff\\udcfename") for line in lines)
    assert any(line.startswith("ignored by the kernel: missing/\\x1b[31mred\\nline from evil.img@0") for line in lines)


def test_diff_escapes_member_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(raw_archive([("etc", 0o40755, b"")]))
    img = _hostile(tmp_path / "evil.img")
    assert main(["initrd", "diff", str(empty), str(img)]) == EXIT_CHANGES
    lines = _check(capsys.readouterr().out, 6)  # 5 added, the summary
    assert lines[-1] == "5 added, 0 removed, 0 changed"


def test_extract_messages_escape_member_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _hostile(tmp_path / "evil.img")
    main(["initrd", "extract", str(img), str(tmp_path / "dest")])
    captured = capsys.readouterr()
    _check(captured.out, 1)
    assert not RAW.search(captured.err), captured.err
    assert "missing/\\x1b[31mred\\nline" in captured.err and "dev/\\nnull" in captured.err
    assert (tmp_path / "dest" / EVIL).read_bytes() == b"data"  # the name itself is extracted as it is


def test_errors_escape_file_and_member_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "x\nnfsroot: all good\x1b[0m.img"
    junk.write_bytes(b"not an initrd")
    climbing = tmp_path / "climb\r.img"
    climbing.write_bytes(raw_archive([("../\x1b[2Jescape\n", 0o100644, b"x")]))
    for argv in (["initrd", "ls", str(junk)], ["initrd", "extract", str(climbing), str(tmp_path / "dest")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and not RAW.search(err), err
