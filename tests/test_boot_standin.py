"""The boot test stands in the installed kernel when the spec names another version (the seed's 6.1.0-21)."""

from __future__ import annotations

from pathlib import Path

from pipeline.boottest.tftp import _stand_in


def test_the_one_installed_kernel_stands_in(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz-6.1.0-56-amd64").write_bytes(b"k")
    (tmp_path / "initrd.img-6.1.0-56-amd64").write_bytes(b"i")
    assert _stand_in("vmlinuz-6.1.0-21-amd64", (tmp_path,)) == tmp_path / "vmlinuz-6.1.0-56-amd64"
    assert _stand_in("initrd.img-6.1.0-21-amd64", (tmp_path,)) == tmp_path / "initrd.img-6.1.0-56-amd64"
    assert _stand_in("nfsroot-0123.img", (tmp_path,)) is None  # only distro files, never ours


def test_no_guess_between_several_kernels(tmp_path: Path) -> None:
    for version in ("6.1.0-55-amd64", "6.1.0-56-amd64"):
        (tmp_path / f"vmlinuz-{version}").write_bytes(b"k")
    assert _stand_in("vmlinuz-6.1.0-21-amd64", (tmp_path,)) is None


def test_only_kernel_versions_are_stood_in(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz-6.1.0-56-amd64").write_bytes(b"k")
    assert _stand_in("vmlinuz-none", (tmp_path,)) is None


def test_newest_stands_for_the_highest_installed_kernel(tmp_path: Path) -> None:
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (tmp_path / f"vmlinuz-{version}").write_bytes(b"k")
        (tmp_path / f"initrd.img-{version}").write_bytes(b"i")
    assert _stand_in("vmlinuz-newest", (tmp_path,)) == tmp_path / "vmlinuz-6.1.0-10-amd64"
    assert _stand_in("initrd.img-newest", (tmp_path,)) == tmp_path / "initrd.img-6.1.0-10-amd64"
