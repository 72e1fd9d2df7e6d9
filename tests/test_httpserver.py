"""HTTP for iPXE: the generated nginx server block (golden, `nginx -t`, a real fetch in a namespace), the
iPXE script's URLs, and when nothing is generated (TFTP transport, no iPXE, the shipped spec)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.boottest.httpd import HttpServer, generated_http, main_config, nginx_argv
from pipeline.boottest.proc import namespaces_usable, network_sandbox
from pipeline.fsutil import write_atomic
from pipeline.render.bootcfg import render_bootcfg
from pipeline.render.httpserver import render_httpserver
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.prereq import need, require_program
from tests.spec_helpers import parse, problems, spec_text

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "httpserver" / "nfsroot.conf"
IPXE_HTTP = spec_text(append=["firmware: {bios: ipxe, uefi: ipxe}"])
INITRDS = ["boot/initrd.img-6.1.0-21-amd64", "nfsroot-0123456789abcdef.img"]


def server_block(cluster: Cluster) -> bytes:
    (artifact,) = render_httpserver(cluster)
    assert artifact.path == "/etc/nginx/conf.d/nfsroot.conf" and artifact.role == "httpserver"
    return artifact.data


def ipxe_script(cluster: Cluster) -> str:
    (artifact,) = [a for a in render_bootcfg(cluster, INITRDS) if a.path.endswith("/nfsroot.ipxe")]
    return artifact.data.decode()


def test_golden() -> None:
    data = server_block(parse(IPXE_HTTP))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(data)
    assert data == GOLDEN.read_bytes(), "differs from tests/golden/httpserver/nfsroot.conf (UPDATE_GOLDEN=1)"


def test_ipxe_fetches_kernel_and_initrds_from_the_gateway_over_http_by_default() -> None:
    lines = ipxe_script(parse(IPXE_HTTP)).splitlines()
    kernel = next(line for line in lines if line.startswith("kernel "))
    assert kernel.startswith("kernel http://192.168.0.254/boot/vmlinuz-")
    # The EFI stub finds each initrd by the name iPXE gives an image fetched from a URL: its basename.
    assert "initrd=initrd.img-6.1.0-21-amd64 initrd=nfsroot-0123456789abcdef.img " in kernel
    initrds = [line for line in lines if line.startswith("initrd ")]
    assert initrds == [f"initrd http://192.168.0.254/{name}" for name in INITRDS]


def test_a_port_other_than_80_is_in_the_urls_and_the_listen_line() -> None:
    cluster = parse(spec_text(append=["firmware: {bios: ipxe, http: {port: 8080}}"]))
    assert "kernel http://192.168.0.254:8080/boot/" in ipxe_script(cluster)
    assert b"    listen 192.168.0.254:8080;\n" in server_block(cluster)


def test_tftp_transport_keeps_relative_names_and_generates_no_server() -> None:
    cluster = parse(spec_text(append=["firmware: {bios: ipxe, transport: tftp}"]))
    assert "http" not in ipxe_script(cluster)
    assert "\nkernel boot/vmlinuz-" in ipxe_script(cluster)
    assert render_httpserver(cluster) == []


@pytest.mark.parametrize("firmware", ["{uefi: grub}", "{uefi: shim}", "{bios: pxelinux}"])
def test_loaders_without_http_get_no_server(firmware: str) -> None:
    # pxelinux.0 cannot fetch over HTTP; Debian's signed netboot GRUB has no http module (docs/firmware.md).
    assert render_httpserver(parse(spec_text(append=[f"firmware: {firmware}"]))) == []


def test_shipped_spec_has_no_http_server() -> None:
    cluster = load_cluster(REPO / "cluster.yaml")[0]
    assert render_httpserver(cluster) == [] and generated_http(cluster) is None


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ("{port: 0}", "firmware.http.port: 0 is out of range: must be greater than or equal to 1"),
        ("{port: 65536}", "firmware.http.port: 65536 is out of range: must be less than or equal to 65535"),
        ('{port: "80"}', "firmware.http.port: expected a whole number, got str '80'"),
        ("{config_file: nginx.conf}", "firmware.http.config_file: expected an absolute path"),
        ("{listen: 1}", "firmware.http.listen: unknown field 'listen'"),
    ],
)
def test_bad_http_values_are_refused_at_their_line(http: str, expected: str) -> None:
    found = problems(spec_text(append=["firmware:", "  bios: ipxe", f"  http: {http}"]))
    assert len(found) == 1 and found[0].startswith("cluster.yaml:29:") and expected in found[0], found


def _nginx_test(work: Path, block: bytes) -> subprocess.CompletedProcess[bytes]:
    """`nginx -t` in a namespace holding the gateway address (-t also binds the listen address)."""
    require_program("nginx")
    need(namespaces_usable(), "network namespaces need root and iproute2")
    work.mkdir(parents=True, exist_ok=True)
    write_atomic(work / "server.conf", block)
    write_atomic(work / "nginx.conf", main_config(work))
    with network_sandbox("netns") as sandbox:
        subprocess.run(sandbox.wrap(["ip", "addr", "add", "192.168.0.254/24", "dev", "lo"]), check=True)
        return subprocess.run(sandbox.wrap(nginx_argv(work, "-t")), capture_output=True, timeout=60)


def test_nginx_accepts_it(tmp_path: Path) -> None:
    proc = _nginx_test(tmp_path, server_block(parse(IPXE_HTTP)))
    assert proc.returncode == 0, proc.stderr.decode()


def test_nginx_test_can_fail(tmp_path: Path) -> None:
    proc = _nginx_test(tmp_path, server_block(parse(IPXE_HTTP)).replace(b"autoindex off;", b"autoindex;"))
    assert proc.returncode != 0 and b"autoindex" in proc.stderr


FETCH = """\
import sys, urllib.request, urllib.error
url = sys.argv[1]
for method in ("GET", "POST", "GET-missing"):
    target = url + ("-missing" if method == "GET-missing" else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(target, method=method.split("-")[0], data=b"x" if method == "POST" else None), timeout=10) as r:
            print(method, r.status, r.read().hex())
    except urllib.error.HTTPError as e:
        print(method, e.code)
