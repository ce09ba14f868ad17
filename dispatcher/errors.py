"""The exception root of dispatcher and its few meaningful children.

The CLI catches `DispatcherError`, prints its message on one line and exits non-zero;
anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Root of every error dispatcher raises on purpose."""


class ConfigError(DispatcherError):
    """The configuration is invalid. `issues` holds one `FILE:LINE:COL: message` line per problem."""

    def __init__(self, issues: list[str]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(self.issues))


class StoreError(DispatcherError):
    """The embedded store could not be opened or written."""


class TemplateError(DispatcherError):
    """A template could not be compiled or rendered."""


class UsageError(DispatcherError):
    """The command line was used wrongly (exit status 2)."""
