"""pxelinux.0 and ldlinux.c32 in the TFTP root, from Debian's pxelinux and syslinux-common packages.

The bytes come from the build machine's packages (a file dependency of the task), each manifest entry names
the package and its version, and the manifest's sha256 pins the exact file that apply installs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.render.artifact import Artifact
from pipeline.run import run
from pipeline.spec.model import Cluster

# (name in the TFTP root, file on a Debian machine, package); ldlinux.c32 must sit beside pxelinux.0.
LOADER_FILES = (
    ("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    ("ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
)


class LoaderMissingError(PipelineError):
    """A boot loader file is not installed on the build machine."""


@dataclass(frozen=True)
class LoaderFile:
    name: str
    package: str
    version: str
    data: bytes


def read_loader_files() -> list[LoaderFile]:
    """The installed files and their package versions (I/O: the task calls this, the renderer stays pure)."""
    found = []
    for name, path, package in LOADER_FILES:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise LoaderMissingError(
                f"{path} is missing: install Debian's {package} on this machine (apt-get install {package}); "
                f"nodes boot {name} from the TFTP root"
            ) from None
        result = run(["dpkg-query", "--show", "--showformat=${Version}", package])
        found.append(LoaderFile(name, package, result.stdout.decode().strip(), data))
    return found


def render_loader(cluster: Cluster, files: list[LoaderFile]) -> list[Artifact]:
    tftp = cluster.gateway.tftp_root.rstrip("/")
    return [
        Artifact(
            f"{tftp}/{f.name}", "file", "loader", ("gateway.tftp_root", f"package {f.package} {f.version}"), f.data
        )
        for f in files
    ]
