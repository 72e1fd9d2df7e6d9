"""Text that is safe to show a person: nothing in it can start a line or drive the terminal."""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def printable(s: str) -> str:
    r"""`s` with C0 controls, DEL and C1 controls escaped (`\n`, `\t`, `\r`, `\x1b`, `\x7f`, `\x85`) and `\` as `\\`.

    Every other character is unchanged, so ordinary names (including non-ASCII ones) read as they are, and the
    escaping is unambiguous: a backslash in the output always starts an escape.
    """
    return "".join(_NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c) for c in s)
