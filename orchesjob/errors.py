"""The CLI's failures, one exception type per documented exit code.

Every failure a user can cause or meet ends as one of these, so the edge (cli.py) can print a single JSON object
and exit with the code the reference README promises. Nothing else in the package chooses an exit code.
"""

from __future__ import annotations

from .contract import (  # the codes are part of the JSON contract
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_INCONSISTENT,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_JOB_DID_NOT_SUCCEED,
    EXIT_LOCK,
    EXIT_NOT_FOUND,
    EXIT_OK,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any


__all__ = [
    "EXIT_ERROR",
    "EXIT_FINDINGS",
    "EXIT_INCONSISTENT",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_JOB_DID_NOT_SUCCEED",
    "EXIT_LOCK",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "InconsistentState",
    "InvalidArgument",
    "LockTimeout",
    "NotFound",
    "OrchesjobError",
    "job_not_found",
    "run_key_not_found",
]


class OrchesjobError(Exception):
    """Base class: an error type name for machines, a message for people, and the exit code."""

    exit_code = EXIT_ERROR
    error_type = "error"

    def __init__(self, message: str, error_type: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if error_type:
            self.error_type = error_type
        self.details = details

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error_type, "message": self.message, "exit_code": self.exit_code}
        out.update(self.details)
        return out


class InvalidArgument(OrchesjobError):
    exit_code = EXIT_INVALID
    error_type = "invalid_argument"


class NotFound(OrchesjobError):
    exit_code = EXIT_NOT_FOUND
    error_type = "not_found"


def run_key_not_found(run_key: str | None) -> NotFound:
    """Unknown run key. Starts with orchesjob 1.1.0's words, so scripts that grep its messages still match."""
    return NotFound("run_key not found: no job with run key %r" % run_key)


def job_not_found(job_id: str | None) -> NotFound:
    """Unknown job id, worded as orchesjob 1.1.0 begins it ("Job not found")."""
    return NotFound("Job not found: no job with job id %r" % job_id)


class InconsistentState(OrchesjobError):
    exit_code = EXIT_INCONSISTENT
    error_type = "inconsistent_state"


class LockTimeout(OrchesjobError):
    exit_code = EXIT_LOCK
    error_type = "lock_timeout"
