"""orchesjob 1.1.0, the program this one replaces: its state directory, read and upgraded; its jobs, still watched.

1.1.0 kept its own schema (tables jobs, run_keys, strict_overrides, schema_meta; `PRAGMA user_version` 0). The
store (store.py) decides when this room is needed and holds the transaction; the rules for 1.1.0's data live here:

- layout.py: recognising 1.1.0's database, and reading it as ours through TEMP views (nothing written);
- upgrade.py: the one-transaction upgrade to our schema that the first writing command makes, with its backup;
- rows.py: 1.1.0's conventions in a job row (its exit codes), also in rows its workers write after the upgrade;
- workers.py: recognising a 1.1.0 worker process that still runs a job, so that the job can be judged by evidence.

Nothing outside this package knows 1.1.0's tables or processes; nothing here is imported by a CLI that never meets
a 1.1.0 database or job (start-up time).
"""

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
# Tables that only orchesjob 1.1.0 creates (its `jobs` and `run_keys` share names with ours): found in an upgraded
# database, they say 1.1.0 was run on it since (doctor).
STRAY_1_1_0_TABLES = ("strict_overrides", "schema_meta")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol

    from ..rows import JobRow

    class Database(Protocol):
        """What this package needs of the state database (store.Store is one). Named by what it does, not imported
        from the store: the store opens the transactions in which this package is called, so it is the one above."""

        path: str
        conn: Any

        def executescript(self, script: str) -> None: ...

        def create_schema(self) -> None: ...

        def copy_to(self, path: str, progress: Any = None) -> None: ...

        def select_jobs(self, sql: str, args: Sequence[Any]) -> list[JobRow]: ...
