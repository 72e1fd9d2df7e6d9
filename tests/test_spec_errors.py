"""Invalid specs: every case asserts the exact message, with file, line, column and field."""

from __future__ import annotations

import pytest

from tests.spec_helpers import problems, spec_text

# (what is wrong, {line number: replacement line}, expected problems)
CASES: list[tuple[str, dict[int, str], list[str]]] = [
    (
        "gateway outside network",
        {3: "  address: 10.0.0.1"},
        [
            "cluster.yaml:3:12: gateway.address: 10.0.0.1 is not inside the gateway network 192.168.0.0/24 (fix the address or network)"
        ],
    ),
    (
        "gateway is broadcast",
        {3: "  address: 192.168.0.255"},
        ["cluster.yaml:3:12: gateway.address: 192.168.0.255 is the network's broadcast address"],
    ),
    (
        "network host bits",
        {4: "  network: 192.168.0.1/24"},
        ["cluster.yaml:4:12: gateway.network: '192.168.0.1/24' has host bits set (did you mean 192.168.0.0/24?)"],
    ),
    (
        "bad ip",
        {3: "  address: 192.168.0.256"},
        [
            "cluster.yaml:3:12: gateway.address: '192.168.0.256' is not a dotted IPv4 address (for example 192.168.0.254)"
        ],
    ),
    (
        "relative tftp root",
        {5: "  tftp_root: srv/tftp"},
        ["cluster.yaml:5:14: gateway.tftp_root: expected an absolute path, got 'srv/tftp' (start the path with /)"],
    ),
    (
        "dotdot path",
        {7: "  clients: {path: /clients/../etc, access: ro}"},
        [
            "cluster.yaml:7:19: shares.clients.path: path '/clients/../etc' contains a '..' component (write the path without . or ..)"
        ],
    ),
    (
        "space in path",
        {7: "  clients: {path: '/my clients', access: ro}"},
        [
            "cluster.yaml:7:19: shares.clients.path: path '/my clients' contains characters that are not allowed: ' ' (use letters, digits and . _ + @ - in path components)"
        ],
    ),
    (
        "newline in path",
        {7: '  clients: {path: "/clients\\nx", access: ro}'},
        [
            "cluster.yaml:7:19: shares.clients.path: path '/clients\\nx' contains characters that are not allowed: '\\n' (use letters, digits and . _ + @ - in path components)"
        ],
    ),
    (
        "unknown export option",
        {8: "  workers: {path: /workers, access: rw, options: [no_subtree_check, sloppy]}"},
        [
            "cluster.yaml:8:69: shares.workers.options.1: 'sloppy' is not an exports(5) option (see `man 5 exports` for the options)"
        ],
    ),
    (
        "ro in options",
        {8: "  workers: {path: /workers, access: rw, options: [ro]}"},
        [
            "cluster.yaml:8:51: shares.workers.options.0: export option 'ro' is set by the share's access field (write access: ro)"
        ],
    ),
    (
        "contradicting options",
        {8: "  workers: {path: /workers, access: rw, options: [sync, async]}"},
        ["cluster.yaml:8:50: shares.workers.options: options sync and async contradict each other (keep one)"],
    ),
    (
        "bad access",
        {8: "  workers: {path: /workers, access: readwrite}"},
        ["cluster.yaml:8:37: shares.workers.access: expected 'ro' or 'rw', got 'readwrite'"],
    ),
    (
        "anonuid not a number",
        {8: "  workers: {path: /workers, access: rw, options: [anonuid=root]}"},
        ["cluster.yaml:8:51: shares.workers.options.0: export option 'anonuid' needs a number, got 'root'"],
    ),
    (
        "root share missing",
        {9: "root: {share: os, options: [ro]}"},
        ["cluster.yaml:9:15: root.share: no share named 'os' (shares are: clients, workers)"],
    ),
    (
        "root share rw",
        {9: "root: {share: workers, options: [ro]}"},
        [
            "cluster.yaml:9:15: root.share: share 'workers' is read-write (the OS root is exported read-only: access: ro)"
        ],
    ),
    (
        "klibc option noatime",
        {9: "root: {share: clients, options: [ro, noatime]}"},
        [
            "cluster.yaml:9:38: root.options.1: 'noatime' is not an option klibc nfsmount accepts (it aborts the mount on unknown options) (allowed: ac acl broken_suid cto hard intr lock noac noacl nocto nointr nolock noposix posix ro rw soft tcp udp v2 v3; with =N: acdirmax acdirmin acregmax acregmin nfsvers port retrans rsize timeo vers wsize)"
        ],
    ),
    (
        "nfsvers 4",
        {9: "root: {share: clients, options: [ro, nfsvers=4]}"},
        ["cluster.yaml:9:38: root.options.1: klibc nfsmount speaks NFS versions 2 and 3 only, not 4 (write nfsvers=3)"],
    ),
    (
        "root rw",
        {9: "root: {share: clients, options: [rw]}"},
        ["cluster.yaml:9:33: root.options: the root must be mounted read-only (include ro and not rw)"],
    ),
    (
        "writable on ro share",
        {12: "  - {mount: /home, share: clients, subdir: home}"},
        [
            "cluster.yaml:12:27: writable.1.share: share 'clients' is read-only (writable mounts need an access: rw share)"
        ],
    ),
    (
        "writable overlap",
        {12: "  - {mount: /var/local/home, share: workers, subdir: home}"},
        [
            "cluster.yaml:12:13: writable.1.mount: /var/local/home overlaps writable[0] (/var/local) (use separate directories)"
        ],
    ),
    (
        "per_node quoted",
        {11: "  - {mount: /var/local, share: workers, per_node: 'true'}"},
        ["cluster.yaml:11:51: writable.0.per_node: expected true or false, got str 'true'"],
    ),
    (
        "no per node",
        {11: "  - {mount: /var/local, share: workers, subdir: local}"},
        [
            "cluster.yaml:11:3: writable: no per-node writable mount (add one with per_node: true (the seed's /var/local))"
        ],
    ),
    (
        "symlink source under mount",
        {14: "  /var/local/x: /var/local/hostname"},
        [
            "cluster.yaml:14:17: symlinks./var/local/x: /var/local/x lies under a writable mount (only files of the read-only root need a symlink)"
        ],
    ),
    (
        "symlink target not under mount",
        {14: "  /etc/hostname: /etc/hostname2"},
        [
            "cluster.yaml:14:18: symlinks./etc/hostname: target /etc/hostname2 is not under a writable mount (writable mounts: /var/local, /home)"
        ],
    ),
    (
        "hosts on a shared mount",
        {15: "  /etc/hosts: /home/hosts"},
        [
            "cluster.yaml:15:15: symlinks./etc/hosts: target /home/hosts is on a mount shared by all nodes (point it under a per-node mount: /var/local)"
        ],
    ),
    (
        "gzip level",
        {18: "  method: overlay\n  repack: {compression: gzip, level: 19}"},
        ["cluster.yaml:19:38: boot.repack.level: gzip levels go from 1 to 9, not 19"],
    ),
    (
        "symlink in proc",
        {14: "  /proc/x: /var/local/x"},
        [
            "cluster.yaml:14:12: symlinks./proc/x: /proc/x is hidden at boot by the proc filesystem (choose another path)"
        ],
    ),
    (
        "symlink same target",
        {15: "  /etc/hosts: /var/local/hostname"},
        [
            "cluster.yaml:15:15: symlinks./etc/hosts: target /var/local/hostname is also the target of /etc/hostname (each symlink needs its own file)"
        ],
    ),
    (
        "symlink relative",
        {15: "  etc/hosts: /var/local/hosts"},
        ["cluster.yaml:15:3: symlinks.etc/hosts: expected an absolute path, got 'etc/hosts' (start the path with /)"],
    ),
    (
        "kernel with semicolon",
        {17: "  kernel: 'vmlinuz;reboot'"},
        [
            "cluster.yaml:17:11: boot.kernel: expected a kernel version (like 6.1.0-21-amd64) or 'newest', got 'vmlinuz;reboot' (the version is what `uname -r` prints on a node; 'newest' picks the root's highest version)"
        ],
    ),
    (
        "kernel given as a file name",
        {17: "  kernel: vmlinuz-6.1.0-21-amd64"},
        [
            "cluster.yaml:17:11: boot.kernel: expected a kernel version or 'newest', got the file name 'vmlinuz-6.1.0-21-amd64' (write 6.1.0-21-amd64: the kernel and initrd come from the root's /boot)"
        ],
    ),
    (
        "cmdline with dollar",
        {19: "  cmdline: ['x=$(reboot)']"},
        [
            "cluster.yaml:19:13: boot.cmdline.0: 'x=$(reboot)' is not a plain kernel argument (one word or key=value with letters, digits and _ . , : / + @ = -; no spaces, quotes or $)"
        ],
    ),
    (
        "cmdline reserved",
        {19: "  cmdline: [nfsroot=1.2.3.4:/x]"},
        [
            "cluster.yaml:19:13: boot.cmdline.0: kernel argument 'nfsroot' is generated from the spec (remove it from cmdline)"
        ],
    ),
    (
        "sysappend unknown",
        {20: "  sysappend: [ip, mac]"},
        [
            "cluster.yaml:20:19: boot.sysappend.1: expected 'ip', 'bootif', 'sysuuid', 'cpu', 'sysvendor', 'sysproduct', 'sysversion', 'sysserial', 'syssku', 'sysfamily', 'mbvendor', 'mbproduct', 'mbversion', 'mbserial', 'mbasset', 'biosvendor', 'biosversion', 'sysff' or 'fsuuid', got 'mac'"
        ],
    ),
    (
        "hostname pattern without mac",
        {22: '  hostname: "worker"'},
        [
            "cluster.yaml:22:13: nodes.hostname: host name pattern 'worker' does not contain {mac} (every node needs a distinct name, for example worker-node-{mac})"
        ],
    ),
    (
        "hostname pattern bad chars",
        {22: '  hostname: "worker_{mac}"'},
        [
            "cluster.yaml:22:13: nodes.hostname: host name pattern 'worker_{mac}' does not give a valid host name ('worker_000000000000') (after replacing {mac} by 12 hex digits it must be an RFC 1123 label of at most 63 characters)"
        ],
    ),
    (
        "hostname pattern too long",
        {22: '  hostname: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{mac}"'},
        [
            "cluster.yaml:22:13: nodes.hostname: host name pattern 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{mac}' does not give a valid host name ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000000000') (after replacing {mac} by 12 hex digits it must be an RFC 1123 label of at most 63 characters)"
        ],
    ),
    (
        "duplicate mac",
        {25: '    - {mac: "00-23-24-94-34-AE"}'},
        ["cluster.yaml:25:13: nodes.known.1.mac: 00:23:24:94:34:ae is also node 0 (each node once)"],
    ),
    (
        "sexagesimal mac",
        {25: "    - {mac: 10:23:24:34:45:56}"},
        [
            'cluster.yaml:25:13: nodes.known.1.mac: expected a string, got int 8079389156 (YAML reads the unquoted 10:23:24:34:45:56 as a number (base 60!); quote it: "10:23:24:34:45:56")'
        ],
    ),
    (
        "bad mac",
        {25: '    - {mac: "00:23:24:94:34"}'},
        [
            "cluster.yaml:25:13: nodes.known.1.mac: '00:23:24:94:34' is not a MAC address (write six hex octets: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff)"
        ],
    ),
    (
        "multicast mac",
        {25: '    - {mac: "01:00:5e:00:00:01"}'},
        [
            "cluster.yaml:25:13: nodes.known.1.mac: '01:00:5e:00:00:01' is a multicast address (a network card's MAC has the lowest bit of the first octet clear)"
        ],
    ),
    (
        "duplicate hostname",
        {25: '    - {mac: "44:8a:5b:dd:d8:ba", hostname: worker-node-0023249434ae}'},
        [
            "cluster.yaml:25:7: nodes.known.1: host name worker-node-0023249434ae is also used by node 0 (host names are unique)"
        ],
    ),
    (
        "node address outside",
        {25: '    - {mac: "44:8a:5b:dd:d8:ba", address: 10.1.1.1}'},
        ["cluster.yaml:25:43: nodes.known.1.address: 10.1.1.1 is not inside 192.168.0.0/24"],
    ),
    (
        "node address gateway",
        {25: '    - {mac: "44:8a:5b:dd:d8:ba", address: 192.168.0.254}'},
        ["cluster.yaml:25:43: nodes.known.1.address: 192.168.0.254 is the gateway's address"],
    ),
    (
        "unknown field",
        {26: "deploy: {root: gateway/, keep_initrd: 3}"},
        ["cluster.yaml:26:26: deploy.keep_initrd: unknown field 'keep_initrd' (did you mean 'keep_initrds'?)"],
    ),
    (
        "keep_initrds zero",
        {26: "deploy: {root: gateway/, keep_initrds: 0}"},
        ["cluster.yaml:26:40: deploy.keep_initrds: 0 is out of range: must be greater than or equal to 1"],
    ),
    (
        "duplicate key",
        {5: "  address: 192.168.0.1"},
        [
            "cluster.yaml:5:3: gateway.address: duplicate key 'address' (it is already set on line 3; YAML would silently keep only the last one)"
        ],
    ),
    (
        "missing field",
        {17: "  kernell: vmlinuz"},
        [
            "cluster.yaml:17:3: boot.kernel: required field is missing",
            "cluster.yaml:17:3: boot.kernell: unknown field 'kernell' (did you mean 'kernel'?)",
        ],
    ),
    (
        "repack without source",
        {18: "  method: repack"},
        [
            "cluster.yaml:17:3: boot.repack.source: required when boot.method is repack (the path of the distro initrd to rewrite)"
        ],
    ),
    (
        "reload with newline",
        {26: 'deploy: {root: gateway/, reload: ["exportfs\\n-ra"]}'},
        [
            "cluster.yaml:26:35: deploy.reload.0: 'exportfs\\n-ra' is not a plain command word (one argv word per list item, from letters, digits and _ . / : = , + @ % -; it is not run by a shell)"
        ],
    ),
    (
        "yaml syntax",
        {9: "root: {share: clients, options: [ro}"},
        [
            "cluster.yaml:9:33: flow sequence started here",
            "cluster.yaml:9:36: YAML syntax error: did not find expected ',' or ']' (in the flow sequence started at line 9, column 33)",
        ],
    ),
    (
        "hostname override invalid",
        {25: '    - {mac: "44:8a:5b:dd:d8:ba", hostname: "-bad"}'},
        [
            "cluster.yaml:25:44: nodes.known.1.hostname: '-bad' is not a valid host name (an RFC 1123 label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen)"
        ],
    ),
    (
        "python tag",
        {1: "name: !!python/object:os.system x"},
        [
            "cluster.yaml:1:7: name: the tag tag:yaml.org,2002:python/object:os.system is not allowed (remove it: only plain YAML values are read)"
        ],
    ),
    (
        "on as bool",
        {8: "  workers: {path: /workers, access: on}"},
        [
            "cluster.yaml:8:37: shares.workers.access: expected 'ro' or 'rw', got True (YAML reads the unquoted on as a boolean; quote it: \"on\")"
        ],
    ),
]


