"""The schema's history: one function per step from version N to N+1, applied in order under the write lock.

A database records its schema version in `PRAGMA user_version`. Store opens it, sees an older version and calls
`upgrade`, inside the same BEGIN IMMEDIATE transaction that re-read the version: concurrent CLIs queue on the lock,
the first one upgrades, the others find the new version. Either every step commits or none does, so a crash during
an upgrade leaves the old database as it was. A fresh database gets the newest schema directly (store._SCHEMA);
the test suite upgrades a stored database of every released version and checks it field by field against it.

Rules for a new step: only additive changes SQLite can do in place (ADD COLUMN, new tables and indexes), or a
table rebuild that copies every row; never a change that needs the old code to still run.

A database of orchesjob 1.1.0 (its own schema, `PRAGMA user_version` 0) is a step of its own, `from_1_1_0`, below.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .store import Store


def _v1_to_v2(store: Store) -> None:
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


def _v2_to_v3(store: Store) -> None:
    """Version 3: whether a job holds the lock files life.py tests (jobs started before hold none, and are judged
    by the rules for them there); the final status of a cleaned job in the requests it answered, which are kept."""
    store.executescript("""
        ALTER TABLE jobs ADD COLUMN life_lock INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE start_requests ADD COLUMN job_status TEXT;
    """)


# from-version -> the step that brings a database of that version to the next one
STEPS: dict[int, Callable[[Store], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
}


def upgrade(store: Store, current: int, target: int) -> None:
    """Apply every step from `current` to `target` (call inside the write transaction that read `current`)."""
    for version in range(current, target):
        step = STEPS.get(version)
        if step is None:  # pragma: no cover - a gap in the ladder is a packaging bug
            from .errors import OrchesjobError

            raise OrchesjobError("no upgrade from schema %d to %d" % (version, version + 1), error_type="database")
        step(store)
        store.conn.execute("PRAGMA user_version=%d" % (version + 1))


# -- orchesjob 1.1.0 ----------------------------------------------------------------------------------------------
# 1.1.0 kept its own schema (tables jobs, run_keys, strict_overrides, schema_meta; user_version 0). Store recognises
# it on open. Until a command that writes comes along, the database is read through TEMP views that present its
# rows as ours (temporary objects live in the connection, never in the file), so `status`, `logs` and `wait` write
# nothing. The first writing command upgrades it in one transaction: a backup copy next to it first, then every
# row converted into our tables. The table keeps the name `jobs` and the columns a 1.1.0 worker still running
# writes at its end (status, exit_code, finished_at, updated_at, worker_pid, target_pid, by job_id), with the same
# meaning, so that worker's result lands in the upgraded database; a negative exit code (1.1.0's way of saying
# "killed by signal N") is read as that signal (`present_row`).
LEGACY_VERSION = "1.1.0"
BACKUP_SUFFIX = ".1.1.0-backup"
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
# Tables that only orchesjob 1.1.0 creates (its `jobs` and `run_keys` share names with ours): found in an upgraded
# database, they say 1.1.0 was run on it since (doctor).
STRAY_1_1_0_TABLES = ("strict_overrides", "schema_meta")
_NOW = "CAST(strftime('%s', 'now') AS INTEGER)"


def recognise(store: Store) -> str | None:
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


def _recognise(store: Store) -> str | None:
    from .errors import OrchesjobError

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


def _register_functions(store: Store, progress: Any = None) -> None:
    """SQL functions the conversion needs, defined in this connection only (nothing is stored in the file).
    `progress` (progress.Progress) is told each job whose command is converted: SQLite calls `argv` once per row."""
    from .store import _pack

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
            return _pack(items)
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


def _jobs_select(jobs: str) -> str:
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


def _run_keys_select(jobs: str, overrides: str) -> str:
    """A run_keys row per key of 1.1.0's jobs: the highest attempt, and the key's pending unlock (1.1.0's
    strict_overrides row, unused and unexpired). 1.1.0's own run_keys (a pointer to the latest job) adds nothing."""
    return """SELECT k.run_key AS run_key, k.last_attempt AS last_attempt, o.reason AS unlock_reason,
        _oj110_ts(o.allowed_at) AS unlock_allowed_at, _oj110_ts(o.expires_at) AS unlock_expires_at,
        CASE WHEN o.run_key IS NULL THEN 0 ELSE 1 END AS unlock_pending
        FROM (SELECT COALESCE(run_key, '') AS run_key, MAX(attempt_no) AS last_attempt FROM %s GROUP BY 1) AS k
        LEFT JOIN %s AS o ON o.run_key = k.run_key AND o.used_at IS NULL
            AND (o.expires_at IS NULL OR _oj110_ts(o.expires_at) > %s)""" % (jobs, overrides, _NOW)


