"""Make untrusted text safe to print: one helper for every human-readable output.

Paths, symlink targets and archive member names come from the target root or
an archive, which an attacker may shape. Printed raw, a newline or an ESC
sequence in them could fake lines ("No changes.") or drive the terminal, so
every message built from such text passes it through :func:`printable`.
"""

from __future__ import annotations

# Short escapes for the controls people recognise; the rest become \xNN.
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    # C0 controls, DEL and C1 controls (U+0080..U+009F; some terminals act on them).
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    return ch


def printable(s: str) -> str:
    """Return ``s`` with C0/C1 control characters and DEL escaped as ``\\n``, ``\\t``, ``\\x1b``.

    A backslash is doubled, so the escaped form cannot be confused with a
    literal ``\\n`` in the original. Surrogate escapes (from undecodable file
    names) become ``\\udcNN`` text rather than an encoding error at print time.
    """
    out: list[str] = []
    for ch in s:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\udc{ord(ch) - 0xDC00:02x}")
        else:
            out.append(_escape(ch))
    return "".join(out)
