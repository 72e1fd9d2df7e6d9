"""`boot.kernel`: which of the root's kernels the nodes boot, as a version or `newest`.

The kernel and the distro initrd are the root's own `/boot/vmlinuz-<version>` and `/boot/initrd.img-<version>`
(their modules are in the same root's `/lib/modules/<version>`), so the spec names a version, never a file the
user copies. The value lands in file names on the gateway and in pxelinux configs: a small alphabet only.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from pipeline.spec.types import _require_str, fail

NEWEST = "newest"
# A Debian kernel release as `uname -r` prints it (6.1.0-21-amd64, 6.12.9+bpo-amd64): digits first.
_VERSION = re.compile(r"[0-9]+\.[0-9]+[A-Za-z0-9.+~_-]{0,100}")
_FILE_PREFIX = re.compile(r"^(?:.*/)?(?:vmlinuz|vmlinux|initrd\.img)-")


def _kernel_choice(value: str) -> str:
    if value == NEWEST or _VERSION.fullmatch(value):
        return value
    if _FILE_PREFIX.match(value) and _VERSION.fullmatch(_FILE_PREFIX.sub("", value)):
        version = _FILE_PREFIX.sub("", value)
        raise fail(
            f"expected a kernel version or 'newest', got the file name {value!r}",
            f"write {version}: the kernel and initrd come from the root's /boot",
        )
    raise fail(
        f"expected a kernel version (like 6.1.0-21-amd64) or 'newest', got {value!r}",
        "the version is what `uname -r` prints on a node; 'newest' picks the root's highest version",
    )


KernelChoice = Annotated[str, BeforeValidator(_require_str), AfterValidator(_kernel_choice)]


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders kernel versions the way people read them: 6.1.0-10 after 6.1.0-9 (numbers compare as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"[0-9]+|[^0-9.+~_-]+", version))
