"""Boot loaders in the TFTP root, from Debian's packages: pxelinux.0 and ldlinux.c32 always, and the ones the
spec's `firmware` section asks for: shim and the signed netboot GRUB, iPXE's snponly.efi and undionly.kpxe.
The TFTP root is flat, as the signed images require: shim loads `grubx64.efi` from its own directory.

The bytes come from the build machine's packages (a file dependency of the task), each manifest entry names
the package and its version, and the manifest's sha256 pins the exact file that apply installs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.render.artifact import Artifact
from pipeline.render.firmware import group_specs
from pipeline.run import run
from pipeline.spec.model import Cluster

# (name in the TFTP root, file on a Debian machine, package); ldlinux.c32 must sit beside pxelinux.0.
LOADER_FILES = (
    ("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    ("ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
)
SHIM = ("shimx64.efi", "/usr/lib/shim/shimx64.efi.signed", "shim-signed")
GRUB = ("grubx64.efi", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed")
SNPONLY = ("snponly.efi", "/usr/lib/ipxe/snponly.efi", "ipxe")
UNDIONLY = ("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe", "ipxe")
# An arm64 package: on an amd64 build machine it comes through multiarch (see LoaderMissingError's text).
GRUB_ARM64 = ("grubaa64.efi", "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", "grub-efi-arm64-signed")
# Every file any spec may ask for (families.LOADER_PATHS repeats the paths).
ALL_LOADER_FILES = (*LOADER_FILES, SHIM, GRUB, SNPONLY, UNDIONLY, GRUB_ARM64)


def _loaders_of(cluster: Cluster) -> tuple[tuple[str, str, str], ...]:
    extra = {"shim": (SHIM, GRUB), "grub": (GRUB,), "ipxe": (SNPONLY,), "none": ()}[cluster.firmware.uefi]
    bios = (UNDIONLY,) if cluster.firmware.bios == "ipxe" else ()
    arm64 = (GRUB_ARM64,) if cluster.firmware.arm64 == "grub" else ()
    return (*extra, *bios, *arm64)


def wanted_loaders(cluster: Cluster) -> tuple[tuple[str, str, str], ...]:
    """The loader files the firmware choices of every group need, pxelinux's always (as before `firmware`):
    one TFTP root serves every group's nodes."""
    wanted = dict.fromkeys(LOADER_FILES)
    for spec in group_specs(cluster):
        wanted.update(dict.fromkeys(_loaders_of(spec)))
    return tuple(wanted)


_PXELINUX = {name for name, _, _ in LOADER_FILES}


class LoaderMissingError(PipelineError):
    """A boot loader file is not installed on the build machine."""


@dataclass(frozen=True)
class LoaderFile:
    name: str
    package: str
    version: str
    data: bytes


def read_loader_files(wanted: tuple[tuple[str, str, str], ...] = LOADER_FILES) -> list[LoaderFile]:
    """The installed files and their package versions (I/O: the task calls this, the renderer stays pure)."""
    found = []
    for name, path, package in wanted:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            install = f"apt-get install {package}"
            if package.endswith("-arm64-signed"):  # an arm64 package on an amd64 build machine: multiarch
                install = f"dpkg --add-architecture arm64 && apt-get update && apt-get install {package}:arm64"
            raise LoaderMissingError(
                f"{path} is missing: install Debian's {package} on this machine ({install}); "
                f"nodes boot {name} from the TFTP root"
            ) from None
        result = run(["dpkg-query", "--show", "--showformat=${Version}", package])
        found.append(LoaderFile(name, package, result.stdout.decode().strip(), data))
    return found


def render_loader(cluster: Cluster, files: list[LoaderFile]) -> list[Artifact]:
    tftp = cluster.gateway.tftp_root.rstrip("/")
    # Which spec fields chose each loader beyond pxelinux: `firmware`, and each group's own that asks for it.
    chosen: dict[str, list[str]] = {name: ["firmware"] for name, _, _ in _loaders_of(cluster)}
    for view in cluster.groups_resolved():
        group = cluster.groups.get(view.name)
        if group is not None and group.firmware is not None:
            for name, _, _ in _loaders_of(view.cluster):
                chosen.setdefault(name, []).append(f"{view.field}.firmware")
    return [
        Artifact(
            f"{tftp}/{f.name}",
            "file",
            "loader",
            (
                "gateway.tftp_root",
                *(chosen.get(f.name, ["firmware"]) if f.name not in _PXELINUX else ()),
                f"package {f.package} {f.version}",
            ),
            f.data,
        )
        for f in files
    ]
