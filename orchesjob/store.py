"""The state database: connections, transactions, the schema and the queries the commands need.

The only module that speaks SQL to our schema; orchesjob/legacy/ speaks it to orchesjob 1.1.0's (recognising,
presenting and upgrading it, inside the transactions this module opens), migrations.py holds the schema's upgrade
steps, and rows.py decodes and checks every row read here.

Exactly-once is enforced here, not by luck: a partial unique index allows one active (STARTING or RUNNING) job per
run key, and every decision that could start a job runs inside one BEGIN IMMEDIATE transaction. Every query is
served by an index, so no command slows down as history grows; the schema version is read once per connection from
`PRAGMA user_version`, so there is no per-call migration work.
"""

from __future__ import annotations

import _weakref
import os

from . import home
from .contract import ACTIVE, DEFAULT_LOCK_TIMEOUT, MAX_LOCK_TIMEOUT, TERMINAL
from .errors import InconsistentState, LockTimeout, OrchesjobError
from .rows import RECORD_KINDS, decode, decode_cursor, decode_job, decode_request, decode_run_key, encode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any, Callable, Literal, TypeVar

    from .rows import JobRow

    Record = TypeVar("Record")


def _small_lru_cache(maxsize: int = 128, typed: bool = False) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """What `_sqlite3` asks of `functools.lru_cache`: `lru_cache(n)(connection)` is the connection's statement
    cache, called with an SQL text, answering a prepared statement. This one keeps the first `n` texts (a command
    sends a handful; a statement in use is never handed out twice: the C code prepares a fresh one then)."""

    def decorate(prepare: Callable[[str], Any]) -> Callable[[str], Any]:
        if maxsize <= 0:
            return prepare
        kept: dict[str, Any] = {}

        def statement(sql: str) -> Any:
            found = kept.get(sql)
            if found is None:
                found = prepare(sql)
                if len(kept) < maxsize:
                    kept[sql] = found
            return found

        return statement

    return decorate


def _load_sqlite() -> Any:
    """The `_sqlite3` C module, without `functools` when nothing has loaded it yet.

    The C module alone: the `sqlite3` package also imports datetime and collections.abc to register adapters this
    CLI never uses. And from Python 3.11 on, `_sqlite3` imports `functools` for `lru_cache` alone, which brings
    collections, operator, keyword, reprlib and types: a third of a `status` call's start-up. So while it loads, a
    stand-in `functools` offers `_small_lru_cache`; it is removed at once, and whoever imports `functools` later gets
    the real one. In a process that has `functools` already (the tests, the provider), nothing is stood in for.
    """
    import sys

    if "functools" in sys.modules or "_sqlite3" in sys.modules:
        import _sqlite3

        return _sqlite3
    stand_in = type(sys)("functools")
    stand_in.lru_cache = _small_lru_cache  # type: ignore[attr-defined]
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return _sqlite3


if TYPE_CHECKING:
    import sqlite3
else:
    try:
        sqlite3 = _load_sqlite()
    except ImportError:  # pragma: no cover - an interpreter without the split module
        import sqlite3

DatabaseError = sqlite3.DatabaseError  # for modules that handle SQLite errors without speaking SQL


SCHEMA_VERSION = 3
# Upgrades this process made ({"version", "backup"}): the command's output says so (cli.main, "migrated_from").
UPGRADED: list[dict[str, str]] = []

_SCHEMA = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    run_key TEXT NOT NULL,
    attempt_no INTEGER NOT NULL,
    status TEXT NOT NULL,
    command BLOB NOT NULL,
    cwd TEXT,
    env BLOB NOT NULL DEFAULT x'',
    timeout REAL,
    strict INTEGER NOT NULL DEFAULT 0,
    strict_override_used INTEGER NOT NULL DEFAULT 0,
    override_reason TEXT,
    rerun_of_job_id TEXT,
    rerun_reason TEXT,
    abort_reason TEXT,
    exit_code INTEGER,
    signal INTEGER,
    end_reason TEXT,
    worker_pid INTEGER,
    worker_start TEXT,
    target_pid INTEGER,
    target_start TEXT,
    pgid INTEGER,
    boot_id TEXT,
    pid_ns TEXT,
    request_id TEXT,
    owner TEXT,
    stdout_file TEXT NOT NULL,
    stderr_file TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    updated_at INTEGER NOT NULL,
    aborted_at INTEGER,
    imported_from TEXT,
    life_lock INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX jobs_run_key_attempt ON jobs (run_key, attempt_no);
