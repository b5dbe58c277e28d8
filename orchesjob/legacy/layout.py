"""orchesjob 1.1.0's database recognised, and read as ours without writing it (TEMP views over its tables)."""

from __future__ import annotations

import os

from . import LEGACY_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from . import Database


_V110_TABLES = {
    "jobs": (
        "job_id",
        "run_key",
        "worker_pid",
        "target_pid",
        "command",
        "status",
        "exit_code",
        "stdout_file",
        "stderr_file",
        "started_at",
        "finished_at",
        "updated_at",
        "aborted_at",
        "abort_reason",
        "rerun_of_job_id",
        "attempt_no",
        "rerun_reason",
        "strict",
    ),
    "run_keys": ("run_key", "job_id", "created_at"),
    "strict_overrides": ("run_key", "allowed_at", "used_at", "reason", "expires_at"),
    "schema_meta": ("key", "value"),
}
_VIEWS = ("jobs", "run_keys", "start_requests")
_NOW = "CAST(strftime('%s', 'now') AS INTEGER)"


def recognise(store: Database) -> str | None:
    """LEGACY_VERSION when the database (at user_version 0) is orchesjob 1.1.0's; None when it holds no table of
    any orchesjob (a new file, or someone else's database). Another orchesjob 1.x layout is refused here, untouched."""
    conn = store.conn
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")  # one snapshot: version and tables (a concurrent CLI may be creating our schema)
    try:
        return _recognise(store)
    finally:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")  # a read transaction: nothing to commit


def _recognise(store: Database) -> str | None:
    from ..errors import OrchesjobError

    conn = store.conn
    if conn.execute("PRAGMA user_version").fetchone()[0] != 0:
        return None  # ours, created since the caller read the version
    names = {
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(r[0]).startswith("sqlite_")
    }
    if "schema_meta" not in names and not {"jobs", "run_keys"} <= names:
        return None
    why = None
    if names != set(_V110_TABLES):
        why = "tables %s" % ", ".join(sorted(names))
    else:
        for table, columns in _V110_TABLES.items():
            have = {str(r[1]) for r in conn.execute("PRAGMA table_info(%s)" % table)}
            if not set(columns) <= have:
                why = "table %s without column %s" % (table, ", ".join(sorted(set(columns) - have)))
                break
        else:
            row = conn.execute("SELECT value FROM schema_meta WHERE key = 'schema_version'").fetchone()
            if row is None or str(row[0]) != "2":
                why = "schema_meta says schema_version %r" % (row[0] if row else None)
    if why is None:
        return LEGACY_VERSION
    raise OrchesjobError(
        "the database %s looks like orchesjob 1.x's but not 1.1.0's (%s); this orchesjob upgrades a 1.1.0 database "
        "only (an older one is brought up to 1.1.0 by running `orchesjob status --running` once with orchesjob 1.1.0); "
        "it was left untouched" % (store.path, why),
        error_type="database",
    )


def _coerce_ts(value: Any) -> int | None:
    """A 1.1.0 time as 1.1.0 reads it (its `_coerce_ts`): whole seconds, digits, or ISO 8601 (naive = UTC)."""
    if value is None or isinstance(value, bytes):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    text = str(value).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


class _SchemaMoved(ValueError):
    """A view over 1.1.0's tables met our own rows: another CLI upgraded the database since this one opened it."""


def register_functions(store: Database, progress: Any = None) -> None:
    """SQL functions the conversion needs, defined in this connection only (nothing is stored in the file).
    `progress` (progress.Progress) is told each job whose command is converted: SQLite calls `argv` once per row."""
    from ..rows import pack

    step = progress.step if progress is not None and progress.tty else None

    logs = os.path.join(os.path.dirname(store.path), "logs")

    def argv(value: Any, job_id: Any) -> bytes | None:
        """1.1.0's JSON argv as ours (NUL-separated bytes, exact for any argument); NULL when it is no argv."""
        if isinstance(value, bytes):
            raise _SchemaMoved("an upgraded jobs table")
        if step is not None:
            step()
        import json

        try:
            items = json.loads(value)
            if not (
                isinstance(items, list)
                and items
                and all(isinstance(x, str) and "\0" not in x for x in items)
                and items[0]
            ):
                return None
            return pack(items)
        except (TypeError, ValueError):  # not JSON, or a lone surrogate that is no escaped byte
            return None

    def log(path: Any, job_id: Any, stream: Any) -> Any:
        """Where 1.1.0 wrote the log: its recorded path (files stay where they are), unless that path is relative
        (a relative ORCHESJOB_HOME), missing, or gone while logs/<job_id>.<stream> of this state directory exists
        (the state directory was moved or restored elsewhere)."""
        if not (isinstance(job_id, str) and job_id and "/" not in job_id and job_id not in (".", "..")):
            return path if isinstance(path, str) else ""
        here = os.path.join(logs, "%s.%s" % (job_id, stream))
        if isinstance(path, str) and os.path.isabs(path):
            if path != here and not os.path.lexists(path) and os.path.lexists(here):
                return here
            return path
        return here

    def ts(*values: Any) -> int | None:
        for v in values:
            t = _coerce_ts(v)
            if t is not None:
                return t
        return None

    store.conn.create_function("_oj110_argv", 2, argv)
    store.conn.create_function("_oj110_log", 3, log)
    store.conn.create_function("_oj110_ts", -1, ts)


