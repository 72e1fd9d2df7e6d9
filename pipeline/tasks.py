"""doit tasks: `doit` validates cluster.yaml and builds every artifact into build/, each only when its inputs changed.

pyproject.toml's [tool.doit] points doit here. Task creation must stay cheap (no YAML parsing here): a no-op
`doit` should cost about what `doit list` does. Inputs are files: the spec's parts (build/spec/*.json, written
only when their content changes), the templates and the modules that render each family.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import families
from pipeline.doit_ui import CleanTree, PipelineFailed, Reporter, failure
from pipeline.errors import PipelineError, Problem, SpecError
from pipeline.fsutil import write_if_changed
from pipeline.runtime import tune_gc
from pipeline.seal import intact, record_bytes, recorded_sha256, write_seal
from pipeline.workspace import TEMPLATES, Workspace

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster

DOIT_CONFIG = {"default_tasks": ["build"], "action_string_formatting": "new", "reporter": Reporter}

tune_gc()

PACKAGE = Path(__file__).resolve().parent
WS = Workspace.from_env()
SPEC_CODE = sorted(str(p) for p in (PACKAGE / "spec").glob("*.py"))
SHARED_CODE = [
    str(PACKAGE / m)
    for m in ("outputs.py", "families.py", "stage.py", "seal.py", "render/artifact.py", "render/templating.py")
]
SCHEMA_FILE = Path("schema/cluster.schema.json")


def _deps(family: families.Family) -> list[str]:
    files = [str(WS.part_file(p)) for p in family.parts]
    files += _expand(PACKAGE, family.modules, "*.py") + _expand(TEMPLATES, family.templates, "*")
    return files + SHARED_CODE + SPEC_CODE


def _expand(root: Path, names: tuple[str, ...], pattern: str) -> list[str]:
    files: list[str] = []
    for name in names:
        path = root / name
        files += sorted(str(p) for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else [str(path)]
    return files


def _renders() -> None:
    """Before an action renders: keep compiled templates under build/ (pipeline/render/templating.py)."""
    from pipeline.render.templating import cache_compiled_templates

    cache_compiled_templates(WS.build / ".jinja")


def _cluster() -> Cluster:
    from pipeline.spec.parts import assemble

    return assemble(WS.spec_dir, families.PARTS)


def _validate() -> PipelineFailed | None:
    from pipeline.spec.load import parse_cluster
    from pipeline.spec.parts import split_parts

    try:
        try:
            # Read once and seal these very bytes: doit records a file_dep's checksum when the task ends, so
            # an edit saved during the run would otherwise pass for built (issue 12, defect 3).
            text, source = record_bytes(WS.spec_file)
        except OSError as exc:
            raise SpecError([Problem(str(WS.spec_file), 0, 0, "", f"cannot read the spec: {exc.strerror}")]) from None
        cluster, warnings = parse_cluster(text, str(WS.spec_file))
    except PipelineError as exc:
        return failure(exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    written = []
    for part, data in split_parts(cluster, families.PARTS, families.DERIVED_PARTS).items():
        write_if_changed(WS.part_file(part), data)
        written.append(WS.part_file(part))
    write_seal(WS.seal("spec"), written, {str(WS.spec_file): source})
    return None


def _intact(task: str) -> Callable[[], bool]:
    """doit `uptodate` check: False when a file the task wrote or read differs from its seal."""
    return lambda: intact(WS.seal(task))


def task_spec() -> dict[str, Any]:
    """Validate cluster.yaml and split it into parts (build/spec/*.json)."""
    # cluster.yaml itself is tracked by the seal, not by file_dep (see _validate).
    return {
        "actions": [_validate],
        "file_dep": [*SPEC_CODE, str(PACKAGE / "families.py"), str(PACKAGE / "seal.py")],
        "targets": [str(WS.part_file(p)) for p in (*families.PARTS, *families.DERIVED_PARTS)],
        "uptodate": [_intact("spec")],
    }


def _render_simple(family: str) -> PipelineFailed | None:
    from pipeline import outputs
    from pipeline.stage import stage_family

    _renders()
    try:
        rendered = outputs.SIMPLE[family](_cluster())
        stage_family(WS, family, rendered.artifacts, rendered.reviews)
    except PipelineError as exc:
        return failure(exc)
    return None


def _render_initrd() -> PipelineFailed | None:
    """One boot script and initrd per node group (named by content: identical groups share one)."""
    from pipeline import outputs
    from pipeline.render.artifact import Artifact, ReviewDoc
    from pipeline.stage import stage_family

    _renders()
    try:
        images: list[Artifact] = []
        scripts: list[ReviewDoc] = []
        entries: list[dict[str, Any]] = []
        inputs: dict[str, Any] = {}
        initrds: dict[str, list[str]] = {}
        for view in _cluster().groups_resolved():
            cluster = view.cluster
            script = ReviewDoc(outputs.script_review_name(view), outputs.boot_script(cluster))
            scripts.append(script)
            if cluster.boot.method == "overlay":
                name, data = outputs.overlay_image(cluster, script.data)
                fields = view.fields(("boot", "writable", "symlinks"))
                if all(a.path != outputs.initrd_path(cluster, name) for a in images):
                    images.append(Artifact(outputs.initrd_path(cluster, name), "file", "initrd", fields, data))
                initrds[view.name] = [outputs.distro_initrd_name(cluster), name]
            else:
                entry, name, source = _repack(cluster, script, view.fields(("boot", "writable", "symlinks")))
                if all(e["path"] != entry["path"] for e in entries):
                    entries.append(entry)
                inputs |= source
                initrds[view.name] = [name]
        first, *others = initrds
        extra: dict[str, Any] = {"initrds": initrds[first]}
        if others:
            extra["groups"] = {name: initrds[name] for name in others}
        stage_family(WS, "initrd", images, scripts, extra_entries=entries, extra=extra, inputs=inputs or None)
    except PipelineError as exc:
        return failure(exc)
    return None


def _repack(cluster: Cluster, script: Any, fields: tuple[str, ...]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Repack the distro initrd with the script (unless already built): its manifest entry, name and input."""
    from pipeline import outputs
    from pipeline.archive.repack import repack
    from pipeline.seal import file_sha256, record_file

    source = outputs.repack_source(cluster, WS.base)
    if not source.is_file():
        raise PipelineError(f"boot.repack.source: {source} does not exist (the distro initrd to repack)")
    # Sealed as found before reading it: a distro initrd replaced during the run (update-initramfs) is
    # rebuilt by the next run, whatever checksum doit records for its file_dep when the task ends.
    source_record = record_file(source)
    name = outputs.repack_name(cluster, source, script.data)
    path = outputs.initrd_path(cluster, name)
    out = WS.staged(path)
    # Named by its inputs: an existing file is the same build, unless it differs from what was sealed.
    if not (out.is_file() and recorded_sha256(WS.seal("render.initrd"), out) == file_sha256(out)):
        from pipeline.archive.overlay import overlay_files

        settings = cluster.boot.repack
        out.parent.mkdir(parents=True, exist_ok=True)
        repack(
            source,
            overlay_files(script.data, outputs.SCRIPT_NAME),
            out,
            compression=settings.compression,
            level=settings.level,
            threads=settings.threads,
            mtime=outputs.source_date_epoch(),
        )
    entry = {
        "path": path,
        "kind": "file",
        "role": "initrd",
        "fields": list(fields),
        "mode": "0644",
        "sha256": file_sha256(out),
        "size": out.stat().st_size,
        "staged": out.relative_to(WS.build).as_posix(),
    }
    return entry, name, {str(source): source_record}


def _render_pxelinux() -> PipelineFailed | None:
    from pipeline import outputs
    from pipeline.stage import read_fragment, stage_family

    _renders()
    try:
        fragment = read_fragment(WS, "initrd")
        rendered = outputs.pxelinux(_cluster(), fragment["initrds"], fragment.get("groups"))
        stage_family(WS, "pxelinux", rendered.artifacts)
    except PipelineError as exc:
        return failure(exc)
    return None


def _repack_source() -> Path | None:
    """For the repack method the distro initrd is an input too. Read from the last validated boot part
    (plain JSON, no pydantic: task creation must stay cheap); after a switch to repack, the run that
    validates the new spec builds it, and later runs track the file. Whatever build/ holds, loading the
    tasks must not fail (a damaged part is repaired by the spec task, which runs first)."""
    try:
        boot = json.loads(WS.part_file("boot").read_bytes())
        source = boot["repack"]["source"] if boot.get("method") == "repack" else None
        return (WS.base / source).resolve() if isinstance(source, str) else None
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None


def task_render() -> Any:
    """Render one artifact family into build/ (only when the spec parts it reads changed)."""
    for name, family in families.FAMILIES.items():
        deps = _deps(family)
        uptodate: list[Any] = [_intact(f"render.{name}")]
        if name == "pxelinux":
            deps.append(str(WS.fragment("initrd")))
            action: Any = _render_pxelinux
        elif name == "initrd":
            source = _repack_source()
            if source is not None and source.is_file():
                deps.append(str(source))
            elif source is not None:  # gone, or the spec changed: a missing file_dep would stop doit itself
                uptodate.append(False)
            action = _render_initrd
        else:
            action = (_render_simple, [name])
        yield {
            "name": name,
            "doc": family.doc,
            "actions": [action],
            "file_dep": deps,
            "targets": [str(WS.fragment(name))],
            "uptodate": uptodate,
        }


def _manifest() -> PipelineFailed | None:
    from pipeline.stage import merge_manifest

    try:
        merge_manifest(WS, json.loads(WS.part_file("name").read_bytes()), families.FAMILIES)
    except PipelineError as exc:
        return failure(exc)
    return None


def task_manifest() -> dict[str, Any]:
    """Merge the families' fragments into build/manifest.json, the desired state of the gateway."""
    return {
        "actions": [_manifest],
        "file_dep": [str(WS.fragment(f)) for f in families.FAMILIES] + [str(PACKAGE / "stage.py")],
        "targets": [str(WS.manifest)],
        "uptodate": [_intact("manifest")],
    }


def _publish() -> PipelineFailed | None:
    from pipeline.review import published
    from pipeline.stage import sync_tree

    try:
        files = published(WS)
    except PipelineError as exc:
        return failure(exc)
    changed = sync_tree(WS.generated, files)
    write_seal(WS.seal("review"), [WS.generated / rel for rel in sorted(files)])
    for rel in changed:
        print(f"updated {WS.generated.name}/{rel}", file=sys.stderr)
    return None


def task_review() -> dict[str, Any]:
    """Refresh generated/, the committed copy of the text outputs that pull requests show."""
    # Only after the manifest merged without conflict: a failing run leaves generated/ as it was.
    return {
        "actions": [_publish],
        "task_dep": ["manifest"],
        "file_dep": [str(WS.manifest), *(str(WS.fragment(f)) for f in families.FAMILIES), str(PACKAGE / "review.py")],
        "uptodate": [_intact("review")],
        "verbosity": 2,
    }


def _schema() -> None:
    from pipeline.spec.schema import schema_bytes

    write_if_changed(SCHEMA_FILE, schema_bytes())
    write_seal(WS.seal("schema"), [SCHEMA_FILE])


def task_schema() -> dict[str, Any]:
    """Write the JSON Schema of cluster.yaml (schema/cluster.schema.json) for editors."""
    return {
        "actions": [_schema],
        "file_dep": SPEC_CODE,
        "targets": [str(SCHEMA_FILE)],
        "uptodate": [_intact("schema")],  # a hand-edited schema is rewritten, like any damaged output
    }


def task_build() -> CleanTree:
    """Validate cluster.yaml and build everything into build/ (the default task)."""
    # Staged files are not doit targets (their names depend on content), so clean removes the whole tree; the
    # other tasks have no clean of their own (removing one task's targets would leave a half build).
    return CleanTree(
        WS.build,
        name="build",
        actions=None,
        task_dep=["spec", "render", "manifest", "review", "schema"],
        doc=task_build.__doc__,
    )


def _check() -> PipelineFailed | None:
    from pipeline.review import expected_generated, stale_report
    from pipeline.spec.load import load_cluster
    from pipeline.spec.schema import schema_bytes

    try:
        cluster, _ = load_cluster(WS.spec_file)
        report = stale_report(expected_generated(cluster, WS.base), WS.generated)
    except PipelineError as exc:
        return failure(exc)
    if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_bytes() != schema_bytes():
        report.append(f"{SCHEMA_FILE}: stale")
    if report:
        return PipelineFailed("committed outputs are stale; run `doit` and commit:\n" + "\n".join(report))
    print(f"{WS.generated.name}/ and {SCHEMA_FILE} are up to date", file=sys.stderr)
    return None


def task_check() -> dict[str, Any]:
    """Fail when the committed generated/ files or the schema are stale (for CI on pull requests)."""
    return {"actions": [_check], "uptodate": [False], "verbosity": 2}


def _cli(argv: list[str], ok: tuple[int, ...] = (0,)) -> PipelineFailed | None:
    from pipeline.cli import main

    code = main(["-f", str(WS.spec_file), *argv])
    return None if code in ok else PipelineFailed(f"nfsroot {' '.join(argv)} exited with {code}")


def task_plan() -> dict[str, Any]:
    """Dry run: what `apply` would change in deploy.root, with reasons (exits 0; `nfsroot plan` exits 2 on changes)."""
    # doit has one exit status for a task that did not succeed (1, with its failure report): a plan that found
    # changes did its job, so under doit it succeeds; the console script is the one with a status for scripts.
    return {
        "actions": [(_cli, [["plan", "--build", str(WS.build)], (0, 2)])],
        "task_dep": ["build"],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_apply() -> dict[str, Any]:
    """Make the target root match build/: atomic, idempotent, with backups; reloads exports only if they changed."""
    return {
        "actions": [(_cli, [["apply", "--build", str(WS.build)]])],
        "task_dep": ["build"],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_audit() -> dict[str, Any]:
    """Report file capabilities NFS will lose and paths the read-only root leaves read-only."""
    return {"actions": [(_cli, [["audit"]])], "uptodate": [False], "verbosity": 2}


def _rootfs() -> PipelineFailed | None:
    from pipeline.rootbuild.build import build_root

    try:
        cluster = _cluster()
        if cluster.rootfs is None:
            print("no rootfs section in the spec: the root is adopted, not built", file=sys.stderr)
            return None
        tarball, built = build_root(cluster.rootfs, WS.build / "rootfs")
    except PipelineError as exc:
        return failure(exc)
    print(f"{'built' if built else 'cached'}: {tarball}", file=sys.stderr)
    return None


def task_rootfs() -> dict[str, Any]:
    """Build the root from the spec's rootfs section with mmdebstrap (cached by its inputs; root, minutes)."""
    code = _expand(PACKAGE, ("rootbuild", "spec/rootfs.py"), "*.py")
    return {
        "actions": [_rootfs],
        "task_dep": ["spec"],
        "file_dep": [str(WS.part_file("rootfs")), *code],
        "verbosity": 2,
    }


def task_boottest() -> dict[str, Any]:
    """PXE-boot the build in QEMU against a loopback NFS server and check each node (slow; needs root)."""
    return {
        "actions": [(_cli, [["boottest", "--build", str(WS.build)]])],
        "task_dep": ["build"],
        "uptodate": [False],
        "verbosity": 2,
    }