@pytest.mark.parametrize(("case", "replace", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_is_reported_exactly(case: str, replace: dict[int, str], expected: list[str]) -> None:
    assert problems(spec_text(replace)) == expected


def test_every_problem_is_reported_at_once() -> None:
    found = problems(spec_text({3: "  address: 192.168.0.256", 17: "  kernel: 'a b'", 25: '    - {mac: "zz"}'}))
    assert [p.split(": ")[1] for p in found] == ["gateway.address", "boot.kernel", "nodes.known.1.mac"]
    assert [p.split(":")[1] for p in found] == ["3", "17", "25"]


def test_unknown_fields_get_suggestions_at_any_depth() -> None:
    assert problems(spec_text({25: '    - {mac: "44:8a:5b:dd:d8:ba", hostnam: x}'})) == [
        "cluster.yaml:25:34: nodes.known.1.hostnam: unknown field 'hostnam' (did you mean 'hostname'?)"
    ]
    assert problems(spec_text(append=["extra: 1"])) == [
        "cluster.yaml:27:1: extra: unknown field 'extra' "
        "(known fields: name, gateway, shares, root, writable, symlinks, boot, nodes, deploy, rootfs, firmware, dhcp, "
        "preset, groups)"
    ]


def test_empty_file() -> None:
    assert problems("") == ["cluster.yaml:1:1: the file is empty (see the README for the format)"]


def test_top_level_list() -> None:
    assert problems("- a\n- b\n") == ["cluster.yaml:1:1: expected a mapping of fields at the top level"]


def test_alias_bomb_is_bounded() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    assert problems("\n".join(lines) + "\n") == [
        "cluster.yaml:1:18: a4.7.8.9.0.2: aliases expand to more than 100000 values "
        "(write the values out, or use fewer aliases)"
    ]
