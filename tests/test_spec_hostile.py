"""Values that used to validate and then crash or collide later (issue 12, defect 4): the loader refuses each
with its line, and the classes are closed by walking the model rather than listing examples."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.spec.model import Cluster
from tests.spec_helpers import BASE_LINES, issue_13_spec, parse, problems, spec_text

# (what is wrong, {line number: replacement line}, expected problems)
CASES: list[tuple[str, dict[int, str], list[str]]] = [
    (
        "NUL in repack source",
        {18: '  method: repack\n  repack: {source: "initrd\\0.img"}'},
        [
            "cluster.yaml:19:20: boot.repack.source: path 'initrd\\x00.img' contains characters that are not allowed: '\\x00' (use letters, digits and . _ + @ - in path components)"
        ],
    ),
    (
        "NUL in deploy root",
        {26: 'deploy: {root: "gate\\0way/"}'},
        [
            "cluster.yaml:26:16: deploy.root: path 'gate\\x00way/' contains characters that are not allowed: '\\x00' (use letters, digits and . _ + @ - in path components)"
        ],
    ),
    (
        "empty deploy root",
        {26: 'deploy: {root: ""}'},
        [
            "cluster.yaml:26:16: deploy.root: expected a non-empty path (write . to deploy next to cluster.yaml, / on the gateway itself)"
        ],
    ),
    (
        "arabic digits in anonuid",
        {8: "  workers: {path: /workers, access: rw, options: [anonuid=١٢]}"},
        ["cluster.yaml:8:51: shares.workers.options.0: export option 'anonuid' needs a number, got '١٢'"],
    ),
    (
        "superscript in fsid",
        {8: "  workers: {path: /workers, access: rw, options: [fsid=²]}"},
        ["cluster.yaml:8:51: shares.workers.options.0: export option fsid needs a number, root or a UUID, got '²'"],
    ),
    (
        "superscript in rsize",
        {9: "root: {share: clients, options: [ro, rsize=²]}"},
        ["cluster.yaml:9:38: root.options.1: mount option 'rsize' needs a number (write rsize=N)"],
    ),
    (
        "anonuid beyond 32 bits",
        {8: "  workers: {path: /workers, access: rw, options: [anonuid=4294967296]}"},
        ["cluster.yaml:8:51: shares.workers.options.0: export option 'anonuid' needs a number from 0 to 4294967295"],
    ),
    (
        "exports file is the hosts file",
        {26: "deploy: {root: gateway/, exports_file: /etc/nfsroot/hosts}"},
        [
            "cluster.yaml:26:40: deploy.exports_file: /etc/nfsroot/hosts is also deploy.hosts_file (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "exports file inside a share",
        {26: "deploy: {root: gateway/, exports_file: /workers/exports}"},
        [
            "cluster.yaml:26:40: deploy.exports_file: /workers/exports is inside share 'workers' (/workers) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "hosts file above a share",
        {26: "deploy: {root: gateway/, hosts_file: /clients}"},
        [
            "cluster.yaml:26:38: deploy.hosts_file: /clients is share 'clients' (/clients) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "hosts file inside the tftp root",
        {26: "deploy: {root: gateway/, hosts_file: /srv/tftp/pxelinux.cfg/default}"},
        [
            "cluster.yaml:26:38: deploy.hosts_file: /srv/tftp/pxelinux.cfg/default is inside the TFTP root (/srv/tftp) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "exports file above the tftp root",
        {26: "deploy: {root: gateway/, exports_file: /srv}"},
        [
            "cluster.yaml:26:40: deploy.exports_file: /srv contains the TFTP root (/srv/tftp) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "exports file above the record directory",
        {26: "deploy: {root: gateway/, exports_file: /var/lib}"},
        [
            "cluster.yaml:26:40: deploy.exports_file: /var/lib contains nfsroot-pipeline's deployed-state record (/var/lib/nfsroot-pipeline) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "hosts file inside the backups",
        {26: "deploy: {root: gateway/, hosts_file: /var/backups/nfsroot-pipeline/hosts}"},
        [
            "cluster.yaml:26:38: deploy.hosts_file: /var/backups/nfsroot-pipeline/hosts is inside nfsroot-pipeline's backups (/var/backups/nfsroot-pipeline) (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)"
        ],
    ),
    (
        "symlink sources normalise to one path",
        {15: "  /etc//hostname: /var/local/hosts"},
        [
            "cluster.yaml:15:3: symlinks./etc//hostname: /etc//hostname is the same path as /etc/hostname on line 14 (write each path once)"
        ],
    ),
    (
        "symlink source with a trailing slash",
        {15: "  /etc/hostname/: /var/local/hosts"},
        [
            "cluster.yaml:15:3: symlinks./etc/hostname/: /etc/hostname/ is the same path as /etc/hostname on line 14 (write each path once)"
        ],
    ),
    (
        "symlink sources nest",
        {15: "  /etc/hostname/x: /var/local/hosts"},
        [
            "cluster.yaml:15:20: symlinks./etc/hostname/x: /etc/hostname/x lies under the symlink /etc/hostname (a path inside a symlinked directory is already on the writable mount)"
        ],
    ),
    (
        "symlink source above a writable mount",
        {15: "  /var: /var/local/var"},
        [
            "cluster.yaml:15:9: symlinks./var: /var contains the writable mount /var/local (the mount point must stay a directory of the read-only root)"
        ],
    ),
    (
        "symlink source above the skeleton",
        {15: "  /usr/lib: /var/local/lib"},
        [
            "cluster.yaml:15:13: symlinks./usr/lib: /usr/lib contains the skeleton directory /usr/lib/nfsroot/skel (choose another path)"
        ],
    ),
    (
        "symlink targets nest",
        {15: "  /etc/hosts: /var/local/hostname/hosts"},
        [
            "cluster.yaml:15:15: symlinks./etc/hosts: target /var/local/hostname/hosts lies under /var/local/hostname, the target of /etc/hostname (each symlink needs its own file)"
        ],
    ),
    (
        "symlink target is the boot record",
        {15: "  /etc/hosts: /var/local/nfsroot-boot"},
        [
            "cluster.yaml:15:15: symlinks./etc/hosts: target /var/local/nfsroot-boot is written by the boot script (what the boot script did) (choose another name)"
        ],
    ),
    (
        "two per-node mounts of one directory",
        {12: "  - {mount: /srv/scratch, share: workers, per_node: true}"},
        [
            "cluster.yaml:12:5: writable.1: per-node directories /workers/<node id> are also those of writable[0] (/var/local) (give one of them a subdir)"
        ],
    ),
    (
        "writable mount on /proc",
        {12: "  - {mount: /proc, share: workers, subdir: home}"},
        [
            "cluster.yaml:12:13: writable.1.mount: /proc is mounted over at boot by the proc filesystem (choose another path)"
        ],
    ),
    (
        "writable mount under /run",
        {12: "  - {mount: /run/x, share: workers, subdir: home}"},
        [
            "cluster.yaml:12:13: writable.1.mount: /run/x is mounted over at boot by the run filesystem (choose another path)"
        ],
    ),
    (
        "writable mount on the skeleton",
        {12: "  - {mount: /usr/lib/nfsroot/skel, share: workers, subdir: home}"},
        [
            "cluster.yaml:12:13: writable.1.mount: /usr/lib/nfsroot/skel would hide the skeleton directory /usr/lib/nfsroot/skel (the boot script seeds the nodes' files from it)"
        ],
    ),
    (
        "writable mount above the skeleton",
        {12: "  - {mount: /usr, share: workers, subdir: home}"},
        [
            "cluster.yaml:12:13: writable.1.mount: /usr would hide the skeleton directory /usr/lib/nfsroot/skel (the boot script seeds the nodes' files from it)"
        ],
    ),
    (
        "share inside the record directory",
        {8: "  workers: {path: /var/lib/nfsroot-pipeline/w, access: rw}"},
        [
            "cluster.yaml:8:19: shares.workers.path: /var/lib/nfsroot-pipeline/w is inside nfsroot-pipeline's deployed-state record (/var/lib/nfsroot-pipeline) (apply keeps its record and backups there: export another directory)"
        ],
    ),
    (
        "share above the record directory",
        {8: "  workers: {path: /var, access: rw}"},
        [
            "cluster.yaml:8:19: shares.workers.path: /var contains nfsroot-pipeline's deployed-state record (/var/lib/nfsroot-pipeline) (apply keeps its record and backups there: export another directory)"
        ],
    ),
    (
        "tftp root above the backups",
        {5: "  tftp_root: /var/backups"},
        [
            "cluster.yaml:5:14: gateway.tftp_root: /var/backups contains nfsroot-pipeline's backups (/var/backups/nfsroot-pipeline) (apply keeps its record and backups there: serve another directory)"
        ],
    ),
    (
        "symlink replacing a nested share",
        {8: "  workers: {path: /clients/workers, access: rw}", 15: "  /workers: /var/local/w"},
        [
            "cluster.yaml:15:13: symlinks./workers: /workers is /clients/workers on the gateway, which is share 'workers' (/clients/workers) (a symlink there would replace a directory the pipeline manages)"
        ],
    ),
    (
        "symlink replacing the tftp root",
        {5: "  tftp_root: /clients/srv/tftp", 15: "  /srv: /var/local/srv"},
        [
            "cluster.yaml:15:9: symlinks./srv: /srv is /clients/srv on the gateway, which contains the TFTP root (/clients/srv/tftp) (a symlink there would replace a directory the pipeline manages)"
        ],
    ),
    (
        "kernel named by a path into pxelinux.cfg",
        {17: "  kernel: pxelinux.cfg/default"},
        [
            "cluster.yaml:17:11: boot.kernel: expected a kernel version (like 6.1.0-21-amd64) or 'newest', got 'pxelinux.cfg/default' (the version is what `uname -r` prints on a node; 'newest' picks the root's highest version)"
        ],
    ),
    (
        "kelvin sign in a host name",
        {25: '    - {mac: "44:8a:5b:dd:d8:ba", hostname: "wor\u212aer"}'},
        [
            "cluster.yaml:25:44: nodes.known.1.hostname: 'wor\u212aer' is not a valid host name (an RFC 1123 label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen)"
        ],
    ),
    (
        "kelvin sign in the host name pattern",
        {22: '  hostname: "wor\u212aer-{mac}"'},
        [
            "cluster.yaml:22:13: nodes.hostname: host name pattern 'wor\u212aer-{mac}' does not give a valid host name ('wor\u212aer-000000000000') (after replacing {mac} by 12 hex digits it must be an RFC 1123 label of at most 63 characters)"
        ],
    ),
    (
        "unicode space around a MAC",
        {25: '    - {mac: "\u200344:8a:5b:dd:d8:ba"}'},
        [
            "cluster.yaml:25:13: nodes.known.1.mac: '\\u200344:8a:5b:dd:d8:ba' is not a MAC address (write six hex octets: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff)"
        ],
    ),
]


@pytest.mark.parametrize(("case", "replace", "expected"), CASES, ids=[c[0] for c in CASES])
def test_value_that_used_to_crash_later_is_refused(case: str, replace: dict[int, str], expected: list[str]) -> None:
    assert problems(spec_text(replace)) == expected


def _leaf_annotations(model: type[BaseModel], path: str = "") -> list[tuple[str, Any, bool]]:
    """Every leaf type of the model (through unions, tuples, dict keys and values, nested models), with
    whether validators come with it (pydantic moves a field's own Annotated metadata to field.metadata)."""
    found = []
    for name, field in model.model_fields.items():
        todo = [(field.annotation, bool(field.metadata))]
        while todo:
            ann, validated = todo.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                found += _leaf_annotations(ann, f"{path}{name}.")
            elif typing.get_origin(ann) is typing.Annotated:
                todo.append((typing.get_args(ann)[0], True))
            elif typing.get_args(ann) and typing.get_origin(ann) is not typing.Literal:
                todo += [(a, validated) for a in typing.get_args(ann) if a is not Ellipsis]
            else:
                found.append((f"{path}{name}", ann, validated))
    return found


def test_no_spec_field_is_a_bare_string() -> None:
    """Every str the spec holds has a validating type: a bare `str` is how NUL bytes got through."""
    leaves = _leaf_annotations(Cluster)
    assert len([leaf for leaf in leaves if leaf[1] is str]) > 25
    assert [name for name, ann, validated in leaves if ann is str and not validated] == []


def test_control_characters_are_refused_in_every_string_field() -> None:
    # Each field of the model that holds a string, set to a value with a NUL byte: always refused with the line.
    fields = {
        1: 'name: "home\\0lab"',
        5: '  tftp_root: "/srv/tf\\0tp"',
        17: '  kernel: "vmlinuz\\0"',
        19: '  cmdline: ["quiet\\0"]',
        22: '  hostname: "worker-\\0{mac}"',
        26: 'deploy: {root: "x\\x7f", exports_file: "/etc/e\\0", hosts_file: "/etc/h\\x85", reload: ["ls\\0"]}',
    }
    for line, text in fields.items():
        found = problems(spec_text({line: text}))
        assert found and all(p.startswith(f"cluster.yaml:{line}:") for p in found), (text, found)
    found = problems(spec_text({26: 'deploy: {root: "x\\x7f", exports_file: "/e\\0", hosts_file: "/h\\x85"}'}))
    assert [p.split(": ")[1] for p in found] == ["deploy.root", "deploy.exports_file", "deploy.hosts_file"]


def test_local_paths_keep_their_spelling() -> None:
    lines = dict(enumerate(BASE_LINES, 1))
    assert parse(spec_text({26: "deploy: {root: ../gateway/}"})).deploy.root == "../gateway/"
    assert parse(spec_text({26: "deploy: {root: /}"})).deploy.root == "/"
    assert lines[26] == "deploy: {root: gateway/}"


def test_the_hypothesis_counterexample_of_issue_13_is_refused() -> None:
    """Two per_node mounts of one share (no subdir): both nodes' files would land in one directory."""
    with pytest.raises(ValidationError, match=r"writable\.1: per-node directories /b/<node id> are also those"):
        Cluster.model_validate(issue_13_spec(None))
    Cluster.model_validate(issue_13_spec("y"))


LONG_ARG = "x" * 200


def test_kernel_command_line_longer_than_the_kernel_takes_is_refused() -> None:
    fits = ", ".join(["x" * 150] * 9)
    parse(spec_text({19: f"  cmdline: [{fits}]"}))
    too_long = ", ".join([LONG_ARG] * 9)
    assert problems(spec_text({19: f"  cmdline: [{too_long}]"})) == [
        "cluster.yaml:19:12: boot.cmdline: the kernel command line can reach 2,119 bytes; "
        "the kernel keeps 2,047 (x86 COMMAND_LINE_SIZE 2048) "
        "(shorten cmdline; the count includes root=, nfsroot=, ip=, initrd=, BOOT_IMAGE= and SYSAPPEND)"
    ]


def test_per_node_command_line_is_counted_too() -> None:
    per_node = ", ".join(["x" * 150] * 7)
    assert problems(
        spec_text(
            {
                25: f'    - {{mac: "44:8a:5b:dd:d8:ba", cmdline: [{per_node}]}}',
                19: "  cmdline: [" + ", ".join(["x" * 150] * 5) + "]",
            }
        )
    ) == [
        "cluster.yaml:25:43: nodes.known.1.cmdline: the kernel command line can reach 2,122 bytes; "
        "the kernel keeps 2,047 (x86 COMMAND_LINE_SIZE 2048) "
        "(shorten cmdline; the count includes root=, nfsroot=, ip=, initrd=, BOOT_IMAGE= and SYSAPPEND)"
    ]


def test_files_the_boot_script_writes_are_the_ones_the_rules_know() -> None:
    from pipeline.render.bootscript import CMDLINE_NAME, RECORD_NAME
    from pipeline.render.symlinks import BOOT_FILES
    from pipeline.spec.semantics import BOOT_WRITTEN

    assert BOOT_WRITTEN == BOOT_FILES
    assert set(BOOT_WRITTEN) == {CMDLINE_NAME, RECORD_NAME}


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            {15: "  /etc/hosts: /var/local//hostname/"},
            "cluster.yaml:15:15: symlinks./etc/hosts: target /var/local/hostname is also the target of /etc/hostname (each symlink needs its own file)",
        ),
        (
            {12: "  - {mount: /var/local/, share: workers, subdir: home}"},
            "cluster.yaml:12:13: writable.1.mount: /var/local overlaps writable[0] (/var/local) (use separate directories)",
        ),
        (
            {8: "  workers: {path: /clients/, access: rw}"},
            "cluster.yaml:8:19: shares.workers.path: /clients is already exported by share 'clients'",
        ),
        (
            {26: "deploy: {root: gateway/, exports_file: /etc//nfsroot/hosts/}"},
            "cluster.yaml:26:40: deploy.exports_file: /etc/nfsroot/hosts is also deploy.hosts_file (apply owns this file: keep it apart from the shares, the TFTP root, the other file and nfsroot-pipeline's own directories)",
        ),
    ],
)
def test_every_path_pair_is_compared_normalised(replace: dict[int, str], expected: str) -> None:
    """Targets, mounts, shares and output files are compared after `//` and a trailing / are gone."""
    assert expected in problems(spec_text(replace))
