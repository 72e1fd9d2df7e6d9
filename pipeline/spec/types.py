"""Value types of the spec. Each validates and normalises one kind of value.

Everything here ends up in a shell script, an exports file or a pxelinux config, so each type accepts a
deliberately small alphabet: anything that could quote, expand, separate or comment is refused up front.
Errors are `PydanticCustomError`s whose context carries a hint; `pipeline.spec.load` formats them.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError


def fail(message: str, hint: str = "") -> PydanticCustomError:
    # pydantic fills {key} placeholders of the message from the context; the key is chosen not to collide.
    return PydanticCustomError("nfsroot", message, {"nfsroot_hint": hint})


_SHOWN = 200


def shown(value: object) -> str:
    """A value as error messages echo it: repr, cut short so a 1 MB value does not become a 1 MB message."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as written"
    return f"{text[:_SHOWN]}... ({size})"


def _require_str(value: Any) -> Any:
    # YAML 1.1 turns unquoted `no`, `0644`, `12:34:56` into booleans and numbers; refuse them by type so the
    # loader can point at the unquoted scalar and suggest quoting it (it knows the original text).
    if not isinstance(value, str):
        raise fail(f"expected a string, got {type(value).__name__} {shown(value)}")
    return value


# ASCII digits only: `\d` and str.isdigit() also accept '١٢' and '²', which int() or the kernel then choke on.
_DIGITS = re.compile(r"[0-9]+")


def _ascii_number(text: str, maximum: int) -> bool:
    return bool(_DIGITS.fullmatch(text)) and len(text) <= len(str(maximum)) and int(text) <= maximum


# Path components: letters, digits and . _ + @ -. No spaces, quotes, $, `, ;, :, commas, globbing or newlines:
# paths go into exports(5), the nfsroot= argument (comma separated), and shell scripts.
_COMPONENT = re.compile(r"[A-Za-z0-9._+@-]+")
_MAX_PATH = 1024


