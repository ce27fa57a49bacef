"""The errors a user can meet, in one place. Each is caught by the CLI and printed as one line
(exit 2); anything else reaching the CLI is a bug and is reported as an internal error."""

from __future__ import annotations


class BadRecord(Exception):
    """A record that cannot be used; `reason` is short and names the field. It is quarantined,
    never fatal (unless the run is strict)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PoolError(Exception):
    """A fatal input problem (strict mode, unreadable file); the message names file:line."""


class JobError(Exception):
    """A job file that cannot run; the message names the file and the key."""


class ReportError(Exception):
    """The path holds no selection to report on (or several, ambiguously)."""