def present_1_1_0(store: Store) -> None:
    """Read a 1.1.0 database as ours without writing it: TEMP views named like our tables shadow its tables in this
    connection (temporary objects are kept in memory, never in the database file)."""
    _register_functions(store)
    conn = store.conn
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("CREATE TEMP VIEW jobs AS " + _jobs_select("main.jobs"))
    conn.execute("CREATE TEMP VIEW run_keys AS " + _run_keys_select("main.jobs", "main.strict_overrides"))
    conn.execute(
        "CREATE TEMP VIEW start_requests AS SELECT '' AS run_key, '' AS request_id, '' AS job_id, "
        "0 AS answered_at, NULL AS job_status WHERE 0"
    )


def drop_presentation(store: Store) -> None:
    for view in _VIEWS:
        store.conn.execute("DROP VIEW IF EXISTS temp.%s" % view)


def present_row(job: dict[str, Any]) -> None:
    """A job row 1.1.0 wrote (before the upgrade, or after it, by a 1.1.0 worker that was still running) in our
    terms: 1.1.0's exit code -N (killed by signal N) is signal N; its -1 (the command or the worker could not be
    launched) is no exit code; a finished job without an end reason gets one."""
    code = job.get("exit_code")
    if code is not None and code < 0 and job.get("signal") is None:
        job["exit_code"] = None
        if code == -1:
            job["end_reason"] = job.get("end_reason") or (
                "orchesjob 1.1.0 recorded exit code -1: the command (or its worker) could not be launched"
            )
        else:
            job["signal"] = -code
    if job.get("end_reason") or "status" not in job:
        return
    status = job["status"]
    if job.get("signal") is not None:
        from .processes import signal_name

        job["end_reason"] = "killed by signal %s" % signal_name(job["signal"])
    elif job.get("exit_code") is not None and status in ("SUCCEEDED", "FAILED", "ABORTED"):
        job["end_reason"] = "exited with code %d" % job["exit_code"]
    elif status == "LOST":
        job["end_reason"] = "orchesjob 1.1.0 declared the job lost (its worker was gone)"
    elif status == "ABORTED":
        job["end_reason"] = "aborted" + (": %s" % job["abort_reason"] if job.get("abort_reason") else "")


def _error(store: Store, message: str, error_type: str = "database") -> Exception:
    from .errors import OrchesjobError

    return OrchesjobError(
        "cannot upgrade the orchesjob 1.1.0 database %s: %s; it was left untouched" % (store.path, message),
        error_type=error_type,
    )


def with_verified_worker(job: dict[str, Any]) -> dict[str, Any]:
    """An active 1.1.0 job with the pid namespace its worker runs in, when this process sees that worker (its pid
    runs `-m orchesjob _worker --job-id ID`, or the job is STARTING and such a worker is found): then the rules for
    imported jobs can prove it dead later (life.py). Unverified, the namespace stays unknown, and so does the job."""
    from . import processes

    if not processes.proc_is_ours():
        return job
    worker = job.get("worker_pid")
    if worker is None and job["status"] == "STARTING":
        worker = processes.find_legacy_worker(job["job_id"])
    if worker and processes.is_legacy_worker(worker, job["job_id"]):
        return dict(job, worker_pid=worker, pid_ns=processes.pid_namespace())
    return job


