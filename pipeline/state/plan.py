"""Pure diff of the desired state (manifest) against observed facts: an ordered tuple of Changes, each with a reason.

Order matters to apply: directories first (parents before children, so preserve targets exist before the
symlinks that need them), then files and symlinks by path, then removals deepest first, and the
deployed-state record last.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pipeline.errors import PipelineError
from pipeline.state.changes import Change, Op, Plan
from pipeline.state.manifest import Desired, DirEntry, FileEntry, RootFileEntry, SymlinkEntry, mode_of
from pipeline.state.observe import Fact, Observed
from pipeline.state.record import BACKUP_ROOT, STATE_PATH, Deployed, Record
from pipeline.state.rootfs import PathConflictError, split_path
from pipeline.state.services import SERVICE_ROLES

OWN_DIRS = (STATE_PATH.rsplit("/", 1)[0], BACKUP_ROOT)  # the record and the backups belong to apply alone
BOOT_ROLES = ("kernel", "initrd")  # the files one boot generation consists of, kept together for rollback
RECORD_REASON = "record of what nfsroot-pipeline deployed, so later runs remove only their own files"


@dataclass(frozen=True)
class PlanOptions:
    keep_initrds: int = 2  # previous initrd generations kept for rollback
    force: bool = False  # allow replacing a non-empty directory (it is moved to the backups, not deleted)


def ancestors(path: str) -> list[str]:
    parts = split_path(path)
    return ["/" + "/".join(parts[:n]) for n in range(1, len(parts))]


def paths_to_observe(desired: Desired, record: Record) -> set[str]:
    """Every path the planner will ask about: entries, their parents, preserve targets, recorded paths."""
    paths = {STATE_PATH, *ancestors(STATE_PATH)}
    for entry in desired.entries:
        paths.add(entry.path)
        paths.update(ancestors(entry.path))
        if isinstance(entry, SymlinkEntry) and entry.preserve:
            paths.add(entry.preserve)
            paths.update(ancestors(entry.preserve))
    paths.update(record.entries)
    for gen in record.initrds:
        paths.update(gen)
    return paths


def _source(fields: Sequence[str], role: str) -> str:
    return f"from {', '.join(fields)}" if fields else f"role {role}"


def text_diff(path: str, old: str | None, new: str | None, new_label: str = "build") -> str | None:
    """A unified diff, or None when either side is not text we can show."""
    if new is None or old is None:
        return None
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{path} (target)" if old else "/dev/null",
        tofile=f"{path} ({new_label})",
    )
    out = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return out or None


def _replace_dir(entry_path: str, fact: Fact, opts: PlanOptions) -> None:
    if fact.kind == "dir" and not fact.empty and not opts.force:
        raise PathConflictError(
            f"{entry_path}: the target has a non-empty directory here; refusing to replace it "
            "(rerun with --force to move it to the backups)"
        )
    if fact.kind == "other":
        raise PathConflictError(f"{entry_path}: the target has a device, fifo or socket here; refusing")


def _ours(record: Record, path: str, fact: Fact) -> bool:
    """Whether the observed object is exactly what we deployed there (no backup needed to replace it)."""
    mine = record.entries.get(path)
    if mine is None:
        return False
    if fact.kind == "file":
        return mine.kind == "file" and mine.sha256 == fact.sha256
    if fact.kind == "symlink":
        return mine.kind == "symlink" and mine.target == fact.target
    return fact.kind == "dir" and mine.kind == "dir" and bool(fact.empty)


def _plan_dirs(
    desired: Desired, observed: Observed, opts: PlanOptions, extra_parents: Iterable[str], warnings: list[str]
) -> list[Change]:
    wanted: dict[str, Change] = {}
    for entry in desired.entries:
        if isinstance(entry, DirEntry):
            wanted[entry.path] = Change(
                "mkdir",
                entry.path,
                "dir",
                _source(entry.fields, entry.role),
                entry.role,
                entry.fields,
                mode=mode_of(entry),
            )
    implicit: dict[str, str] = {}
    needs = [e.path for e in desired.entries] + [p for p in extra_parents]
    needs += [e.preserve for e in desired.entries if isinstance(e, SymlinkEntry) and e.preserve]
    for path in needs:
        for parent in ancestors(path):
            implicit.setdefault(parent, path)
    changes: list[Change] = []
    for path in sorted(set(wanted) | set(implicit)):
        fact = observed.get(path)
        spec = wanted.get(path)
        if spec is None:
            if fact.kind == "dir" or (fact.kind == "symlink" and fact.is_dir_link):
                continue
            if fact.kind != "missing":
                raise PathConflictError(
                    f"{implicit[path]}: its parent {path} exists in the target as a {fact.kind}, not a directory"
                )
            changes.append(Change("mkdir", path, "dir", f"parent directory of {implicit[path]}", mode=0o755))
            continue
        if fact.kind == "missing":
            changes.append(replace(spec, reason=f"missing in the target; {spec.reason}"))
        elif fact.kind == "dir":
            # An existing directory keeps the mode and owner it has (issue 9): the manifest's mode is the one a
            # new directory gets. A Debian root's /var/tmp (1777) or /var/local (2775) as a mount point, or a
            # share directory an admin tightened, must not be re-moded by a deploy that never asked for it.
            continue
        elif fact.kind == "symlink" and fact.is_dir_link:
            # Replacing a link the OS relies on (merged /usr, /var/run -> /run) would do more harm than good.
            warnings.append(f"{path}: is a symlink to a directory ({fact.target}); left as is")
        else:
            _replace_dir(path, fact, opts)
            changes.append(
                replace(
                    spec,
                    op="replace",
                    old=fact.fingerprint,
                    old_target=fact.target,
                    backup=True,
                    reason=f"the target has a {fact.kind} here; {spec.reason}",
                )
            )
    return changes


def _plan_file(entry: FileEntry, fact: Fact, desired: Desired, record: Record, opts: PlanOptions) -> Change | None:
    mode = mode_of(entry)
    reason = _source(entry.fields, entry.role)
    if entry.source:
        reason = f"copy {entry.source} from the target root; {reason}"
    rewritten = entry.path in desired.rewritten
    base = Change(
        "create",
        entry.path,
        "file",
        reason,
        entry.role,
        entry.fields,
        old=fact.fingerprint,
        mode=mode,
        old_mode=fact.mode,
        sha256=entry.sha256,
        staged=None if rewritten else entry.staged,
        copy_from=entry.source,
        content=desired.texts[entry.path] if rewritten else None,
    )
    new_text = desired.texts.get(entry.path)
    if fact.kind == "missing":
        return replace(base, reason=f"missing in the target; {base.reason}", diff=text_diff(entry.path, "", new_text))
    if fact.kind == "file":
        if fact.sha256 == entry.sha256:
            if fact.mode == mode:
                return None
            return replace(
                base, op="chmod", reason=f"mode {fact.mode:04o} -> {mode:04o}; {base.reason}{fact.link_note}"
            )
        old_sha = fact.sha256 or ""
        keep_as = f"{entry.path}.{old_sha[:12]}" if entry.role == "initrd" and opts.keep_initrds > 0 else None
        return replace(
            base,
            op="update",
            keep_as=keep_as,
            backup=keep_as is None and not _ours(record, entry.path, fact),
            reason=f"content differs (sha256 {(fact.sha256 or '')[:12]} -> {entry.sha256[:12]}); {base.reason}",
            diff=text_diff(entry.path, fact.text, new_text),
        )
    _replace_dir(entry.path, fact, opts)
    return replace(
        base,
        op="replace",
        old_target=fact.target,
        backup=not _ours(record, entry.path, fact),
        reason=f"the target has a {fact.kind} here; {base.reason}",
    )


def _plan_symlink(entry: SymlinkEntry, fact: Fact, record: Record, opts: PlanOptions) -> Change | None:
    base = Change(
        "create",
        entry.path,
        "symlink",
        _source(entry.fields, entry.role),
        entry.role,
        entry.fields,
        old=fact.fingerprint,
        old_mode=fact.mode,
        target=entry.target,
        old_target=fact.target,
    )
    if fact.kind == "missing":
        return replace(base, reason=f"missing in the target; {base.reason}")
    if fact.kind == "symlink":
        if fact.target == entry.target:
            return None
        return replace(
            base,
            op="update",
            backup=not _ours(record, entry.path, fact),
            reason=f"link target differs ({fact.target}); {base.reason}",
        )
    if fact.kind == "file" and entry.preserve:
        return replace(
            base,
            op="replace",
            preserve=entry.preserve,
            reason=f"the read-only root has a file here, kept as the node skeleton; {base.reason}",
        )
    _replace_dir(entry.path, fact, opts)
    return replace(
        base,
        op="replace",
        backup=not _ours(record, entry.path, fact),
        reason=f"the target has a {fact.kind} here; {base.reason}",
    )


def _group_of(fields: Sequence[str]) -> str:
    """The node group an entry was rendered for ("" for the cluster-wide settings): its first field names it."""
    return fields[0] if fields and fields[0].startswith("groups.") else ""


def _initrd_generations(
    desired: Desired, record: Record, changes: Sequence[Change], keep: int
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(generations kept, generations dropped); generation 0 is the one the manifest deploys now."""
    # A node group's files stay together, in one order from one generation to the next: rollback pairs the
    # files of two generations by position, and path order alone would pair one group's overlay with
    # another's whenever their content-hashed names sort the other way round.
    boot = sorted((e for e in desired.entries if e.role in BOOT_ROLES), key=lambda e: (_group_of(e.fields), e.path))
    current = tuple(e.path for e in boot)
    kept_as = {c.path: c.keep_as for c in changes if c.keep_as}
    # Files rewritten in place (a fixed initrd name) keep their old bytes under the kept name.
    previous = [tuple(kept_as.get(p, p) for p in gen) for gen in record.initrds]
    gens: list[tuple[str, ...]] = [current] if current else []
    for gen in previous:
        if gen and (not gens or gens[-1] != gen) and gen not in gens:
            gens.append(gen)
    return tuple(gens[: keep + 1]), tuple(gens[keep + 1 :])


