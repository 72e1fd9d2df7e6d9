"""The one way this project runs a subprocess: argv lists, never shell strings, and errors that name the command."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.errors import ExternalCommandError


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            input=input,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ExternalCommandError(f"command not found: {shlex.join(args)} ({exc.strerror})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ExternalCommandError(f"command timed out after {timeout}s: {shlex.join(args)}") from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        detail = f": {err[-2000:]}" if err else ""
        raise ExternalCommandError(f"command failed with exit code {proc.returncode}: {shlex.join(args)}{detail}")
    return proc