def _check_components(value: str, parts: list[str], *, dots: bool = False) -> None:
    for part in parts:
        if part in (".", "..") and not dots:
            raise fail(f"path {shown(value)} contains a {shown(part)} component", "write the path without . or ..")
        if part not in (".", "..") and not _COMPONENT.fullmatch(part):
            bad = sorted({c for c in part if not _COMPONENT.fullmatch(c)})
            listed = ", ".join(repr(c) for c in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise fail(
                f"path {shown(value)} contains characters that are not allowed: {listed}",
                "use letters, digits and . _ + @ - in path components",
            )


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise fail(f"expected an absolute path, got {shown(value)}", "start the path with /")
    if len(value) > _MAX_PATH:
        raise fail(f"path is longer than {_MAX_PATH} characters")
    if value == "/":
        return value
    parts = [p for p in value.split("/") if p]
    _check_components(value, parts)
    return "/" + "/".join(parts)


def same_paths(values: list[object]) -> list[tuple[str, str]]:
    """(value, earlier value) for each absolute path that normalises to one given before it: as dict keys
    `/etc//hostname` and `/etc/hostname/` would silently merge into one entry after validation."""
    seen: dict[str, str] = {}
    found = []
    for value in values:
        if not isinstance(value, str) or not value.startswith("/"):
            continue
        normal = "/" + "/".join(p for p in value.split("/") if p)
        if normal in seen:
            found.append((value, seen[normal]))
        seen.setdefault(normal, value)
    return found


def _relative_path(value: str) -> str:
    if value.startswith("/"):
        raise fail(f"expected a relative path, got {shown(value)}", "drop the leading /")
    if not value:
        raise fail("expected a non-empty relative path")
    if len(value) > _MAX_PATH:
        raise fail(f"path is longer than {_MAX_PATH} characters")
    parts = [p for p in value.split("/") if p]
    _check_components(value, parts)
    return posixpath.join(*parts)


def _local_path(hint: str) -> AfterValidator:
    """A path on the machine running the pipeline, relative to cluster.yaml or absolute. It never reaches a
    rendered file, but it reaches open(), doit's task list and error messages: the same small alphabet, with
    . and .. allowed, kept as written."""

    def check(value: str) -> str:
        if not value:
            raise fail("expected a non-empty path", hint)
        if len(value) > _MAX_PATH:
            raise fail(f"path is longer than {_MAX_PATH} characters")
        _check_components(value, [p for p in value.split("/") if p], dots=True)
        return value

    return AfterValidator(check)


AbsPath = Annotated[str, BeforeValidator(_require_str), AfterValidator(_absolute_path)]
RelPath = Annotated[str, BeforeValidator(_require_str), AfterValidator(_relative_path)]
DeployRoot = Annotated[
    str,
    BeforeValidator(_require_str),
    _local_path("write . to deploy next to cluster.yaml, / on the gateway itself"),
]
SourceFile = Annotated[str, BeforeValidator(_require_str), _local_path("the path of the distro initrd to rewrite")]


def _ipv4_address(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise fail(f"{shown(value)} is not a dotted IPv4 address", "for example 192.168.0.254") from None


def _ipv4_network(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.IPv4Network(value, strict=False)
            raise fail(f"{shown(value)} has host bits set", f"did you mean {fixed}?") from None
        raise fail(f"{shown(value)} is not an IPv4 network", "for example 192.168.0.0/24") from None


IPv4Addr = Annotated[str, BeforeValidator(_require_str), AfterValidator(_ipv4_address)]
IPv4Net = Annotated[str, BeforeValidator(_require_str), AfterValidator(_ipv4_network)]


_MAC_FORMS = (
    re.compile(r"([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})"),
    re.compile(r"([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})"),
    re.compile(r"([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})"),
)


def _mac(value: str) -> str:
    # ASCII only before lower(): "K" (Kelvin sign) lowers to "k", and str.strip() takes any Unicode space.
    lowered = value.strip(" \t").lower() if value.isascii() else ""
    for form in _MAC_FORMS:
        match = form.fullmatch(lowered)
        if match:
            octets = match.groups()
            break
    else:
        raise fail(
            f"{shown(value)} is not a MAC address",
            "write six hex octets: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff",
        )
    if int(octets[0], 16) & 1:
        raise fail(
            f"{shown(value)} is a multicast address", "a network card's MAC has the lowest bit of the first octet clear"
        )
    if all(o == "00" for o in octets):
        raise fail(f"{shown(value)} is the all-zero address")
    return ":".join(octets)


MAC = Annotated[str, BeforeValidator(_require_str), AfterValidator(_mac)]


def node_id(mac: str) -> str:
    """The node's id as the seed uses it for directories and hostnames: 12 lowercase hex digits."""
    return _mac(mac).replace(":", "")


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _hostname(value: str) -> str:
    lowered = value.lower() if value.isascii() else ""  # "K" (Kelvin sign) lowers to an ASCII "k"
    if not _LABEL.fullmatch(lowered):
        raise fail(
            f"{shown(value)} is not a valid host name",
            "an RFC 1123 label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen",
        )
    return lowered


Hostname = Annotated[str, BeforeValidator(_require_str), AfterValidator(_hostname)]

MAC_PLACEHOLDER = "{mac}"


def _hostname_pattern(value: str) -> str:
    if MAC_PLACEHOLDER not in value:
        raise fail(
            f"host name pattern {shown(value)} does not contain {MAC_PLACEHOLDER}",
            "every node needs a distinct name, for example worker-node-{mac}",
        )
    if value.count("{") != value.count(MAC_PLACEHOLDER) or value.count("}") != value.count(MAC_PLACEHOLDER):
        raise fail(
            f"host name pattern {shown(value)} has braces other than {MAC_PLACEHOLDER}", "only {mac} is replaced"
        )
    sample = value.replace(MAC_PLACEHOLDER, "0" * 12)
    if not sample.isascii() or not _LABEL.fullmatch(sample.lower()):
        raise fail(
            f"host name pattern {shown(value)} does not give a valid host name ({shown(sample)})",
            "after replacing {mac} by 12 hex digits it must be an RFC 1123 label of at most 63 characters",
        )
    return value.lower()


HostnamePattern = Annotated[str, BeforeValidator(_require_str), AfterValidator(_hostname_pattern)]


_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise fail(f"{shown(value)} is not a valid name", "lowercase letters, digits and -, starting with a letter")
    return value


Name = Annotated[str, BeforeValidator(_require_str), AfterValidator(_name)]


# exports(5): option → kind of value it takes (None: a flag).
_EXPORT_OPTIONS: dict[str, str | None] = {
    "secure": None, "insecure": None, "async": None, "sync": None, "wdelay": None, "no_wdelay": None,
    "hide": None, "nohide": None, "crossmnt": None, "subtree_check": None, "no_subtree_check": None,
    "insecure_locks": None, "no_auth_nlm": None, "secure_locks": None, "auth_nlm": None,
    "root_squash": None, "no_root_squash": None, "all_squash": None, "no_all_squash": None,
    "nordirplus": None, "pnfs": None, "no_pnfs": None, "security_label": None,
    "mountpoint": "path?", "mp": "path?", "fsid": "fsid", "anonuid": "int", "anongid": "int", "sec": "sec",
}  # fmt: skip
_SEC_FLAVOURS = {"sys", "krb5", "krb5i", "krb5p"}
_UUID = re.compile(r"[0-9a-fA-F-]{8,36}")
_MAX_ID = 2**32 - 1  # uid_t, gid_t and a numeric fsid are 32 bits


def _export_option(value: str) -> str:
    name, sep, arg = value.partition("=")
    if name in ("ro", "rw"):
        raise fail(f"export option {shown(name)} is set by the share's access field", f"write access: {name}")
    if name not in _EXPORT_OPTIONS:
        raise fail(f"{shown(name)} is not an exports(5) option", "see `man 5 exports` for the options")
    kind = _EXPORT_OPTIONS[name]
    if kind is None:
        if sep:
            raise fail(f"export option {shown(name)} takes no value")
        return value
    if kind == "path?":
        if sep:
            _absolute_path(arg)
        return value
    if not sep or not arg:
        raise fail(f"export option {shown(name)} needs a value", f"write {name}=VALUE")
    if kind == "int" and not _DIGITS.fullmatch(arg):
        raise fail(f"export option {shown(name)} needs a number, got {shown(arg)}")
    if kind == "int" and not _ascii_number(arg, _MAX_ID):
        raise fail(f"export option {shown(name)} needs a number from 0 to {_MAX_ID}")
    if kind == "fsid" and not (_ascii_number(arg, _MAX_ID) or arg == "root" or _UUID.fullmatch(arg)):
        raise fail(f"export option fsid needs a number, root or a UUID, got {shown(arg)}")
    if kind == "sec" and not all(f in _SEC_FLAVOURS for f in arg.split(":")):
        raise fail(f"export option sec needs flavours from {sorted(_SEC_FLAVOURS)} separated by ':', got {shown(arg)}")
    return value


ExportOption = Annotated[str, BeforeValidator(_require_str), AfterValidator(_export_option)]

# klibc nfsmount (used by initramfs-tools for nfsroot= and by our boot script) aborts the mount on anything else.
KLIBC_FLAGS = frozenset(
    "soft hard intr nointr posix noposix cto nocto ac noac lock nolock acl noacl v2 v3 udp tcp broken_suid ro rw".split()
)
KLIBC_NUMERIC = frozenset("port nfsvers vers rsize wsize timeo retrans acregmin acregmax acdirmin acdirmax".split())


def _mount_option(value: str) -> str:
    name, sep, arg = value.partition("=")
    if name in KLIBC_FLAGS and not sep:
        return value
    if name in KLIBC_NUMERIC:
        if not sep or not _DIGITS.fullmatch(arg) or len(arg) > 9:
            raise fail(f"mount option {shown(name)} needs a number", f"write {name}=N")
        if name in ("nfsvers", "vers") and arg not in ("2", "3"):
            raise fail(f"klibc nfsmount speaks NFS versions 2 and 3 only, not {arg}", f"write {name}=3")
        return value
    raise fail(
        f"{shown(value)} is not an option klibc nfsmount accepts (it aborts the mount on unknown options)",
        "allowed: " + " ".join(sorted(KLIBC_FLAGS)) + "; with =N: " + " ".join(sorted(KLIBC_NUMERIC)),
    )


MountOption = Annotated[str, BeforeValidator(_require_str), AfterValidator(_mount_option)]

# Kernel arguments we own: setting them by hand would fight the generated command line.
RESERVED_ARGS = frozenset({"root", "nfsroot", "ip", "initrd", "BOOTIF", "nfsroot.hostname", "BOOT_IMAGE"})
_KERNEL_ARG = re.compile(r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:/+@=-]*)?")


def _kernel_arg(value: str) -> str:
    if not _KERNEL_ARG.fullmatch(value):
        raise fail(
            f"{shown(value)} is not a plain kernel argument",
            "one word or key=value with letters, digits and _ . , : / + @ = -; no spaces, quotes or $",
        )
    key = value.split("=", 1)[0]
    if key in RESERVED_ARGS:
        raise fail(f"kernel argument {shown(key)} is generated from the spec", "remove it from cmdline")
    return value


KernelArg = Annotated[str, BeforeValidator(_require_str), AfterValidator(_kernel_arg)]

# pxelinux SYSAPPEND bits (syslinux doc: SYSAPPEND/IPAPPEND).
SYSAPPEND_BITS: dict[str, int] = {
    "ip": 0x1, "bootif": 0x2, "sysuuid": 0x4, "cpu": 0x8,
    "sysvendor": 0x10, "sysproduct": 0x20, "sysversion": 0x40, "sysserial": 0x80, "syssku": 0x100,
    "sysfamily": 0x200, "mbvendor": 0x400, "mbproduct": 0x800, "mbversion": 0x1000, "mbserial": 0x2000,
    "mbasset": 0x4000, "biosvendor": 0x8000, "biosversion": 0x10000, "sysff": 0x20000, "fsuuid": 0x40000,
}  # fmt: skip
SysappendName = Literal[
    "ip", "bootif", "sysuuid", "cpu", "sysvendor", "sysproduct", "sysversion", "sysserial", "syssku",
    "sysfamily", "mbvendor", "mbproduct", "mbversion", "mbserial", "mbasset", "biosvendor", "biosversion",
    "sysff", "fsuuid",
]  # fmt: skip

# A command the gateway runs (exports reload). It is run as an argv list, never through a shell, but a word that
# looks like shell syntax is almost certainly a mistake (someone expecting a shell), so it is refused.
_ARGV_WORD = re.compile(r"[A-Za-z0-9_./:=,+@%-]+")


def _argv_word(value: str) -> str:
    if not _ARGV_WORD.fullmatch(value):
        raise fail(
            f"{shown(value)} is not a plain command word",
            "one argv word per list item, from letters, digits and _ . / : = , + @ % -; it is not run by a shell",
        )
    return value


ArgvWord = Annotated[str, BeforeValidator(_require_str), AfterValidator(_argv_word)]
StrictBool = Annotated[bool, Field(strict=True)]


# Sizes of tmpfs mounts and image files: digits and a binary unit, as truncate(1), tmpfs(5) and mkfs all read
# them (K, M, G, T are powers of 1024 for each). A bare number of bytes is refused: "10" is never meant.
_SIZE = re.compile(r"([0-9]{1,6})([KMGT])")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_SIZE = 64 << 40


def size_bytes(value: str) -> int:
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(value)
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def _size(value: str) -> str:
    upper = value.upper() if value.isascii() else ""
    if not _SIZE.fullmatch(upper):
        raise fail(f"{shown(value)} is not a size", "digits and a unit K, M, G or T (powers of 1024), e.g. 512M or 20G")
    if size_bytes(upper) == 0:
        raise fail(f"size {shown(value)} is zero")
    if size_bytes(upper) > MAX_SIZE:
        raise fail(f"size {shown(value)} is larger than 64T")
    return upper


Size = Annotated[str, BeforeValidator(_require_str), AfterValidator(_size)]

# A local partition by file system label or UUID, as blkid -L / -U and fstab name them. Labels: ext4 allows 16
# bytes and xfs 12, GPT partition names more; one conservative alphabet that needs no quoting anywhere.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_UUID_VALUE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9A-F]{4}-[0-9A-F]{4}")


def _device(value: str) -> str:
    kind, sep, name = value.partition("=")
    if sep and kind == "LABEL" and _LABEL_VALUE.fullmatch(name) and not name.startswith("-"):
        return value
    if sep and kind == "UUID" and (_UUID_VALUE.fullmatch(name.lower()) or _UUID_VALUE.fullmatch(name)):
        return f"UUID={name.lower() if len(name) == 36 else name}"
    raise fail(
        f"{shown(value)} is not a partition reference",
        "LABEL=<1-32 of letters, digits, _ . -> or UUID=<the file system's UUID as blkid shows it>",
    )


DeviceRef = Annotated[str, BeforeValidator(_require_str), AfterValidator(_device)]