def make_plan(
    desired: Desired,
    observed: Observed,
    record: Record,
    target: str,
    opts: PlanOptions = PlanOptions(),
    extra: Sequence[Change] = (),
) -> Plan:
    """Everything that must change in the target for it to match `desired`; pure (no I/O)."""
    for entry in desired.entries:
        if isinstance(entry, RootFileEntry):
            raise PipelineError(f"{entry.path}: boot files must be resolved against the target root before planning")
    for entry in desired.entries:
        for path in (entry.path, getattr(entry, "preserve", None)):
            if path and any(path == own or path.startswith(own + "/") for own in OWN_DIRS):
                raise PathConflictError(f"{path}: the manifest may not write into nfsroot-pipeline's own {path}")
    extra_paths = {c.path for c in extra}
    clash = extra_paths & {e.path for e in desired.entries}
    if clash:
        raise PathConflictError(f"{sorted(clash)[0]}: both the manifest and a remedy want to manage this path")
    warnings: list[str] = []
    dirs = _plan_dirs(desired, observed, opts, [STATE_PATH, *extra_paths], warnings)
    leaves: list[Change] = []
    for entry in desired.entries:
        fact = observed.get(entry.path)
        change: Change | None = None
        if isinstance(entry, FileEntry):
            change = _plan_file(entry, fact, desired, record, opts)
        elif isinstance(entry, SymlinkEntry):
            change = _plan_symlink(entry, fact, record, opts)
        if change is not None:
            leaves.append(change)
    leaves.extend(extra)
    gens, dropped = _initrd_generations(desired, record, leaves, opts.keep_initrds)
    keep_paths = {p for gen in gens for p in gen}
    desired_paths = {e.path for e in desired.entries}
    removals: list[Change] = []
    gone = set(record.entries) - desired_paths - keep_paths - extra_paths
    gone |= {p for gen in dropped for p in gen} - desired_paths - keep_paths
    for path in sorted(gone, reverse=True):
        fact = observed.get(path)
        mine = record.entries.get(path, Deployed("file", "initrd"))
        if fact.kind == "missing":
            continue
        if fact.kind == "dir" and not fact.empty:
            warnings.append(f"{path}: no longer in the manifest but not empty; left in place")
            continue
        if path in record.entries and fact.kind != mine.kind:
            warnings.append(
                f"{path}: no longer in the manifest, but now a {fact.kind}, not our {mine.kind}; left in place"
            )
            continue
        why = (
            f"older than the {opts.keep_initrds} previous initrds kept (deploy.keep_initrds)"
            if path not in record.entries
            else "deployed earlier by nfsroot-pipeline and no longer in the manifest"
        )
        if not _ours(record, path, fact) and path in record.entries:
            why += "; changed since it was deployed"
        removals.append(
            Change(
                "remove",
                path,
                fact.kind,
                why,
                mine.role,
                old=fact.fingerprint,
                old_mode=fact.mode,
                old_target=fact.target,
                backup=not _ours(record, path, fact) and path in record.entries,
            )
        )
    # A known_hosts apply assembles comes after the keygen changes that make its keys.
    leaves.sort(key=lambda c: (c.op == "known_hosts", c.path))
    body = sorted(dirs, key=lambda c: c.path) + leaves + removals
    reload_exports = record.reload_pending or any(c.role == "exports" for c in body)
    reload_services = tuple(
        role for role in SERVICE_ROLES if role in record.services_pending or any(c.role == role for c in body)
    )

    entries = {
        e.path: Deployed(e.kind, e.role, getattr(e, "sha256", None), getattr(e, "target", None))
        for e in desired.entries
    }
    # Remedy files (extra changes) are not recorded: a run that finds them already right yields no change
    # for them, and a record that came and went with the changes would make every other run remove them.
    new_record = Record(desired.manifest.cluster, entries, gens, reload_pending=False)
    text = new_record.render()
    union = {**record.entries, **entries}
    journal = Record(
        desired.manifest.cluster, union, gens + dropped, reload_pending=reload_exports, services_pending=reload_services
    ).render()
    if journal == text:
        journal = ""  # nothing an interrupted apply would need to finish
    state = observed.get(STATE_PATH)
    if state.text != text or (body and journal):
        sha = hashlib.sha256(text.encode()).hexdigest()
        op: Op = "create" if state.kind == "missing" else "update" if state.kind == "file" else "replace"
        if op == "replace":
            _replace_dir(STATE_PATH, state, opts)
        body.append(
            Change(
                op,
                STATE_PATH,
                "file",
                RECORD_REASON,
                "record",
                old=state.fingerprint,
                mode=0o644,
                old_mode=state.mode,
                sha256=sha,
                content=text,
                backup=op == "replace",
            )
        )
    return Plan(
        cluster=desired.manifest.cluster,
        target=target,
        changes=tuple(body),
        observed={p: f.fingerprint for p, f in sorted(observed.facts.items())},
        journal=journal,
        reload_exports=reload_exports,
        reload_services=reload_services,
        warnings=tuple(warnings),
    )
