"""A hardened YAML loader that remembers where every value came from.

PyYAML's safe loader silently keeps the last of two duplicate keys and forgets positions once a document is
constructed. We compose the node graph ourselves (plain YAML values only: every other tag is refused), refuse
duplicate keys, bound the nesting depth and the work an alias bomb can cause, and keep for every value path
the line and column plus the scalar's original text, so validation errors can point at the exact spot and
explain YAML 1.1 surprises. Whatever the input, the result is a document or problems with their lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.errors import Problem

try:  # the C loader is several times faster on large specs; same semantics
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]

# The file size bounds the plain values; aliases re-used a million times are an attack, not a spec, so only
# the values reached again through an alias are counted.
MAX_ALIAS_VALUES = 100_000
MAX_BYTES = 32 * 1024 * 1024
# cluster.yaml nests five levels deep (nodes.known.N.cmdline.M); recursion on deeper input would crash.
MAX_DEPTH = 32

_CORE = "tag:yaml.org,2002:"
# What a plain scalar resolves to, and what an explicit !!str / !!int ... may say: nothing else is read.
_SCALAR_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_ALLOWED_TAGS: dict[type[yaml.Node], frozenset[str]] = {
    yaml.MappingNode: frozenset({_CORE + "map"}),
    yaml.SequenceNode: frozenset({_CORE + "seq"}),
    yaml.ScalarNode: _SCALAR_TAGS,
}
_TAG_HINT = "remove it: only plain YAML values are read"
# YAML 1.1 printable characters (the reader refuses everything else, without a line).
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Origin:
    line: int  # 1-based
    column: int  # 1-based
    tag: str  # resolved YAML tag of a scalar, "" for collections
    plain: bool  # an unquoted scalar: the kind YAML 1.1 may turn into a number or boolean
    text: str  # the scalar as written


@dataclass(frozen=True)
class Document:
    data: Any
    origins: dict[Path, Origin]
    key_origins: dict[Path, Origin]  # where the *key* of a mapping entry stands (for unknown-field errors)
    problems: list[Problem]  # found while reading but not fatal (duplicate keys): reported with the rest


class YamlProblems(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _origin(node: yaml.Node) -> Origin:
    mark = node.start_mark
    if isinstance(node, yaml.ScalarNode):
        return Origin(mark.line + 1, mark.column + 1, node.tag, not node.style, node.value)  # C loader: "" for plain
    return Origin(mark.line + 1, mark.column + 1, "", False, "")


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.constructor = yaml.SafeLoader("")  # only used for scalar construction (safe tags)
        self.origins: dict[Path, Origin] = {}
        self.key_origins: dict[Path, Origin] = {}
        self.problems: list[Problem] = []
        self.seen: set[int] = set()  # ids of nodes already built: meeting one again means an alias
        self.alias_values = 0

    def problem(self, node: yaml.Node, path: Path, message: str, hint: str = "") -> None:
        o = _origin(node)
        field = ".".join(str(p) for p in path)
        self.problems.append(Problem(self.filename, o.line, o.column, field, message, hint))

    def fatal(self, node: yaml.Node, path: Path, message: str, hint: str = "") -> YamlProblems:
        self.problem(node, path, message, hint)
        return YamlProblems(self.problems)

    def build(self, node: yaml.Node, path: Path, aliased: bool = False) -> Any:
        if len(path) > MAX_DEPTH:
            raise self.fatal(node, path, f"nested deeper than {MAX_DEPTH} levels", "a cluster spec needs a handful")
        aliased = aliased or id(node) in self.seen
        self.seen.add(id(node))
        if aliased:
            self.alias_values += 1
            if self.alias_values > MAX_ALIAS_VALUES:
                raise self.fatal(
                    node,
                    path,
                    f"aliases expand to more than {MAX_ALIAS_VALUES} values",
                    "write the values out, or use fewer aliases",
                )
        self.origins[path] = _origin(node)
        if node.tag not in _ALLOWED_TAGS[type(node)]:
            self.problem(node, path, f"the tag {node.tag} is not allowed", _TAG_HINT)
            return None
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problem(key_node, path, "merge keys (<<) are not supported", "write the entries out")
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(key_node, path, "mapping keys must be plain strings")
                    continue
                if key_node.tag not in _SCALAR_TAGS:
                    self.problem(key_node, path, f"the tag {key_node.tag} is not allowed", _TAG_HINT)
                    continue
                key = key_node.value
                if key in result:
                    first = self.key_origins[(*path, key)]
                    self.problem(
                        key_node,
                        (*path, key),
                        f"duplicate key {key!r}",
                        f"it is already set on line {first.line}; YAML would silently keep only the last one",
                    )
                    continue
                self.key_origins[(*path, key)] = _origin(key_node)
                result[key] = self.build(value_node, (*path, key), aliased)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), aliased) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problem(node, path, f"cannot read this value: {exc.problem}", "only plain YAML values are allowed")
        except (ValueError, KeyError, AttributeError, OverflowError) as exc:
            # PyYAML's constructors raise these for `2001-02-30`, a 5,000-digit number or `!!int abc`.
            reason = str(exc)[:200] if isinstance(exc, ValueError) else "not a valid value of its kind"
            self.problem(node, path, f"cannot read this value: {reason}", "quote it to make it a string")
        return None


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _decode(data: bytes, filename: str) -> str:
    """UTF-8 text, or a problem naming the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        byte = data[exc.start]
        what = "cannot start a character" if exc.reason == "invalid start byte" else "starts a character cut short"
        raise YamlProblems(
            [
                Problem(
                    filename,
                    line,
                    column,
                    "",
                    f"the file is not valid UTF-8: byte 0x{byte:02x} {what}",
                    "save it as UTF-8",
                )
            ]
        ) from None


