"""The schema's history: one function per step from version N to N+1, applied in order under the write lock.

A database records its schema version in `PRAGMA user_version`. Store opens it, sees an older version and calls
`upgrade`, inside the same BEGIN IMMEDIATE transaction that re-read the version: concurrent CLIs queue on the lock,
the first one upgrades, the others find the new version. Either every step commits or none does, so a crash during
an upgrade leaves the old database as it was. A fresh database gets the newest schema directly
(Store.create_schema); the test suite upgrades a stored database of every released version and checks it field by
field against it.

Rules for a new step: only additive changes SQLite can do in place (ADD COLUMN, new tables and indexes), or a
table rebuild that copies every row; never a change that needs the old code to still run.

A database of orchesjob 1.1.0 (its own schema, `PRAGMA user_version` 0) is no step of this ladder: orchesjob/legacy/
reads and upgrades it to the newest schema directly.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Protocol

    class Database(Protocol):
        """What an upgrade step needs of the state database (store.Store is one; the store calls this module)."""

        conn: Any

        def executescript(self, script: str) -> None: ...


def _v1_to_v2(store: Database) -> None:
    """Version 2: the pid namespace a job lives in, the caller's request id and owner, answered requests, the
    watchers' delivered log offsets (`wait --watch ...:CURSOR`); the indexes behind `ls --last` (start time) and
    `metrics` (status and finish time)."""
    store.executescript("""
        ALTER TABLE jobs ADD COLUMN pid_ns TEXT;
        ALTER TABLE jobs ADD COLUMN request_id TEXT;
        ALTER TABLE jobs ADD COLUMN owner TEXT;
        ALTER TABLE jobs ADD COLUMN imported_from TEXT;
        CREATE TABLE start_requests (
            run_key TEXT NOT NULL,
            request_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            answered_at INTEGER NOT NULL,
            PRIMARY KEY (run_key, request_id)
        );
        CREATE INDEX start_requests_job ON start_requests (job_id);
        CREATE INDEX jobs_started_at ON jobs (started_at);
        CREATE INDEX jobs_status_finished_at ON jobs (status, finished_at);
        CREATE TABLE watch_cursors (
            job_id TEXT NOT NULL,
            cursor TEXT NOT NULL,
            stdout_offset INTEGER NOT NULL,
            stderr_offset INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (job_id, cursor)
        );
    """)


def _v2_to_v3(store: Database) -> None:
    """Version 3: whether a job holds the lock files life.py tests (jobs started before hold none, and are judged
    by the rules for them there); the final status of a cleaned job in the requests it answered, which are kept."""
    store.executescript("""
        ALTER TABLE jobs ADD COLUMN life_lock INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE start_requests ADD COLUMN job_status TEXT;
    """)


# from-version -> the step that brings a database of that version to the next one
STEPS: dict[int, Callable[[Database], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
}


def upgrade(store: Database, current: int, target: int) -> None:
    """Apply every step from `current` to `target` (call inside the write transaction that read `current`)."""
    for version in range(current, target):
        step = STEPS.get(version)
        if step is None:  # pragma: no cover - a gap in the ladder is a packaging bug
            from .errors import OrchesjobError

            raise OrchesjobError("no upgrade from schema %d to %d" % (version, version + 1), error_type="database")
        step(store)
        store.conn.execute("PRAGMA user_version=%d" % (version + 1))
