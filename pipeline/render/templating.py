"""The one jinja2 environment: strict, sandboxed, and with filters that refuse unsafe values.

Templates hold layout only. Values are validated by the spec model; the filters check again at the last
moment so that a renderer bug cannot smuggle a quote, a newline or a `$` into a config file or a script.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pipeline.workspace import TEMPLATES as TEMPLATES  # re-exported: renderers find templates here

# What may appear unquoted in exports(5), pxelinux.cfg and hosts files: no whitespace, quotes, #, $, `, ;, \.
_TOKEN = re.compile(r"[A-Za-z0-9_.,:/=+@{}()-]+")


class UnsafeValueError(ValueError):
    """A value reached a template that the spec should never have let through."""


def token(value: Any) -> str:
    text = str(value)
    if not _TOKEN.fullmatch(text):
        raise UnsafeValueError(f"refusing to render {text!r}: not a plain token")
    return text


# A dnsmasq field: no comma (the field separator), quote, whitespace or newline (a new directive).
_DNSMASQ = re.compile(r"[A-Za-z0-9_.:/@-]+")


def dnsmasq(value: Any) -> str:
    text = str(value)
    if not _DNSMASQ.fullmatch(text):
        raise UnsafeValueError(f"refusing to render {text!r} into a dnsmasq configuration: not a plain field")
    return text


def shquote(value: Any) -> str:
    return shlex.quote(str(value))


@cache
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["token"] = token
    env.filters["shquote"] = shquote
    env.filters["dnsmasq"] = dnsmasq
    return env


def render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode()


def template_path(name: str) -> Path:
    return TEMPLATES / name
