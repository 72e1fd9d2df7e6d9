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
from jinja2.bccache import Bucket, FileSystemBytecodeCache
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


def nginx(value: Any) -> str:
    """An nginx directive argument: the dnsmasq alphabet, which also holds none of nginx's ; { } $ quotes."""
    text = str(value)
    if not _DNSMASQ.fullmatch(text):
        raise UnsafeValueError(f"refusing to render {text!r} into an nginx configuration: not a plain word")
    return text


def shquote(value: Any) -> str:
    return shlex.quote(str(value))


class _CompiledTemplates(FileSystemBytecodeCache):
    """jinja2's cache of compiled templates (keyed by a checksum of the template source), minus its one sharp
    edge: a damaged cache file is recompiled instead of raising out of pickle."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # any damage to a cache file means "not cached", never a failed build
            bucket.reset()


_compiled_dir: list[Path] = []  # set once by the entry point that owns a build directory


def cache_compiled_templates(directory: Path) -> None:
    """Keep compiled templates in `directory` (the doit tasks use build/.jinja): parsing and compiling the
    templates costs a fresh process about 10 ms for the boot script alone, paid again on every `doit` run
    after an edit. Must be called before the first render; library users and tests need not call it."""
    _compiled_dir[:] = [directory]


def compiled_templates(name: str) -> jinja2.BytecodeCache | None:
    """The bytecode cache for one environment (each gets its own directory: jinja keys a cache entry by
    template name and source, not by the environment's settings, which differ between them)."""
    if not _compiled_dir:
        return None
    directory = _compiled_dir[0] / name
    directory.mkdir(parents=True, exist_ok=True)
    return _CompiledTemplates(str(directory))


@cache
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        bytecode_cache=compiled_templates("templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["token"] = token
    env.filters["shquote"] = shquote
    env.filters["dnsmasq"] = dnsmasq
    env.filters["nginx"] = nginx
    return env


def render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode()


def template_path(name: str) -> Path:
    return TEMPLATES / name