def jobs_select(jobs: str) -> str:
    """1.1.0's jobs rows as rows of our jobs table (every column, in our names and forms)."""
    return """SELECT rowid AS rowid, job_id, COALESCE(run_key, '') AS run_key, attempt_no, status,
        _oj110_argv(command, job_id) AS command, NULL AS cwd, x'' AS env, NULL AS timeout, strict,
        CASE WHEN strict AND rerun_of_job_id IS NOT NULL THEN 1 ELSE 0 END AS strict_override_used,
        CASE WHEN strict AND rerun_of_job_id IS NOT NULL THEN rerun_reason END AS override_reason,
        rerun_of_job_id, rerun_reason, abort_reason, exit_code, NULL AS signal, NULL AS end_reason,
        worker_pid, NULL AS worker_start, target_pid, NULL AS target_start, NULL AS pgid, NULL AS boot_id,
        NULL AS pid_ns, NULL AS request_id, NULL AS owner,
        _oj110_log(stdout_file, job_id, 'stdout') AS stdout_file,
        _oj110_log(stderr_file, job_id, 'stderr') AS stderr_file,
        COALESCE(_oj110_ts(started_at, updated_at, finished_at), 0) AS started_at,
        _oj110_ts(finished_at) AS finished_at,
        COALESCE(_oj110_ts(updated_at, finished_at, started_at), 0) AS updated_at,
        _oj110_ts(aborted_at) AS aborted_at,
        '%s' AS imported_from, 0 AS life_lock
        FROM %s""" % (LEGACY_VERSION, jobs)


def run_keys_select(jobs: str, overrides: str) -> str:
    """A run_keys row per key of 1.1.0's jobs: the highest attempt, and the key's pending unlock (1.1.0's
    strict_overrides row, unused and unexpired). 1.1.0's own run_keys (a pointer to the latest job) adds nothing."""
    return """SELECT k.run_key AS run_key, k.last_attempt AS last_attempt, o.reason AS unlock_reason,
        _oj110_ts(o.allowed_at) AS unlock_allowed_at, _oj110_ts(o.expires_at) AS unlock_expires_at,
        CASE WHEN o.run_key IS NULL THEN 0 ELSE 1 END AS unlock_pending
        FROM (SELECT COALESCE(run_key, '') AS run_key, MAX(attempt_no) AS last_attempt FROM %s GROUP BY 1) AS k
        LEFT JOIN %s AS o ON o.run_key = k.run_key AND o.used_at IS NULL
            AND (o.expires_at IS NULL OR _oj110_ts(o.expires_at) > %s)""" % (jobs, overrides, _NOW)


def present(store: Database) -> None:
    """Read a 1.1.0 database as ours without writing it: TEMP views named like our tables shadow its tables in this
    connection (temporary objects are kept in memory, never in the database file)."""
    register_functions(store)
    conn = store.conn
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("CREATE TEMP VIEW jobs AS " + jobs_select("main.jobs"))
    conn.execute("CREATE TEMP VIEW run_keys AS " + run_keys_select("main.jobs", "main.strict_overrides"))
    conn.execute(
        "CREATE TEMP VIEW start_requests AS SELECT '' AS run_key, '' AS request_id, '' AS job_id, "
        "0 AS answered_at, NULL AS job_status WHERE 0"
    )


def drop_presentation(store: Database) -> None:
    for view in _VIEWS:
        store.conn.execute("DROP VIEW IF EXISTS temp.%s" % view)
