"""One root error for everything the user can cause; the CLI turns these into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


class PipelineError(Exception):
    """Base of every error that is the user's to fix (bad spec, bad archive, unsafe target...).

    Anything else escaping to the CLI is a bug and is shown with its traceback.
    """


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in an input file, located precisely enough for an editor to jump to it."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    field: str  # dotted path into the spec, e.g. "nodes.known.1.mac"; "" for the document itself
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SpecError(PipelineError):
    """The spec is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ArchiveError(PipelineError):
    """A cpio archive or initrd is malformed or cannot be processed safely."""


class UnsafePathError(PipelineError):
    """A path would escape its root (absolute name, '..', or a write through a symlink)."""


class ExternalCommandError(PipelineError):
    """An external program failed; the message names the exact command line and exit code."""
