"""The overlay initrd: a tiny extra archive that adds our init-bottom script to an untouched distro initrd.

initramfs-tools runs a boot script only if it is listed in its directory's ORDER file, and ORDER is written
when the distro initrd is built. Shipping our own ORDER would replace the distro's list, so the overlay ships
none: a file in /conf/conf.d/ (sourced by /init before anything else) appends our two lines to the ORDER
that is there, unless they already are. It uses only shell built-ins, since at that point /init has not even
loaded its functions, and the initrd may have klibc's sh instead of busybox.

The overlay is written uncompressed. It is a few kilobytes, so compression would gain nothing a boot would
notice; a plain archive needs no decompressor in the kernel, reads with any cpio, and hashes to a stable
name. The kernel recognises a plain archive only at a 4-byte-aligned offset: pxelinux pads every initrd but
the last to 4 KiB; a boot loader that takes one file needs the distro initrd padded to 4 bytes first.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shlex
from collections.abc import Sequence

from pipeline.archive.cpio import Entry, Kind, write_archive
from pipeline.errors import ArchiveError

INIT_BOTTOM = "scripts/init-bottom"
ORDER = f"{INIT_BOTTOM}/ORDER"
CONF_D = "conf/conf.d"
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The directories the overlay needs; never bin, sbin or lib*: on a merged-/usr initrd those are symlinks that
# a directory entry in a later archive would replace.
OVERLAY_DIRS = ("conf", CONF_D, "scripts", INIT_BOTTOM)


def order_lines(name: str) -> bytes:
    """The two lines initramfs-tools' ORDER holds for each script (the second re-reads boot parameters)."""
    return f'/{INIT_BOTTOM}/{name} "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf\n'.encode()


def _check_script_name(name: str) -> None:
    if not _SCRIPT_NAME.fullmatch(name) or name == "ORDER":
        raise ArchiveError(f"invalid init-bottom script name {name!r}: use letters, digits, '.', '_', '-'")


def order_hook(name: str, *, root: str = "") -> bytes:
    """The /conf/conf.d/ snippet that appends `name`'s ORDER lines to /scripts/init-bottom/ORDER if missing.

    `root` prefixes the paths the snippet reads and writes (not the lines it adds): for tests outside a chroot.
    """
    _check_script_name(name)
    order, script = shlex.quote(f"{root}/{ORDER}"), shlex.quote(f"{root}/{INIT_BOTTOM}/{name}")
    var = re.sub(r"[^A-Za-z0-9_]", "_", name)
    lines = order_lines(name).decode().splitlines()
    return f"""\
# Added by nfsroot-pipeline: run /{INIT_BOTTOM}/{name} after the distro's init-bottom scripts.
# Sourced by /init before anything else (only shell built-ins are safe here); appends the script to ORDER
# unless it is listed already, so it works whatever the distro initrd's ORDER holds.
_nfsroot_{var}_seen=
if [ -r {order} ]; then
	while read -r _nfsroot_{var}_line; do
		case "$_nfsroot_{var}_line" in
		"/{INIT_BOTTOM}/{name} "*) _nfsroot_{var}_seen=y ;;
		esac
	done < {order}
fi
if [ -z "$_nfsroot_{var}_seen" ] && [ -f {script} ]; then
	printf '%s\\n' '{lines[0]}' '{lines[1]}' >> {order}
fi
unset _nfsroot_{var}_seen _nfsroot_{var}_line
""".encode()


def overlay_files(script: bytes, name: str = "nfsroot") -> list[Entry]:
    """Exactly what the overlay initrd holds: its directories, the script (0755) and the ORDER hook."""
    _check_script_name(name)
    return [
        *(Entry.directory(d, 0o755) for d in OVERLAY_DIRS),
        Entry.file(f"{INIT_BOTTOM}/{name}", script, 0o755),
        Entry.file(f"{CONF_D}/{name}-order", order_hook(name), 0o644),
    ]


def build_overlay(entries: Sequence[Entry], *, mtime: int) -> bytes:
    """The overlay initrd's bytes: one plain newc archive (see the module docstring for why uncompressed)."""
    for entry in entries:
        top = entry.name.split("/", 1)[0]
        if entry.kind is Kind.DIR and (top in ("bin", "sbin") or top.startswith("lib")) and "/" not in entry.name:
            raise ArchiveError(
                f"refusing a directory entry {entry.name!r} in an overlay: it would replace the distro's "
                f"{entry.name} -> usr/{entry.name} symlink"
            )
    out = io.BytesIO()
    write_archive(entries, out, mtime=mtime)
    return out.getvalue()


def compressed_overlay(data: bytes) -> bytes:
    """The overlay gzip-compressed, for loaders that join initrds without padding (the kernel's EFI stub, fed
    `initrd=` files by iPXE EFI): the kernel finds a compressed archive at any offset, a plain one only at a
    multiple of 4, and the distro initrd's length is any number. gzip, because every Debian kernel has it;
    mtime 0 keeps the bytes (and so the content name) reproducible."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def content_name(data: bytes, prefix: str = "nfsroot-", suffix: str = ".img") -> str:
    """A file name that changes whenever the content does (16 hex digits of its sha256)."""
    return f"{prefix}{hashlib.sha256(data).hexdigest()[:16]}{suffix}"


def pad_to(data_len: int, boundary: int = 4096) -> int:
    """Zero bytes to add after `data_len` bytes to reach the next multiple of `boundary`."""
    return -data_len % boundary
