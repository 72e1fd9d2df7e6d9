"""`dnsmasq --test` on the dnsmasq configuration a plan would install, before plan shows it or apply writes it.

dnsmasq refuses to start on a configuration it cannot parse, and a DHCP server that does not start stops every
node from booting; so a configuration dnsmasq rejects is an error here, not something the gateway finds out.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from pipeline.errors import ExternalCommandError, PipelineError
from pipeline.run import run
from pipeline.state.changes import Plan


class DnsmasqConfigError(PipelineError):
    """dnsmasq rejects the configuration the build made."""


def dnsmasq_program() -> str | None:
    return shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).is_file()), None
    )


def check_dnsmasq(plan: Plan, build: Path) -> Plan:
    """`plan` unchanged when dnsmasq accepts every configuration it writes; with a warning when dnsmasq is
    not installed here to ask; DnsmasqConfigError when dnsmasq rejects one."""
    staged = [c for c in plan.changes if c.role == "dnsmasq" and c.staged is not None]
    if not staged:
        return plan
    program = dnsmasq_program()
    if program is None:
        return replace(
            plan,
            warnings=(
                *plan.warnings,
                "dnsmasq is not installed here, so the dnsmasq configuration was not checked (apt-get install "
                "dnsmasq-base)",
            ),
        )
    for change in staged:
        assert change.staged is not None
        try:
            run([program, "--test", f"--conf-file={build / change.staged}"])
        except ExternalCommandError as exc:
            raise DnsmasqConfigError(f"{change.path}: dnsmasq rejects the built configuration ({exc})") from None
    return plan
