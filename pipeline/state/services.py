"""Services whose configuration file we own: dnsmasq (role "dnsmasq") and nginx (role "httpserver").

Each is handled the same way, so an operator never has to remember a reload: the configuration a plan would
install is first checked by the service's own program (a configuration it rejects is an error in `plan` and
`apply`, not a service that fails to start on the gateway); `apply` runs the user's reload command only when
that configuration changed; and the reload still owed is kept in the deployed-state record, so a run killed
between writing the file and reloading the service is finished by the next apply.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.run import run
from pipeline.state.changes import Plan
from pipeline.state.nginxcheck import NotCheckedError, nginx_test

SBIN = ("/usr/sbin", "/sbin")


class ServiceConfigError(PipelineError):
    """A service's own program rejects the configuration the build made."""


@dataclass(frozen=True)
class OwnedService:
    role: str  # the manifest role of the configuration file; also names the plan's and record's reload flag
    label: str  # how plan text names the configuration
    program: str  # the program that checks it
    package: str  # the Debian package that has it
    reload_field: str  # the spec field holding the reload argv
    by_hand: str  # what the operator does when reloading is disabled
    # program, staged file -> the argv that tests it, inside a context: nginx needs a scratch directory meanwhile
    check: Callable[[str, Path], AbstractContextManager[list[str]]]

    def find(self) -> str | None:
        # sbin is not on every user's PATH, and plan need not run as root
        return shutil.which(self.program) or next(
            (str(Path(d) / self.program) for d in SBIN if (Path(d) / self.program).is_file()), None
        )


@contextmanager
def _dnsmasq_test(program: str, staged: Path) -> Iterator[list[str]]:
    yield [program, "--test", f"--conf-file={staged}"]


DNSMASQ = OwnedService(
    "dnsmasq", "dnsmasq configuration", "dnsmasq", "dnsmasq-base", "dhcp.reload", "restart dnsmasq", _dnsmasq_test
)
NGINX = OwnedService(
    "httpserver", "nginx server block", "nginx", "nginx-light", "firmware.http.reload", "reload nginx", nginx_test
)
SERVICES = (DNSMASQ, NGINX)  # reloads run in this order, after the exports
SERVICE_ROLES = tuple(s.role for s in SERVICES)
BY_ROLE = {s.role: s for s in SERVICES}


def check_services(plan: Plan, build: Path) -> Plan:
    """`plan` unchanged when every service accepts the configuration the plan writes for it; with a warning
    for a service whose program is not installed here to ask; ServiceConfigError when one rejects it."""
    warnings = list(plan.warnings)
    for service in SERVICES:
        staged = [c for c in plan.changes if c.role == service.role and c.staged is not None]
        if not staged:
            continue
        program = service.find()
        if program is None:
            warnings.append(
                f"{service.program} is not installed here, so the {service.label} was not checked (apt-get install "
                f"{service.package})"
            )
            continue
        for change in staged:
            assert change.staged is not None
            try:
                with service.check(program, build / change.staged) as argv:
                    proc = run(argv, check=False)
            except NotCheckedError as exc:
                warnings.append(f"{change.path}: the {service.label} was not checked ({exc})")
                continue
            if proc.returncode != 0:
                # The program's own words only: the command line (for nginx, its namespace wrapper) is noise.
                said = "; ".join((proc.stderr or b"").decode(errors="replace").strip().splitlines())[-2000:]
                raise ServiceConfigError(
                    f"{change.path}: {service.program} rejects the built configuration "
                    f"({said or f'exit code {proc.returncode}'})"
                )
    return plan if len(warnings) == len(plan.warnings) else replace(plan, warnings=tuple(warnings))