CREATE UNIQUE INDEX jobs_one_active_per_key ON jobs (run_key) WHERE status IN ('STARTING', 'RUNNING');
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('STARTING', 'RUNNING');
CREATE INDEX jobs_finished_at ON jobs (finished_at);
CREATE INDEX jobs_started_at ON jobs (started_at);
CREATE INDEX jobs_status_finished_at ON jobs (status, finished_at);
CREATE TABLE run_keys (
    run_key TEXT PRIMARY KEY,
    last_attempt INTEGER NOT NULL,
    unlock_reason TEXT,
    unlock_allowed_at INTEGER,
    unlock_expires_at INTEGER,
    unlock_pending INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE start_requests (
    run_key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    answered_at INTEGER NOT NULL,
    job_status TEXT,
    PRIMARY KEY (run_key, request_id)
);
CREATE INDEX start_requests_job ON start_requests (job_id);
CREATE TABLE watch_cursors (
    job_id TEXT NOT NULL,
    cursor TEXT NOT NULL,
    stdout_offset INTEGER NOT NULL,
    stderr_offset INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, cursor)
);
"""


def lock_timeout() -> float:
    """Seconds a writer waits for the database lock (ORCHESJOB_LOCK_TIMEOUT, default 30). The CLI refuses a value
    that is no number of seconds from 0 to a day (check_lock_timeout) before it does anything; processes it starts
    inherit only such a value."""
    value = check_lock_timeout(os.environ.get("ORCHESJOB_LOCK_TIMEOUT"))
    return DEFAULT_LOCK_TIMEOUT if value is None else value


def check_lock_timeout(text: str | None) -> float | None:
    """ORCHESJOB_LOCK_TIMEOUT as seconds; None when unset, empty or not a number of seconds from 0 to a day."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not 0.0 <= value <= MAX_LOCK_TIMEOUT:  # also nan and inf
        return None
    return value


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def database_error(exc: sqlite3.DatabaseError, path: str) -> OrchesjobError:
    """Translate an SQLite failure into the CLI's error types, with the file named.

    Damage is recognised first: its message can quote damaged text (a value that is not UTF-8, a schema entry's
    name), which could say anything, even "locked"."""
    text = str(exc)
    # An empty message: older sqlite3 modules (Python 3.9) give up decoding a message that quotes non-UTF-8 bytes
    # and leave it empty, so it comes from the same damage as _UNDECODABLE.
    damaged = not text.strip() or text.startswith(_UNDECODABLE)
    if damaged or "not a database" in text or "malformed" in text or "corrupt" in text:
        text = text.strip() or "SQLite's message about it is not readable text"
        return OrchesjobError(
            "the database %s is corrupt (%s); it was left untouched: move it aside to start afresh" % (path, text),
            error_type="corrupt_database",
        )
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        return LockTimeout(
            "the database %s stayed locked for more than %gs (ORCHESJOB_LOCK_TIMEOUT); try again"
            % (path, lock_timeout())
        )
    if "unable to open" in text and _out_of_descriptors():
        return OrchesjobError(
            "cannot open the database %s: this process has no file descriptor left (ulimit -n is too low)" % path,
            error_type="os_error",
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return OrchesjobError("cannot write the database %s: %s" % (path, text), error_type="state_dir")
    if (text == "disk I/O error" or text == "out of memory") and _out_of_memory():
        return OrchesjobError(
            "cannot use the database %s: this process is out of memory or address space (ulimit -v is too low?); "
            "SQLite said: %s" % (path, text),
            error_type="os_error",
        )
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+: SQLite's extended code, e.g. SQLITE_IOERR_FSYNC
    if name:
        text = "%s (%s)" % (text, name)
    return OrchesjobError("database error on %s: %s" % (path, text), error_type="database")


def _out_of_descriptors() -> bool:
    """Whether opening a file fails here for want of a descriptor (EMFILE), which SQLite reports only as "unable
    to open database file"."""
    try:
        os.close(os.dup(0))
    except OSError as e:
        import errno

        return e.errno == errno.EMFILE
    return False


def _out_of_memory() -> bool:
    """Whether mapping memory fails here (ENOMEM), the evidence that SQLite's "disk I/O error" came from mapping
    its shared-memory file under an address-space limit (ulimit -v) rather than from the disk. Loading the mmap
    module is itself a mapping: when the loader cannot map it, that is the same evidence."""
    try:
        import mmap
    except ImportError as e:
        return "failed to map" in str(e)
    try:
        mmap.mmap(-1, 1 << 16).close()
    except OSError as e:
        import errno

        return e.errno == errno.ENOMEM
    except MemoryError:
        return True
    return False


_OPENED: list[Any] = []  # weak references to every _Connection made by this process (close_all)


def close_all() -> None:
    """Close every connection of this process still open, as the interpreter's teardown would: the last one to
    close checkpoints the WAL into the database and removes the -wal and -shm files, so the state directory looks
    the same as after a full exit. cli.py calls it before leaving with os._exit."""
    while _OPENED:
        conn = _OPENED.pop()()
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass  # a connection that cannot close now is closed by the process's end (SQLite recovers)


_UNDECODABLE = "Could not decode to UTF-8"  # sqlite3's message for a TEXT value that is not UTF-8


class _Connection(sqlite3.Connection):
    """sqlite3's connection, except that an SQLite message that is not UTF-8 (the damaged name of a schema entry,
    quoted in an error) raises the DatabaseError it stands for, not the UnicodeDecodeError sqlite3 meets while
    building it, so every handler of database errors sees it and it is reported as corrupt_database.

    Each one is also noted (weakly: one nobody holds still closes at once) so that close_all can close what is
    still open when the CLI leaves without tearing the interpreter down."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(_OPENED) > 8:  # a supervisor opens one per poll for days: forget the closed ones
            _OPENED[:] = [r for r in _OPENED if r() is not None]
        _OPENED.append(_weakref.ref(self))

    # Set while the database is read as orchesjob 1.1.0's (Store.legacy): called when a statement fails, it says
    # whether another CLI upgraded the database meanwhile (the statement is then run again, on our own tables).
    schema_moved: Callable[[], bool] | None = None

    def execute(self, *args: Any) -> Any:
        try:
            return super().execute(*args)
        except UnicodeDecodeError as e:
            raise _undecodable(e) from None
        except sqlite3.DatabaseError:
            moved = self.schema_moved
            if moved is None or not moved():
                raise
        return self.execute(*args)

    def executemany(self, *args: Any) -> Any:
        try:
            return super().executemany(*args)
        except UnicodeDecodeError as e:
            raise _undecodable(e) from None


def _undecodable(e: UnicodeError) -> sqlite3.DatabaseError:
    return sqlite3.DatabaseError(
        "database disk image is malformed (SQLite reported an error in bytes that are not UTF-8: %s)" % e
    )


class Store:
    """One connection to the state database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._after: list[Callable[[], None]] = []  # actions waiting for the open transaction to commit
        self._undo: list[Callable[[], None]] = []  # actions to run if it rolls back instead
        # "1.1.0" while the database is still orchesjob 1.1.0's: read through views, upgraded by the first write()
        self.legacy: str | None = None
        self.readonly = False
        self.foreign: str | None = None  # set for the database of another state directory (places.py)
        deadline = None
        while True:
            try:
                conn = sqlite3.connect(path, timeout=lock_timeout(), isolation_level=None, factory=_Connection)
            except sqlite3.DatabaseError as e:
                raise database_error(e, path) from None
            try:
                self.conn = conn
                conn.row_factory = sqlite3.Row
                self._ensure_schema()
                return
            except sqlite3.DatabaseError as e:
                failure = e
            # While processes create (or upgrade) the database together, SQLite can answer "locked" at once
            # instead of waiting: a connection that still reads the file in its old journal mode would deadlock
            # with the one switching it to WAL. Such a refusal is tried again, on a new connection, until the lock
            # timeout has passed; any other failure, and one that outlasts it, is the answer.
            error = database_error(failure, path)  # before closing: it asks whether descriptors ran out
            conn.close()
            import time

            deadline = deadline if deadline is not None else time.monotonic() + lock_timeout()
            busy = isinstance(failure, sqlite3.OperationalError) and _is_busy(failure)
            if not busy or time.monotonic() >= deadline:
                raise error from None
            time.sleep(0.01)

    def close(self) -> None:
        self.conn.close()

    # -- schema -------------------------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self.conn.execute("PRAGMA synchronous=NORMAL")
            return
        if version > SCHEMA_VERSION:
            raise OrchesjobError(
                "the database %s has schema %d, newer than this orchesjob understands (%d); upgrade orchesjob"
                % (self.path, version, SCHEMA_VERSION),
                error_type="database",
            )
        if version == 0:
            try:
                if self._legacy_layout() is not None:
                    return  # read as it is; the first write() upgrades it
                self._refuse_foreign()  # before anything writes, even the journal mode
            except OrchesjobError:
                # The version and the tables were read in two snapshots: another CLI may have created (or upgraded)
                # the database in between. Then its version says so now, and it is read as what it has become.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] != 0:
                    self._ensure_schema()
                    return
                raise
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        with self.write():
            current = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if current == 0:
                self._refuse_foreign()
                self.create_schema()
                self.conn.execute("PRAGMA user_version=%d" % SCHEMA_VERSION)
            elif current < SCHEMA_VERSION:
                from . import migrations

                migrations.upgrade(self, current, SCHEMA_VERSION)

    def _legacy_layout(self) -> str | None:
        """At user_version 0: when the tables are orchesjob 1.1.0's, present them as ours (legacy.layout.present,
        TEMP views: nothing is written) and return "1.1.0"; None for a new file or a foreign one."""
        from .legacy import layout

        try:
            found = layout.recognise(self)
        except sqlite3.DatabaseError:
            return None  # not a readable database at all: _refuse_foreign says what is wrong with it
        if found is None:
            return None
        layout.present(self)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.legacy = found
        self.conn.schema_moved = self._legacy_moved
        return found

    def _legacy_moved(self) -> bool:
        """A statement on the 1.1.0 views failed: if another CLI upgraded the database since, drop the views and say
        so (the statement is run again on our tables); else it is a real error."""
        self.conn.schema_moved = None
        if self.conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            self.conn.schema_moved = self._legacy_moved
            return False
        from .legacy import layout

        layout.drop_presentation(self)
        self.legacy = None
        self._ensure_schema()
        return True

    def _upgrade_legacy(self) -> None:
        """Upgrade the orchesjob 1.1.0 database in one transaction of its own, committed before the writing command
        goes on (a command that then fails keeps the upgrade). Concurrent CLIs queue on the lock; the first one
        upgrades, the others find our version and go on with our tables. The backup gets its name after COMMIT."""
        from . import processes
        from .legacy import layout, upgrade

        conn = self.conn
        conn.schema_moved = None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            conn.schema_moved = self._legacy_moved
            raise database_error(e, self.path) from None
        info: dict[str, str] | None = None
        try:
            layout.drop_presentation(self)
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                info = upgrade.from_1_1_0(self)
                conn.execute("PRAGMA user_version=%d" % SCHEMA_VERSION)
                processes.pause_point("upgrade-1.1.0-commit")
            conn.execute("COMMIT")
        except BaseException as e:
            _rollback(conn)
            if info is not None:
                upgrade.discard_backup(info)
            if isinstance(e, sqlite3.DatabaseError):
                raise database_error(e, self.path) from None
            raise
        self.legacy = None
        if info is not None:
            info["backup"] = upgrade.name_backup(info["backup"])
            upgrade.tighten_imported_logs(self)
            UPGRADED.append(info)
            home.warn(
                "upgraded the orchesjob %s database %s to this orchesjob's schema; the original is kept as %s "
                '(to go back, see "Upgrading from orchesjob 1.1.0" in the README)'
                % (info["version"], self.path, info["backup"])
            )
        self._ensure_schema()

    def copy_to(self, path: str, progress: Any = None) -> None:
        """Copy the database, as committed now, into the empty file at `path` (SQLite's backup API); `progress`
        (progress.Progress) is told the pages copied.

        Called by the upgrade while this connection holds the write lock, so nothing can commit during the copy; the
        copy is read through a second connection, since the backup API refuses a source connection that writes."""
        src = sqlite3.connect(self.path, timeout=lock_timeout(), isolation_level=None)
        try:
            dst = sqlite3.connect(path, isolation_level=None)
            try:
                dst.execute("PRAGMA journal_mode=OFF")
                if progress is None or not progress.tty:
                    src.backup(dst)
                else:

                    def copied(status: int, remaining: int, total: int) -> None:
                        if progress.total != total:
                            progress.start(total)
                        progress.step(total - remaining - progress.count)

                    src.backup(dst, pages=4096, progress=copied)
            finally:
                dst.close()
        finally:
            src.close()

    def name_left_backup(self) -> None:
        """Give a 1.1.0 upgrade's backup its name when a kill came between the upgrade's COMMIT and the naming (the
        two steps after it). At our schema such a `.partial` file is the whole backup of the original database, fsynced
        before the COMMIT: an upgrade writes it only while the database is still 1.1.0's. Named, never deleted."""
        from .legacy import BACKUP_SUFFIX

        partial = self.path + BACKUP_SUFFIX + ".partial"
        if os.path.lexists(partial):
            from .legacy.upgrade import name_backup

            name_backup(partial)

    def create_schema(self) -> None:
        """Create the newest schema's tables and indexes, inside the open write transaction (a new database, and the
        upgrade of an orchesjob 1.1.0 one, orchesjob/legacy/upgrade.py)."""
        self.executescript(_SCHEMA)

    def select_jobs(self, sql: str, args: Sequence[Any]) -> list[JobRow]:
        """Job rows of any SELECT (every column), each checked as every job row read here is."""
        return self._jobs(sql, args)

    def executescript(self, script: str) -> None:
        """Run `;`-separated statements inside the open transaction (sqlite3's executescript would commit it)."""
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def _refuse_foreign(self) -> None:
        # A file cut below one page (SQLite's smallest is 512 bytes) reads as a database without any page, so
        # SQLite would let the schema be created over it: damage, not a fresh start (a new database is 0 bytes).
        try:
            with open(self.path, "rb") as f:
                size, head = os.fstat(f.fileno()).st_size, f.read(16)
        except OSError:
            size, head = 0, b""
        if size and (size < 512 or head != b"SQLite format 3\0"):
            raise OrchesjobError(
                "the database %s is corrupt (%d bytes, %s); it was left untouched: move it aside to start afresh"
                % (self.path, size, "cut short" if size < 512 else "not an SQLite header"),
                error_type="corrupt_database",
            )
        # Tables and version read in one snapshot: a concurrent CLI may have created our schema since this one read
        # user_version 0, and then the tables are ours (the caller goes on and finds the version under the lock).
        own = not self.conn.in_transaction
        if own:
            self.conn.execute("BEGIN")
        try:
            if own and self.conn.execute("PRAGMA user_version").fetchone()[0] != 0:
                return
            if self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise OrchesjobError(
                    "the database %s holds tables that are not orchesjob's; it was left untouched" % self.path,
                    error_type="corrupt_database",
                )
        finally:
            if own:
                _rollback(self.conn)  # a read transaction: nothing to commit

    # -- transactions -------------------------------------------------------------------------------------------
    def write(self, wait: float | None = None) -> _Transaction:
        """A write transaction that takes the lock up front, so a decision and its insert cannot interleave.

        Nested use joins the open transaction, so helpers that write can be called inside a larger decision.
        `wait` overrides how long to wait for the lock (readers that settle a job's state wait only briefly).
        """
        return _Transaction(self, wait)

    # -- reads --------------------------------------------------------------------------------------------------
    def _one(self, sql: str, args: Sequence[Any], decode: Callable[[sqlite3.Row], Record]) -> Record | None:
        rows = self._many(sql, args, decode)
        return rows[0] if rows else None

    def _many(self, sql: str, args: Sequence[Any], decode: Callable[[sqlite3.Row], Record]) -> list[Record]:
        """Rows as `decode` makes them, each checked by it before anything can use a value of it."""
        try:
            return [decode(r) for r in self.conn.execute(sql, args).fetchall()]
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None
        except (ValueError, TypeError, UnicodeError, OverflowError) as e:  # a row our code could not have written
            raise OrchesjobError(
                "the database %s holds a damaged %s record (%s); it was left untouched"
                % (self.path, RECORD_KINDS.get(decode, "job"), e),
                error_type="corrupt_database",
            ) from None

    def _job(self, sql: str, args: Sequence[Any]) -> JobRow | None:
        rows = self._jobs(sql, args)
        return rows[0] if rows else None

    def _jobs(self, sql: str, args: Sequence[Any]) -> list[JobRow]:
        """Job rows (SELECT *), each checked; a job of another state directory says where it lives."""
        rows = self._many(sql, args, decode_job)
        if self.foreign is not None:
            for row in rows:
                row["state_dir"] = self.foreign
        return rows

    def get(self, job_id: str) -> JobRow | None:
        return self._job("SELECT * FROM jobs WHERE job_id = ?", (job_id,))

    def latest(self, run_key: str) -> JobRow | None:
        return self._job("SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC LIMIT 1", (run_key,))

    def history(self, run_key: str) -> list[JobRow]:
        return self._jobs("SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC", (run_key,))

    def active(self) -> list[JobRow]:
        return self._jobs("SELECT * FROM jobs WHERE status IN ('STARTING', 'RUNNING') ORDER BY started_at, job_id", ())

    def answered_request(self, run_key: str, request_id: str) -> tuple[JobRow | None, dict[str, Any] | None]:
        """(the job, None) a start with this request id already answered with (a retry of that same request),
        (None, the request's record) when that job has since been cleaned, or (None, None) for a new request."""
        record = self._one(
            "SELECT * FROM start_requests WHERE run_key = ? AND request_id = ?", (run_key, request_id), decode_request
        )
        if record is None:
            return None, None
        job = self.get(record["job_id"])
        return (job, None) if job is not None else (None, record)

    def record_request(self, run_key: str, request_id: str, job_id: str, at: int, take_ownership: bool = True) -> None:
        """Remember which job answered a request (call inside write()); with `take_ownership` (a caller that
        accepts the job) the job becomes that caller's."""
        self.conn.execute(
            "INSERT OR REPLACE INTO start_requests (run_key, request_id, job_id, answered_at) VALUES (?, ?, ?, ?)",
            (run_key, request_id, job_id, at),
        )
        if take_ownership:
            self.conn.execute("UPDATE jobs SET owner = ? WHERE job_id = ?", (request_id, job_id))

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRow]:
        """The jobs among `job_ids` that exist, by id (primary key lookups in batches: one query per 500 ids)."""
        found: dict[str, JobRow] = {}
        for i in range(0, len(job_ids), 500):
            batch = list(job_ids[i : i + 500])
            sql = "SELECT * FROM jobs WHERE job_id IN (%s)" % ", ".join("?" for _ in batch)
            found.update((j["job_id"], j) for j in self._jobs(sql, batch))
        return found

    def cursors(self, job_ids: Sequence[str]) -> dict[tuple[str, str], tuple[int, int]]:
        """The delivered offsets (stdout, stderr) recorded for the jobs among `job_ids`, by (job id, cursor name).
        (Plain IN lists and no upsert: the SQL stays within what old SQLite builds on job hosts understand.)"""
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for i in range(0, len(job_ids), 500):
            batch = list(job_ids[i : i + 500])
            sql = (
                "SELECT job_id, cursor, stdout_offset, stderr_offset FROM watch_cursors WHERE job_id IN (%s)"
                % ", ".join("?" for _ in batch)
            )
            for row in self._many(sql, batch, decode_cursor):
                found[(row["job_id"], row["cursor"])] = (row["stdout_offset"], row["stderr_offset"])
        return found

    def record_cursors(self, rows: Sequence[tuple[str, str, int, int]], at: int) -> None:
        """Record (job id, cursor, stdout offset, stderr offset) as delivered (call inside write(), after reading
        the current values with `cursors` in the same transaction, so that an offset only ever moves forward)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO watch_cursors (job_id, cursor, stdout_offset, stderr_offset, updated_at) "
            "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = ?)",
            [(job_id, cursor, out, err, at, job_id) for job_id, cursor, out, err in rows],
        )

    def run_key_info(self, run_key: str) -> dict[str, Any] | None:
        """The run key's record (attempt counter, unlock), checked: a damaged one is corrupt_database, so calling
        this before acting on a run key also guards whatever would be written after it."""
        return self._one("SELECT * FROM run_keys WHERE run_key = ?", (run_key,), decode_run_key)

    def select_terminal(
        self,
        before: int | None = None,
        after: int | None = None,
        run_key: str | None = None,
        job_id: str | None = None,
        progress: Any = None,
    ) -> list[JobRow]:
        """Terminal jobs for `clean`, by finish time range, run key or id (served by the finished_at index).
        `progress` (progress.Progress-like, with `total` unset) is told the count first, then each row read."""
        where = ["status NOT IN ('STARTING', 'RUNNING')"]
        args: list[Any] = []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if run_key is not None:
            where.append("run_key = ?")
            args.append(run_key)
        if before is not None:
            where.append("finished_at < ?")
            args.append(before)
        if after is not None:
            where.append("finished_at >= ?")
            args.append(after)
        condition = " AND ".join(where)
        if progress is None:
            rows = self._jobs("SELECT * FROM jobs WHERE %s ORDER BY finished_at, job_id" % condition, args)
        else:
            progress.start(int(self._scalar("SELECT count(*) FROM jobs WHERE %s" % condition, args)))
            rows = []
            for row in self._iter(
                "SELECT * FROM jobs WHERE %s ORDER BY finished_at, job_id" % condition, args, decode_job
            ):
                rows.append(row)
                progress.step()
            progress.done()
        for key in {j["run_key"] for j in rows}:
            self.run_key_info(key)  # deletes nothing under a damaged run key record
        return rows

    # -- writes (call inside write()) ---------------------------------------------------------------------------
    def next_attempt(self, run_key: str) -> int:
        """Reserve the next attempt number of a run key; numbers are never reused, even after `clean`.

        The record is read and checked first and the new number written explicitly (never `last_attempt + 1` in
        SQL, which would carry a damaged value into a job row): a damaged record is refused before anything is
        written."""
        info = self.run_key_info(run_key)
        highest = self._highest_attempt(run_key)  # a record that fell behind its jobs never hands out a used number
        if info is None:
            n = highest + 1
            self.conn.execute("INSERT INTO run_keys (run_key, last_attempt) VALUES (?, ?)", (run_key, n))
            return n
        n = max(int(info["last_attempt"]), highest) + 1
        self.conn.execute("UPDATE run_keys SET last_attempt = ? WHERE run_key = ?", (n, run_key))
        return n

    def _highest_attempt(self, run_key: str) -> int:
        """The highest attempt number among the key's jobs (0 without any), served by (run_key, attempt_no)."""
        row = self._job("SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC LIMIT 1", (run_key,))
        return int(row["attempt_no"]) if row is not None else 0

    def insert(self, job: Mapping[str, Any]) -> None:
        """Insert a job row (call inside write()): a JobRow, or some of its columns (the others take the schema's
        default, as a history seeded by a test or a bench does)."""
        row = encode(job)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            self.conn.execute("INSERT INTO jobs (%s) VALUES (%s)" % (cols, marks), list(row.values()))
        except sqlite3.IntegrityError:
            raise InconsistentState("run key %r already has an active job" % job["run_key"]) from None

    def update(
        self,
        job_id: str,
        fields: dict[str, Any],
        only_if_status: Sequence[str] = (),
        only_if: dict[str, Any] | None = None,
    ) -> bool:
        """Update a job; with `only_if_status`, only while it is in one of those states, and with `only_if`, only
        while those columns still hold those values (a compare-and-set). True when a row changed."""
        row = encode(fields)
        sets = ", ".join("%s = ?" % c for c in row)
        sql = "UPDATE jobs SET %s WHERE job_id = ?" % sets
        args = list(row.values()) + [job_id]
        if only_if_status:
            sql += " AND status IN (%s)" % ", ".join("?" for _ in only_if_status)
            args.extend(only_if_status)
        for column, value in (only_if or {}).items():
            sql += " AND %s IS ?" % column
            args.append(value)
        changed: int = self.conn.execute(sql, args).rowcount
        return changed > 0

    def set_unlock(self, run_key: str, reason: str | None, allowed_at: int, expires_at: int | None) -> None:
        """Record a pending unlock; a key whose record is missing (an imported history) gets one, so an unlock that
        answers `unlocked: true` is always stored."""
        self.conn.execute(
            "INSERT INTO run_keys (run_key, last_attempt, unlock_reason, unlock_allowed_at, unlock_expires_at, "
            "unlock_pending) VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (run_key) DO UPDATE SET "
            "unlock_reason = excluded.unlock_reason, unlock_allowed_at = excluded.unlock_allowed_at, "
            "unlock_expires_at = excluded.unlock_expires_at, unlock_pending = 1",
            (run_key, self._highest_attempt(run_key), reason, allowed_at, expires_at),
        )

    def after_rollback(self, action: Callable[[], None]) -> None:
        """Run `action` if the open write transaction rolls back (an undo for something done outside the
        database, such as a lock file made for a row that will not exist)."""
        if self.conn.in_transaction:
            self._undo.append(action)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the open write transaction commits (at once outside one; never if it rolls back).

        For side effects outside the database that must not happen before the database holds what replaces them,
        such as deleting a result file once the result is committed."""
        if self.conn.in_transaction:
            self._after.append(action)
        else:
            action()

    def consume_unlock(self, run_key: str) -> None:
        self.conn.execute("UPDATE run_keys SET unlock_pending = 0 WHERE run_key = ?", (run_key,))

    def delete(self, jobs: Sequence[JobRow], progress: Any = None) -> None:
        """Delete jobs (call inside write()). The requests they answered are kept, with the job's final status: a
        caller repeating one of them is told the job was cleaned, and nothing runs again (commands.start).
        `progress` is told each batch deleted."""
        batch = 10000
        for i in range(0, len(jobs), batch):
            part = jobs[i : i + batch]
            self.conn.executemany(
                "UPDATE start_requests SET job_status = ? WHERE job_id = ?", [(j["status"], j["job_id"]) for j in part]
            )
            ids = [(j["job_id"],) for j in part]
            self.conn.executemany("DELETE FROM watch_cursors WHERE job_id = ?", ids)
            self.conn.executemany("DELETE FROM jobs WHERE job_id = ?", ids)
            if progress is not None:
                progress.step(len(part))

    # -- host tools: ls, doctor, metrics (tests/cli/test_host_tools.py checks each plan uses an index) -------------
    def _iter(self, sql: str, args: Sequence[Any], decode: Callable[[sqlite3.Row], Record]) -> Iterator[Record]:
        """Rows as _many gives them (each checked by `decode`), read one at a time, so a caller can stop early."""
        try:
            for row in self.conn.execute(sql, args):
                yield decode(row)
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None
        except (ValueError, TypeError, UnicodeError, OverflowError) as e:
            raise OrchesjobError(
                "the database %s holds a damaged job record (%s); it was left untouched" % (self.path, e),
                error_type="corrupt_database",
            ) from None

    def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            row = self.conn.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None
        return row[0] if row is not None else None

    def recent(self, limit: int, run_key: str | None = None) -> list[JobRow]:
        """The `limit` latest jobs by start time, newest first (index jobs_started_at; rowid, the insertion order,
        breaks ties within a second), or with `run_key` that key's latest attempts (index jobs_run_key_attempt)."""
        if run_key is not None:
            return self._jobs("SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC LIMIT ?", (run_key, limit))
        return self._jobs("SELECT * FROM jobs ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,))

    def attempt(self, run_key: str, attempt_no: int) -> JobRow | None:
        """Attempt `attempt_no` of a run key (index jobs_run_key_attempt)."""
        return self._job("SELECT * FROM jobs WHERE run_key = ? AND attempt_no = ?", (run_key, attempt_no))

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` job ids that start with `prefix`, in order: a range of the primary key's index."""
        try:
            rows = self.conn.execute(
                "SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? ORDER BY job_id LIMIT ?",
                (prefix, _after_prefix(prefix), limit),
            ).fetchall()
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None
        return [str(r[0]) for r in rows]

    def id_neighbours(self, job_id: str) -> tuple[str | None, str | None]:
        """The job ids just before and just after `job_id` in the primary key's order: whatever shares a prefix
        with it is between them, so they say how much of it is unique."""
        before = self._scalar("SELECT job_id FROM jobs WHERE job_id < ? ORDER BY job_id DESC LIMIT 1", (job_id,))
        after = self._scalar("SELECT job_id FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT 1", (job_id,))
        return before, after

    def with_key_prefix(self, prefix: str, limit: int, statuses: Sequence[str] | None = None) -> list[JobRow]:
        """The latest `limit` jobs by start time whose run key starts with `prefix` (optionally of these statuses).

        Two indexes can serve it and SQLite picks by its statistics: the run key's range (then a sort of what
        matched), or the start-time index read backwards until `limit` rows matched."""
        where = "run_key >= ? AND run_key < ?"
        args: list[Any] = [prefix, _after_prefix(prefix)]
        if statuses:
            where += " AND status IN (%s)" % ", ".join("?" for _ in statuses)
            args += list(statuses)
        return self._jobs(
            "SELECT * FROM jobs WHERE %s ORDER BY started_at DESC, rowid DESC LIMIT ?" % where, args + [limit]
        )

    def latest_with_status(self, status: str, limit: int) -> list[JobRow]:
        """The `limit` jobs of a terminal status that finished last (a range of jobs_status_finished_at)."""
        return self._jobs(
            "SELECT * FROM jobs WHERE status = ? ORDER BY finished_at DESC, rowid DESC LIMIT ?", (status, limit)
        )

    def stopping(self) -> list[JobRow]:
        """ABORTED jobs whose abort has not finished (no finish time yet): index jobs_status_finished_at."""
        return self._jobs("SELECT * FROM jobs WHERE status = 'ABORTED' AND finished_at IS NULL", ())

    def count_by_status(self) -> dict[str, int]:
        """Jobs per status, without reading the history row by row.

        The total is SQLite's count of a b-tree (it sums page headers); every status but SUCCEEDED is counted on its
        range of jobs_status_finished_at; SUCCEEDED, nearly all of a long history, is what is left. So the cost
        grows with the jobs that did not succeed, not with the history. (A status value no orchesjob writes would be
        counted as SUCCEEDED.)"""
        total = self._scalar("SELECT count(*) FROM jobs")
        counts = {
            s: self._scalar("SELECT count(*) FROM jobs WHERE status = ?", (s,))
            for s in ACTIVE + TERMINAL
            if s != "SUCCEEDED"
        }
        counts["SUCCEEDED"] = max(0, total - sum(counts.values()))
        return {s: counts[s] for s in ACTIVE + TERMINAL}

    def count_finished_since(self, since: int) -> dict[str, int]:
        """Jobs of each terminal status that finished at or after `since` (ranges of jobs_status_finished_at)."""
        return {
            s: self._scalar("SELECT count(*) FROM jobs WHERE status = ? AND finished_at >= ?", (s, since))
            for s in TERMINAL
        }

    def finished_since(self, since: int) -> Iterator[dict[str, Any]]:
        """Jobs that finished at or after `since`, latest first, read lazily (a range of jobs_finished_at): the
        columns metrics needs, checked like every row."""
        return self._iter(
            "SELECT job_id, run_key, attempt_no, status, exit_code, signal, started_at, finished_at FROM jobs "
            "WHERE finished_at >= ? ORDER BY finished_at DESC, rowid DESC",
            (since,),
            decode,
        )

    def job_ids(self) -> Iterator[str]:
        """Every job id, streamed from the primary key's index alone (a covering scan, no table row is read)."""
        try:
            for (job_id,) in self.conn.execute("SELECT job_id FROM jobs"):
                yield str(job_id)
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None

    def launched(self, job_ids: Sequence[str] | None = None) -> Iterator[str]:
        """The ids among `job_ids` (primary key lookups, in batches) of jobs whose command was launched; without
        `job_ids`, of every job (a scan of the table: doctor uses it only when thousands of jobs lack logs)."""
        try:
            if job_ids is None:
                for (job_id,) in self.conn.execute("SELECT job_id FROM jobs WHERE target_pid IS NOT NULL"):
                    yield str(job_id)
                return
            for i in range(0, len(job_ids), 500):
                batch = list(job_ids[i : i + 500])
                sql = "SELECT job_id FROM jobs WHERE job_id IN (%s) AND target_pid IS NOT NULL" % ", ".join(
                    "?" for _ in batch
                )
                for (job_id,) in self.conn.execute(sql, batch):
                    yield str(job_id)
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None

    def tables_named(self, names: Sequence[str]) -> list[str]:
        """Which of `names` are tables of this database."""
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (%s) ORDER BY name" % ", ".join(
            "?" for _ in names
        )
        try:
            return [str(r[0]) for r in self.conn.execute(sql, list(names)).fetchall()]
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None

    def schema_version(self) -> int:
        return int(self._scalar("PRAGMA user_version"))

    def quick_check(self) -> list[str]:
        """SQLite's PRAGMA quick_check: ["ok"], or the problems it found (at most 20)."""
        try:
            return [str(r[0]) for r in self.conn.execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as e:
            return [str(e)]

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and truncate it (loses nothing); False while a reader still
        needs the log, which PRAGMA wal_checkpoint then leaves partly in place."""
        try:
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise database_error(e, self.path) from None
        return not busy


class _Transaction:
    """`with store.write():` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (contextlib costs start-up)."""

    def __init__(self, store: Store, wait: float | None) -> None:
        self.store = store
        self.wait = wait
        self.outer = False

    def _busy(self, seconds: float) -> None:
        self.store.conn.execute("PRAGMA busy_timeout=%d" % int(seconds * 1000))

    def __enter__(self) -> Store:
        conn = self.store.conn
        if conn.in_transaction:
            return self.store
        if self.store.readonly:
            # Another state directory's database (places.py), read as found: a reader shows what it found out
            # without recording it, as when the lock is busy. Nothing that must write gets such a store.
            raise LockTimeout("the database %s is only read here" % self.store.path)
        if self.store.legacy is not None:
            if self.wait is not None:
                # A reader recording what it found out (a LOST verdict): reading commands never upgrade, so it shows
                # what it found without recording it, as when the lock is busy.
                raise LockTimeout(
                    "the database %s is still orchesjob %s's; only a command that writes upgrades it"
                    % (self.store.path, self.store.legacy)
                )
            self.store._upgrade_legacy()
        elif self.wait is None:
            self.store.name_left_backup()
        if self.wait is not None:
            self._busy(self.wait)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise database_error(e, self.store.path) from None
        finally:
            if self.wait is not None:
                self._busy(lock_timeout())
        self.outer = True
        return self.store

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if not self.outer:
            return False
        conn = self.store.conn
        after, self.store._after = self.store._after, []
        undo, self.store._undo = self.store._undo, []
        if exc_type is not None:
            _rollback(conn)
            for action in undo:
                action()
            return False
        try:
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            _rollback(conn)
            for action in undo:
                action()
            raise database_error(e, self.store.path) from None
        for action in after:
            action()
        return False


_URI_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~")


def uri_path(path: str) -> str:
    """`path` percent-encoded for an SQLite `file:` URI (every byte but letters, digits and `/-._~`), as
    urllib.parse.quote would: importing urllib.parse (it imports re, enum and ipaddress) would cost a reader more
    than its query on a not-found path, which looks in the other state directories."""
    return "".join(chr(b) if b in _URI_SAFE else "%%%02X" % b for b in os.fsencode(path))


def _after_prefix(prefix: str) -> str:
    """The smallest text after every text that starts with `prefix` (the end of a prefix's range in an index)."""
    return prefix + "\U0010ffff"


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends it by itself on some errors (a full disk), and a
    failing ROLLBACK must not hide the error that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass


def open_store(create: bool) -> Store | None:
    """Open the state database; None when it does not exist and `create` is False (a read on a fresh host)."""
    path = home.prepare(create)
    if path is None:
        return None
    if not os.path.lexists(path):
        if not create:
            return None
        _create_database(path)
    else:
        _drop_creation_name(path)
    if not home.database_file(path, create):  # a plain file of ours, not a link (nor are its -wal and -shm)
        return None
    return Store(path)


def _drop_creation_name(path: str) -> None:
    """Remove the second name a creation can leave on the database: a kill between `_create_database`'s link and
    its unlink leaves `<path>.new-<pid>-<hex>` as another name of the very same file, and a database with two names
    is refused (home.py). Only a name of that form in the state directory that is the same file (device and inode)
    is removed: the database keeps its content and its own name; anything else stays and is refused as before."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if st.st_nlink < 2:
        return  # the usual case: one stat
    folder, base = os.path.split(path)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for name in names:
        if not name.startswith(base + ".new-") or name.endswith(("-wal", "-shm", "-journal")):
            continue
        other = os.path.join(folder, name)
        try:
            found = os.lstat(other)
            if (found.st_dev, found.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(other)
        except OSError:
            pass  # gone meanwhile, or not ours to remove: the refusal below names the links


def _create_database(path: str) -> None:
    """Put a complete, empty database at `path` in one step, unless one is there already.

    Never an empty file that processes then set up together: a new file switched to WAL keeps its first pages in
    the -wal file until a checkpoint, while the main file is still empty, and SQLite deletes the -wal of a database
    whose main file is empty when it opens it; with many first commands at once (a burst of tasks on a fresh host),
    jobs they had committed were gone. So the schema is made in a private file of this process, in WAL mode, then
    checkpointed into that file (the -wal must be empty and gone), and the file is hard-linked into place, which
    fails if another process got there first (its database is used; ours is dropped). A file system without hard
    links gets the empty file instead, as before.
    """
    import errno

    tmp = "%s.new-%d-%s" % (path, os.getpid(), os.urandom(4).hex())
    home.create_private_file(tmp)
    try:
        fresh = Store(tmp)
        try:
            if fresh._scalar("PRAGMA wal_checkpoint(TRUNCATE)") != 0:
                raise OrchesjobError("could not complete the new database %s" % tmp, error_type="database")
        finally:
            fresh.close()
        if os.path.exists(tmp + "-wal"):
            raise OrchesjobError(
                "the new database %s kept a -wal file after its last connection closed" % tmp, error_type="database"
            )
        from . import processes

        processes.pause_point("database-before-link")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: that one is the database
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise OrchesjobError("cannot create %s: %s" % (path, e.strerror or e), error_type="state_dir") from None
            # a file system without hard links: an empty file of ours, set up by its first opener (Store)
            home.create_private_file(path)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            try:
                os.unlink(leftover)
            except OSError:
                pass  # not there (the usual case for -wal and -shm); a name left on the database is dropped later


def open_store_patiently(seconds: float) -> Store:
    """open_store(create=True), again with backoff while the database stays locked, for up to `seconds`.

    For the two processes that hold a committed job: its supervisor, which would otherwise exit before launching
    (the job LOST for a busy lock), and the `start` that spawned it, which would otherwise answer lock_timeout
    ("nothing was done") for a job that exists. Even in WAL mode a reader can be refused for a while (a writer
    switching the journal mode, a recovery, hundreds of processes at once), and ORCHESJOB_LOCK_TIMEOUT may be short."""
    import time

    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        try:
            store = open_store(create=True)
            assert store is not None  # create=True: it exists or open_store raised
            return store
        except LockTimeout:
            if time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def open_readonly(path: str) -> Store:
    """The database at `path` read-only and as found (doctor): no schema upgrade, nothing created, and closing it
    does not checkpoint the WAL into the file. The caller has checked the file (owner, no link) first."""
    st = Store.__new__(Store)
    st.path = path
    st._after = []
    st._undo = []
    st.legacy = None
    st.readonly = True
    st.foreign = None
    try:
        st.conn = sqlite3.connect(
            "file:%s?mode=ro" % uri_path(path),
            uri=True,
            timeout=lock_timeout(),
            isolation_level=None,
            factory=_Connection,
        )
        st.conn.row_factory = sqlite3.Row
    except sqlite3.DatabaseError as e:
        raise database_error(e, path) from None
    return st


def open_other(path: str) -> Store | None:
    """The database of another state directory (places.py), read-only and as found: orchesjob 1.1.0's presented
    through TEMP views, ours of this or an older schema read as it is. None when it is no database of the caller's
    that this orchesjob can read (a newer schema, someone else's tables)."""
    if not home.database_file(path, create=False):
        return None
    st = open_readonly(path)
    try:
        version = st.schema_version()
        if version == 0:
            from . import legacy
            from .legacy import layout

            if layout.recognise(st) is None:
                st.close()
                return None
            layout.present(st)
            st.legacy = legacy.LEGACY_VERSION
        elif version > SCHEMA_VERSION:
            st.close()
            return None
    except (OrchesjobError, sqlite3.DatabaseError):
        st.close()
        raise
    return st
