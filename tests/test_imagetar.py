"""The boot test's container image tarball: the same bytes every time, in the docker-archive layout containerd
imports, with the whiteouts that fail on NFS in its second layer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError
from pipeline.boottest.imagetar import IMAGE_NAME, build_image_tar
from tests.prereq import need


def _build(dest: Path) -> bytes:
    try:
        build_image_tar(dest)
    except BootPrerequisiteError as exc:
        need(False, str(exc))
    return dest.read_bytes()


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    found = tar.extractfile(name)
    assert found is not None, name
    return found.read()


def test_the_image_is_reproducible_and_layered(tmp_path: Path) -> None:
    first = _build(tmp_path / "a.tar")
    assert _build(tmp_path / "b.tar") == first
    with tarfile.open(fileobj=io.BytesIO(first)) as outer:
        manifest = json.loads(_member(outer, "manifest.json"))
        config = json.loads(_member(outer, manifest[0]["Config"]))
        layers = [_member(outer, name) for name in manifest[0]["Layers"]]
    assert manifest[0]["RepoTags"] == [IMAGE_NAME.removeprefix("docker.io/library/")]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    with tarfile.open(fileobj=io.BytesIO(layers[0])) as base, tarfile.open(fileobj=io.BytesIO(layers[1])) as top:
        assert {"bin/busybox", "bin/sh", "etc/removed", "etc/opq/old"} <= set(base.getnames())
        assert base.getmember("bin/sh").linkname == "busybox"
        assert {"etc/.wh.removed", "etc/opq/.wh..wh..opq", "etc/opq/new", "etc/message"} <= set(top.getnames())
        for member in [*base.getmembers(), *top.getmembers()]:
            assert (member.uid, member.gid, member.mtime) == (0, 0, 0), member.name