def _not_dead(job: dict[str, Any]) -> bool:
    from . import life

    return life.verdict(with_verified_worker(job))[0] != life.DEAD


def _alive(job: dict[str, Any]) -> bool:
    from . import life

    return life.verdict(with_verified_worker(job))[0] == life.ALIVE


def _lost_but_running(store: Store, double: list[str]) -> list[str]:
    """LOST jobs whose command is still running: 1.1.0 declared a job LOST as soon as its worker was gone, even with
    its command alive, and then ran the key again beside it. Such a job that is its key's latest, with no active job
    of the key, is RUNNING again after the upgrade (on evidence of life: its logs are being written), so the key
    stays busy until the command really ends (it is LOST then, and `abort` can stop it meanwhile)."""
    out = []
    for job in store._many(
        "SELECT * FROM (%s) AS j WHERE status = 'LOST' AND attempt_no = (SELECT MAX(attempt_no) "
        "FROM main.jobs WHERE COALESCE(run_key, '') = j.run_key) AND NOT EXISTS (SELECT 1 FROM "
        "main.jobs WHERE COALESCE(run_key, '') = j.run_key AND status IN ('STARTING', 'RUNNING'))"
        % _jobs_select("main.jobs"),
        (),
    ):
        if job["job_id"] not in double and _alive(job):
            out.append(job["job_id"])
    return out


def _double_runs(store: Store) -> list[str]:
    """Jobs to record as LOST before the upgrade: our schema allows one active job per run key, and 1.1.0's `rerun`
    could start a second beside the first. Extra active jobs of a key that are proven dead are LOST; two of a key
    that are not both proven dead stop the upgrade (nothing is changed; it is tried again by the next command that
    writes)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for job in store._many(
        "SELECT * FROM (%s) WHERE status IN ('STARTING', 'RUNNING')" % _jobs_select("main.jobs"), ()
    ):
        by_key.setdefault(job["run_key"], []).append(job)
    dead: list[str] = []
    for key, active in by_key.items():
        if len(active) < 2:
            continue
        alive = [j for j in active if _not_dead(j)]
        if len(alive) > 1:
            raise _error(
                store,
                "run key %r has %d jobs that may be running side by side (%s), which orchesjob 1.1.0 allowed and "
                "this orchesjob cannot record; wait until one has ended (or stop one with orchesjob 1.1.0), then "
                "try again" % (key, len(alive), ", ".join(j["job_id"] for j in alive)),
            )
        dead.extend(j["job_id"] for j in active if j not in alive)
    return dead


def _renumbered(store: Store) -> list[tuple[int, str]]:
    """New attempt numbers for jobs that share a run key and attempt number with another (a crash or race in an
    older orchesjob): later ones move above the key's highest number. Every other attempt number is kept."""
    out: list[tuple[int, str]] = []
    seen: dict[str, dict[Any, int]] = {}
    highest: dict[str, int] = {}
    rows = store.conn.execute(
        "SELECT job_id, COALESCE(run_key, ''), attempt_no FROM jobs ORDER BY 2, 3, _oj110_ts(started_at), rowid"
    ).fetchall()
    for _, key, attempt in rows:
        if isinstance(attempt, int):
            highest[key] = max(highest.get(key, 0), attempt)
    for job_id, key, attempt in rows:
        numbers = seen.setdefault(key, {})
        if attempt in numbers:
            highest[key] = highest.get(key, 0) + 1
            out.append((highest[key], job_id))
        else:
            numbers[attempt] = 1
    return out


