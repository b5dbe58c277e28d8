"""Typed exceptions for what the remote CLI (or the SSH path to it) reports.

The CLI answers every failure with ``{"error": TYPE, "message": ..., "exit_code": N}`` on stdout and an exit code
from a fixed table (docs/json-contract.md). Turning those into distinct exception classes lets DAG authors and the
operator react to the *kind* of failure ("no such job" vs "the job is in the wrong state" vs "SSH dropped") with an
``except`` clause instead of parsing messages. All of them are ``AirflowException`` so Airflow's retry and failure
handling treats them like any other task error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchesjob.contract import EXIT_ERROR, EXIT_INCONSISTENT, EXIT_INVALID, EXIT_LOCK, EXIT_NOT_FOUND
from orchesjob_provider.compat import AirflowException


class OrchesjobError(AirflowException):
    """Base class: the CLI (or the way to it) said no.

    ``error_type`` is the CLI's ``error`` field (or our own name for non-CLI failures), ``exit_code`` the remote exit
    status when there was one, ``payload`` the CLI's error JSON (empty when it printed none), ``stderr`` what the
    remote side printed there (for people), ``command`` the remote command line that was run.
    """

    error_type: str = "error"
    default_exit_code: int | None = EXIT_ERROR

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        exit_code: int | None = None,
        payload: Mapping[str, Any] | None = None,
        stderr: str = "",
        command: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_type:
            self.error_type = error_type
        self.exit_code = self.default_exit_code if exit_code is None else exit_code
        self.payload: dict[str, Any] = dict(payload or {})
        self.stderr = stderr
        self.command = command

    def _state(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this exception (subclasses with fields of their own add them)."""
        return {
            "error_type": self.error_type,
            "exit_code": self.exit_code,
            "payload": self.payload,
            "stderr": self.stderr,
            "command": self.command,
        }

    def __reduce__(self) -> Any:
        """Keep the typed fields when pickled (Airflow may ship exceptions between processes)."""
        return (_rebuild, (type(self), self.message, self._state()))


def _rebuild(cls: type[OrchesjobError], message: str, state: dict[str, Any]) -> OrchesjobError:
    return cls(message, **state)


class OrchesjobInvalidArgument(OrchesjobError):
    """Exit 2: the CLI rejected a flag or value; nothing was written on the host."""

    error_type = "invalid_argument"
    default_exit_code = EXIT_INVALID


class OrchesjobNotFound(OrchesjobError):
    """Exit 3: no job with that id or run key (never started, or cleaned)."""

    error_type = "not_found"
    default_exit_code = EXIT_NOT_FOUND


class OrchesjobConflict(OrchesjobError):
    """Exit 4: the job is not in a state that allows the action (abort of a finished job, rerun of an active one)."""

    error_type = "inconsistent_state"
    default_exit_code = EXIT_INCONSISTENT


class OrchesjobNotOwner(OrchesjobConflict):
    """Exit 4, ``not_owner``: ``abort --if-owner ID`` refused because the job's ``owner`` is another request.

    Every ``start`` answered with a job it accepts makes its request id the job's owner (one answered with a job of
    other parameters does not, unless it adopts it), so this means a newer request (a newer Airflow try that
    reattached) has taken the job over, that the caller refused the job, or that the job was started without a
    request id. The caller that asked is not the job's owner: the job is not its to stop. ``owner`` is the job's
    current owner (None: none).
    """

    error_type = "not_owner"

    @property
    def owner(self) -> str | None:
        owner = self.payload.get("owner")
        return None if owner is None else str(owner)


class OrchesjobLockTimeout(OrchesjobError):
    """Exit 5: the host's database stayed locked past the busy timeout; retrying later is safe."""

    error_type = "lock_timeout"
    default_exit_code = EXIT_LOCK


class OrchesjobTransportError(OrchesjobError):
    """The answer never arrived intact: SSH failed, the channel closed without an exit status, or no JSON came back.

    ``sent``: whether the command may have reached the host (True unless the failure certainly happened before the
    exec request went out: connecting, logging in). Once any attempt of a call was sent, the error the caller gets
    says so, even if a later attempt failed earlier. ``transient``: whether trying again can help (False for a
    refused login or host key). Both are constructor fields and survive pickling.

    For ``start`` a sent failure is the ambiguous case (the job may or may not have been started); the hook repeats
    it with the same request id, which the host answers with the job the first attempt started, never a second one.
    """

    error_type = "transport"
    default_exit_code = None

    def __init__(self, message: str, *, sent: bool = True, transient: bool = True, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.sent = bool(sent)
        self.transient = bool(transient)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "sent": self.sent, "transient": self.transient}


