"""Property test of the confined path walk against the kernel's own resolution (realpath).

For random trees of directories and symlinks (relative, absolute, escaping, looping), whatever
`TargetRoot.open_dir` returns must be the directory the kernel reaches, and it must lie inside the root;
when the kernel would leave the root, the walk must refuse.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipeline.errors import UnsafePathError
from pipeline.state.rootfs import ParentNotDirectory, TargetRoot

NAMES = ["a", "b", "c"]
LINK_TEXTS = ["a", "b/c", "..", "../..", "../../..", "../a", ".", "/", "/etc", "ROOT", "ROOT/a", "ROOT/../x", "c/.."]

nodes = st.dictionaries(
    keys=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),
    values=st.sampled_from(["dir", "dir", "dir", "file", *("->" + t for t in LINK_TEXTS)]),
    max_size=8,
)
queries = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)


def _build(root: Path, tree: dict[str, str]) -> None:
    for rel, what in sorted(tree.items()):
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if what == "dir":
                path.mkdir(exist_ok=True)
            elif what == "file":
                path.write_text("x")
            else:
                os.symlink(what[2:].replace("ROOT", str(root)), path)
        except OSError:
            continue  # an earlier entry made a parent a file or a symlink: skip this one


@settings(max_examples=300, deadline=None)
@given(tree=nodes, query=queries)
def test_confined_walk_agrees_with_the_kernel_or_refuses(tree: dict[str, str], query: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(os.path.realpath(tmp)) / "root"
        root.mkdir()
        _build(root, tree)
        try:
            kernel: str | None = os.path.realpath(root.joinpath(*query), strict=True)
        except OSError:  # missing, a file in the way, or a loop: the kernel reaches no directory
            kernel = None
        inside = kernel is not None and (kernel == str(root) or kernel.startswith(str(root) + "/"))
        with TargetRoot(root) as target:
            try:
                opened = target.open_dir(tuple(query))
            except UnsafePathError:
                event("refused")
                return  # refusing is always safe; the assertions below check it never wrongly accepts
            except ParentNotDirectory:
                event("file in the way")
                assert kernel is None or not os.path.isdir(kernel) or not inside
                return
            if opened is None:
                event("missing")
                assert kernel is None or not inside, f"walk found nothing at {query}, the kernel reaches {kernel}"
                return
            event("followed a symlink" if tuple(query) != opened[1] else "plain directory")
            fd, resolved = opened
            try:
                reached = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        assert inside, f"walk accepted {query} although the kernel leaves the root ({kernel})"
        assert reached == kernel == str(root.joinpath(*resolved))


def test_an_escape_and_return_is_refused_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "out").symlink_to("../../root/a")  # leaves the root, then comes back
    with TargetRoot(root) as target:
        try:
            target.open_dir(("a", "out"))
        except UnsafePathError as exc:
            assert "leads out of the target root" in str(exc)
        else:
            raise AssertionError("a link whose text climbs above the root must be refused")
