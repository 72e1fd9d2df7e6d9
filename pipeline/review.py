"""The committed review copy (`generated/`): what pull requests show, and `doit check` keeps honest."""

from __future__ import annotations

import difflib
from pathlib import Path

from pipeline import outputs
from pipeline.spec.model import Cluster

TEXT_ROLES = ("exports", "pxelinux", "hosts")


def expected_generated(cluster: Cluster, base: Path) -> dict[str, bytes]:
    """Relative path under generated/ → content, rendered fresh from the spec."""
    files: dict[str, bytes] = {}
    script = outputs.boot_script(cluster)
    rendered = [outputs.SIMPLE[name](cluster) for name in ("exports", "hosts", "symlinks")]
    rendered.append(outputs.pxelinux(cluster, outputs.initrd_names(cluster, base, script)))
    for r in rendered:
        for a in r.artifacts:
            if a.kind == "file" and a.role in TEXT_ROLES:
                files["gateway" + a.path] = a.data
        for doc in r.reviews:
            files[f"review/{doc.name}"] = doc.data
    files[outputs.SCRIPT_REVIEW] = script
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
