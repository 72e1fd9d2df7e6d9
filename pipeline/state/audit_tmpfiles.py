"""What the root's tmpfiles.d would create at boot on paths that stay read-only (issue 9).

systemd-tmpfiles runs at every boot (systemd-tmpfiles-setup.service) over the root's tmpfiles.d. A line that
creates something (d D v q Q p c b C f L) where nothing exists yet, or that always writes (F, f+, w, L+ over
another link), fails on a read-only root, and the service fails: the system is degraded. Lines that only
adjust or clean (z Z h H a x X r R e t T) are left out: they act on what exists.
This module reads the lines as systemd does (files by name, /etc over /run over /usr/local/lib over
/usr/lib, a link to /dev/null masks; the first line for a path wins; `-` marks a line whose failure systemd
ignores, `^` one that only acts on a credential) and names each file and line that would write on a path
nothing makes writable. Paths are resolved inside the root (its symlinks, /var/run -> /run, are followed
there, never on the gateway).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.state.audit_units import VOLATILE, dirs_inside

TMPFILES_DIRS = ("etc/tmpfiles.d", "run/tmpfiles.d", "usr/local/lib/tmpfiles.d", "usr/lib/tmpfiles.d", "lib/tmpfiles.d")
CREATES = frozenset("dDvqQpcbCfL")  # create what is missing
ALWAYS_WRITES = frozenset("Fw")  # truncate or write every time
# systemd's specifiers for system paths (tmpfiles.d(5)); others (%m, %b, %H …) are per machine or boot.
SPECIFIERS = {"%t": "/run", "%S": "/var/lib", "%C": "/var/cache", "%L": "/var/log", "%T": "/tmp", "%V": "/var/tmp"}
MAX_BYTES = 1 << 20
MAX_HOPS = 40


@dataclass(frozen=True, order=True)
class TmpfilesNeed:
    file: str  # as the node sees it: /usr/lib/tmpfiles.d/foo.conf
    line: int
    type: str
    path: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: tmpfiles.d {self.type} {self.path}: systemd-tmpfiles writes there at boot; "
            "it is read-only on every node"
        )


def _conf_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path as the node sees it, path on the gateway) of every tmpfiles.d file in effect, by name."""
    chosen: dict[str, tuple[str, Path] | None] = {}
    for d, real in dirs_inside(root, TMPFILES_DIRS):
        for entry in sorted(real.glob("*.conf")):
            if entry.name in chosen:
                continue
            if entry.is_symlink() and os.readlink(entry) == "/dev/null":
                chosen[entry.name] = None  # masked
            else:
                chosen[entry.name] = ("/" + d + "/" + entry.name, entry)
    for name in sorted(chosen):
        found = chosen[name]
        if found is not None:
            yield found


def _read(path: Path) -> str | None:
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None  # a symlink or special file: not read on the gateway's behalf
        return path.read_text(errors="replace")
    except OSError:
        return None


def _expand(path: str) -> str | None:
    """The path with the system specifiers expanded; None when a per-machine one remains (%m, %b …)."""
    for spec, value in SPECIFIERS.items():
        path = path.replace(spec, value)
    path = path.replace("%%", "\0")
    if "%" in path:
        return None
    return path.replace("\0", "%")


def resolve(root: Path, path: str, follow_leaf: bool = True) -> tuple[str, bool]:
    """(the path with the root's symlinks followed inside the root, whether it exists there)."""
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, name)
        try:
            st = here.lstat()
        except OSError:
            return "/" + "/".join([*done, name, *pending]), False
        if stat.S_ISLNK(st.st_mode) and (pending or follow_leaf):
            hops += 1
            if hops > MAX_HOPS:
                return "/" + "/".join([*done, name, *pending]), False
            link = os.readlink(here)
            if link.startswith("/"):
                done = []
            pending = [p for p in link.split("/") if p] + pending
            continue
        done.append(name)
    return "/" + "/".join(done), True


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _covered(path: str, mounts: Iterable[str], links: set[str]) -> bool:
    return path in links or any(_under(path, m) for m in (*VOLATILE, *mounts))


def _lines(text: str) -> Iterator[tuple[int, str, str, str]]:
    """(line number, type letter, modifiers, path) of each line."""
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split()
        if len(words) < 2 or words[0].startswith("#"):
            continue
        kind, path = words[0], words[1]
        if not kind or not kind[0].isalpha():
            continue
        yield number, kind[0], kind[1:], path


def tmpfiles_needs(root: Path, writable: Iterable[str], symlinks: Iterable[str]) -> list[TmpfilesNeed]:
    """tmpfiles.d lines that would write at boot on a path the spec leaves read-only."""
    mounts, links = list(writable), set(symlinks)
    handled: set[str] = set()  # systemd takes the first line for a path and ignores later duplicates
    needs: list[TmpfilesNeed] = []
    for shown, file in _conf_files(root):
        text = _read(file)
        if text is None:
            continue
        for number, letter, mods, raw_path in _lines(text):
            if "-" in mods or "^" in mods or any(c in raw_path for c in "*?["):
                continue  # a failure systemd ignores, a credential-only line, a glob (never creates)
            always = letter in ALWAYS_WRITES or (letter == "f" and "+" in mods)
            if not (always or letter in CREATES or letter == "L"):
                continue
            key = f"{letter}:{raw_path}"
            if key in handled:
                continue
            handled.add(key)
            path = _expand(raw_path)
            if path is None:  # a per-machine name (journal/%m): never in the root, always created
                prefix = raw_path.split("%", 1)[0].rstrip("/")
                resolved, _ = resolve(root, prefix)
                target, exists = resolved + raw_path[len(prefix) :], False
            else:
                target, exists = resolve(root, path, follow_leaf=letter != "L")
            if _covered(path or raw_path, mounts, links) or _covered(target, mounts, links):
                continue
            if letter == "L" and "+" in mods and exists:
                words = text.splitlines()[number - 1].split()
                want = words[6] if len(words) > 6 else "-"
                link = root / path.lstrip("/") if path else None
                if link is not None and link.is_symlink() and os.readlink(link) == want:
                    continue
            elif not always and exists:
                continue
            needs.append(TmpfilesNeed(shown, number, letter + mods, raw_path))
    return sorted(needs)
