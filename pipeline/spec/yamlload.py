"""A hardened YAML loader that remembers where every value came from.

PyYAML's safe loader silently keeps the last of two duplicate keys and forgets positions once a document is
constructed. We compose the node graph ourselves (safe tags only), refuse duplicate keys, bound the amount of
work an alias bomb can cause, and keep for every value path the line and column plus the scalar's original
text, so validation errors can point at the exact spot and explain YAML 1.1 surprises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.errors import Problem

try:  # the C loader is several times faster on large specs; same semantics
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]

# A spec with 10,000 nodes has ~60,000 YAML nodes; aliases re-used a million times are an attack, not a spec.
MAX_NODES = 500_000
MAX_BYTES = 32 * 1024 * 1024


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
        self.visited = 0

    def problem(self, node: yaml.Node, path: Path, message: str, hint: str = "") -> None:
        o = _origin(node)
        field = ".".join(str(p) for p in path)
        self.problems.append(Problem(self.filename, o.line, o.column, field, message, hint))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise YamlProblems([Problem(self.filename, 0, 0, "", "document is too large (alias expansion?)")])
        self.origins[path] = _origin(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problem(key_node, path, "merge keys (<<) are not supported", "write the entries out")
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(key_node, path, "mapping keys must be plain strings")
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
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problem(node, path, f"cannot read this value: {exc.problem}", "only plain YAML values are allowed")
            return None


def load_yaml(text: str | bytes, filename: str) -> Document:
    """Parse one YAML document; raise YamlProblems when it cannot be read at all."""
    if len(text) > MAX_BYTES:
        raise YamlProblems([Problem(filename, 0, 0, "", f"file is larger than {MAX_BYTES} bytes")])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise YamlProblems([Problem(filename, line, col, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([Problem(filename, 0, 0, "", f"YAML error: {exc}")]) from None
    if node is None:
        raise YamlProblems([Problem(filename, 1, 1, "", "the file is empty", "see the README for the format")])
    builder = _Builder(filename)
    data = builder.build(node, ())
    return Document(data, builder.origins, builder.key_origins, builder.problems)
