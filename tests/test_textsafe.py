"""The one escaping helper for human-readable output."""

from __future__ import annotations

import pytest

from pipeline.textsafe import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain/path", "plain/path"),
        ("a\nNo changes.", "a\\nNo changes."),
        ("\x1b[2J", "\\x1b[2J"),
        ("cr\rtab\t", "cr\\rtab\\t"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b", "c1\\x9b"),
        ("nul\x00", "nul\\x00"),
        ("back\\n", "back\\\\n"),
        ("caf\u00e9 \u2603", "caf\u00e9 \u2603"),
        ("bad\udcff", "bad\\udcff"),
    ],
)
def test_printable_escapes_controls_only(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_output_has_no_controls() -> None:
    every = "".join(chr(c) for c in range(0x00, 0xA0))
    out = printable(every)
    assert all(ch.isprintable() for ch in out)
    assert "\n" not in out
