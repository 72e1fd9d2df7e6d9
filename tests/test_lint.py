"""Read-only root lint: writable paths a Debian root needs that the spec leaves read-only."""

from __future__ import annotations

from pathlib import Path

from pipeline.state.lint import NEEDS, lint_readonly_root
from tests.deploy_helpers import L, make_tree

SEED_WRITABLE = ["/var/local", "/home"]
SEED_LINKS = ["/etc/hostname", "/etc/hosts"]


def test_the_seed_cluster_misses_the_usual_paths() -> None:
    warnings = lint_readonly_root(SEED_WRITABLE, SEED_LINKS)
    assert [w.path for w in warnings] == sorted([p for p, _, _ in NEEDS] + ["/etc/machine-id"])
    resolv = next(w for w in warnings if w.path == "/etc/resolv.conf")
    assert str(resolv) == (
        "warning: /etc/resolv.conf: read-only on every node: DHCP clients and systemd-resolved rewrite it at boot "
        "(remedy: add symlinks: /etc/resolv.conf: /var/local/resolv.conf "
        "(or /run/systemd/resolve/stub-resolv.conf))"
    )


def test_covered_paths_are_not_reported() -> None:
    writable = [*SEED_WRITABLE, "/var/log", "/var/lib/dhcp", "/tmp", "/var/tmp", "/var/lib/systemd"]
    links = [
        *SEED_LINKS,
        "/etc/resolv.conf",
        "/etc/adjtime",
        "/etc/machine-id",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]
    assert lint_readonly_root(writable, links) == []


def test_a_writable_parent_covers_its_children() -> None:
    warnings = lint_readonly_root(["/var"], [])
    paths = {w.path for w in warnings}
    assert not paths & {"/var/log", "/var/lib/dhcp", "/var/tmp", "/var/lib/systemd/random-seed"}
    assert "/var/local" not in paths and "/etc/adjtime" in paths


def _machine_id(tmp_path: Path, content: str | None) -> str:
    tree: dict[str, str | L] = {"/clients/etc/.keep": ""}
    if content is not None:
        tree["/clients/etc/machine-id"] = content
    target = make_tree(tmp_path / "t", tree)
    warning = next(
        w for w in lint_readonly_root(SEED_WRITABLE, SEED_LINKS, target, "/clients") if w.path == "/etc/machine-id"
    )
    return f"{warning.severity}: {warning.message}"


def test_machine_id_missing_empty_and_baked_in_are_told_apart(tmp_path: Path) -> None:
    assert _machine_id(tmp_path / "a", None).startswith("warning: missing: systemd cannot create it")
    assert _machine_id(tmp_path / "b", "").startswith("note: empty: systemd uses a transient id")
    baked = _machine_id(tmp_path / "c", "0123456789abcdef0123456789abcdef\n")
    assert baked.startswith("warning: baked into the image: every node gets the same machine id")
