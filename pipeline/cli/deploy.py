"""`nfsroot plan`, `apply`, `rollback` and `audit`: the deploy side of the pipeline.

Settings come from cluster.yaml's `deploy` section when the spec can be read, and flags override them, so
`nfsroot plan --target DIR` works without a spec. Exit codes (docs/plan.md): 0 no changes / success,
2 changes pending (plan only), 1 error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import EXIT_CHANGES, EXIT_OK, bounded_int
from pipeline.errors import PipelineError
from pipeline.fsutil import write_atomic
from pipeline.render import preset, profile, storage
from pipeline.spec.load import load_cluster
from pipeline.spec.locate import spec_locator
from pipeline.spec.model import Cluster, Deploy
from pipeline.state.apply import ApplyOptions, apply_plan
from pipeline.state.audit_tmpfiles import TmpfilesNeed, tmpfiles_needs
from pipeline.state.audit_units import UnitNeed, uncovered, unit_needs
from pipeline.state.capabilities import REMEDIES, capability_changes, scan_capabilities
from pipeline.state.changes import Plan
from pipeline.state.deploy import plan_target
from pipeline.state.homes import home_changes
from pipeline.state.hostkeys import hostkey_changes
from pipeline.state.lint import lint_readonly_root
from pipeline.state.plan import PlanOptions
from pipeline.state.render import plan_to_json, read_plan_file, render_text
from pipeline.state.rollback import rollback_plan
from pipeline.state.services import BY_ROLE, DNSMASQ, NGINX, check_services
from pipeline.state.storagetools import check_storage_tools, missing_tools
from pipeline.textsafe import printable
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class Settings:
    target: Path
    build: Path
    client_root: str | None
    remedy: str
    keep_initrds: int
    reload_argv: tuple[str, ...] | None
    writable: tuple[str, ...] | None  # None when no spec was read (lint needs it)
    symlinks: tuple[str, ...]
    spec: Path | None = None  # cluster.yaml, when it exists: errors found at plan time point into it
    service_reloads: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=dict
    )  # role -> dhcp.reload etc., if on
    cluster: Cluster | None = None  # the spec, when there is one (ssh host keys of its known nodes)
    storage_tools: tuple[tuple[str, str, str], ...] = ()  # (field, program, package) the storage unit runs


def _spec(path: Path) -> Cluster | None:
    """The cluster spec if there is one; deploy commands also work on a bare --target without it."""
    if not path.exists():
        return None
    cluster, _warnings = load_cluster(path)  # `nfsroot spec` reports the warnings
    return cluster


def settings(args: argparse.Namespace) -> Settings:
    spec_path = Path(args.file)
    cluster = _spec(spec_path)
    deploy = cluster.deploy if cluster is not None else None
    target = args.target
    if target is None:
        if deploy is None:
            raise PipelineError(f"no target root: give --target DIR (or a {spec_path} with deploy.root)")
        target = spec_path.parent / deploy.root
    reload_argv: tuple[str, ...] | None = tuple(deploy.reload) if deploy is not None else ("exportfs", "-ra")
    if getattr(args, "reload_cmd", None):
        reload_argv = tuple(shlex.split(args.reload_cmd))
    if getattr(args, "no_reload", False) or not reload_argv:
        reload_argv = None
    client_root: str | None = args.client_root
    if client_root is None and cluster is not None:
        client_root = cluster.root_share.path
    remedy: str = args.capabilities or (deploy.capabilities if deploy is not None else "none")
    keep: int = (
        args.keep_initrds
        if args.keep_initrds is not None
        else (deploy.keep_initrds if deploy else Deploy.model_fields["keep_initrds"].default)
    )
    writable: tuple[str, ...] | None = None
    symlinks: tuple[str, ...] = ()
    if cluster is not None:
        writable, symlinks = _writable_for_every_group(cluster)
    spec = spec_path if cluster is not None else None
    service_reloads: dict[str, tuple[str, ...]] = {}
    if cluster is not None and not getattr(args, "no_reload", False):
        if cluster.dhcp is not None and cluster.dhcp.reload:
            service_reloads[DNSMASQ.role] = tuple(cluster.dhcp.reload)
        # Also without HTTP: a server block left from an earlier transport is removed, and nginx must forget it.
        if cluster.firmware.http.reload:
            service_reloads[NGINX.role] = tuple(cluster.firmware.http.reload)
    tools: dict[str, tuple[str, str, str]] = {}
    for view in cluster.groups_resolved() if cluster is not None else ():  # every group's storage runs on the root
        for need in storage.required_tools(view.cluster):
            tools.setdefault(need[1], need)
    return Settings(
        Path(target),
        Path(args.build),
        client_root,
        remedy,
        keep,
        reload_argv,
        writable,
        symlinks,
        spec,
        service_reloads,
        cluster,
        tuple(tools.values()),
    )


def _writable_for_every_group(cluster: Cluster) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(writable mount points, symlink sources) the audit may count on: what every node group's nodes get,
    root.profile's paths included. A path one group mounts and another leaves read-only is still read-only
    on the other group's nodes."""
    each = [
        (
            (*(w.mount for w in c.writable), *profile.writable_paths(c), *preset.writable_paths(c)),
            (*c.symlinks, *(link.path for link in profile.links(c))),
        )
        for c in (view.cluster for view in cluster.groups_resolved())
    ]
    (writable, symlinks), others = each[0], each[1:]
    return (
        tuple(p for p in writable if all(p in w for w, _ in others)),
        tuple(p for p in symlinks if all(p in s for _, s in others)),
    )


