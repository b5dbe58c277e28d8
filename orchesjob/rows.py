"""The row codec: job, run key, request and cursor rows of the state database to Python values and back.

Every row is checked as it is read (decode_*), so nothing acts on a value our own code could not have written: a
damaged record is refused (store.py turns the ValueError into `corrupt_database`) instead of being trusted. Commands
and environments are stored as NUL-separated bytes (pack/unpack), exact for any argument. Rows that orchesjob 1.1.0
wrote keep its conventions, which orchesjob/legacy/rows.py reads in ours. A decoded job row has a type, JobRow,
which the store returns and the job logic takes, so the type checker knows every field's name and type.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Mapping
    from typing import Any, Callable, TypedDict

    # The types below exist for the type checker only: a class statement of TypedDict needs `typing` at run time,
    # which the CLI does not import (start-up time), and annotations are strings here.

    class JobColumns(TypedDict):
        """A jobs row as decode_job hands it over: every column, each value checked (NOT NULL in the schema is a
        value here; bytes of the command and environment unpacked; the 0/1 columns bools)."""

        job_id: str
        run_key: str
        attempt_no: int
        status: str
        command: list[str]
        cwd: str | None
        env: dict[str, str]
        timeout: float | None
        strict: bool
        strict_override_used: bool
        override_reason: str | None
        rerun_of_job_id: str | None
        rerun_reason: str | None
        abort_reason: str | None
        exit_code: int | None
        signal: int | None
        end_reason: str | None
        worker_pid: int | None
        worker_start: str | None
        target_pid: int | None
        target_start: str | None
        pgid: int | None
        boot_id: str | None
        pid_ns: str | None
        request_id: str | None
        owner: str | None
        stdout_file: str
        stderr_file: str
        started_at: int
        finished_at: int | None
        updated_at: int
        aborted_at: int | None
        imported_from: str | None
        life_lock: bool

    class JobRow(JobColumns, total=False):
        """The job record the store returns and the commands pass around: its columns, and what a reader learnt
        that is not stored (jobs.refresh: liveness "unknown" and why; places.py: the other state directory it
        was found in)."""

        liveness: str
        liveness_reason: str
        state_dir: str


_BOOL_COLUMNS = ("strict", "strict_override_used", "life_lock")


# argv and environment are stored as NUL-separated bytes: exact for any argument (also bytes that are not UTF-8,
# which Python hands over as surrogate escapes), and decoded without importing json on every call.
def pack(items: Any) -> bytes:
    return b"\0".join(os.fsencode(x) for x in items)


def unpack(blob: Any) -> list[str]:
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "surrogateescape")
    if not isinstance(blob, bytes):
        raise ValueError("a NUL-separated list was expected, not %s" % type(blob).__name__)
    return [os.fsdecode(x) for x in blob.split(b"\0")] if blob else []


def env_dict(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError("an environment entry without KEY=: %r" % item[:40])
        env[key] = value
    return env


_INT_COLUMNS = (
    "attempt_no",
    "strict",
    "strict_override_used",
    "exit_code",
    "signal",
    "worker_pid",
    "target_pid",
    "pgid",
    "life_lock",
)
_TIME_COLUMNS = ("started_at", "finished_at", "updated_at", "aborted_at")
_TEXT_COLUMNS = (
    "job_id",
    "run_key",
    "status",
    "cwd",
    "override_reason",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "end_reason",
    "worker_start",
    "target_start",
    "boot_id",
    "stdout_file",
    "stderr_file",
    "pid_ns",
    "request_id",
    "owner",
    "imported_from",
)
_MAX_TS = 253402300799  # 9999-12-31


def _check_types(d: dict[str, Any]) -> None:
    """Refuse a row our own code could not have written, before anything acts on it."""
    for c in _INT_COLUMNS + _TIME_COLUMNS:
        v = d.get(c)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError("column %s holds %s, not a whole number" % (c, type(v).__name__))
    if d.get("attempt_no") is not None and d["attempt_no"] > _MAX_ATTEMPT:
        raise ValueError("column attempt_no holds a number too large for a next attempt")
    for c in _TIME_COLUMNS:
        v = d.get(c)
        if v is not None and not -_MAX_TS <= v <= _MAX_TS:
            raise ValueError("column %s holds an impossible time" % c)
    for c in _TEXT_COLUMNS:
        v = d.get(c)
        if v is not None and not isinstance(v, str):
            raise ValueError("column %s holds %s, not text" % (c, type(v).__name__))
    for c in ("worker_start", "target_start"):  # a start time in clock ticks (processes.start_time), or ""
        v = d.get(c)
        if v and not (v.isascii() and v.isdigit()):
            raise ValueError("column %s holds %r, not a process start time" % (c, v[:40]))
    if d.get("timeout") is not None and not isinstance(d["timeout"], (int, float)):
        raise ValueError("column timeout holds %s" % type(d["timeout"]).__name__)


_MAX_ATTEMPT = (1 << 63) - 2  # so that the next number still fits SQLite's INTEGER
_JOB_COLUMNS = frozenset(_INT_COLUMNS + _TIME_COLUMNS + _TEXT_COLUMNS + ("command", "env", "timeout"))
_RUN_KEY_COLUMNS = frozenset(
    ("run_key", "last_attempt", "unlock_reason", "unlock_allowed_at", "unlock_expires_at", "unlock_pending")
)


def _check_columns(d: dict[str, Any], table: str, columns: frozenset[str]) -> None:
    """A whole row must be there: damage to the schema's text can rename a column, and its value would be missing."""
    missing = columns.difference(d)
    if missing:
        raise ValueError("the %s table has no column %s" % (table, ", ".join(sorted(missing))))


