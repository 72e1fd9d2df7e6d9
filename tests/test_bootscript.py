"""The rendered boot script: its context from the spec, quoting, shellcheck and the shells' syntax check."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest

from pipeline.errors import SpecError
from pipeline.render.bootscript import (
    BindStep,
    BootScriptContext,
    MountStep,
    NodeDir,
    SeedStep,
    ShareStep,
    ShellQuoted,
    bootscript_context,
    render_bootscript,
    render_context,
    sh_quote,
)
from pipeline.spec.load import load_cluster
from tests.bootscript.harness import BASE_SPEC, HOSTILE_SPEC, cluster_from, require_program, shell_argv, spec

REPO = Path(__file__).resolve().parents[1]


def seed_script() -> bytes:
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    return render_bootscript(cluster)


def hostile_script() -> bytes:
    return render_bootscript(cluster_from(HOSTILE_SPEC))


def base_script() -> bytes:
    return render_bootscript(cluster_from(spec()))


SCRIPTS: dict[str, Callable[[], bytes]] = {"seed": seed_script, "hostile": hostile_script, "base": base_script}


@pytest.mark.parametrize("which", sorted(SCRIPTS))
def test_shellcheck_is_clean(which: str, tmp_path: Path) -> None:
    require_program("shellcheck")
    script = tmp_path / "nfsroot"
    script.write_bytes(SCRIPTS[which]())
    done = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("shell", ["dash", "busybox"])
@pytest.mark.parametrize("which", sorted(SCRIPTS))
def test_shell_syntax_check(shell: str, which: str, tmp_path: Path) -> None:
    script = tmp_path / "nfsroot"
    script.write_bytes(SCRIPTS[which]())
    done = subprocess.run([*shell_argv(shell), "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_syntax_check_catches_a_broken_script(tmp_path: Path) -> None:
    # Guards the test above against a shell that accepts anything with -n.
    script = tmp_path / "broken"
    script.write_bytes(seed_script().replace(b"\nesac\n", b"\n", 1))
    for shell in ("dash", "busybox"):
        done = subprocess.run([*shell_argv(shell), "-n", str(script)], capture_output=True, check=False)
        assert done.returncode != 0, shell


def test_initramfs_tools_boilerplate() -> None:
    text = seed_script().decode()
    assert text.startswith("#!/bin/sh\n")
    assert 'PREREQ=""\nprereqs()\n{\n\techo "${PREREQ}"\n}\n' in text
    assert 'case "${1:-}" in\nprereqs)\n\tprereqs\n\texit 0\n\t;;\nesac\n' in text
    assert '. "${NFSROOT_FUNCTIONS}"' in text
    assert 'NFSROOT_FUNCTIONS="${NFSROOT_FUNCTIONS:-/scripts/functions}"' in text
    assert not re.search(r"^\s*function\s", text, re.MULTILINE)  # the seed's bashism


def test_same_spec_same_bytes() -> None:
    assert seed_script() == seed_script()
    assert hostile_script() == hostile_script()


def test_seed_values_reach_the_script_quoted() -> None:
    text = seed_script().decode()
    assert "NFSROOT_GATEWAY='192.168.0.254'\n" in text
    assert "NFSROOT_ON_FAILURE='panic'\n" in text
    assert "NFSROOT_MOUNT_RETRIES='5'\n" in text
    assert "printf '%s' 'worker-node-' \"${NFSROOT_ID}\" ''\n" in text
    assert "\tnfsroot_make_node_dirs 'rw' '/workers' '/' '' || NFSROOT_DIRS_OK=\n" in text
    assert "\tnfsroot_mount 'rw' '/workers/'\"${NFSROOT_ID}\" '/var/local' node\n" in text
    assert "\tnfsroot_mount 'rw' '/workers/home' '/home'\n" in text
    assert "192.168.0.254:" not in text  # the gateway comes only from its variable


def test_context_of_the_seed_cluster() -> None:
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    ctx = bootscript_context(cluster)
    assert ctx.gateway == "192.168.0.254"
    assert ctx.hostname_parts == ("worker-node-", "")
    assert ctx.node_mount == "/var/local"
    assert (ctx.hostname_file, ctx.hostname_mount) == ("/var/local/hostname", "/var/local")
    assert (ctx.hosts_file, ctx.hosts_mount) == ("/var/local/hosts", "/var/local")
    assert ctx.cmdline_file == "/var/local/cmdline"
    assert ctx.record_file == "/var/local/nfsroot-boot"
    assert ctx.skel_dir == "/usr/lib/nfsroot/skel"
    assert ctx.shares == (ShareStep("/workers", "rw", (NodeDir("/", ""),)),)
    assert ctx.mounts == (
        MountStep("/var/local", "rw", True, "/workers/", ""),
        MountStep("/home", "rw", False, "/workers/home", ""),
    )
    # root.profile: debian-systemd (on in the shipped spec): seeded files, binds, a tmpfs, the machine id.
    assert ctx.seeds == (
        SeedStep("/etc/resolv.conf", "/var/local/resolv.conf", "/var/local"),
        SeedStep("/etc/adjtime", "/var/local/adjtime", "/var/local"),
    )
    assert BindStep("/var/log", "/var/local/state/var/log", ("journal",)) in ctx.binds
    assert BindStep("/var/tmp", "/var/local/state/var/tmp", ()) in ctx.binds
    assert BindStep("/var/lib/systemd", "/var/local/state/var/lib/systemd", ()) in ctx.binds
    assert ctx.tmpfs == ("/tmp",)
    assert ctx.machine_id == "/var/local/machine-id"
    assert ctx.profile


def test_profile_none_adds_nothing_to_the_script() -> None:
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    plain = cluster.model_copy(update={"root": cluster.root.model_copy(update={"profile": "none"})})
    ctx = bootscript_context(plain)
    assert (ctx.seeds, ctx.binds, ctx.tmpfs, ctx.machine_id, ctx.profile) == ((), (), (), "", False)
    text = render_context(ctx).decode()
    assert "nfsroot_bind" not in text and "nfsroot_machine_id" not in text and "127.0.1.1" not in text


def test_context_of_the_hostile_cluster() -> None:
    cluster = cluster_from(HOSTILE_SPEC)
    ctx = bootscript_context(cluster)
    assert ctx.shares == (
        ShareStep("/srv/@a+b/.x", "rw,nolock,vers=3,port=2049", (NodeDir("/", ""),)),
        ShareStep("/-b", "tcp,rw", (NodeDir("/.../", ""),)),
    )
    # Node directory first, then by depth.
    assert [m.mount for m in ctx.mounts] == ["/var/-local", "/-o", "/home/+@"]
    for m in ctx.mounts:
        w = next(w for w in cluster.writable if w.mount == m.mount)
        if m.per_node:
            assert m.export_head + "0023249434ae" + m.export_tail == cluster.writable_export(w, "0023249434ae")
            assert m.export_head == cluster.writable_parent(w).rstrip("/") + "/"
        else:
            assert m.export_head == cluster.writable_export(w)
    assert (ctx.hosts_file, ctx.hosts_mount) == ("/-o/h", "/-o")
    assert ctx.seeds == (
        SeedStep("/etc/-x", "/home/+@/-x", "/home/+@"),
        SeedStep("/etc/a@b", "/var/-local/a@b", "/var/-local"),
    )
    assert ctx.hostname_parts == ("n", "-", "")


def test_without_symlinks_the_generated_files_go_to_the_node_directory() -> None:
    ctx = bootscript_context(cluster_from(spec(symlinks={})))
    assert (ctx.hostname_file, ctx.hosts_file) == ("/var/local/hostname", "/var/local/hosts")


def test_generated_file_on_a_shared_mount_is_refused() -> None:
    data = spec(symlinks={"/etc/hosts": "/home/hosts"})
    with pytest.raises(SpecError) as caught:
        bootscript_context(cluster_from(data))
    # The spec refuses it (with its line) before the renderer's own check is reached.
    assert "symlinks./etc/hosts: target /home/hosts is on a mount shared by all nodes" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("", "''"),
        ("/var/local", "'/var/local'"),
        ("it's", "'it'\\''s'"),
        ("$(reboot)`x`\n*", "'$(reboot)`x`\n*'"),
        (5, "'5'"),
    ],
)
def test_sh_quote_always_single_quotes(value: str | int, quoted: str, tmp_path: Path) -> None:
    result = sh_quote(value)
    assert isinstance(result, ShellQuoted)
    assert result == quoted
    # And the shell reads back exactly the value.
    done = subprocess.run(
        [*shell_argv("dash"), "-c", f"printf '%s' {result}"], capture_output=True, text=True, check=True
    )
    assert done.stdout == str(value)


@pytest.mark.parametrize("value", [True, None, 1.5, ("a",), "nul\0byte"])
def test_sh_quote_refuses_what_it_cannot_quote(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        sh_quote(value)


def _context(**changes: object) -> BootScriptContext:
    base = bootscript_context(cluster_from(spec()))
    return BootScriptContext(**{**vars(base), **changes})


def test_output_that_skips_the_sh_filter_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A template edit that forgets |sh must fail at render time, not ship an unquoted value.
    template_dir = tmp_path / "templates"
    (template_dir / "initramfs").mkdir(parents=True)
    (template_dir / "initramfs" / "nfsroot.sh.j2").write_text("X={{ gateway }}\n")
    monkeypatch.setattr("pipeline.render.bootscript.TEMPLATE_DIR", template_dir)
    with pytest.raises(TypeError, match="did not go through the sh filter"):
        render_context(_context())


def test_undefined_template_variables_are_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    template_dir = tmp_path / "templates"
    (template_dir / "initramfs").mkdir(parents=True)
    (template_dir / "initramfs" / "nfsroot.sh.j2").write_text("X={{ no_such_value|sh }}\n")
    monkeypatch.setattr("pipeline.render.bootscript.TEMPLATE_DIR", template_dir)
    with pytest.raises(jinja2.UndefinedError, match="no_such_value"):
        render_context(_context())


def test_base_spec_is_valid() -> None:
    # The behaviour tests build on it; a model change that breaks it should fail here first.
    assert cluster_from(BASE_SPEC).name == "homelab"
