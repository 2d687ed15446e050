"""The one root of leafe's errors: a plain sentence for a person, and optionally what to do.

Library code raises a subclass with words that name the thing (a file, a model, a task), never a
CLI flag; the CLI and the TUI catch ``LeafeError`` at their edge and print it as one line, with the
hint after it. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class LeafeError(Exception):
    """A user-facing failure: ``str(error)`` is one sentence; ``hint`` says how to fix it, if known."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{text} ({self.hint})" if self.hint else text


class SettingError(LeafeError, ValueError):
    """A setting, a reference or an input file that cannot work; found before any model loads."""


class NotFoundError(LeafeError, LookupError):
    """A record (run, branch, dataset, job, adapter) that does not exist."""
