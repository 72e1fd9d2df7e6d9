"""`nginx -t` on the generated server block alone, without root, without /etc/nginx and without the gateway.

A server block from conf.d/ is only valid inside an `http {}` block, so it is tested inside a main
configuration of our own that includes nothing else (Debian's nginx.conf would pull in the gateway's other
sites, and write to /var/log/nginx and /run). `nginx -t` binds every listen address, and fails where that
address is not on this machine (a build host) or the port is privileged; so it runs in a user and network
namespace of its own, with ip_nonlocal_bind set there: any address binds, nothing is reachable, nothing
outside the namespace changes. A scratch directory holds the pid, log and temp paths nginx insists on.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ExternalCommandError, PipelineError
from pipeline.fsutil import write_atomic
from pipeline.run import run

# Runs as root of the new namespaces: allow binding any address there, then become nginx. No shell involved.
# One line, so that an error message quoting the command stays readable.
_NONLOCAL = (
    "import os, sys; fd = os.open('/proc/sys/net/ipv4/ip_nonlocal_bind', os.O_WRONLY); os.write(fd, b'1'); "
    "os.close(fd); os.execv(sys.argv[1], sys.argv[1:])"
)
_TEMPS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NotCheckedError(PipelineError):
    """The check cannot run on this machine (no user namespaces): a warning, not a rejection."""


def _quote(path: Path) -> str:
    """A path as an nginx string: double-quoted, with its own quotes and backslashes escaped."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def main_config(scratch: Path, server_block: Path) -> str:
    temps = "".join(f"    {name}_temp_path {_quote(scratch / name)};\n" for name in _TEMPS)
    return (
        "user root;\n"  # the namespace's root: chown of the temp paths to `nobody` would fail there
        f"pid {_quote(scratch / 'nginx.pid')};\n"
        "error_log stderr;\n"
        "events {}\n"
        "http {\n"
        f"{temps}"
        "    access_log off;\n"
        f"    include {_quote(server_block)};\n"
        "}\n"
    )


@contextmanager
def nginx_test(program: str, staged: Path) -> Iterator[list[str]]:
    """The argv that runs `nginx -t` on `staged`, valid while the context is open."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NotCheckedError("unshare (util-linux) is not installed")
    # root (the gateway's plan) needs no user namespace, and cannot make one inside a chroot (clone(2): EPERM),
    # which is where CI runs; anyone else maps themselves to root in a user namespace of their own.
    isolate = [unshare, "--net", "--"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--net", "--"]
    try:
        run([*isolate, sys.executable, "-c", _NONLOCAL, shutil.which("true") or "/bin/true"])
    except ExternalCommandError as exc:
        raise NotCheckedError(f"nginx -t needs a user and network namespace of its own: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="nfsroot-nginx-t.") as tmp:
        scratch = Path(tmp)
        block = staged.resolve()
        if any(ch in str(block) for ch in "*?["):  # nginx would read `include` as a glob: test a copy instead
            block = scratch / "server.conf"
            write_atomic(block, staged.read_bytes())
        conf = scratch / "nginx.conf"
        write_atomic(conf, main_config(scratch, block).encode())
        yield [
            *isolate,
            sys.executable,
            "-c",
            _NONLOCAL,
            program,
            "-t",
            "-q",
            "-p",
            str(scratch),
            "-e",
            "stderr",
            "-c",
            str(conf),
        ]
