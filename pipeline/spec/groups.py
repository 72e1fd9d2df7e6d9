"""Node groups resolved: one effective, complete `Cluster` per group, so the renderers never look at groups.

A group's view is the cluster with the group's settings merged in (`Group`'s fields: a section is merged field
by field, anything else replaced), its host name pattern, and only its own nodes. Renderers that are per group
(boot script and initrd, boot loader configs, symlink plan) run over each view; cluster-wide ones (exports,
hosts, dnsmasq) use the cluster. Without groups the only view is the cluster itself, unchanged, which is what
keeps a spec without groups rendering byte for byte as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipeline.spec.model import DEFAULT_GROUP, Cluster, Group, Nodes

if TYPE_CHECKING:
    from pipeline.spec.semantics import Finding, Loc


@dataclass(frozen=True)
class GroupView:
    """A group's effective spec. `default`: the group unknown nodes boot as (pxelinux.cfg/default)."""

    name: str
    cluster: Cluster
    default: bool
    members: tuple[int, ...]  # indices of its nodes in the spec's nodes.known, in order

    @property
    def field(self) -> str:
        """The spec field the view comes from, for the plan's reasons ("" for the cluster-wide settings)."""
        return "" if self.name == DEFAULT_GROUP else f"groups.{self.name}"

    def fields(self, fields: tuple[str, ...]) -> tuple[str, ...]:
        """An artifact's spec fields, led by the group's own when the view is a group's; a node is named by
        its index in the spec, not in the view."""
        if not self.field:
            return fields
        return (self.field, *(self._spec_field(f) for f in fields))

    def _spec_field(self, field: str) -> str:
        head, _, rest = field.partition("nodes.known.")
        index, dot, tail = rest.partition(".")
        if head or not index.isdigit():
            return field
        return f"nodes.known.{self.members[int(index)]}{dot}{tail}"


def overridden(group: Group) -> dict[str, Any]:
    """The settings a group sets, by Group field name."""
    return {name: getattr(group, name) for name in group.model_fields_set if getattr(group, name) is not None}


def _merged(base: Any, override: Any) -> Any:
    if isinstance(override, BaseModel) and isinstance(base, BaseModel):
        # Validated again as the whole section: the merge of two valid halves is checked like any section.
        return type(base).model_validate(base.model_dump() | override.model_dump(exclude_unset=True))
    return override


def view_of(cluster: Cluster, name: str, members: tuple[int, ...]) -> Cluster:
    update: dict[str, Any] = {"groups": {}}
    nodes = tuple(cluster.nodes.known[i] for i in members)
    pattern = cluster.nodes.hostname
    group = cluster.groups.get(name)
    if group is not None:
        for field, value in overridden(group).items():
            if field == "hostname":
                pattern = value
            else:
                update[field] = _merged(getattr(cluster, field), value)
    update["nodes"] = Nodes(hostname=pattern, known=nodes)
    # model_copy does not validate: semantics run over every view (group_problems), at the group's lines.
    return cluster.model_copy(update=update)


def resolve_groups(cluster: Cluster) -> tuple[GroupView, ...]:
    if not cluster.groups and cluster.nodes.default_group is None:
        return (GroupView(DEFAULT_GROUP, cluster, True, tuple(range(len(cluster.nodes.known)))),)
    default = cluster.nodes.default_group or DEFAULT_GROUP
    names = [default, *sorted(n for n in cluster.groups if n != default)]
    members: dict[str, list[int]] = {n: [] for n in names}
    for i, node in enumerate(cluster.nodes.known):
        members.setdefault(cluster.group_of(node), []).append(i)
    if DEFAULT_GROUP not in names and members.get(DEFAULT_GROUP):
        names.append(DEFAULT_GROUP)  # `group: default`: the cluster-wide settings, though unknown nodes boot another
    return tuple(
        GroupView(name, view_of(cluster, name, tuple(members[name])), name == default, tuple(members[name]))
        for name in names
        if name == DEFAULT_GROUP or name in cluster.groups  # an unknown name is a semantic problem, not a view
    )


# -- validation ---------------------------------------------------------------------------------------------

# Rules that hold for each group (pipeline.spec.semantics.view_problems) are checked over every view; a problem
# is reported at the group's own setting when the group sets the field, else at the group, naming the field.


def _nodes_at(members: tuple[int, ...], loc: Loc) -> Loc:
    """A view's nodes.known index as the spec's."""
    if loc[:2] == ("nodes", "known") and len(loc) > 2 and isinstance(loc[2], int):
        return ("nodes", "known", members[loc[2]], *loc[3:])
    return loc


def _at_group(name: str, group: Group, loc: Loc, message: str) -> tuple[Loc, str]:
    head = loc[0] if loc else ""
    if head == "nodes" and loc[1:2] != ("known",) and group.hostname is not None:
        return ("groups", name, "hostname"), message
    if head in overridden(group):
        return ("groups", name, *loc), message
    if head == "nodes":
        return loc, f"in group {name!r}: {message}"
    where = ".".join(str(p) for p in loc)
    return ("groups", name), f"with the cluster-wide {where}: {message}"


