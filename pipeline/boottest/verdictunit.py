"""The guest's judge on a real systemd root: a unit that, once startup is over, reports and powers off.

It is installed into the served copy of the root (never into a user's root, never by the profile). When the
system has finished starting (`systemctl is-system-running --wait`) it prints the same report the busybox
test init prints (so the harness's milestones and checks work unchanged) plus what only systemd can tell:
the system state, the failed units, machine-id, ssh host key fingerprints (of the files and of the running sshd), the journal's boots, and whether
root and the user can write /tmp, /var/tmp and the home and ping. The report also goes to the node's
directory (`<node mount>/boottest-verdict`), then the node powers off.

Type=simple on purpose: a oneshot pulled in by multi-user.target would hold startup open, and
`is-system-running --wait` would wait for itself.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.boottest.clientroot import REPORT_BEGIN, REPORT_END, REPORT_PREFIX, shared_checks
from pipeline.fsutil import write_atomic

UNIT = "nfsroot-boottest-verdict.service"
SCRIPT = "/usr/local/sbin/nfsroot-boottest-verdict"
VERDICT_FILE = "boottest-verdict"


def render_script(
    node_mount: str, writable: Sequence[str], symlinks: Mapping[str, str], user: str, extra: str = ""
) -> str:
    """The verdict script; `extra` is more bash for the report (a test's own checks, printing ${P}key=value)."""
    q = shlex.quote
    mounts = " ".join(q(m) for m in writable)
    links = " ".join(q(p) for p in sorted(symlinks))
    return f"""#!/bin/bash
# nfsroot-pipeline boot-test verdict (installed by the test into the served copy of the root only).
P={q(REPORT_PREFIX)}
U={q(user)}
out={q(node_mount.rstrip("/") + "/" + VERDICT_FILE)}
state=$(systemctl is-system-running --wait 2>&1)
sleep 2
state=$(systemctl is-system-running 2>&1)
node=$(sed -n 's/.*BOOTIF=01-\\([0-9a-fA-F-]*\\).*/\\1/p' /proc/cmdline | tr -d - | tr A-F a-f)
report() {{
echo {REPORT_BEGIN}
echo "${{P}}node=$node"
echo "${{P}}hostname=$(hostname)"
echo "${{P}}state=$state"
echo "${{P}}failed=$(systemctl list-units --failed --plain --no-legend | awk '{{print $1}}' | tr '\\n' ' ')"
echo "${{P}}machine-id=$(cat /etc/machine-id)"
echo "${{P}}dbus-machine-id=$(cat /var/lib/dbus/machine-id)"
for k in /etc/ssh/ssh_host_*_key.pub; do echo "${{P}}ssh-key=$(ssh-keygen -lf "$k" | awk '{{print $2, $4}}')"; done
# The keys the running sshd offers (the ones apply generated for a known node), and this node's own lines in
# the cluster's ssh_known_hosts that apply published into the root.
for t in ecdsa ed25519 rsa; do
  echo "${{P}}sshd-key=$(ssh-keyscan -T 5 -t "$t" 127.0.0.1 2>/dev/null | ssh-keygen -lf - | awk '{{print $2, $4}}')"
done
echo "${{P}}known-hosts-own=$(ssh-keygen -F "$(hostname)" -f /etc/ssh/ssh_known_hosts 2>/dev/null | grep -vc '^#')"
echo "${{P}}journal-boots=$(journalctl --list-boots --no-pager 2>/dev/null | grep -cE '[0-9a-f]{{32}}')"
echo "${{P}}journal-dir=$(ls -d /var/log/journal/*/ 2>/dev/null | head -1)"
echo "${{P}}hosts=$(tr '\\n\\t' '; ' </etc/hosts)"
echo "${{P}}kernel=$(uname -r)"
{shared_checks(links, mounts)}for d in /tmp /var/tmp; do
  if echo root > "$d/root-$node" && rm "$d/root-$node"; then echo "${{P}}root-writes=$d"; fi
  if runuser -u "$U" -- sh -c "echo u > $d/user-$node && rm $d/user-$node"; then echo "${{P}}user-writes=$d"; fi
done
home=$(getent passwd "$U" | cut -d: -f6)
if runuser -u "$U" -- sh -c "echo u > \\"$home/.boottest-$node\\""; then echo "${{P}}user-writes-home=$home"; fi
if runuser -u "$U" -- ping -c 1 -W 5 127.0.0.1 >/dev/null 2>&1; then echo "${{P}}user-ping=ok"; else echo "${{P}}user-ping=failed"; fi
{extra}echo "${{P}}uptime=$(cut -d' ' -f1 /proc/uptime)"
echo {REPORT_END}
}}
report > "$out.tmp" 2>&1
mv "$out.tmp" "$out"
sync
cat "$out" > /dev/console
systemctl --no-block poweroff
"""


UNIT_TEXT = f"""[Unit]
Description=nfsroot-pipeline boot-test verdict

[Service]
Type=simple
ExecStart={SCRIPT}
StandardOutput=journal+console

[Install]
WantedBy=default.target
"""


def install(
    root: Path, node_mount: str, writable: Sequence[str], symlinks: Mapping[str, str], user: str, extra: str = ""
) -> None:
    """Put the verdict unit into `root` (a served copy) and enable it."""
    script = render_script(node_mount, writable, symlinks, user, extra)
    write_atomic(root / SCRIPT.lstrip("/"), script.encode(), mode=0o755)
    unit = root / "etc/systemd/system" / UNIT
    write_atomic(unit, UNIT_TEXT.encode())
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / UNIT
    if link.is_symlink():
        link.unlink()
    link.symlink_to(f"/etc/systemd/system/{UNIT}")
