"""The TFTP directory QEMU's user network serves (`-netdev user,tftp=DIR,bootfile=pxelinux.0`).

It holds pxelinux.0 and ldlinux.c32 (Debian's pxelinux and syslinux-common), everything the target's
TFTP source holds (our initrd and the rendered pxelinux.cfg/), and the distro kernel and initrd the configs
name, taken from /boot when the source lacks them. Every file a config names is checked before any node
boots, so a missing file is a message, not a node that hangs in pxelinux.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError, BootTestError
from pipeline.boottest.target import BootTarget
from pipeline.fsutil import write_atomic
from pipeline.spec.kernel import version_key

PXELINUX = (Path("/usr/lib/PXELINUX/pxelinux.0"), "pxelinux")
LDLINUX = (Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"), "syslinux-common")
BOOTFILE = "pxelinux.0"

# Arguments the harness needs on every node: the serial console carries the guest's report, and a panic
# must end the VM (with -no-reboot) instead of waiting at a prompt.
REQUIRED_ARGS = ("console=ttyS0", "panic=-1")


@dataclass(frozen=True)
class PxeConfig:
    name: str
    kernel: str
    initrds: tuple[str, ...]
    append: tuple[str, ...]
    sysappend: int


@dataclass
class TftpDir:
    path: Path
    configs: dict[str, PxeConfig]
    notes: list[str] = field(default_factory=list)


_KEYWORD = re.compile(r"^\s*(\w+)\s*(.*?)\s*$")


def parse_pxelinux_cfg(name: str, text: str) -> PxeConfig:
    """The first KERNEL/INITRD/APPEND/SYSAPPEND of a pxelinux config (ours have a single label)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _KEYWORD.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        key = match.group(1).upper()
        key = {"LINUX": "KERNEL", "IPAPPEND": "SYSAPPEND"}.get(key, key)
        values.setdefault(key, match.group(2))
    if "KERNEL" not in values:
        raise BootTestError(f"pxelinux.cfg/{name} names no KERNEL")
    append = values.get("APPEND", "").split()
    initrds = [a.split("=", 1)[1] for a in append if a.startswith("initrd=")]
    initrd_line = values.get("INITRD") or ",".join(initrds)
    try:
        sysappend = int(values.get("SYSAPPEND", "0"), 0)
    except ValueError as exc:
        raise BootTestError(f"pxelinux.cfg/{name}: bad SYSAPPEND {values['SYSAPPEND']!r}") from exc
    return PxeConfig(
        name=name,
        kernel=values["KERNEL"],
        initrds=tuple(i for i in initrd_line.split(",") if i),
        append=tuple(a for a in append if not a.startswith("initrd=")),
        sysappend=sysappend,
    )


def add_required_args(text: str) -> tuple[str, list[str]]:
    """Append REQUIRED_ARGS that the APPEND lines lack; returns the new text and what was added."""
    added: list[str] = []
    out = []
    for line in text.splitlines(keepends=True):
        match = _KEYWORD.match(line)
        if match and match.group(1).upper() == "APPEND":
            args = match.group(2).split()
            missing = [a for a in REQUIRED_ARGS if not any(x.startswith(a.split("=")[0] + "=") for x in args)]
            if missing:
                added.extend(m for m in missing if m not in added)
                ending = "\n" if line.endswith("\n") else ""
                line = line.rstrip("\n") + " " + " ".join(missing) + ending
        out.append(line)
    return "".join(out), added


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _copy_tree(source: Path, dest: Path) -> None:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():  # symlinks are resolved: QEMU's TFTP server serves the file they point to
            _place(path.resolve(), dest / rel)


_DISTRO_FILE = re.compile(r"(vmlinuz|initrd\.img)-(\d+\.\d+\S*|newest)")  # a Debian kernel version


def _stand_in(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The installed kernel (or its initrd) for a spec naming another version: the seed's cluster.yaml names
    the gateway's 6.1.0-21 kernel, and a boot test on any machine should still run. Only when exactly one
    kernel version is installed, so the choice is never a guess between several."""
    match = _DISTRO_FILE.fullmatch(name)
    if match is None:
        return None
    for d in dirs:
        versions = sorted(p.name.removeprefix("vmlinuz-") for p in d.glob("vmlinuz-*") if p.is_file())
        if match.group(2) == "newest" and versions:  # boot.kernel: newest picks the highest installed
            versions = [max(versions, key=version_key)]
        if len(versions) == 1:
            candidate = d / f"{match.group(1)}-{versions[0]}"
            if candidate.is_file():
                return candidate
    return None


def assemble_tftp(target: BootTarget, dest: Path) -> TftpDir:
    if not target.tftp_source.is_dir():
        raise BootTestError(f"TFTP source {target.tftp_source} is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tree(target.tftp_source, dest)
    for (path, package), name in ((PXELINUX, BOOTFILE), (LDLINUX, "ldlinux.c32")):
        if not (dest / name).exists():
            if not path.is_file():
                raise BootPrerequisiteError(f"{path} not found: install {package}")
            _place(path, dest / name)
    cfg_dir = dest / "pxelinux.cfg"
    if not cfg_dir.is_dir() or not any(cfg_dir.iterdir()):
        raise BootTestError(f"{target.tftp_source} holds no pxelinux.cfg/ files")
    result = TftpDir(dest, {})
    for cfg in sorted(cfg_dir.iterdir()):
        # The copy may be a hard link into build/: replace it rather than write through it.
        text, added = add_required_args(cfg.read_text())
        if added:
            cfg.unlink()
            write_atomic(cfg, text.encode())
            result.notes.append(f"pxelinux.cfg/{cfg.name}: the harness added {' '.join(added)} to APPEND")
        config = parse_pxelinux_cfg(cfg.name, text)
        result.configs[cfg.name] = config
        for name in (config.kernel, *config.initrds):
            if (dest / name).is_file():
                continue
            # The root's kernel and initrd are named boot/<file> (resolved in the root at plan time);
            # the harness looks for the file itself in /boot.
            base = name.rsplit("/", 1)[-1]
            found = next((d / base for d in target.fallback_dirs if (d / base).is_file()), None)
            if found is None:
                found = _stand_in(base, target.fallback_dirs)
                if found is not None:
                    result.notes.append(
                        f"{name} is not on this machine: booting the installed {found.name} under that name"
                    )
            if found is None:
                where = ", ".join(str(d) for d in (target.tftp_source, *target.fallback_dirs))
                raise BootTestError(f"pxelinux.cfg/{cfg.name} names {name}, which is in none of {where}")
            _place(found, dest / name)
        if not config.sysappend & 2:
            result.notes.append(f"pxelinux.cfg/{cfg.name}: SYSAPPEND {config.sysappend} lacks BOOTIF (2)")
    return result
