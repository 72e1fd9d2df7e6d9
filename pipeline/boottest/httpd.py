"""The generated nginx server block, run inside the boot test's network namespace on the bridge address.

nginx gets a main configuration of our own around the generated server block (Debian's nginx.conf would
write to /var/log/nginx and /run): everything it writes - pid, error and access log - stays in the work
directory. The access log is the proof that a node fetched its kernel and initrds over HTTP.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError, BootTestError
from pipeline.boottest.proc import Daemon, NetworkSandbox, wait_until
from pipeline.fsutil import write_atomic
from pipeline.spec.model import Cluster

_MAIN = """\
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log info;
events {{
    worker_connections 512;
}}
http {{
    sendfile on;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    access_log {work}/access.log;
    include {work}/server.conf;
}}
"""


def generated_http(cluster: Cluster) -> Callable[[Path], bytes] | None:
    """The nginx server block the pipeline generates for `cluster`, for a given root (the harness's TFTP
    directory); None when the spec fetches nothing over HTTP."""
    from pipeline.render.firmware import uses_http

    if not uses_http(cluster):
        return None

    def config(root: Path) -> bytes:
        from pipeline.render.httpserver import render_httpserver

        gateway = cluster.gateway.model_copy(update={"tftp_root": str(root)})
        (artifact,) = render_httpserver(cluster.model_copy(update={"gateway": gateway}))
        return artifact.data

    return config


def _nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found is None:
        raise BootPrerequisiteError("nginx not found: install nginx-light (firmware.transport: http)")
    return found


def nginx_argv(workdir: Path, *extra: str) -> list[str]:
    conf = workdir / "nginx.conf"
    return [_nginx(), "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf), *extra]


def main_config(workdir: Path) -> bytes:
    """Our nginx.conf around `workdir/server.conf` (the generated server block)."""
    return _MAIN.format(work=workdir).encode()


class HttpServer:
    def __init__(self, server_block: bytes, sandbox: NetworkSandbox, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        write_atomic(workdir / "server.conf", server_block)
        write_atomic(workdir / "nginx.conf", main_config(workdir))
        self.access_log = workdir / "access.log"
        argv = nginx_argv(workdir)
        self.daemon = Daemon("nginx", sandbox.wrap(argv), workdir / "nginx.out")

    def start(self) -> None:
        self.daemon.start()
        pid = self.workdir / "nginx.pid"
        if not wait_until(lambda: not self.daemon.alive() or pid.exists(), 15) or not self.daemon.alive():
            raise BootTestError(f"nginx did not start: {self.daemon.log_tail(5)} {self.error_log()[-500:]}")

    def error_log(self) -> str:
        try:
            return (self.workdir / "nginx-error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> str:
        try:
            return self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.daemon.stop(timeout=10)
