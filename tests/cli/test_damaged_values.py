"""Damaged values in the state database: every value is checked before it is used, nothing is written after a
damaged one was read, and the answer is corrupt_database (exit 1) with the database file byte for byte as it was.

The damage is made with the sqlite3 module, as a disk error or another program could leave it: values of a type
or range orchesjob never writes in a run_keys row, text that is not UTF-8 in a TEXT column, and a schema entry
whose name is not UTF-8 (SQLite quotes it in its error message, which sqlite3 then cannot decode).
"""

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import check_error, check_ok, run_cli

RUN_KEY_DAMAGE = [
    ("text in unlock_expires_at", "unlock_expires_at = 'soon', unlock_pending = 1"),
    ("a float in unlock_expires_at", "unlock_expires_at = 1.5, unlock_pending = 1"),
    ("a float in unlock_allowed_at", "unlock_allowed_at = 1e300"),
    ("a float last_attempt", "last_attempt = 1.5"),
    ("a text last_attempt", "last_attempt = 'two'"),
    ("a negative last_attempt", "last_attempt = -1"),
    ("a zero last_attempt", "last_attempt = 0"),
    ("a last_attempt with no successor", "last_attempt = 9223372036854775807"),
    ("a blob unlock_reason", "unlock_reason = X'00FF00'"),
    ("unlock_reason that is not UTF-8", "unlock_reason = CAST(X'F1FF' AS TEXT)"),
    ("unlock_pending 2", "unlock_pending = 2"),
    ("a text unlock_pending", "unlock_pending = 'yes'"),
]


def _commands(job_id: str) -> list[list[str]]:
    return [
        ["start", "--run-key", "k", "--", "true"],
        ["start", "--strict", "--run-key", "k", "--", "true"],
        ["start", "--reuse-success", "--run-key", "k", "--", "true"],
        ["unlock", "--run-key", "k", "--reason", "again"],
        ["status", "--run-key", "k"],
        ["status", "--job-id", job_id],
        ["status", "--run-key", "k", "--all"],
        ["rerun", "--run-key", "k"],
        ["rerun", "--job-id", job_id],
        ["clean", "--all"],
        ["clean", "--all", "--dry-run"],
        ["clean", "--job-id", job_id],
    ]


