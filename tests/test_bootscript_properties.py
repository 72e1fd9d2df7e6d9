"""Property tests: any spec the model accepts gives a script whose values all sit inside single quotes, that
the shells and shellcheck accept, and that boots a fake node exactly as the spec says."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.render.bootscript import BootScriptContext, bootscript_context, render_context
from pipeline.spec.model import Cluster
from pipeline.spec.types import KLIBC_FLAGS
from tests.bootscript.harness import NODE_ID, FakeNode, require_program, shell_argv
from tests.spec_helpers import issue_13_spec

# Path components the spec allows, leaning on the awkward ones: leading hyphens, dots, @ and +.
COMPONENT = st.text(alphabet="aZ09._+@-", min_size=1, max_size=6).filter(lambda c: c not in (".", ".."))
RESERVED_TOP = {"etc", "proc", "sys", "dev", "run", "usr"}
LABEL_START = st.text(alphabet="abz09", min_size=1, max_size=1)
LABEL_MIDDLE = st.text(alphabet="az09-", max_size=8)
NAME = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)


def abs_path(first: str, rest: list[str]) -> str:
    return "/" + "/".join([first, *rest])


@st.composite
def mount_options(draw: st.DrawFn) -> list[str]:
    flags = draw(st.lists(st.sampled_from(sorted(KLIBC_FLAGS - {"ro", "rw"})), max_size=4, unique=True))
    numeric = draw(
        st.lists(
            st.one_of(
                st.builds(lambda n: f"port={n}", st.integers(0, 999_999_999)),
                st.builds(lambda n: f"timeo={n}", st.integers(0, 99_999)),
                st.sampled_from(["vers=3", "nfsvers=2", "rsize=8192", "retrans=0"]),
            ),
            max_size=2,
        )
    )
    options = [*flags, *numeric]
    options.insert(draw(st.integers(0, len(options))), "rw")
    return options


@st.composite
def hostname_pattern(draw: st.DrawFn) -> str:
    prefix = draw(st.one_of(st.just(""), st.builds(str.__add__, LABEL_START, LABEL_MIDDLE)))
    suffix = draw(st.one_of(st.just(""), st.builds(str.__add__, LABEL_MIDDLE, LABEL_START)))
    middle = draw(st.sampled_from(["{mac}", "{mac}-{mac}", "{mac}{mac}"]))
    return prefix + middle + suffix


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    share_paths = draw(
        st.lists(st.builds(abs_path, COMPONENT, st.lists(COMPONENT, max_size=2)), min_size=3, max_size=4, unique=True)
    )
    share_names = draw(st.lists(NAME, min_size=len(share_paths), max_size=len(share_paths), unique=True))
    shares: dict[str, Any] = {n: {"path": p, "access": "rw"} for n, p in zip(share_names, share_paths, strict=True)}
    root_name, *rw_names = share_names
    shares[root_name]["access"] = "ro"

    tops = draw(st.lists(COMPONENT.filter(lambda c: c not in RESERVED_TOP), min_size=1, max_size=3, unique=True))
    writable: list[dict[str, Any]] = []
    for i, top in enumerate(tops):
        w: dict[str, Any] = {
            "mount": abs_path(top, draw(st.lists(COMPONENT, max_size=2))),
            "share": draw(st.sampled_from(rw_names)),
            "per_node": i == 0 or draw(st.booleans()),
            "options": draw(mount_options()),
        }
        if draw(st.booleans()):
            w["subdir"] = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=2)))
        writable.append(w)
    per_node = [w["mount"] for w in writable if w["per_node"]]

    symlinks: dict[str, str] = {
        "/etc/hostname": draw(st.sampled_from(per_node)) + "/" + draw(COMPONENT),
        "/etc/hosts": draw(st.sampled_from(per_node)) + "/" + draw(COMPONENT),
    }
    for name in draw(st.lists(COMPONENT, max_size=3, unique=True)):
        target = (
            draw(st.sampled_from([w["mount"] for w in writable]))
            + "/"
            + "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=2)))
        )
        symlinks.setdefault("/etc/x" + name, target)
    data = {
        "name": draw(NAME),
        "gateway": {"address": "10.0.2.2", "network": "10.0.2.0/24"},
        "shares": shares,
        "root": {"share": root_name},
        "writable": writable,
        "symlinks": symlinks,
        "boot": {
            "kernel": "6.1.0-21-amd64",
            "on_failure": draw(st.sampled_from(["panic", "continue"])),
            "mount_retries": draw(st.integers(0, 30)),
        },
        "nodes": {"hostname": draw(hostname_pattern())},
    }
    try:
        return Cluster.model_validate(data)
    except ValidationError:
        # Rare draws break a cross-field rule (two symlinks onto one target, say); skip those.
        assume(False)
        raise


def _neutral(value: Any) -> Any:
    """The same structure with every non-empty string and every number replaced by one dull value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: _neutral(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, tuple):
        return tuple(_neutral(v) for v in value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int):
        # Empty stays empty: the template may leave out an empty value, which is layout, not leakage.
        return "v" if value != "" else ""
    raise TypeError(value)


