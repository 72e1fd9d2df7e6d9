"""The node's boot script: /scripts/init-bottom/nfsroot in the initramfs, rendered from the cluster spec.

`bootscript_context` turns a `Cluster` into plain data (pure, no I/O); `render_context` puts that data into
`templates/initramfs/nfsroot.sh.j2`. Every value reaches the script through the `sh` filter, which always
single-quotes; the environment's `finalize` refuses any `{{ }}` output that skipped it, so a template edit
cannot leak an unquoted value even though the spec model already restricts what values can contain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pipeline.errors import Problem, SpecError
from pipeline.render import preset, profile, storage
from pipeline.render.templating import TEMPLATES, compiled_templates
from pipeline.spec.model import SKELETON_DIR, Cluster, Writable
from pipeline.spec.types import MAC_PLACEHOLDER

TEMPLATE_DIR = TEMPLATES
TEMPLATE = "initramfs/nfsroot.sh.j2"

# The files the script rewrites at every boot; symlinks to them are not seeded from the skeleton.
GENERATED_SYMLINKS = ("/etc/hostname", "/etc/hosts")
CMDLINE_NAME = "cmdline"
RECORD_NAME = "nfsroot-boot"


class ShellQuoted(str):
    """A string that is safe to paste into a shell script as one word."""

    __slots__ = ()


def sh_quote(value: object) -> ShellQuoted:
    """Single-quote a value for POSIX sh, always (even when it needs no quoting), so that a test can check
    that every value sits inside quotes."""
    if isinstance(value, jinja2.Undefined):
        # Converting it raises StrictUndefined's error, which names the missing variable.
        str(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"refusing to quote {type(value).__name__} {value!r} into a shell script")
    text = str(value)
    if "\0" in text:
        raise ValueError(f"a shell script cannot hold a NUL byte: {text!r}")
    return ShellQuoted("'" + text.replace("'", "'\\''") + "'")


def _only_quoted(value: object) -> object:
    if not isinstance(value, ShellQuoted):
        raise TypeError(f"template output {value!r} did not go through the sh filter")
    return value


@dataclass(frozen=True)
class NodeDir:
    """A per-node directory made inside a temporarily mounted share: HEAD + node id + TAIL."""

    head: str
    tail: str


@dataclass(frozen=True)
class ShareStep:
    """One writable share mounted outside the final root to create the node's directories in it."""

    path: str
    options: str
    node_dirs: tuple[NodeDir, ...]


@dataclass(frozen=True)
class MountStep:
    """One writable mount under ${rootmnt}. Per-node exports are HEAD + node id + TAIL; shared ones HEAD."""

    mount: str
    options: str
    per_node: bool
    export_head: str
    export_tail: str


@dataclass(frozen=True)
class SeedStep:
    """A symlinked file the node gets a copy of from the skeleton when it has none."""

    source: str
    target: str
    mount: str  # the writable mount the target is on


@dataclass(frozen=True)
class BindStep:
    """root.profile: the node's copy SOURCE (on its own mount) bound over PATH, with SUBDIRS made in it."""

    path: str
    source: str
    subdirs: tuple[str, ...]


@dataclass(frozen=True)
class BootScriptContext:
    cluster: str
    gateway: str
    on_failure: str
    mount_retries: int
    hostname_parts: tuple[str, ...]
    skel_dir: str
    node_mount: str
    hostname_file: str
    hostname_mount: str
    hosts_file: str
    hosts_mount: str
    cmdline_file: str
    record_file: str
    shares: tuple[ShareStep, ...]
    mounts: tuple[MountStep, ...]
    seeds: tuple[SeedStep, ...]
    # root.profile: bind mounts from the node's directory, tmpfs mounts, the file /etc/machine-id links to.
    binds: tuple[BindStep, ...] = ()
    tmpfs: tuple[str, ...] = ()
    machine_id: str = ""
    homes: tuple[str, ...] = ()  # shared writable mounts where users' missing homes are made
    storage_tmpfs: tuple[tuple[str, str], ...] = ()  # (mount, size) of `storage: tmpfs` entries
    storage_conf: str = ""  # where nfsroot-storage.service reads this node's image and disk storage
    storage_lines: tuple[str, ...] = ()  # its lines (pipeline.render.storage)
    profile: bool = False  # also drops the root's stale `127.0.1.1 <installer's host name>` from hosts


def _split_export(cluster: Cluster, w: Writable) -> tuple[str, str]:
    """Ask the model where a per-node export puts the node id, instead of re-deriving its layout."""
    for sentinel in ("0123456789ab", "ba9876543210", "fedcba012345"):
        path = cluster.writable_export(w, sentinel)
        if path.count(sentinel) == 1:
            head, tail = path.split(sentinel)
            return head, tail
    raise AssertionError(f"cannot locate the node id in the export of {w.mount}")