def _backup(store: Store, progress: Any = None) -> str:
    """Copy the database (as this transaction sees it) to orchesjob.db.1.1.0-backup.partial next to it, 0600, and
    return that path. It gets its documented name (`name_backup`) only once the upgrade has committed: a backup
    whose upgrade did not commit must never be found under that name (it would be older than the database that
    was kept, and restoring it would lose what 1.1.0 recorded since)."""
    from .home import open_new_private

    partial = store.path + BACKUP_SUFFIX + ".partial"
    # A partial file exists only while some CLI holds the write lock we hold now: one that is here was left by a
    # killed upgrade. Remove it (and any journal SQLite made for it), whatever it is: unlink never follows a link.
    for stale in (partial, partial + "-journal", partial + "-wal", partial + "-shm"):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    os.close(open_new_private(partial, os.O_WRONLY))
    store.copy_to(partial, progress)
    fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return partial


def name_backup(partial: str) -> str:
    """Give a committed upgrade's backup its name: orchesjob.db.1.1.0-backup, or .2, .3, ... beside an earlier
    one (the highest number is the newest). Returns the name (the partial path if it could not be linked)."""
    base = partial[: -len(".partial")]
    n = 1
    while True:
        name = base if n == 1 else "%s.%d" % (base, n)
        try:
            os.link(partial, name)
            break
        except FileExistsError:
            n += 1
        except OSError:
            return partial
    try:
        os.unlink(partial)
    except OSError:
        pass
    _fsync_dir(os.path.dirname(partial))
    return name


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tighten_imported_logs(store: Store) -> None:
    """orchesjob 1.1.0 left its logs readable by everyone (0644); after the upgrade they are 0600 like ours. Only
    plain files of the caller's are changed, through a descriptor opened without following links."""
    from .home import tighten_file
    from .progress import Progress, wanted

    total = (
        2 * int(store.conn.execute("SELECT count(*) FROM jobs WHERE imported_from IS NOT NULL").fetchone()[0])
        if wanted()
        else 0
    )
    with Progress("making the 1.1.0 logs private (600)", total) as shown:
        for (path,) in store.conn.execute(
            "SELECT stdout_file FROM jobs WHERE imported_from IS NOT NULL UNION ALL "
            "SELECT stderr_file FROM jobs WHERE imported_from IS NOT NULL"
        ):
            shown.step()
            if isinstance(path, str):
                tighten_file(path, 0o600)


def discard_backup(info: dict[str, str]) -> None:
    """Remove the backup of an upgrade that did not commit (the database is still the one it copied)."""
    try:
        os.unlink(info["backup"])
    except OSError:
        pass


_JOB_COLUMNS = (
    "job_id",
    "run_key",
    "attempt_no",
    "status",
    "command",
    "cwd",
    "env",
    "timeout",
    "strict",
    "strict_override_used",
    "override_reason",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "exit_code",
    "signal",
    "end_reason",
    "worker_pid",
    "worker_start",
    "target_pid",
    "target_start",
    "pgid",
    "boot_id",
    "pid_ns",
    "request_id",
    "owner",
    "stdout_file",
    "stderr_file",
    "started_at",
    "finished_at",
    "updated_at",
    "aborted_at",
    "imported_from",
    "life_lock",
)
_RUN_KEY_COLUMNS = (
    "run_key",
    "last_attempt",
    "unlock_reason",
    "unlock_allowed_at",
    "unlock_expires_at",
    "unlock_pending",
)


def from_1_1_0(store: Store) -> dict[str, str]:
    """Upgrade an orchesjob 1.1.0 database to our schema (call inside the write transaction that found it at
    user_version 0; the caller sets the version and commits). Returns {"version", "backup"}.

    Everything survives: every job (history, log paths, attempt numbers, strict flags, rerun lineage, abort
    reasons), and each key's pending unlock. The checks that could refuse come first, then the backup, then the
    conversion; an error after the backup removes it again, and a kill leaves the old database (one transaction).
    """
    from .progress import Progress

    with Progress("upgrading the orchesjob 1.1.0 database") as shown:
        return _from_1_1_0(store, shown)


