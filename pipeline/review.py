"""The committed review copy (`generated/`): what pull requests show, and `doit check` keeps honest."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError
from pipeline.families import FAMILIES, SCRIPT_NAME, SCRIPT_REVIEW
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster

TEXT_ROLES = ("exports", "pxelinux", "hosts")
SCRIPT_DOC = f"initrd/{SCRIPT_NAME}"  # the boot script's review copy under build/review/


def _generated_name(doc: str) -> str:
    if doc == SCRIPT_DOC:
        return SCRIPT_REVIEW
    group, found, rest = doc.removeprefix("initrd/groups/").partition("/")
    if doc.startswith("initrd/groups/") and found and rest == SCRIPT_NAME:
        return f"groups/{group}/{SCRIPT_REVIEW}"  # a node group's own boot script
    return f"review/{doc}"


def published(ws: Workspace) -> dict[str, bytes]:
    """Relative path under generated/ → content, copied from the finished build (build/manifest.json and the
    files it stages): what `doit` commits for review, without rendering anything a second time. The same
    mapping as expected_generated, which `doit check` uses to render it fresh."""
    files: dict[str, bytes] = {}
    try:
        manifest = json.loads(ws.manifest.read_bytes())
        for entry in manifest["entries"]:
            if entry["kind"] == "file" and entry["role"] in TEXT_ROLES:
                files["gateway" + entry["path"]] = (ws.build / entry["staged"]).read_bytes()
        for family in FAMILIES:
            for name in json.loads(ws.fragment(family).read_bytes())["files"]:
                if name.startswith("review/"):
                    files[_generated_name(name.removeprefix("review/"))] = (ws.build / name).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{ws.build}: the build is incomplete or damaged ({exc}); run `doit clean` and `doit`"
        ) from None
    return files


def expected_generated(cluster: Cluster, base: Path) -> dict[str, bytes]:
    """Relative path under generated/ → content, rendered fresh from the spec."""
    from pipeline import outputs

    files: dict[str, bytes] = {}
    views = cluster.groups_resolved()
    for view in views:
        files[_generated_name(outputs.script_review_name(view))] = outputs.boot_script(view.cluster)
    rendered = [outputs.SIMPLE[name](cluster) for name in ("exports", "hosts", "symlinks")]
    initrds = outputs.initrd_names(views[0].cluster, base)
    rendered.append(outputs.pxelinux(cluster, initrds, outputs.group_initrd_names(cluster, base)))
    for r in rendered:
        for a in r.artifacts:
            if a.kind == "file" and a.role in TEXT_ROLES:
                files["gateway" + a.path] = a.data
        for doc in r.reviews:
            files[_generated_name(doc.name)] = doc.data
    return files


def stale_report(expected: dict[str, bytes], generated: Path) -> list[str]:
    """Differences between the committed copy and a fresh render, as unified diffs; empty when up to date."""
    actual: dict[str, bytes] = {}
    if generated.exists():
        for path in generated.rglob("*"):
            if path.is_file():
                actual[path.relative_to(generated).as_posix()] = path.read_bytes()
    report = []
    for rel in sorted(set(expected) | set(actual)):
        want, have = expected.get(rel), actual.get(rel)
        if want == have:
            continue
        if want is None:
            report.append(f"{rel}: committed but no longer generated (remove it)")
        elif have is None:
            report.append(f"{rel}: generated but not committed")
        else:
            diff = difflib.unified_diff(
                have.decode(errors="replace").splitlines(keepends=True),
                want.decode(errors="replace").splitlines(keepends=True),
                f"committed/{rel}",
                f"fresh/{rel}",
            )
            report.append(f"{rel}: stale\n" + "".join(diff).rstrip("\n"))
    return report