def _digest(path: Path) -> str:
    """The file's sha256; a missing file counts as an empty one (a WAL without frames)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return hashlib.sha256(b"").hexdigest()


def _state(home: Path):
    return (_digest(home / "orchesjob.db"), _digest(home / "orchesjob.db-wal"), sorted(os.listdir(home / "logs")))


@pytest.fixture
def pristine(home: Path, ok, tmp_path: Path):
    """A state directory with a finished strict job under run key `k`, unlocked; its database checkpointed."""
    job = ok("start", "--sync", "--strict", "--run-key", "k", "--", "sh", "-c", "echo done")
    assert job["status"] == "SUCCEEDED"
    ok("unlock", "--run-key", "k", "--reason", "fault test")
    _checkpoint(home / "orchesjob.db")
    return job


def _checkpoint(db: Path) -> None:
    c = sqlite3.connect(str(db))
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        c.close()


def _damaged_copy(home: Path, tmp_path: Path, name: str, *statements: str, writable_schema: bool = False) -> Path:
    h = tmp_path / name
    shutil.copytree(str(home), str(h))
    c = sqlite3.connect(str(h / "orchesjob.db"), isolation_level=None)
    try:
        if writable_schema:
            c.execute("PRAGMA writable_schema = ON")
        for sql in statements:
            c.execute(sql)
    finally:
        c.close()  # the last connection: this checkpoints the WAL into the file
    if not writable_schema:  # (a damaged schema cannot be opened to checkpoint again)
        _checkpoint(h / "orchesjob.db")
    assert not (h / "orchesjob.db-wal").exists() or not (h / "orchesjob.db-wal").stat().st_size
    return h


def _assert_refused_untouched(h: Path, args: list[str], what: str) -> None:
    before = _state(h)
    r = run_cli(h, *args)
    err = check_error(r, 1, "corrupt_database")
    assert str(h / "orchesjob.db") in err["message"], (what, args, err)
    assert _state(h) == before, "%s: orchesjob %s changed the database or launched a job" % (what, " ".join(args))


@pytest.mark.parametrize("what,damage", RUN_KEY_DAMAGE, ids=[d[0] for d in RUN_KEY_DAMAGE])
def test_a_damaged_run_key_record_is_refused_and_left_untouched(home, tmp_path, pristine, what, damage):
    h = _damaged_copy(home, tmp_path, "damaged", "UPDATE run_keys SET %s WHERE run_key = 'k'" % damage)
    for args in _commands(pristine["job_id"]):
        _assert_refused_untouched(h, args, what)


def test_a_float_last_attempt_never_reaches_a_job_row(home, tmp_path, pristine):
    """The hole this closes: `last_attempt + 1` in SQL made a job with attempt 2.5, committed and launched it, and
    only then was corrupt_database reported."""
    h = _damaged_copy(home, tmp_path, "float", "UPDATE run_keys SET last_attempt = 1.5")
    for args in (["start", "--run-key", "k", "--", "true"], ["rerun", "--run-key", "k", "--sync"]):
        _assert_refused_untouched(h, args, "a float last_attempt")
    c = sqlite3.connect("file:%s?mode=ro" % (h / "orchesjob.db"), uri=True)
    try:
        assert c.execute("SELECT attempt_no FROM jobs").fetchall() == [(1,)]
    finally:
        c.close()


def test_attempt_numbers_still_count_up(home, ok, run):
    for n in (1, 2, 3):
        assert ok("start", "--sync", "--run-key", "count", "--", "true")["attempt_no"] == n
        ok("clean", "--all")  # numbers are never reused, even after clean
    c = sqlite3.connect(str(home / "orchesjob.db"))
    try:
        assert c.execute("SELECT last_attempt FROM run_keys WHERE run_key = 'count'").fetchone() == (3,)
    finally:
        c.close()


TEXT_DAMAGE = [
    ("a job's status", "UPDATE jobs SET status = CAST(X'F1FF' AS TEXT)"),
    ("a job's run key", "UPDATE jobs SET run_key = CAST(X'6BFF' AS TEXT)"),
    ("a job's stdout file", "UPDATE jobs SET stdout_file = CAST(X'2FF1' AS TEXT)"),
    ("a job's end reason", "UPDATE jobs SET end_reason = CAST(X'C0' AS TEXT)"),
    ("a job's status that says locked", "UPDATE jobs SET status = CAST(X'6C6F636B6564FF' AS TEXT)"),  # not busy
]


@pytest.mark.parametrize("what,damage", TEXT_DAMAGE, ids=[d[0] for d in TEXT_DAMAGE])
def test_text_that_is_not_utf8_is_corrupt_database(home, tmp_path, pristine, what, damage):
    h = _damaged_copy(home, tmp_path, "text", damage)
    commands = _commands(pristine["job_id"]) + [
        ["logs", "--job-id", pristine["job_id"]],
        ["wait", "--job-id", pristine["job_id"], "--timeout", "1"],
        ["abort", "--job-id", pristine["job_id"]],
    ]
    if "run key" in what:  # the job no longer answers to `k`; by its id it is still found, and refused
        commands = [a for a in commands if "--job-id" in a or a[0] == "clean"]
    for args in commands:
        _assert_refused_untouched(h, args, "text that is not UTF-8 in " + what)


@pytest.mark.parametrize("entry", ["start_requests", "jobs_finished_at"])
def test_a_schema_name_that_is_not_utf8_is_corrupt_database(home, tmp_path, pristine, entry):
    """SQLite quotes the damaged name in its error; sqlite3 cannot decode that message and raised
    UnicodeDecodeError, which became an internal error."""
    h = _damaged_copy(
        home,
        tmp_path,
        "schema",
        "UPDATE sqlite_master SET name = CAST(X'F1FF' AS TEXT) WHERE name = '%s'" % entry,
        writable_schema=True,
    )
    for args in _commands(pristine["job_id"]) + [
        ["status", "--running"],
        ["start", "--run-key", "new", "--", "true"],
        ["logs", "--run-key", "k", "--json"],
    ]:
        _assert_refused_untouched(h, args, "a schema entry named in bytes that are not UTF-8")


@pytest.mark.parametrize(
    "table,column,renamed",
    [
        ("jobs", "stdout_file", "stdout_fime"),
        ("jobs", "attempt_no", "attempt_nO"),
        ("run_keys", "unlock_expires_at", "unlock_expirEs_at"),
        ("run_keys", "last_attempt", "last_attemp"),
    ],
)
def test_a_column_renamed_by_damage_to_the_schema_is_corrupt_database(home, tmp_path, pristine, table, column, renamed):
    """A flipped byte in the schema's text renames a column: its value is simply missing from the row."""
    h = _damaged_copy(
        home,
        tmp_path,
        "renamed",
        "UPDATE sqlite_master SET sql = replace(sql, '%s', '%s') WHERE name = '%s'" % (column, renamed, table),
        writable_schema=True,
    )
    for args in _commands(pristine["job_id"]):
        _assert_refused_untouched(h, args, "%s.%s renamed" % (table, column))


@pytest.mark.parametrize("size", [1, 16, 50, 99, 100, 511])
def test_a_database_cut_below_one_page_is_not_taken_for_a_new_one(home, tmp_path, pristine, size):
    """SQLite reads a file shorter than a page as a database without pages, so the schema could be created over
    what is left of it (a read-only `status` once did): it is corrupt_database, and the file stays as it is."""
    h = _damaged_copy(home, tmp_path, "cut")
    db = h / "orchesjob.db"
    db.write_bytes(db.read_bytes()[:size])
    for args in _commands(pristine["job_id"]) + [["status", "--running"], ["start", "--run-key", "new", "--", "true"]]:
        _assert_refused_untouched(h, args, "a database cut to %d bytes" % size)


def test_a_sound_database_still_answers(home, tmp_path, pristine):
    """The checks refuse damage only: the same commands on the undamaged copy succeed."""
    h = _damaged_copy(home, tmp_path, "sound")
    for args in (
        ["status", "--run-key", "k"],
        ["status", "--job-id", pristine["job_id"]],
        ["status", "--run-key", "k", "--all"],
        ["clean", "--all", "--dry-run"],
        ["start", "--strict", "--sync", "--run-key", "k", "--", "true"],
        ["unlock", "--run-key", "k", "--reason", "again"],
        ["rerun", "--run-key", "k", "--sync"],
    ):
        check_ok(run_cli(h, *args))
    jobs = check_ok(run_cli(h, "status", "--run-key", "k", "--all"))
    assert [j["attempt_no"] for j in jobs] == [3, 2, 1]
