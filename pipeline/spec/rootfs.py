"""`rootfs`: build the read-only root from the spec with mmdebstrap (optional; without it the root is adopted).

Every value here reaches a shell hook or a file in the root (/etc/passwd, authorized_keys), so each type is a
small alphabet, checked here and quoted again where it is written.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.spec.types import AbsPath, _require_str, fail

StrictInt = Annotated[int, Field(strict=True)]

_SUITE = re.compile(r"[a-z][a-z0-9-]{1,30}")
_MIRROR = re.compile(r"(https?|file)://[A-Za-z0-9._~:/@%+-]{1,400}")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,100}")  # Debian policy 5.6.1
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # Debian's adduser default NAME_REGEX
# One authorized_keys line: a key type, base64, an optional comment of plain words. No options (command=...):
# they are where quoting mistakes become remote commands.
_SSH_KEY = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,2}( [A-Za-z0-9@._-]{1,100})?"
)
# crypt(3) output ($y$, $6$, $5$ …) or a locked password (! or *).
_PASSWORD_HASH = re.compile(r"\$[0-9a-z]{1,2}\$[A-Za-z0-9./$]{8,200}|[!*]")


def _matching(pattern: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise fail(f"{value[:80]!r} is not {what}", hint)
        return value

    return AfterValidator(check)


Suite = Annotated[str, BeforeValidator(_require_str), _matching(_SUITE, "a Debian suite name", "bookworm, trixie …")]
Mirror = Annotated[
    str, BeforeValidator(_require_str), _matching(_MIRROR, "a mirror URL", "http://deb.debian.org/debian")
]
Package = Annotated[
    str, BeforeValidator(_require_str), _matching(_PACKAGE, "a Debian package name", "lowercase, as apt knows it")
]
UserName = Annotated[
    str, BeforeValidator(_require_str), _matching(_USER, "a user name", "lowercase letters, digits, _ and -")
]
SshKey = Annotated[
    str,
    BeforeValidator(_require_str),
    _matching(_SSH_KEY, "a public ssh key", "one line of a .pub file: type, key, optional comment; no options"),
]
PasswordHash = Annotated[
    str,
    BeforeValidator(_require_str),
    _matching(_PASSWORD_HASH, "a password hash", "the output of `mkpasswd -m yescrypt`, or ! for no password"),
]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RootUser(_Part):
    """A user created in the built root (with a home from /etc/skel)."""

    name: UserName
    uid: StrictInt = Field(ge=1000, le=59999, description="User id; its own group gets the same id.")
    groups: tuple[UserName, ...] = Field((), description="Supplementary groups (created when missing).")
    shell: AbsPath = Field("/bin/bash", description="Login shell.")
    authorized_keys: tuple[SshKey, ...] = Field((), description="Public ssh keys allowed to log in.")
    password_hash: PasswordHash = Field("!", description="crypt(3) hash (mkpasswd); ! locks the password.")


class RootBuild(_Part):
    """Build the read-only root with mmdebstrap instead of adopting an existing one."""

    suite: Suite = Field("bookworm", description="Debian suite.")
    mirror: Mirror = Field("http://deb.debian.org/debian", description="Debian mirror (a snapshot URL pins it).")
    variant: Literal["minbase", "apt", "required", "important", "standard"] = Field(
        "minbase", description="mmdebstrap variant: which priority of packages is the base."
    )
    packages: tuple[Package, ...] = Field((), description="Packages installed on top of the variant.")
    users: tuple[RootUser, ...] = ()