def group_problems(cluster: Cluster) -> list[Finding]:
    """view_problems over the cluster-wide settings (with the nodes that boot them) and over each group."""
    from pipeline.spec.semantics import view_problems

    if not cluster.groups and cluster.nodes.default_group is None:
        return view_problems(cluster)
    names = _names(cluster)
    if names:
        return names + view_problems(cluster)
    return per_group(cluster, view_problems) + _shared_roots(cluster)


def per_group(cluster: Cluster, rules: Callable[[Cluster], list[Finding]]) -> list[Finding]:
    """`rules` over the cluster-wide settings (with the nodes that boot them) and over each group's view,
    a group's findings relocated to its own lines (a valid spec's group names: see group_problems)."""
    if not cluster.groups and cluster.nodes.default_group is None:
        return rules(cluster)
    default = tuple(i for i, n in enumerate(cluster.nodes.known) if cluster.group_of(n) == DEFAULT_GROUP)
    found: list[Finding] = [
        (_nodes_at(default, loc), message, hint)
        for loc, message, hint in rules(view_of(cluster, DEFAULT_GROUP, default))
    ]
    base = {(loc, message) for loc, message, _ in found}
    for view in resolve_groups(cluster):
        group = cluster.groups.get(view.name)
        if group is None:
            continue  # the cluster-wide settings, checked above
        for loc, message, hint in rules(view.cluster):
            loc = _nodes_at(view.members, loc)
            if (loc, message) in base and loc[0] not in overridden(group):
                continue  # the cluster-wide settings' own finding, reported once at its line
            found.append((*_at_group(view.name, group, loc, message), hint))
    return list(dict.fromkeys(found))


# Fields of `firmware` a group may not set: every group's iPXE nodes read the one nfsroot.ipxe, served by the one
# nginx server block, so how they fetch is the cluster's.
CLUSTER_WIDE_FIRMWARE = frozenset({"transport", "http"})


def _names(cluster: Cluster) -> list[Finding]:
    known = ", ".join(sorted(cluster.groups)) or "none defined"
    found: list[Finding] = []
    if DEFAULT_GROUP in cluster.groups:
        found.append(
            (
                ("groups", DEFAULT_GROUP),
                f"{DEFAULT_GROUP!r} names the cluster-wide settings",
                "choose another name; set nodes.default_group to make it the group of unknown nodes",
            )
        )
    for name, group in cluster.groups.items():
        if group.firmware is None:
            continue
        for field in sorted(CLUSTER_WIDE_FIRMWARE & group.firmware.model_fields_set):
            found.append(
                (
                    ("groups", name, "firmware", field),
                    "is cluster-wide: one iPXE script and one HTTP server serve every group",
                    f"set firmware.{field} instead",
                )
            )
    default = cluster.nodes.default_group
    if default is not None and default not in cluster.groups:
        found.append((("nodes", "default_group"), f"no group named {default!r}", f"groups: {known}"))
    for i, node in enumerate(cluster.nodes.known):
        if node.group is not None and node.group != DEFAULT_GROUP and node.group not in cluster.groups:
            found.append((("nodes", "known", i, "group"), f"no group named {node.group!r}", f"groups: {known}"))
    return found


def _shared_roots(cluster: Cluster) -> list[Finding]:
    """What lives in the read-only root is one for every group booting that root: symlinks and the profile's
    files must agree; and the boot files of different roots must not take the same name on the TFTP root."""
    found: list[Finding] = []
    by_root: dict[str, GroupView] = {}
    by_kernel: dict[str, GroupView] = {}
    for view in resolve_groups(cluster):
        c = view.cluster
        where = ("groups", view.name)
        first = by_root.setdefault(c.root.share, view)
        if first is not view:
            f = first.cluster
            if c.symlinks != f.symlinks:
                found.append(
                    (
                        (*where, "symlinks"),
                        f"differs from the symlinks of group {first.name!r}, which boots the same root "
                        f"share {c.root.share!r}",
                        "symlinks live in the read-only root: groups booting one root share them",
                    )
                )
            if (c.root.profile, _node_mount(c)) != (f.root.profile, _node_mount(f)):
                found.append(
                    (
                        (*where, "root"),
                        f"root.profile or its per-node mount differs from that of group {first.name!r} on the same "
                        f"root share {c.root.share!r}",
                        "the profile's links live in the read-only root: keep them alike",
                    )
                )
        other = by_kernel.setdefault(c.boot.kernel, view)
        if other is not view and other.cluster.root.share != c.root.share:
            found.append(
                (
                    (*where, "boot", "kernel"),
                    f"group {other.name!r} boots kernel {c.boot.kernel} from another root share "
                    f"({other.cluster.root.share!r}): both would be served as boot/vmlinuz-{c.boot.kernel}",
                    "groups booting different roots need different kernel versions",
                )
            )
    return found


def _node_mount(c: Cluster) -> str | None:
    return next((w.mount for w in c.writable if w.per_node), None)
