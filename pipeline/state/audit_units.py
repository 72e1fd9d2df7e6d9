"""What the root's own systemd units need writable, read from their unit files.

A unit with `StateDirectory=`, `LogsDirectory=` or `CacheDirectory=` fails to start on a read-only
/var/lib, /var/log or /var/cache ("Failed to set up special execution directory", exit 238-ish), whenever it is
started. `ReadWritePaths=` makes nothing writable on a read-only mount: the unit starts but cannot write; it
matters for units started at boot (linked in a `*.wants/` or `*.requires/` directory). RuntimeDirectory= is
under /run, a tmpfs: never a problem.

The audit compares what the units ask for with what the spec makes writable (its writable mounts, its
symlinks, and the paths of `root.profile`), and names each unit and path left read-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
DIRECTORY_KEYS = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log", "CacheDirectory": "/var/cache"}
PATH_KEYS = ("ReadWritePaths",)
MAX_UNIT_BYTES = 1 << 20
# Memory file systems on every systemd node: always writable.
VOLATILE = ("/run", "/dev", "/proc", "/sys", "/dev/shm")


@dataclass(frozen=True, order=True)
class UnitNeed:
    unit: str
    key: str
    path: str  # as the node sees it
    at_boot: bool

    def __str__(self) -> str:
        when = "started at boot" if self.at_boot else "when started"
        return f"{self.unit}: {self.key}= needs {self.path} writable ({when}); it is read-only on every node"


def _read_unit(path: Path) -> str | None:
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_UNIT_BYTES:
            return None
        return path.read_text(errors="replace")
    except OSError:
        return None


def _values(text: str, key: str) -> Iterator[str]:
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line.startswith(key + "="):
            yield from line[len(key) + 1 :].split()


def _clean(word: str) -> str | None:
    """A path without systemd's `-`/`+` prefixes and specifiers; None when nothing absolute is left."""
    word = word.lstrip("-+")
    word = word.split("%", 1)[0].rstrip("/")
    return word if word.startswith("/") else None


def dirs_inside(root: Path, dirs: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """(name, real path) of each of the root's `dirs` that exists, each once, never one that a symlink leads out
    of the root (unit directories here, tmpfiles.d in pipeline.state.audit_tmpfiles)."""
    top = os.path.realpath(root)
    seen: set[str] = set()
    for d in dirs:
        real = os.path.realpath(root / d)
        if real in seen or not (real + "/").startswith(top.rstrip("/") + "/") or not os.path.isdir(real):
            continue
        seen.add(real)
        yield d, Path(real)


def _unit_dirs(root: Path) -> Iterator[Path]:
    """The unit directories of the root, each once, never one that a symlink leads out of the root."""
    return (path for _, path in dirs_inside(root, UNIT_DIRS))


def _boot_units(root: Path) -> set[str]:
    """Units linked in some target's .wants/ or .requires/ directory: the ones that start at boot."""
    found: set[str] = set()
    for base in _unit_dirs(root):
        for entry in base.iterdir():
            if entry.name.endswith((".wants", ".requires")) and entry.is_dir() and not entry.is_symlink():
                found.update(p.name for p in entry.iterdir())
    return found


def unit_needs(root: Path) -> list[UnitNeed]:
    """Every writable path the root's service units declare (the first unit file of a name wins, as in systemd)."""
    at_boot = _boot_units(root)
    needs: set[UnitNeed] = set()
    for base in _unit_dirs(root):
        for path in sorted(base.glob("*.service")):
            text = _read_unit(path)
            if text is None:
                continue
            for key, parent in DIRECTORY_KEYS.items():
                for word in _values(text, key):
                    cleaned = _clean("/" + word.lstrip("/"))
                    if cleaned:
                        needs.add(UnitNeed(path.name, key, parent + cleaned, path.name in at_boot))
            for key in PATH_KEYS:
                for word in _values(text, key):
                    cleaned = _clean(word)
                    if cleaned and path.name in at_boot:
                        needs.add(UnitNeed(path.name, key, cleaned, True))
    return sorted(needs)


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _covered(need: UnitNeed, mounts: list[str], links: set[str]) -> bool:
    if any(_under(need.path, m) for m in (*VOLATILE, *mounts)) or need.path in links:
        return True
    # A blanket ReadWritePaths=/etc is what logind and friends declare; the files under it that nodes
    # really write are linked into the node's directory one by one (hostname, machine-id, ...).
    return need.key in PATH_KEYS and any(_under(p, need.path) for p in (*mounts, *links))


def uncovered(needs: Iterable[UnitNeed], writable: Iterable[str], symlinks: Iterable[str]) -> list[UnitNeed]:
    """The needs nothing writable covers: no mount or bind at or above the path, no symlink at it."""
    mounts, links = list(writable), set(symlinks)
    return [n for n in needs if not _covered(n, mounts, links)]
