"""ssh host keys of known nodes generated on the gateway by apply, and the cluster's ssh_known_hosts (issue 9).

Real ssh-keygen (openssh-client), the real CLI, the shipped cluster.yaml deployed into a temporary target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import traceback
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from pipeline.state.apply import CRASH_ENV, TMP_PREFIX
from tests.deploy_helpers import F, make_build, snapshot
from tests.prereq import require_program

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
NODE_A, NODE_B, NODE_C = "0023249434ae", "448a5bddd8ba", "5254000000cc"
KINDS = ("ecdsa", "ed25519", "rsa")


def _spec(tmp_path: Path, target: Path, macs: tuple[str, ...] = ("00:23:24:94:34:ae", "44:8a:5b:dd:d8:ba")) -> Path:
    """The shipped spec deployed into `target`, its known nodes these MACs (or `{mac: ..., ...}` entries)."""
    known = (
        "".join(f"    - {m if m.startswith('{') else f'{{mac: {chr(34)}{m}{chr(34)}}}'}\n" for m in macs) or "    []\n"
    )
    text = re.sub(r"(?ms)^  known:.*?(?=^\S|\Z)", lambda _: "  known:\n" + known + "\n", CLUSTER_YAML.read_text())
    text = text.replace("  root: gateway/", f"  root: {target}")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    return spec


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "gw"
    (target / "clients/etc/ssh").mkdir(parents=True)
    (target / "workers").mkdir()
    return target


def _cli(spec: Path, build: Path, *args: str) -> int:
    return main(["-f", str(spec), *args, "--build", str(build)])


def _build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", {"/etc/exports.d/nfsroot.exports": F("/clients *(ro)\n", role="exports")})


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def _known(path: Path) -> dict[tuple[str, str], str]:
    """(host names, key type) -> base64 of each line of a known_hosts file."""
    lines = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {(names, kind): blob for names, kind, blob in lines}


def _keys(target: Path, node: str) -> dict[str, bytes]:
    ssh = target / "workers" / node / "ssh"
    return {p.name: p.read_bytes() for p in sorted(ssh.iterdir())}


@pytest.fixture(autouse=True)
def _keygen() -> None:
    require_program("ssh-keygen")


def test_apply_generates_the_known_nodes_keys_once_and_publishes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(tmp_path)
    spec, build = _spec(tmp_path, target), _build(tmp_path)
    assert _cli(spec, build, "plan") == EXIT_CHANGES
    out = capsys.readouterr().out
    for node in (NODE_A, NODE_B):
        assert f"generate ssh host keys for node worker-node-{node} (ecdsa, ed25519, rsa)" in out
        assert f"keygen   /workers/{node}/ssh  (ssh host keys: ecdsa ed25519 rsa)" in out
    assert "  + known_hosts /clients/etc/ssh/ssh_known_hosts  (file 0644)" in out  # made by apply from the new keys
    assert not (target / "workers" / NODE_A).exists()  # plan wrote nothing

    assert _cli(spec, build, "apply") == EXIT_OK
    published = _known(target / "clients/etc/ssh/ssh_known_hosts")
    assert (target / "etc/nfsroot/ssh_known_hosts").read_text() == (
        target / "clients/etc/ssh/ssh_known_hosts"
    ).read_text()
    for node in (NODE_A, NODE_B):
        ssh = target / "workers" / node / "ssh"
        for kind in KINDS:
            key = ssh / f"ssh_host_{kind}_key"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert stat.S_IMODE((ssh / f"{key.name}.pub").stat().st_mode) == 0o644
            # The pair belongs together, and the published line is that public key.
            derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
            typ, blob = derived.stdout.split()[:2]
            assert (ssh / f"{key.name}.pub").read_text().split()[:2] == [typ, blob]
            assert published[(f"worker-node-{node}", typ)] == blob
    assert len(published) == 6
    fingerprints = {_fingerprint(p) for p in (target / "workers").glob("*/ssh/*.pub")}
    assert len(fingerprints) == 6  # every node its own keys

    keys = {node: _keys(target, node) for node in (NODE_A, NODE_B)}
    capsys.readouterr()
    assert _cli(spec, build, "plan") == EXIT_OK, capsys.readouterr().out  # nothing left to do
    assert _cli(spec, build, "apply") == EXIT_OK
    assert {node: _keys(target, node) for node in (NODE_A, NODE_B)} == keys  # never regenerated


def test_known_hosts_follows_the_known_nodes_and_keys_are_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(tmp_path)
    build = _build(tmp_path)
    assert _cli(_spec(tmp_path, target), build, "apply") == EXIT_OK
    keys_a = _keys(target, NODE_A)
    # Node B removed, node C added (its ed25519 key already made at its first boot, before it was known).
    spec = _spec(tmp_path, target, ("00:23:24:94:34:ae", "52:54:00:00:00:cc"))
    early = target / "workers" / NODE_C / "ssh"
    early.mkdir(parents=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(early / "ssh_host_ed25519_key")], check=True
    )
    # Its rsa key lost its public half: derived again, the private key kept.
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "rsa", "-f", str(early / "ssh_host_rsa_key")], check=True)
    (early / "ssh_host_rsa_key.pub").unlink()
    early_keys = {p.name: p.read_bytes() for p in early.iterdir()}
    capsys.readouterr()
    assert _cli(spec, build, "plan") == EXIT_CHANGES
    out = capsys.readouterr().out
    assert f"generate ssh host keys for node worker-node-{NODE_C} (ecdsa, rsa)" in out
    assert NODE_A not in out.split("known_hosts")[0]  # no keygen for the node that has its keys
    assert _cli(spec, build, "apply") == EXIT_OK
    assert _keys(target, NODE_A) == keys_a
    now = _keys(target, NODE_C)
    assert {k: v for k, v in now.items() if k in early_keys} == early_keys
    assert set(now) == {f"ssh_host_{k}_key{s}" for k in KINDS for s in ("", ".pub")}
    published = _known(target / "clients/etc/ssh/ssh_known_hosts")
    assert {names for names, _ in published} == {f"worker-node-{NODE_A}", f"worker-node-{NODE_C}"}
    assert (target / "workers" / NODE_B / "ssh").is_dir()  # a removed node's keys stay on its directory
    assert (
        published[(f"worker-node-{NODE_C}", "ssh-ed25519")]
        == early_keys["ssh_host_ed25519_key.pub"].split()[1].decode()
    )


def test_a_fixed_address_is_published_and_a_foreign_known_hosts_is_backed_up(tmp_path: Path) -> None:
    target = _target(tmp_path)
    (target / "clients/etc/ssh/ssh_known_hosts").write_text("example.org ssh-ed25519 AAAA\n")
    spec = _spec(tmp_path, target, ('{mac: "00:23:24:94:34:ae", address: 192.168.0.7}',))
    assert _cli(spec, _build(tmp_path), "apply") == EXIT_OK
    published = _known(target / "clients/etc/ssh/ssh_known_hosts")
    assert {names for names, _ in published} == {f"worker-node-{NODE_A},192.168.0.7"}
    backups = list((target / "var/backups/nfsroot-pipeline").rglob("ssh_known_hosts"))
    assert [b.read_text() for b in backups] == ["example.org ssh-ed25519 AAAA\n"]


def test_a_symlink_planted_in_a_node_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _target(tmp_path)
    (target / "workers" / NODE_A).mkdir()
    (target / "workers" / NODE_A / "ssh").symlink_to("../../clients/etc/ssh")  # a node's root can do this
    before = snapshot(target)
    assert _cli(_spec(tmp_path, target), _build(tmp_path), "apply") == 1
    assert re.search(rf"/workers/{NODE_A}/ssh: a symlink is where .* refusing", capsys.readouterr().err)
    assert snapshot(target) == before


def test_without_ssh_keygen_apply_names_the_package_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(tmp_path)
    spec, build = _spec(tmp_path, target), _build(tmp_path)
    before = snapshot(target)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert _cli(spec, build, "apply") == 1
    err = capsys.readouterr().err
    assert "ssh-keygen is not installed on the gateway" in err and "install the Debian package openssh-client" in err
    assert snapshot(target) == before


def test_killed_at_every_step_the_rerun_gives_whole_key_pairs(tmp_path: Path) -> None:
    base = _target(tmp_path)
    spec, build = _spec(tmp_path, base, ("00:23:24:94:34:ae",)), _build(tmp_path)  # one node: 3 real keygens a run
    crashes = 0
    for steps in range(1, 200):
        target = tmp_path / f"run{steps}"
        shutil.copytree(base, target, symlinks=True)
        assert (target / "clients/etc/ssh").is_dir()
        spec.write_text(re.sub(r"(?m)^  root: .*$", f"  root: {target}", spec.read_text()))
        pid = os.fork()
        if pid == 0:  # the child dies after `steps` durable steps, like a power cut
            code = 0
            try:
                os.environ[CRASH_ENV] = str(steps)
                _cli(spec, build, "apply")
            except BaseException:
                traceback.print_exc()
                code = 3
            os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code == 0:
            break
        assert code == 137, f"apply failed (not killed) at step {steps}"
        crashes += 1
        # Whatever exists is whole: a private key only next to its public key (the pair's mark comes last).
        for key in target.glob("workers/*/ssh/ssh_host_*_key"):
            assert key.with_name(key.name + ".pub").is_file(), f"step {steps}: {key} without its public key"
        assert _cli(spec, build, "apply") == EXIT_OK
        published = _known(target / "clients/etc/ssh/ssh_known_hosts")
        assert len(published) == 3, f"step {steps}"
        for pub in target.glob("workers/*/ssh/*.pub"):
            typ, blob = pub.read_text().split()[:2]
            assert published[(f"worker-node-{pub.parts[-3]}", typ)] == blob
        leftovers = [p for p in snapshot(target) if TMP_PREFIX in p or ".keygen." in p]
        assert leftovers == [], f"step {steps}: {leftovers}"
        shutil.rmtree(target)
    assert crashes > 10


def test_a_saved_plan_with_an_edited_key_type_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(tmp_path)
    spec, build = _spec(tmp_path, target), _build(tmp_path)
    saved = tmp_path / "plan.json"
    assert _cli(spec, build, "plan", "--out", str(saved)) == EXIT_CHANGES
    doc = json.loads(saved.read_text())
    keygen = next(c for c in doc["changes"] if c["op"] == "keygen")
    keygen["content"] = keygen["content"].replace("ed25519", "../../../clients/etc/evil")
    saved.write_text(json.dumps(doc))
    before = snapshot(target)
    capsys.readouterr()
    assert _cli(spec, build, "apply", "--plan", str(saved)) == 1
    assert "unknown ssh key type '../../../clients/etc/evil' in the plan" in capsys.readouterr().err
    assert snapshot(target) == before


def test_a_saved_plan_generates_the_keys_it_shows(tmp_path: Path) -> None:
    target = _target(tmp_path)
    spec, build = _spec(tmp_path, target, ("00:23:24:94:34:ae",)), _build(tmp_path)
    saved = tmp_path / "plan.json"
    assert _cli(spec, build, "plan", "--out", str(saved)) == EXIT_CHANGES
    ops = {c["op"] for c in json.loads(saved.read_text())["changes"]}
    assert {"keygen", "known_hosts"} <= ops
    assert _cli(spec, build, "apply", "--plan", str(saved)) == EXIT_OK
    published = _known(target / "etc/nfsroot/ssh_known_hosts")
    for pub in (target / "workers" / NODE_A / "ssh").glob("*.pub"):
        typ, blob = pub.read_text().split()[:2]
        assert published[(f"worker-node-{NODE_A}", typ)] == blob
    assert len(published) == 3