"""


def test_served_read_only_on_the_gateway_address(tmp_path: Path) -> None:
    require_program("nginx")
    need(namespaces_usable(), "network namespaces need root and iproute2")
    root = tmp_path / "tftp"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-x").write_bytes(b"\x01kernel")
    serve = generated_http(parse(IPXE_HTTP))
    assert serve is not None
    with network_sandbox("netns") as sandbox:
        subprocess.run(sandbox.wrap(["ip", "addr", "add", "192.168.0.254/24", "dev", "lo"]), check=True)
        server = HttpServer(serve(root), sandbox, tmp_path / "http")
        server.start()
        try:
            argv = sandbox.wrap([sys.executable, "-c", FETCH, "http://192.168.0.254/boot/vmlinuz-x"])
            out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout.decode().split("\n")
        finally:
            server.stop()
    assert out[:3] == ["GET 200 016b65726e656c", "POST 403", "GET-missing 404"]
    assert (root / "boot" / "vmlinuz-x").read_bytes() == b"\x01kernel"
    assert '"GET /boot/vmlinuz-x HTTP/1.1" 200' in server.requests()


def test_plan_shows_the_server_block_and_apply_writes_it(tmp_path: Path) -> None:
    from pipeline.state.render import render_text
    from tests.deploy_helpers import F, deploy, make_build, plan_for

    block = server_block(parse(IPXE_HTTP))
    build = make_build(tmp_path / "b", {"/etc/nginx/conf.d/nfsroot.conf": F(block, role="httpserver")})
    (target := tmp_path / "t").mkdir()
    text = render_text(plan_for(build, target), reload=None)
    assert "/etc/nginx/conf.d/nfsroot.conf" in text and "+    listen 192.168.0.254:80;" in text
    deploy(build, target)
    assert (target / "etc/nginx/conf.d/nfsroot.conf").read_bytes() == block