def _from_1_1_0(store: Store, shown: Any) -> dict[str, str]:
    """from_1_1_0, with its progress shown on a terminal: each phase over the jobs is counted (a database of
    hundreds of thousands of jobs takes seconds, and a silent command looks hung)."""
    import time

    from . import processes
    from .store import _SCHEMA

    if recognise(store) != LEGACY_VERSION:  # pragma: no cover - checked when opened; raises for anything else
        raise _error(store, "its layout changed since it was opened")
    _register_functions(store, shown)
    processes.pause_point("upgrade-1.1.0-start")
    conn = store.conn
    total = int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0]) if shown.tty else 0
    shown.start(total, "upgrading the orchesjob 1.1.0 database: checking %d jobs" % total)
    bad = [
        str(r[0]) for r in conn.execute("SELECT job_id FROM jobs WHERE _oj110_argv(command, job_id) IS NULL LIMIT 5")
    ]
    if bad:
        raise _error(
            store,
            "the command of job %s is not a JSON list of arguments as 1.1.0 writes it (a damaged "
            "record)" % ", ".join(bad),
            "corrupt_database",
        )
    lost = _double_runs(store)
    revive = _lost_but_running(store, lost)
    renumber = _renumbered(store)
    try:
        shown.start(0, "upgrading the orchesjob 1.1.0 database: backing it up")
        info = {"version": LEGACY_VERSION, "backup": _backup(store, shown)}
    except OSError as e:
        raise _error(store, "could not write its backup next to it (%s)" % (e.strerror or e), "state_dir") from None
    try:
        processes.pause_point("upgrade-1.1.0-backup")
        t = int(time.time())
        conn.executemany(
            "UPDATE jobs SET status = 'LOST', finished_at = COALESCE(finished_at, ?), updated_at = ? WHERE job_id = ?",
            [(t, t, j) for j in lost],
        )
        conn.executemany(
            "UPDATE jobs SET status = 'RUNNING', finished_at = NULL, updated_at = ? WHERE job_id = ?",
            [(t, j) for j in revive],
        )
        conn.executemany("UPDATE jobs SET attempt_no = ? WHERE job_id = ?", renumber)
        conn.execute("ALTER TABLE jobs RENAME TO _oj110_jobs")
        conn.execute("ALTER TABLE run_keys RENAME TO _oj110_run_keys")
        store.executescript(_SCHEMA)
        shown.start(total, "upgrading the orchesjob 1.1.0 database: converting %d jobs" % total)
        cols = ", ".join(_JOB_COLUMNS)
        conn.execute("INSERT INTO main.jobs (%s) SELECT %s FROM (%s)" % (cols, cols, _jobs_select("main._oj110_jobs")))
        cols = ", ".join(_RUN_KEY_COLUMNS)
        conn.execute(
            "INSERT INTO main.run_keys (%s) SELECT %s FROM (%s)"
            % (cols, cols, _run_keys_select("main._oj110_jobs", "main.strict_overrides"))
        )
        shown.done()
        conn.executemany(
            "UPDATE main.jobs SET end_reason = ? WHERE job_id = ?",
            [("found dead while upgrading from orchesjob 1.1.0, beside another job of its run key", j) for j in lost],
        )
        verified = []
        for job in store._many("SELECT * FROM main.jobs WHERE status IN ('STARTING', 'RUNNING')", ()):
            seen = with_verified_worker(job)
            if seen.get("pid_ns"):
                verified.append((seen["pid_ns"], seen["worker_pid"], job["job_id"]))
        conn.executemany("UPDATE main.jobs SET pid_ns = ?, worker_pid = ? WHERE job_id = ?", verified)
        processes.pause_point("upgrade-1.1.0-copy")
        for table in ("_oj110_run_keys", "_oj110_jobs", "strict_overrides", "schema_meta"):
            conn.execute("DROP TABLE main.%s" % table)
    except BaseException:
        discard_backup(info)
        raise
    return info
