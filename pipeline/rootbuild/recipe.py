"""What mmdebstrap is asked to do, as values: its argv, the users hook script, and the cache key.

Pure: the builder (build.py) runs it. Users are made by a customize hook that runs on the build machine with
shadow's `--prefix` pointing at the new root, so no code of the root runs and every value is an argument,
quoted here although the spec already allows only plain words.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from pipeline.spec.rootfs import RootBuild

HOOK_NAME = "nfsroot-users.sh"
TAR_SUFFIX = ".tar"


def users_script(build: RootBuild) -> bytes:
    """A POSIX sh script taking the root directory as $1: groups, users, homes from /etc/skel, ssh keys."""
    lines = [
        "#!/bin/sh",
        "# Made by nfsroot-pipeline from cluster.yaml's rootfs.users.",
        "# shellcheck disable=SC2016  # password hashes are literal text, $ included",
        "set -eu",
        'root="$1"',
    ]
    # Each user's own group first (gid = uid), then missing supplementary groups as system groups (below
    # 1000), so that a new group can never take a gid a user's group needs.
    for user in build.users:
        lines.append(f'groupadd --prefix "$root" --gid {user.uid} {shlex.quote(user.name)}')
    for group in sorted({g for u in build.users for g in u.groups}):
        # The name is a plain word (spec.rootfs.UserName): safe inside the grep pattern.
        lines.append(
            f'grep -q "^{group}:" "$root/etc/group" || groupadd --prefix "$root" --system {shlex.quote(group)}'
        )
    for user in build.users:
        name, uid = shlex.quote(user.name), user.uid
        argv = ["useradd", "--prefix", '"$root"', "--uid", str(uid), "--gid", str(uid), "--create-home"]
        argv += ["--skel", '"$root/etc/skel"']  # the root's skeleton, not the build machine's
        argv += ["--shell", shlex.quote(user.shell), "--password", shlex.quote(user.password_hash)]
        if user.groups:
            argv += ["--groups", shlex.quote(",".join(user.groups))]
        lines.append(" ".join([*argv, name]))
        if user.authorized_keys:
            home = f'"$root/home/"{name}'
            keys = "\n".join(user.authorized_keys) + "\n"
            lines += [
                f"mkdir -p {home}/.ssh",
                f"printf '%s' {shlex.quote(keys)} > {home}/.ssh/authorized_keys",
                f"chmod 0700 {home}/.ssh",
                f"chmod 0600 {home}/.ssh/authorized_keys",
                f"chown -R {uid}:{uid} {home}/.ssh",
            ]
    return ("\n".join(lines) + "\n").encode()


def mmdebstrap_argv(build: RootBuild, hook: str, output: str) -> list[str]:
    """mmdebstrap into a tarball; `hook` is the users script on the build machine."""
    argv = ["mmdebstrap", "--mode=root", f"--variant={build.variant}", "--format=tar"]
    if build.packages:
        argv.append("--include=" + ",".join(build.packages))
    if build.users:
        argv.append(f'--customize-hook=sh {shlex.quote(hook)} "$1"')
    return [*argv, build.suite, output, build.mirror]


def cache_key(build: RootBuild, epoch: int, tool_version: str) -> str:
    """Everything the built root depends on that we control: the section, the hook, the epoch, mmdebstrap's
    version. The mirror's contents are not in it (a moving suite changes under a fixed key): pin a snapshot
    URL as the mirror for a root that is really the same."""
    doc = {
        "rootfs": build.model_dump(mode="json"),
        "hook": users_script(build).decode(),
        "source_date_epoch": epoch,
        "mmdebstrap": tool_version,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def tarball_name(key: str) -> str:
    return f"rootfs-{key}{TAR_SUFFIX}"
