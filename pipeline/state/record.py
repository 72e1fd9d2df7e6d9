"""The record `apply` keeps inside the target of what it deployed, so later runs remove only their own files.

`<target>/var/lib/nfsroot-pipeline/deployed.json` lists every managed path (kind, role, hash or link target),
the initrd generations kept for rollback (newest first; generation 0 is what pxelinux points at) and whether
an exports reload, or the reload of a service whose configuration we own (pipeline.state.services: dnsmasq,
nginx), is still owed by an interrupted apply. It is itself planned like any file, so its bytes are a pure
function of the manifest and the previous record: no timestamps, sorted keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.state.manifest import check_gateway_path
from pipeline.state.services import SERVICE_ROLES

STATE_PATH = "/var/lib/nfsroot-pipeline/deployed.json"
BACKUP_ROOT = "/var/backups/nfsroot-pipeline"
RECORD_FORMAT = 1


class RecordError(PipelineError):
    """The deployed-state record in the target is unreadable; it is never guessed at."""


@dataclass(frozen=True, order=True)
class Deployed:
    kind: str  # file | symlink | dir
    role: str
    sha256: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class Record:
    cluster: str = ""
    entries: dict[str, Deployed] = field(default_factory=dict)
    initrds: tuple[tuple[str, ...], ...] = ()
    reload_pending: bool = False
    # Roles of owned services (pipeline.state.services) whose reload is still owed, as "<role>_reload_pending"
    # (written only when true: older records lack them).
    services_pending: tuple[str, ...] = ()

    def render(self) -> str:
        doc = {
            "format": RECORD_FORMAT,
            "cluster": self.cluster,
            "entries": {
                path: {k: v for k, v in vars(d).items() if v is not None} for path, d in sorted(self.entries.items())
            },
            "initrds": [list(gen) for gen in self.initrds],
            "reload_pending": self.reload_pending,
        }
        for role in self.services_pending:
            doc[f"{role}_reload_pending"] = True
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse_record(text: str, where: str = STATE_PATH) -> Record:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError(f"unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}")
        entries: dict[str, Deployed] = {}
        for path, raw in doc["entries"].items():
            check_gateway_path(path)
            kind, role = raw["kind"], raw["role"]
            if kind not in ("file", "symlink", "dir") or not isinstance(role, str):
                raise ValueError(f"bad entry for {path}")
            entries[path] = Deployed(kind, role, raw.get("sha256"), raw.get("target"))
        initrds = tuple(tuple(check_gateway_path(p) for p in gen) for gen in doc["initrds"])
        reload_pending = doc["reload_pending"]
        if not isinstance(reload_pending, bool) or not isinstance(doc["cluster"], str):
            raise ValueError("bad reload_pending or cluster")
        pending = []
        for role in SERVICE_ROLES:
            flag = doc.get(f"{role}_reload_pending", False)
            if not isinstance(flag, bool):
                raise ValueError(f"bad {role}_reload_pending")
            if flag:
                pending.append(role)
    # RecursionError: json recurses per nesting level, and this file is not ours to trust (issue 12 defect 8).
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise RecordError(
            f"{where} in the target is not a valid deployed-state record ({exc}); "
            "move it aside if it is not nfsroot-pipeline's"
        ) from None
    return Record(doc["cluster"], entries, initrds, reload_pending, tuple(pending))
