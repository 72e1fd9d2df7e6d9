"""A tiny container image as a docker-archive tarball, for `ctr images import` without a registry.

Two layers, built byte for byte the same from the same inputs (sorted entries, owner 0:0, mtime 0):
1. busybox (Debian's busybox-static when unpacked, as CI does; else this machine's with the libraries `ldd`
   names: `clientroot.find_busybox`), /bin/sh, /etc/removed and /etc/opq/old;
2. a whiteout of /etc/removed, an opaque /etc/opq (only /etc/opq/new stays) and /etc/message.
The whiteouts are what containerd cannot unpack onto NFS ("failed to convert whiteout file … operation not
supported"): a container that sees the message, no /etc/removed and only `new` in /etc/opq proves the
overlayfs snapshotter works on the node's image storage.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from pipeline.boottest.clientroot import find_busybox
from pipeline.fsutil import write_atomic

IMAGE_NAME = "docker.io/library/nfsroot-test:1"
MESSAGE = "hello from the overlayfs snapshotter"
# What the test runs in the container and what it must print.
COMMAND = ("/bin/sh", "-c", "cat /etc/message; test -e /etc/removed || echo whiteout-ok; ls /etc/opq")
EXPECTED = f"{MESSAGE} whiteout-ok new"


def _tar(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A layer: (path, kind, content) with kind file (content bytes), dir, or symlink (content: target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, kind, content in sorted(entries):
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, str(content)
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size, info.mode = len(data), 0o755 if path.endswith(("busybox", ".so.2", ".so.6")) else 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _parents(paths: list[str]) -> list[tuple[str, str, bytes | str]]:
    dirs = {str(parent) for p in paths for parent in Path(p).parents if str(parent) != "."}
    return [(d, "dir", b"") for d in dirs]


def build_image_tar(dest: Path) -> str:
    """Write the image to `dest`; return its name as containerd will list it."""
    busybox, libraries = find_busybox()
    files: list[tuple[str, str, bytes | str]] = [("bin/busybox", "file", busybox.read_bytes())]
    for lib in libraries:
        files.append((str(lib).lstrip("/"), "file", lib.resolve().read_bytes()))
    files += [
        ("bin/sh", "symlink", "busybox"),
        ("bin/cat", "symlink", "busybox"),
        ("bin/ls", "symlink", "busybox"),
        ("bin/test", "symlink", "busybox"),
        ("etc/removed", "file", "deleted by the next layer\n"),
        ("etc/opq/old", "file", "hidden by the next layer's opaque whiteout\n"),
    ]
    layer1 = _tar(files + _parents([f[0] for f in files]))
    second: list[tuple[str, str, bytes | str]] = [
        ("etc/.wh.removed", "file", b""),
        ("etc/opq/.wh..wh..opq", "file", b""),
        ("etc/opq/new", "file", "kept\n"),
        ("etc/message", "file", MESSAGE + "\n"),
    ]
    layer2 = _tar(second + _parents([f[0] for f in second]))
    layers = [layer1, layer2]
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    short_name = IMAGE_NAME.removeprefix("docker.io/library/")
    manifest = json.dumps([{"Config": config_name, "RepoTags": [short_name], "Layers": layer_names}]).encode()
    archive: list[tuple[str, str, bytes | str]] = [
        ("manifest.json", "file", manifest),
        (config_name, "file", config),
        *((name, "file", layer) for name, layer in zip(layer_names, layers, strict=True)),
    ]
    archive += _parents([a[0] for a in archive])
    write_atomic(dest, _tar(archive))
    return IMAGE_NAME
