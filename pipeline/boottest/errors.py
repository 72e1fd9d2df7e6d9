"""Errors of the boot-test harness, all `PipelineError`s so the CLI reports them as messages."""

from __future__ import annotations

from pipeline.errors import PipelineError


class BootTestError(PipelineError):
    """The boot test could not run (as opposed to a node that booted and failed its checks)."""


class BootPrerequisiteError(BootTestError):
    """A program, file or privilege the harness needs is missing; the message says which and how to get it."""


class NfsServerError(BootTestError):
    """rpcbind or nfs-ganesha did not start, did not become ready, or serves the wrong exports."""
