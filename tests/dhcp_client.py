"""A minimal DHCP client for tests: one DISCOVER with a chosen client architecture (option 93), the OFFER's
boot file back. Run inside a network namespace the test made (python3 tests/dhcp_client.py IFACE MAC ARCH).

With a fourth argument, the client's address (its interface must have it), it also does what a UEFI PXE client
does after a proxy-DHCP offer: a REQUEST to the offering server's PXE port (4011), whose reply's boot file it
prints instead (proxy-DHCP hands UEFI clients their file there, not in the offer)."""

from __future__ import annotations

import os
import socket
import struct
import sys


def discover(mac: str, arch: int, xid: int, ciaddr: bytes = bytes(4), kind: int = 1) -> bytes:
    """A DHCPDISCOVER (kind 1), or a DHCPREQUEST (kind 3) from a client that has the address `ciaddr`."""
    hw = bytes.fromhex(mac.replace(":", ""))
    flags = 0 if kind == 3 else 0x8000  # broadcast the reply to a client without an address
    header = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, flags, ciaddr, bytes(4), bytes(4), bytes(4))
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:003016".encode()
    options = (
        bytes([53, 1, kind])  # DHCPDISCOVER or DHCPREQUEST
        + bytes([93, 2]) + struct.pack("!H", arch)  # client system architecture
        + bytes([94, 3, 1, 3, 16])  # client network interface: UNDI 3.16
        + bytes([60, len(vendor)]) + vendor
        + bytes([55, 3, 1, 3, 67, 255])
    )  # fmt: skip
    return header + hw.ljust(16, b"\0") + bytes(64) + bytes(128) + b"\x63\x82\x53\x63" + options


def _option(reply: bytes, wanted: int) -> bytes | None:
    """The value of option `wanted` in a DHCP reply, or None (pad options skipped, stops at the end option)."""
    i = 240
    while i < len(reply) and reply[i] != 255:
        if reply[i] == 0:
            i += 1
            continue
        code, length = reply[i], reply[i + 1]
        if code == wanted:
            return reply[i + 2 : i + 2 + length]
        i += 2 + length
    return None


def boot_file(reply: bytes) -> str:
    """The boot file name: option 67 if present, else the fixed `file` field."""
    name = _option(reply, 67)
    if name is not None:
        return name.rstrip(b"\0").decode()
    return reply[108:236].split(b"\0", 1)[0].decode()


def server_id(reply: bytes) -> str:
    """Option 54, the server that answered."""
    server = _option(reply, 54)
    if server is None:
        raise SystemExit("the offer names no server")
    return socket.inet_ntoa(server[:4])


def receive(sock: socket.socket, xid: int) -> bytes:
    while True:
        reply, _ = sock.recvfrom(4096)
        if reply[0] == 2 and struct.unpack("!I", reply[4:8])[0] == xid:
            return reply


def main() -> None:
    interface, mac, arch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    address = sys.argv[4] if len(sys.argv) > 4 else None
    xid = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("", 68))
    sock.settimeout(10)
    sock.sendto(discover(mac, arch, xid), ("255.255.255.255", 67))
    reply = receive(sock, xid)
    if address is not None:
        request = discover(mac, arch, xid + 1 & 0xFFFFFFFF, socket.inet_aton(address), kind=3)
        sock.sendto(request, (server_id(reply), 4011))
        reply = receive(sock, xid + 1 & 0xFFFFFFFF)
    print(boot_file(reply))


if __name__ == "__main__":
    main()