def blank_single_quotes(script: str) -> str:
    """The script with the inside of every single-quoted string removed (comments kept as they are)."""
    out: list[str] = []
    i, n = 0, len(script)
    state = "normal"
    while i < n:
        c = script[i]
        if state == "single":
            if c == "'":
                out.append("'")
                state = "normal"
        elif state == "double":
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(script[i + 1])
                i += 1
            elif c == '"':
                state = "normal"
        elif c == "#" and (i == 0 or script[i - 1] in " \t\n;"):
            end = script.find("\n", i)
            end = n if end < 0 else end
            out.append(script[i:end])
            i = end
            continue
        else:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(script[i + 1])
                i += 1
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
        i += 1
    return "".join(out)


def test_blank_single_quotes_sees_what_the_shell_sees() -> None:
    assert blank_single_quotes("a='x y' b=\"q'q\" # it's\nc='it'\\''s'") == "a='' b=\"q'q\" # it's\nc=''\\'''"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cluster=clusters())
def test_values_only_ever_appear_single_quoted(cluster: Cluster, tmp_path: Path) -> None:
    require_program("shellcheck")
    context = bootscript_context(cluster)
    script = render_context(context).decode()
    neutral: BootScriptContext = _neutral(context)
    # Outside single quotes the script is the same whatever the values are: no value can reach the shell
    # as code, a word boundary or a glob.
    assert blank_single_quotes(script) == blank_single_quotes(render_context(neutral).decode())

    path = tmp_path / "nfsroot"
    path.write_text(script)
    for shell in ("dash", "busybox"):
        done = subprocess.run([*shell_argv(shell), "-n", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, (shell, done.stderr)
    checked = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout


# Issue 13: hypothesis drew two per_node mounts of one share, each with a file of the same name, so both landed
# in one directory. The loader refuses that now (tests/test_spec_hostile.py); pinned here is the same shape made
# valid by a subdir, so every CI run boots it instead of depending on the random draw to find it.
ISSUE_13_NEIGHBOUR = Cluster.model_validate(issue_13_spec("y"))


@pytest.mark.parametrize("shell", ["dash"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cluster=clusters())
@example(cluster=ISSUE_13_NEIGHBOUR)
def test_any_valid_spec_boots_a_node_as_specified(shell: str, cluster: Cluster, tmp_path_factory: Any) -> None:
    node = FakeNode(tmp_path_factory.mktemp("node"), cluster)
    result = node.boot(shell, render_context(bootscript_context(cluster)), {"BOOTIF": "01-00-23-24-94-34-ae"})
    assert (result.returncode, result.stderr) == (0, ""), result.kmsg
    root = node.root
    mounts = [c for c in result.calls if c.startswith("nfsmount") and c.startswith(f"{root}/", c.rfind(" ") + 1)]
    expected = {
        f"nfsmount -o {','.join(w.options)} 10.0.2.2:{cluster.writable_export(w, NODE_ID if w.per_node else None)}"
        f" {root}{w.mount}"
        for w in cluster.writable
    }
    assert set(mounts) == expected and len(mounts) == len(expected)
    hostname = cluster.nodes.hostname.replace("{mac}", NODE_ID)
    assert f"hostname {hostname}" in result.calls

    def on_gateway(path: str) -> Path:
        w = next(w for w in cluster.writable if path.startswith(w.mount + "/"))
        export = cluster.writable_export(w, NODE_ID if w.per_node else None)
        return node.gateway / (export + path[len(w.mount) :]).lstrip("/")

    assert on_gateway(cluster.symlinks["/etc/hostname"]).read_text() == hostname + "\n"
    assert on_gateway(cluster.symlinks["/etc/hosts"]).read_text().endswith(f"127.0.0.1 {hostname}\n::1 {hostname}\n")
    assert on_gateway(cluster.node_dir.mount + "/nfsroot-boot").read_text().endswith("result=ok\n")
