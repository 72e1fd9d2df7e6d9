"""Load cluster.yaml: parse, validate, and report every problem at once with its line and column.

This is the boundary where YAML and pydantic errors become the one user-facing error type, `SpecError`,
one `file:line:col: field: message (hint)` line per problem.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import stat
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pipeline.errors import Problem, SpecError
from pipeline.spec.model import Cluster
from pipeline.spec.semantics import Finding, lint_warnings, semantic_problems
from pipeline.spec.types import same_paths, shown
from pipeline.spec.yamlload import MAX_BYTES, Document, Origin, YamlProblems, load_yaml

_YAML_KINDS = {
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:null": "null (empty)",
    "tag:yaml.org,2002:timestamp": "date",
}


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _locate(doc: Document, loc: tuple[str | int, ...], *, key: bool = False) -> Origin | None:
    """The origin of the value at loc, or of its nearest existing ancestor."""
    if key and loc in doc.key_origins:
        return doc.key_origins[loc]
    for n in range(len(loc), -1, -1):
        if loc[:n] in doc.origins:
            return doc.origins[loc[:n]]
    return None


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class at a location (through fields, list items and dict values), to suggest field names."""
    current: Any = Cluster
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (tuple, list, dict):
            current = typing.get_args(current)[-1 if typing.get_origin(current) is dict else 0]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _clean_loc(raw: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], bool]:
    """Drop pydantic's internal segments; tell whether the error is about a dict key."""
    loc: list[str | int] = []
    is_key = False
    for part in raw:
        if part == "[key]":
            is_key = True
            continue
        if isinstance(part, str) and (part.startswith("function-") or part in ("tagged-union",)):
            continue
        loc.append(part)
    return tuple(loc), is_key