def make_target_plan(s: Settings, force: bool) -> Plan:
    """Observe the target and plan; the capabilities remedy is added when a client root is known."""
    extra = capability_changes(s.target, s.client_root, s.remedy) if s.client_root else []
    if s.cluster is not None:
        extra += hostkey_changes(s.target, s.cluster) + home_changes(s.target, s.cluster)
    locate = spec_locator(s.spec) if s.spec is not None else None
    root = s.target / s.client_root.lstrip("/") if s.client_root else None
    if root is not None and s.client_root and root.is_dir():  # before the first apply there is no root to ask
        check_storage_tools(root, s.client_root, s.storage_tools, locate)
    return check_services(plan_target(s.build, s.target, PlanOptions(s.keep_initrds, force), extra, locate), s.build)


def cmd_plan(args: argparse.Namespace) -> int:
    s = settings(args)
    plan = make_target_plan(s, args.force)
    if args.out:
        try:
            write_atomic(Path(args.out), plan_to_json(plan).encode())
        except OSError as exc:
            raise PipelineError(f"{args.out}: cannot save the plan ({exc.strerror or exc})") from None
    text = render_text(plan, diffs=not args.no_diff, reload=s.reload_argv, service_reloads=s.service_reloads)
    sys.stdout.write(plan_to_json(plan) if args.json else text)
    return EXIT_CHANGES if plan.changes else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    s = settings(args)
    if args.plan:
        plan = check_services(read_plan_file(Path(args.plan)), s.build)
        verify = True
    else:
        plan = make_target_plan(s, args.force)
        verify = False
    sys.stdout.write(render_text(plan, diffs=False, reload=s.reload_argv, service_reloads=s.service_reloads))
    if not plan.changes:
        return EXIT_OK
    result = apply_plan(plan, s.target, s.build, ApplyOptions(s.reload_argv, args.force, verify, s.service_reloads))
    print(f"Apply complete: {len(result.applied)} changes.")
    if result.backup_dir:
        print(f"Originals kept in {printable(str(s.target) + result.backup_dir)}")
    if result.reloaded and s.reload_argv:
        print(f"Exports reloaded: {printable(shlex.join(s.reload_argv))}")
    for role in result.services_reloaded:
        print(f"{BY_ROLE[role].program} reloaded: {printable(shlex.join(s.service_reloads[role]))}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    s = settings(args)
    plan = rollback_plan(s.target, args.steps)
    sys.stdout.write(render_text(plan, reload=None))  # a rollback never reloads the exports
    if args.dry_run or not plan.changes:
        return EXIT_OK
    apply_plan(plan, s.target, None, ApplyOptions(reload_argv=None))
    print(f"Rolled back: {len(plan.changes)} pxelinux files now use the initrds {args.steps} generation(s) back.")
    return EXIT_OK


def _unit_needs(s: Settings) -> list[UnitNeed]:
    """Paths the root's units declare writable that stay read-only (needs the root and the spec)."""
    if s.writable is None or not s.client_root:
        return []
    root = s.target / s.client_root.lstrip("/")
    if not root.is_dir():
        return []
    return uncovered(unit_needs(root), s.writable, s.symlinks)


def _tmpfiles_needs(s: Settings) -> list[TmpfilesNeed]:
    """tmpfiles.d lines that would write on paths that stay read-only (needs the root and the spec)."""
    if s.writable is None or not s.client_root:
        return []
    root = s.target / s.client_root.lstrip("/")
    if not root.is_dir():
        return []
    return tmpfiles_needs(root, s.writable, s.symlinks)


def cmd_audit(args: argparse.Namespace) -> int:
    s = settings(args)
    deployed = s.target.is_dir()
    if not deployed:
        # Right after a first `doit` nothing is deployed yet: audit what the spec alone tells.
        s = dataclasses.replace(s, client_root=None)
    findings = scan_capabilities(s.target, s.client_root) if s.client_root else []
    remedy = capability_changes(s.target, s.client_root, s.remedy) if s.client_root else []
    warnings = lint_readonly_root(s.writable, s.symlinks, s.target, s.client_root) if s.writable is not None else []
    units = _unit_needs(s)
    tmpfiles = _tmpfiles_needs(s)
    root = s.target / s.client_root.lstrip("/") if s.client_root else None
    tools = missing_tools(root, s.storage_tools) if root is not None and root.is_dir() else []
    if args.json:
        report = {
            "client_root": s.client_root,
            "capabilities": [{"path": f.path, "caps": f.caps} for f in findings],
            "remedy": {"name": s.remedy, "changes": [c.path for c in remedy]},
            "units": [{"unit": n.unit, "key": n.key, "path": n.path, "at_boot": n.at_boot} for n in units],
            "tmpfiles": [{"file": n.file, "line": n.line, "type": n.type, "path": n.path} for n in tmpfiles],
            "lint": [
                {"path": w.path, "severity": w.severity, "message": w.message, "remedy": w.remedy} for w in warnings
            ],
            "storage_tools": [{"field": f, "program": t, "package": p} for f, t, p in tools],
        }
        print(json.dumps(report | {"deployed": deployed}, indent=2, sort_keys=True))
        return EXIT_OK
    if not deployed:
        print(
            f"target root {s.target} does not exist yet: audited the spec only; capabilities, machine-id and the "
            "root's units need a deployed root (run `doit apply`, or give --target)"
        )
    elif not s.client_root:
        print("capabilities: not audited (no client root: give --client-root or a spec)")
    pending = {c.path for c in remedy}
    # Names come from the client root: escaped, so a crafted file name cannot fake lines (issue 12 defect 11).
    for f in findings:
        # A capability whose remedy is in place (setuid applied, the sysctl file there) needs nothing more.
        if s.remedy == "none" or f.path in pending or (s.remedy == "ping_group_range" and bool(remedy)):
            print(f"capability: {printable(f.path)}: {f.caps} (lost over NFS)")
    for c in remedy:
        print(f"remedy {s.remedy}: {c.op} {printable(c.path)}")
    if s.writable is None:
        print("read-only root lint: skipped (needs the spec)")
    for w in warnings:
        print(printable(str(w)))
    for need in units:
        print(f"warning: {printable(str(need))}")
    for line in tmpfiles:
        print(f"warning: {printable(str(line))}")
    for field, tool, package in tools:
        print(f"error: {field}: the client root has no {tool}, which nfsroot-storage.service runs (install {package})")
    return EXIT_OK


def spec_range(field: str) -> tuple[int, int]:
    """The bounds cluster.yaml's `deploy.<field>` accepts, so a flag can never go where the spec cannot."""
    lo = hi = None
    for rule in Deploy.model_fields[field].metadata:
        lo = getattr(rule, "ge", lo)
        hi = getattr(rule, "le", hi)
    assert isinstance(lo, int) and isinstance(hi, int), f"deploy.{field} has no ge/le bounds"
    return lo, hi


def _common(p: argparse.ArgumentParser) -> None:
    default_build = Workspace.from_env().build
    p.add_argument(
        "--build",
        default=str(default_build),
        help="the build directory holding manifest.json (default: %(default)s; NFSROOT_BUILD)",
    )
    p.add_argument("--target", type=Path, help="the target root (default: deploy.root of the spec)")
    p.add_argument("--client-root", help="gateway path of the read-only root share (default: from the spec)")
    p.add_argument("--capabilities", choices=REMEDIES, help="remedy for file capabilities (default: from the spec)")
    p.add_argument(
        "--keep-initrds",
        type=bounded_int(*spec_range("keep_initrds"), "like deploy.keep_initrds"),
        help="previous initrd generations kept (default: from the spec)",
    )
    p.add_argument("--force", action="store_true", help="move non-empty directories in the way to the backups")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="show what apply would change in the target, with reasons and diffs")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON (docs/plan.md)")
    p.add_argument("--out", help="also save the plan as JSON, for `apply --plan`")
    p.add_argument("--no-diff", action="store_true", help="leave out the unified diffs")
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("apply", help="make the target match the build: atomic, idempotent, with backups")
    _common(p)
    p.add_argument("--plan", help="apply a plan saved with `plan --out`; refused if the target changed since")
    p.add_argument("--reload-cmd", help="command run when the exports changed (default: deploy.reload)")
    p.add_argument("--no-reload", action="store_true", help="never run the exports, dnsmasq or nginx reload commands")
    p.set_defaults(handler=cmd_apply)

    p = sub.add_parser("rollback", help="point the deployed pxelinux configs at the previous initrds")
    _common(p)
    p.add_argument(
        "--steps",
        type=bounded_int(1, spec_range("keep_initrds")[1], "at most deploy.keep_initrds generations are kept"),
        default=1,
        help="how many initrd generations back (default: 1)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the change without making it")
    p.set_defaults(handler=cmd_rollback)

    p = sub.add_parser("audit", help="capabilities lost over NFS and paths a read-only root needs writable")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_audit)