def _syntax_problems(exc: yaml.MarkedYAMLError, filename: str) -> list[Problem]:
    """Where the parser noticed the error, and where the construct it was reading began (often far above)."""
    noticed, start = exc.problem_mark, exc.context_mark
    context = exc.context or ""
    if noticed is None or start is None or not context or (start.line, start.column) == (noticed.line, noticed.column):
        mark = noticed or start
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(x for x in (context, exc.problem) if x)
        return [Problem(filename, line, col, "", f"YAML syntax error: {what}")]
    construct = re.sub(r"^while (parsing|scanning) (an? |the )?", "", context)
    began = f"line {start.line + 1}, column {start.column + 1}"
    return [
        Problem(
            filename,
            noticed.line + 1,
            noticed.column + 1,
            "",
            f"YAML syntax error: {exc.problem}",
            f"in the {construct} started at {began}",
        ),
        Problem(filename, start.line + 1, start.column + 1, "", f"{construct} started here"),
    ]


def load_yaml(text: str | bytes, filename: str) -> Document:
    """Parse one YAML document; raise YamlProblems when it cannot be read at all."""
    if len(text) > MAX_BYTES:
        raise YamlProblems([Problem(filename, 0, 0, "", f"the file is larger than {MAX_BYTES} bytes")])
    if isinstance(text, bytes):
        text = _decode(text, filename)
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line, col = _position(text, bad.start())
        message = f"the file contains the character {bad.group()!r}, which YAML does not allow"
        hint = "write it as an escape in a double-quoted string, or remove it"
        raise YamlProblems([Problem(filename, line, col, "", message, hint)])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise YamlProblems(_syntax_problems(exc, filename)) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([Problem(filename, 0, 0, "", f"YAML error: {str(exc)[:200]}")]) from None
    except RecursionError:  # the pure-Python composer (no libyaml) on deep nesting
        raise YamlProblems([Problem(filename, 0, 0, "", f"nested deeper than {MAX_DEPTH} levels")]) from None
    if node is None:
        raise YamlProblems([Problem(filename, 1, 1, "", "the file is empty", "see the README for the format")])
    builder = _Builder(filename)
    data = builder.build(node, ())
    return Document(data, builder.origins, builder.key_origins, builder.problems)