def _message(err: ErrorDetails, doc: Document, loc: tuple[str | int, ...], origin: Origin | None) -> tuple[str, str]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    hint = str(ctx.get("nfsroot_hint", "")) if kind == "nfsroot" else ""
    message = err["msg"]
    value = err.get("input")
    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        message = f"unknown field {shown(name)}"
        model = _model_at(loc[:-1])
        if model is not None:
            close = difflib.get_close_matches(name, list(model.model_fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known fields: " + ", ".join(model.model_fields)
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected')}, got {shown(value)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"expected a mapping of fields, got {_describe(value)}"
    elif kind in ("tuple_type", "list_type"):
        message = f"expected a list, got {_describe(value)}"
    elif kind == "bool_type":
        message = f"expected true or false, got {_describe(value)}"
    elif kind in ("int_type", "int_parsing"):
        message = f"expected a whole number, got {_describe(value)}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        message = f"{shown(value)} is out of range: must be {kind.replace('_', ' ').replace('equal', 'or equal to')} {next(iter(ctx.values()))}"
    elif kind == "string_type":
        message = f"expected a string, got {_describe(value)}"
    elif kind == "value_error":
        message = str(ctx.get("error", message))
    if (
        origin is not None
        and origin.plain
        and origin.tag in _YAML_KINDS
        and not isinstance(value, str)
        and kind in ("nfsroot", "string_type", "literal_error")
    ):
        what = _YAML_KINDS[origin.tag]
        extra = " (base 60!)" if what == "number" and ":" in origin.text else ""
        text = origin.text if len(origin.text) <= 60 else "value"  # a huge number is not echoed whole
        hint = f'YAML reads the unquoted {text} as a {what}{extra}; quote it: "{text}"'
    return message, hint


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {shown(value)}"


def _problems_from_validation(exc: ValidationError, doc: Document, filename: str) -> list[Problem]:
    problems = []
    already = {p.field for p in doc.problems}  # a value YAML could not read is not reported twice
    for err in exc.errors(include_url=False):
        loc, is_key = _clean_loc(tuple(err["loc"]))
        if _field(loc) in already:
            continue
        origin = _locate(doc, loc, key=is_key or err["type"] == "extra_forbidden")
        message, hint = _message(err, doc, loc, origin)
        line, col = (origin.line, origin.column) if origin else (0, 0)
        problems.append(Problem(filename, line, col, _field(loc), message, hint))
    return problems


def _findings_to_problems(findings: list[Finding], doc: Document, filename: str) -> list[Problem]:
    problems = []
    for loc, message, hint in findings:
        # A problem of a node group as a whole is shown at its name, not at the first of its settings.
        origin = _locate(doc, loc, key=len(loc) == 2 and loc[0] == "groups")
        line, col = (origin.line, origin.column) if origin else (0, 0)
        problems.append(Problem(filename, line, col, _field(loc), message, hint))
    return problems


def _same_symlink_sources(doc: Document, filename: str) -> list[Problem]:
    symlinks = doc.data.get("symlinks")
    if not isinstance(symlinks, dict):
        return []
    problems = []
    for later, earlier in same_paths(list(symlinks)):
        here, first = doc.key_origins[("symlinks", later)], doc.key_origins[("symlinks", earlier)]
        message = f"{later} is the same path as {earlier} on line {first.line}"
        problems.append(Problem(filename, here.line, here.column, f"symlinks.{later}", message, "write each path once"))
    return problems


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Loading creates tens of thousands of small acyclic objects (YAML nodes, values, models); the cyclic GC
    # rescanning them over and over made a 10,000-node spec load 36x slower than a 1,000-node one.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_cluster(text: str | bytes, filename: str) -> tuple[Cluster, list[Problem]]:
    """Validate spec text; return the cluster and its lint warnings, or raise SpecError with every problem."""
    with _gc_paused():
        try:
            cluster, warnings = _parse_cluster(text, filename)
        except SpecError as exc:
            raise SpecError([_bounded(p) for p in exc.problems]) from None
    return cluster, [_bounded(p) for p in warnings]


_ECHO = 300


def _cut(text: str) -> str:
    return text if len(text) <= _ECHO else f"{text[:_ECHO]}... ({len(text)} characters)"


def _bounded(p: Problem) -> Problem:
    """The last guard against echoing a huge key or value whole: every part of a problem is cut short."""
    return Problem(p.file, p.line, p.column, _cut(p.field), _cut(p.message), _cut(p.hint))


def _parse_cluster(text: str | bytes, filename: str) -> tuple[Cluster, list[Problem]]:
    try:
        doc = load_yaml(text, filename)
    except YamlProblems as exc:
        raise SpecError(exc.problems) from None
    if not isinstance(doc.data, dict):
        raise SpecError([*doc.problems, Problem(filename, 1, 1, "", "expected a mapping of fields at the top level")])
    early = doc.problems + _same_symlink_sources(doc, filename)
    try:
        cluster = Cluster.model_validate(doc.data, context={"skip_semantics": True})
    except ValidationError as exc:
        raise SpecError(early + _problems_from_validation(exc, doc, filename)) from None
    problems = early + _findings_to_problems(semantic_problems(cluster), doc, filename)
    if problems:
        raise SpecError(problems)
    return cluster, _findings_to_problems(lint_warnings(cluster), doc, filename)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_spec(path: Path) -> bytes:
    """At most MAX_BYTES + 1 bytes of a regular file: /dev/zero or a 2 GiB file is refused, not read whole.

    O_NONBLOCK so that opening a FIFO returns at once (it is then refused like any non-regular file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
            raise SpecError(
                [Problem(str(path), 0, 0, "", f"not a regular file ({kind}); give the path of cluster.yaml")]
            )
        chunks = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_cluster(path: Path) -> tuple[Cluster, list[Problem]]:
    """Read and validate a cluster.yaml file. Errors name the file as the user gave it."""
    try:
        text = _read_spec(path)
    except OSError as exc:
        raise SpecError([Problem(str(path), 0, 0, "", f"cannot read the spec: {exc.strerror}")]) from None
    return parse_cluster(text, str(path))