def _under(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _mount_of(cluster: Cluster, path: str) -> Writable:
    # The spec's rules put every symlink target strictly under exactly one writable mount.
    return next(w for w in cluster.writable if _under(path, w.mount))


def _generated_file(cluster: Cluster, link: str, name: str) -> tuple[str, str]:
    """Where a generated file goes, and its mount: the target of its symlink, which must be per node, or
    NAME in the node's directory."""
    target = cluster.symlinks.get(link)
    if target is None:
        return f"{cluster.node_dir.mount}/{name}", cluster.node_dir.mount
    mount = _mount_of(cluster, target)
    if not mount.per_node:
        # Every node rewrites this file at boot: on a shared mount they would overwrite each other.
        raise SpecError(
            [
                Problem(
                    file="cluster.yaml",
                    line=0,
                    column=0,
                    field=f"symlinks.{link}",
                    message=f"target {target} is not under a per-node writable mount",
                    hint="each node writes its own " + link.rsplit("/", 1)[-1] + " at boot",
                )
            ]
        )
    return target, mount.mount


def taken_mounts(cluster: Cluster) -> set[str]:
    return {w.mount for w in cluster.writable}


def bootscript_context(cluster: Cluster) -> BootScriptContext:
    """The data the boot script template needs, from the spec. Pure."""
    node_dir = cluster.node_dir
    shares: dict[str, ShareStep] = {}
    mounts: list[MountStep] = []
    for w in cluster.nfs_writable:
        assert w.share is not None  # the spec's rules: every nfs entry names its share
        options = ",".join(w.options)
        if w.per_node:
            head, tail = _split_export(cluster, w)
            share_path = cluster.share(w.share).path
            if not head.startswith(share_path.rstrip("/") + "/"):
                raise AssertionError(f"per-node export {head}… lies outside share {share_path}")
            relative = NodeDir(head=head[len(share_path.rstrip("/")) :], tail=tail)
            # The first per-node mount of a share decides the options of its temporary mount: they
            # carry what the server needs (vers, tcp, port) and, by the spec's rules, rw.
            step = shares.get(w.share) or ShareStep(path=share_path, options=options, node_dirs=())
            shares[w.share] = ShareStep(step.path, step.options, (*step.node_dirs, relative))
            mounts.append(MountStep(w.mount, options, True, head, tail))
        else:
            mounts.append(MountStep(w.mount, options, False, cluster.writable_export(w), ""))
    # The node's directory first (the boot record lives there and can then report any later failure),
    # then parents before children: the spec forbids nested writable mounts today, the order stays right if
    # it ever allows them.
    mounts.sort(key=lambda m: (m.mount != node_dir.mount, m.mount.count("/"), m.mount))
    seeds = tuple(
        SeedStep(source, target, _mount_of(cluster, target).mount)
        for source, target in cluster.symlinks.items()
        if source not in GENERATED_SYMLINKS
    )
    seeds += tuple(
        SeedStep(link.path, link.target, node_dir.mount) for link in profile.links(cluster) if link.how == "seed"
    )
    machine_id = next((x.target for x in profile.links(cluster) if x.how == "machine-id"), "")
    hostname_file, hostname_mount = _generated_file(cluster, "/etc/hostname", "hostname")
    hosts_file, hosts_mount = _generated_file(cluster, "/etc/hosts", "hosts")
    return BootScriptContext(
        cluster=cluster.name,
        gateway=cluster.gateway.address,
        on_failure=cluster.boot.on_failure,
        mount_retries=cluster.boot.mount_retries,
        hostname_parts=tuple(cluster.nodes.hostname.split(MAC_PLACEHOLDER)),
        skel_dir=SKELETON_DIR,
        node_mount=node_dir.mount,
        hostname_file=hostname_file,
        hostname_mount=hostname_mount,
        hosts_file=hosts_file,
        hosts_mount=hosts_mount,
        cmdline_file=f"{node_dir.mount}/{CMDLINE_NAME}",
        record_file=f"{node_dir.mount}/{RECORD_NAME}",
        shares=tuple(shares.values()),
        mounts=tuple(mounts),
        seeds=seeds,
        binds=tuple(
            BindStep(b.path, profile.bind_source(cluster, b), b.subdirs)
            for b in (*profile.binds(cluster), *preset.binds(cluster))
        ),
        tmpfs=(profile.TMPFS,) if profile.enabled(cluster) and profile.TMPFS not in taken_mounts(cluster) else (),
        machine_id=machine_id,
        homes=tuple(w.mount for w in cluster.nfs_writable if not w.per_node) if profile.enabled(cluster) else (),
        profile=profile.enabled(cluster),
        storage_tmpfs=storage.boot_tmpfs(cluster),
        storage_conf=storage.CONF.removeprefix("/run"),
        storage_lines=storage.unit_lines(cluster),
    )


@functools.cache
def _environment(template_dir: Path) -> SandboxedEnvironment:
    # Not templating.environment(): this one also needs finalize and other comment delimiters.
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(template_dir),
        bytecode_cache=compiled_templates("bootscript"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # a shell script, not HTML: quoting is the sh filter's job
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_only_quoted,
        # sh's ${#var} (string length) would open a jinja comment with the default {# ... #}.
        comment_start_string="[#",
        comment_end_string="#]",
    )
    env.filters["sh"] = sh_quote
    return env


def render_context(context: BootScriptContext) -> bytes:
    """The script for a context; split from `render_bootscript` so tests can hand-build odd contexts."""
    template = _environment(TEMPLATE_DIR).get_template(TEMPLATE)
    return template.render(vars(context)).encode()


def render_bootscript(cluster: Cluster) -> bytes:
    """The boot script for a cluster, as the bytes to install at /scripts/init-bottom/nfsroot (mode 0755)."""
    return render_context(bootscript_context(cluster))