class OrchesjobIncompatibleCli(OrchesjobError):
    """The remote ``orchesjob`` is missing, not executable, or speaks another JSON contract version."""

    error_type = "incompatible_cli"
    default_exit_code = None


class OrchesjobCliMissing(OrchesjobIncompatibleCli):
    """The host's shell found no such program (exit 127): there is no CLI at that path or on the PATH.

    With ``install_cli="auto"`` and no CLI named by the task or the connection, the hook answers this by uploading
    its own copy; when a CLI was named (or ``install_cli="never"``), it is the task's error: the named CLI is missing.
    """

    error_type = "cli_missing"


class OrchesjobCliBroken(OrchesjobIncompatibleCli):
    """The host has an ``orchesjob`` (the named path, or one on the PATH), but it did not answer ``version`` as an
    orchesjob CLI does: it could not run (exit 126/127: a wrapper whose target is gone), crashed, or printed no JSON
    (orchesjob 1.1.0 has no ``version`` command). It is never shadowed by an upload: fix it, remove it, or name
    another CLI."""

    error_type = "cli_broken"


class OrchesjobCliInstallError(OrchesjobError):
    """Putting the provider's CLI on the host failed (base of the kinds below)."""

    error_type = "cli_install"
    default_exit_code = None


class OrchesjobNoPython(OrchesjobCliInstallError):
    """The host has no Python 3.9+ where the provider looked (or at the ``orchesjob_python`` it was given)."""

    error_type = "no_python"


class OrchesjobUnsafeCache(OrchesjobCliInstallError):
    """The host's CLI cache (``~/.cache/orchesjob`` or a file in it) belongs to another user, is writable by group or
    others, or is a symbolic link: it is refused rather than trusted."""

    error_type = "unsafe_cache"


class OrchesjobUploadFailed(OrchesjobCliInstallError):
    """The upload did not complete, or did not arrive intact (its sha256 on the host differed)."""

    error_type = "upload_failed"


ERROR_TYPES: dict[str, type[OrchesjobError]] = {
    "invalid_argument": OrchesjobInvalidArgument,
    "not_found": OrchesjobNotFound,
    "inconsistent_state": OrchesjobConflict,
    "not_owner": OrchesjobNotOwner,
    "lock_timeout": OrchesjobLockTimeout,
    "unsafe_cli": OrchesjobUnsafeCache,  # the launcher refused the uploaded CLI (orchesjob_provider.launcher)
    "unsupported_python": OrchesjobNoPython,
}

# For error types this provider does not know (a newer CLI's), the documented exit code decides.
EXIT_CODES: dict[int, type[OrchesjobError]] = {
    EXIT_INVALID: OrchesjobInvalidArgument,
    EXIT_NOT_FOUND: OrchesjobNotFound,
    EXIT_INCONSISTENT: OrchesjobConflict,
    EXIT_LOCK: OrchesjobLockTimeout,
}


def error_from_payload(
    payload: Mapping[str, Any], exit_code: int | None, *, stderr: str = "", command: str = ""
) -> OrchesjobError:
    """Build the typed exception for one CLI error JSON.

    The ``error`` type decides the class; an unknown type falls back to the exit code, so a newer CLI that adds
    error types still maps onto the documented exit codes.
    """
    error_type = str(payload.get("error") or "error")
    cls = ERROR_TYPES.get(error_type)
    if cls is None and exit_code is not None:
        cls = EXIT_CODES.get(exit_code)
    if cls is None:
        cls = OrchesjobError
    message = str(payload.get("message") or stderr.strip() or f"orchesjob failed with exit code {exit_code}")
    return cls(
        f"orchesjob {error_type}: {message}",
        error_type=error_type,
        exit_code=exit_code,
        payload=payload,
        stderr=stderr,
        command=command,
    )
