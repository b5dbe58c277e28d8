"""The upgrade of an orchesjob 1.1.0 database to our schema: one transaction, a backup first, every row kept.

The first command that writes makes it (store.py holds the write transaction and commits it); readers never do.
"""

from __future__ import annotations

import os

from . import BACKUP_SUFFIX, LEGACY_VERSION
from .layout import jobs_select, recognise, register_functions, run_keys_select
from .workers import find_legacy_worker, is_legacy_worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..rows import JobRow
    from . import Database


def _error(store: Database, message: str, error_type: str = "database") -> Exception:
    from ..errors import OrchesjobError

    return OrchesjobError(
        "cannot upgrade the orchesjob 1.1.0 database %s: %s; it was left untouched" % (store.path, message),
        error_type=error_type,
    )


def with_verified_worker(job: JobRow) -> JobRow:
    """An active 1.1.0 job with the pid namespace its worker runs in, when this process sees that worker (its pid
    runs `-m orchesjob _worker --job-id ID`, or the job is STARTING and such a worker is found): then the rules for
    imported jobs can prove it dead later (life.py). Unverified, the namespace stays unknown, and so does the job."""
    from .. import processes

    if not processes.proc_is_ours():
        return job
    worker = job.get("worker_pid")
    if worker is None and job["status"] == "STARTING":
        worker = find_legacy_worker(job["job_id"])
    if worker and is_legacy_worker(worker, job["job_id"]):
        verified = job.copy()
        verified["worker_pid"] = worker
        verified["pid_ns"] = processes.pid_namespace()
        return verified
    return job


def not_dead(job: JobRow) -> bool:
    from .. import life

    return life.verdict(with_verified_worker(job))[0] != life.DEAD


def alive(job: JobRow) -> bool:
    from .. import life

    return life.verdict(with_verified_worker(job))[0] == life.ALIVE


def _lost_but_running(store: Database, double: list[str]) -> list[str]:
    """LOST jobs whose command is still running: 1.1.0 declared a job LOST as soon as its worker was gone, even with
    its command alive, and then ran the key again beside it. Such a job that is its key's latest, with no active job
    of the key, is RUNNING again after the upgrade (on evidence of life: its logs are being written), so the key
    stays busy until the command really ends (it is LOST then, and `abort` can stop it meanwhile)."""
    out = []
    for job in store.select_jobs(
        "SELECT * FROM (%s) AS j WHERE status = 'LOST' AND attempt_no = (SELECT MAX(attempt_no) "
        "FROM main.jobs WHERE COALESCE(run_key, '') = j.run_key) AND NOT EXISTS (SELECT 1 FROM "
        "main.jobs WHERE COALESCE(run_key, '') = j.run_key AND status IN ('STARTING', 'RUNNING'))"
        % jobs_select("main.jobs"),
        (),
    ):
        if job["job_id"] not in double and alive(job):
            out.append(job["job_id"])
    return out


def _double_runs(store: Database) -> list[str]:
    """Jobs to record as LOST before the upgrade: our schema allows one active job per run key, and 1.1.0's `rerun`
    could start a second beside the first. Extra active jobs of a key that are proven dead are LOST; two of a key
    that are not both proven dead stop the upgrade (nothing is changed; it is tried again by the next command that
    writes)."""
    by_key: dict[str, list[JobRow]] = {}
    for job in store.select_jobs(
        "SELECT * FROM (%s) WHERE status IN ('STARTING', 'RUNNING')" % jobs_select("main.jobs"), ()
    ):
        by_key.setdefault(job["run_key"], []).append(job)
    dead: list[str] = []
    for key, active in by_key.items():
        if len(active) < 2:
            continue
        alive = [j for j in active if not_dead(j)]
        if len(alive) > 1:
            raise _error(
                store,
                "run key %r has %d jobs that may be running side by side (%s), which orchesjob 1.1.0 allowed and "
                "this orchesjob cannot record; wait until one has ended (or stop one with orchesjob 1.1.0), then "
                "try again" % (key, len(alive), ", ".join(j["job_id"] for j in alive)),
            )
        dead.extend(j["job_id"] for j in active if j not in alive)
    return dead


def _renumbered(store: Database) -> list[tuple[int, str]]:
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


def _backup(store: Database, progress: Any = None) -> str:
    """Copy the database (as this transaction sees it) to orchesjob.db.1.1.0-backup.partial next to it, 0600, and
    return that path. It gets its documented name (`name_backup`) only once the upgrade has committed: a backup
    whose upgrade did not commit must never be found under that name (it would be older than the database that
    was kept, and restoring it would lose what 1.1.0 recorded since)."""
    from ..home import open_new_private

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


def tighten_imported_logs(store: Database) -> None:
    """orchesjob 1.1.0 left its logs readable by everyone (0644); after the upgrade they are 0600 like ours. Only
    plain files of the caller's are changed, through a descriptor opened without following links."""
    from ..home import tighten_file
    from ..progress import Progress, wanted

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


def from_1_1_0(store: Database) -> dict[str, str]:
    """Upgrade an orchesjob 1.1.0 database to our schema (call inside the write transaction that found it at
    user_version 0; the caller sets the version and commits). Returns {"version", "backup"}.

    Everything survives: every job (history, log paths, attempt numbers, strict flags, rerun lineage, abort
    reasons), and each key's pending unlock. The checks that could refuse come first, then the backup, then the
    conversion; an error after the backup removes it again, and a kill leaves the old database (one transaction).
    """
    from ..progress import Progress

    with Progress("upgrading the orchesjob 1.1.0 database") as shown:
        return _from_1_1_0(store, shown)


def _from_1_1_0(store: Database, shown: Any) -> dict[str, str]:
    """from_1_1_0, with its progress shown on a terminal: each phase over the jobs is counted (a database of
    hundreds of thousands of jobs takes seconds, and a silent command looks hung)."""
    import time

    from .. import processes

    if recognise(store) != LEGACY_VERSION:  # pragma: no cover - checked when opened; raises for anything else
        raise _error(store, "its layout changed since it was opened")
    register_functions(store, shown)
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
        store.create_schema()
        shown.start(total, "upgrading the orchesjob 1.1.0 database: converting %d jobs" % total)
        cols = ", ".join(_JOB_COLUMNS)
        conn.execute("INSERT INTO main.jobs (%s) SELECT %s FROM (%s)" % (cols, cols, jobs_select("main._oj110_jobs")))
        cols = ", ".join(_RUN_KEY_COLUMNS)
        conn.execute(
            "INSERT INTO main.run_keys (%s) SELECT %s FROM (%s)"
            % (cols, cols, run_keys_select("main._oj110_jobs", "main.strict_overrides"))
        )
        shown.done()
        conn.executemany(
            "UPDATE main.jobs SET end_reason = ? WHERE job_id = ?",
            [("found dead while upgrading from orchesjob 1.1.0, beside another job of its run key", j) for j in lost],
        )
        verified = []
        for job in store.select_jobs("SELECT * FROM main.jobs WHERE status IN ('STARTING', 'RUNNING')", ()):
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