# Columns a later schema added, with the value a row of an older schema means: a database of another state directory
# is read as it is, never upgraded (places.py).
_ADDED_COLUMNS = {"life_lock": 0}


def decode_job(row: sqlite3.Row) -> JobRow:
    """A whole jobs row (SELECT *), every column present and checked."""
    raw = dict(row)
    for column, value in _ADDED_COLUMNS.items():
        raw.setdefault(column, value)
    d = decode(raw)
    _check_columns(d, "jobs", _JOB_COLUMNS)
    # Every column is there (checked above), each of its column's type (_check_types, decode); the NOT NULL ones
    # hold a value because the schema refuses NULL there.
    job: JobRow = d  # type: ignore[assignment]
    return job


def decode_request(row: sqlite3.Row) -> dict[str, Any]:
    """A start_requests row: text ids, the answer time a whole number, the cleaned job's status text or NULL."""
    d = dict(row)
    d.setdefault("job_status", None)
    for c in ("run_key", "request_id", "job_id"):
        if not isinstance(d.get(c), str):
            raise ValueError("column %s holds %s, not text" % (c, type(d.get(c)).__name__))
    if d["job_status"] is not None and not isinstance(d["job_status"], str):
        raise ValueError("column job_status holds %s, not text" % type(d["job_status"]).__name__)
    return d


def decode_run_key(row: sqlite3.Row) -> dict[str, Any]:
    """A run_keys row, refused unless our own code could have written it: last_attempt a positive whole number,
    unlock times whole numbers or NULL, unlock_pending 0 or 1, unlock_reason text or NULL."""
    d = dict(row)
    _check_columns(d, "run_keys", _RUN_KEY_COLUMNS)

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def what(v: Any) -> str:
        return str(v) if whole(v) else type(v).__name__

    if not isinstance(d.get("run_key"), str):
        raise ValueError("column run_key holds %s, not text" % type(d.get("run_key")).__name__)
    v = d.get("last_attempt")
    if not (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= _MAX_ATTEMPT):
        raise ValueError("column last_attempt holds %s, not a positive whole number" % what(v))
    for c in ("unlock_allowed_at", "unlock_expires_at"):
        v = d.get(c)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and -_MAX_TS <= v <= _MAX_TS):
            raise ValueError("column %s holds %s, not a time" % (c, what(v)))
    v = d.get("unlock_pending")
    if not (whole(v) and v in (0, 1)):
        raise ValueError("column unlock_pending holds %s, not 0 or 1" % what(v))
    v = d.get("unlock_reason")
    if v is not None and not isinstance(v, str):
        raise ValueError("column unlock_reason holds %s, not text" % type(v).__name__)
    return d


def decode_cursor(row: sqlite3.Row) -> dict[str, Any]:
    """A watch_cursors row: text ids and offsets that are whole numbers a log could have (0 .. 2**62)."""
    d = dict(row)
    for c in ("job_id", "cursor"):
        if not isinstance(d.get(c), str):
            raise ValueError("column %s holds %s, not text" % (c, type(d.get(c)).__name__))
    for c in ("stdout_offset", "stderr_offset"):
        v = d.get(c)
        if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 62):
            raise ValueError("column %s holds %r, not a log offset" % (c, v if isinstance(v, int) else type(v)))
    return d


RECORD_KINDS: dict[Callable[[sqlite3.Row], object], str] = {
    decode_run_key: "run key",
    decode_cursor: "watch cursor",
    decode_request: "start request",
}


def decode(row: Any) -> dict[str, Any]:
    d = dict(row)
    _check_types(d)
    if "command" in d:
        d["command"] = unpack(d["command"])
        if not d["command"] or not d["command"][0]:
            raise ValueError("a job without a command")
    if "env" in d:
        d["env"] = env_dict(unpack(d["env"]))
    for c in _BOOL_COLUMNS:
        if c in d:
            d[c] = bool(d[c])
    if d.get("imported_from"):
        from .legacy.rows import present_row

        present_row(d)  # a row orchesjob 1.1.0 wrote, maybe after the upgrade (its worker's result)
    return d


def encode(fields: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if out.get("command") is not None:
        out["command"] = pack(out["command"])
    if "env" in out:
        out["env"] = pack("%s=%s" % kv for kv in (out["env"] or {}).items())
    for c in _BOOL_COLUMNS:
        if c in out:
            out[c] = int(bool(out[c]))
    return out
