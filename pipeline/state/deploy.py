"""The entry points doit tasks and the CLI call: observe a target and plan against a build; apply that plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.state.apply import ApplyOptions, ApplyResult, apply_plan
from pipeline.state.bootfiles import Locate, resolve_bootfiles
from pipeline.state.changes import Change, Plan
from pipeline.state.manifest import load_desired
from pipeline.state.observe import Fact, Observed, observe_path, observe_paths
from pipeline.state.plan import PlanOptions, make_plan, paths_to_observe
from pipeline.state.record import STATE_PATH, Record, parse_record
from pipeline.state.rootfs import TargetRoot

DEFAULT_PLAN_OPTIONS = PlanOptions()


def read_record(root: TargetRoot) -> Record:
    """The deployed-state record in the target, or an empty one before the first apply."""
    state = observe_path(root, STATE_PATH)
    if state.kind == "missing":
        return Record()
    if state.kind != "file" or state.text is None:
        return parse_record("", STATE_PATH)  # raises: something else is squatting on our record
    return parse_record(state.text)


def plan_target(
    build: Path,
    target: Path,
    opts: PlanOptions = DEFAULT_PLAN_OPTIONS,
    extra: Sequence[Change] = (),
    locate: Locate | None = None,
) -> Plan:
    """Read build/manifest.json and the target (read-only) and return the plan; `extra` adds remedy changes
    (see capabilities.capability_changes). Boot files are resolved in the target root first; `locate` turns
    a spec field into its place in cluster.yaml for the errors."""
    desired = load_desired(build)
    if not os.path.lexists(target):  # a local deploy.root before the first apply: everything is missing
        desired = resolve_bootfiles(desired, None, *([locate] if locate else []))
        paths = paths_to_observe(desired, Record()) | {c.path for c in extra}
        observed = Observed({p: Fact(p, "missing") for p in paths})
        return make_plan(desired, observed, Record(), os.path.abspath(target), opts, extra)
    with TargetRoot(target) as root:
        desired = resolve_bootfiles(desired, root, *([locate] if locate else []))
        record = read_record(root)
        observed = observe_paths(root, paths_to_observe(desired, record) | {c.path for c in extra})
        return make_plan(desired, observed, record, str(root.path), opts, extra)


def apply_target(
    build: Path,
    target: Path,
    apply_opts: ApplyOptions,
    plan_opts: PlanOptions = DEFAULT_PLAN_OPTIONS,
    extra: Sequence[Change] = (),
    locate: Locate | None = None,
) -> ApplyResult:
    """Plan afresh and apply; a second call right after changes nothing (not even mtimes)."""
    return apply_plan(plan_target(build, target, plan_opts, extra, locate), target, build, apply_opts)
