"""How the doit layer talks to the user: failures read like the console script's, and `doit clean` says what
it removed instead of naming an internal function.

doit's console reporter frames every failure as `TaskFailed - taskid:spec`, followed by an empty
`spec <stdout>:` block; a bad cluster.yaml is the user's everyday mistake, not a crash of a task, so its
report is exactly the lines `nfsroot validate` prints. Crashes (exceptions in actions) keep doit's full report.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter
from doit.task import Task

from pipeline.errors import PipelineError, SpecError


class PipelineFailed(TaskFailed):  # type: ignore[misc]  # doit has no type hints
    """A user-caused failure (invalid spec, missing input, stale outputs): reported as its message alone."""


def failure(exc: PipelineError) -> PipelineFailed:
    """The task result for a PipelineError, worded as the console script words it."""
    if isinstance(exc, SpecError):
        n = len(exc.problems)
        return PipelineFailed(f"{exc}\n{n} problem{'s' if n != 1 else ''} found; nothing was written")
    return PipelineFailed(str(exc))


class Reporter(ConsoleReporter):  # type: ignore[misc]  # doit has no type hints
    desc = "console output; a user-caused failure is reported as its message alone, on stderr"
    failures: list[dict[str, Any]]  # set by ConsoleReporter.__init__

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        if isinstance(fail, PipelineFailed):
            self.failures.append({"task": task, "exception": fail})
            sys.stderr.write(fail.message.rstrip("\n") + "\n")
            return
        super().add_failure(task, fail)

    def complete_run(self) -> None:
        ours = [f for f in self.failures if isinstance(f["exception"], PipelineFailed)]
        self.failures = [f for f in self.failures if not isinstance(f["exception"], PipelineFailed)]
        for result in ours:  # output the failed task captured, only when there is some
            out = "".join(a.out or "" for a in result["task"].actions)
            if out.strip():
                self.write(out if out.endswith("\n") else out + "\n")
        super().complete_run()


class CleanTree(Task):  # type: ignore[misc]
    """A task whose `doit clean` removes a whole directory and says so in one line."""

    def __init__(self, tree: Path, **task: Any) -> None:
        super().__init__(**task)
        self.tree = tree

    def clean(self, outstream: Any, dryrun: bool) -> None:
        if not self.tree.exists():
            return
        if dryrun:
            outstream.write(f"would remove {self.tree}/\n")
            return
        shutil.rmtree(self.tree)
        outstream.write(f"removed {self.tree}/\n")
