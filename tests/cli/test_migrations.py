"""Schema upgrades: a stored database of every released schema version is upgraded and checked field by field.

tests/data/schema-v1.db was written by the CLI at schema version 1 (finished, failed, aborted, LOST and strict jobs,
a pending unlock); tests/data/schema-v1-status.json is what that CLI printed for `status --all` of each key.

The database holds wall-clock times (2026-12-02 18:48 UTC, when it was written): the jobs' start and end times and
the unlock's allowed and expiry times (`unlock --ttl 1d`). What a command does with a key can depend on them (an
unlock is usable only until it expires), so a test that runs commands on it first moves every stored time by one
amount, keeping the differences between them, so that the database looks written a chosen time before the test runs.
"""

import hashlib
import json
import shutil
import sqlite3
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchesjob.store import SCHEMA_VERSION
from tests.support.cli import check_error, check_ok, cli_argv, cli_env, run_cli

DATA = Path(__file__).resolve().parents[1] / "data"
# Fields whose values depend on where the database lives now, or that did not exist at version 1.
MOVED = ("stdout_file", "stderr_file")
NEW_IN_V2 = {"liveness": None, "request_id": None, "owner": None, "pid_namespace": None}


# Every wall-clock time (whole epoch seconds) the version 1 schema stores, by table. All but unlock_expires_at (a
# time to come: allowed_at + the TTL) are moments at which the CLI wrote the database.
V1_TIMES = {
    "jobs": ("started_at", "finished_at", "updated_at", "aborted_at"),
    "run_keys": ("unlock_allowed_at", "unlock_expires_at"),
}
WRITE_TIMES = [(table, col) for table, cols in V1_TIMES.items() for col in cols if col != "unlock_expires_at"]
# The times `status` prints, each also as <field>_iso.
STATUS_TIMES = ("started_at", "finished_at", "updated_at", "aborted_at")
HOUR = 3600


def _v1_home(home: Path, written_ago: "int | None" = HOUR) -> int:
    """A home holding a copy of the version 1 database; returns how far its times were moved (seconds).

    Every stored time moves by one amount, so that the database's last write lies `written_ago` seconds (an hour
    unless told) before now; written_ago=None keeps the copy byte for byte as stored.
    """
    home.mkdir(mode=0o700)
    db = home / "orchesjob.db"
    shutil.copy(DATA / "schema-v1.db", db)
    db.chmod(0o600)
    (home / "logs").mkdir(mode=0o700)
    if written_ago is None:
        return 0
    c = sqlite3.connect(str(db))
    try:
        latest = max(
            c.execute("SELECT MAX(%s) FROM %s" % (col, table)).fetchone()[0] or 0 for table, col in WRITE_TIMES
        )
        shift = int(time.time()) - written_ago - latest
        with c:
            for table, cols in V1_TIMES.items():
                c.execute("UPDATE %s SET %s" % (table, ", ".join("%s = %s + %d" % (col, col, shift) for col in cols)))
    finally:
        c.close()
    return shift


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _unlock_of(home: Path, run_key: str) -> tuple:
    c = sqlite3.connect(str(home / "orchesjob.db"))
    try:
        return c.execute(
            "SELECT unlock_pending, unlock_allowed_at, unlock_expires_at FROM run_keys WHERE run_key = ?", (run_key,)
        ).fetchone()
    finally:
        c.close()


def _version(home: Path) -> int:
    c = sqlite3.connect(str(home / "orchesjob.db"))
    try:
        return c.execute("PRAGMA user_version").fetchone()[0]
    finally:
        c.close()


@pytest.mark.parametrize("written_ago", [None, HOUR], ids=["as-stored", "times-moved"])
def test_a_version_1_database_is_upgraded_and_every_field_kept(home, written_ago):
    """Every field `status` showed at version 1 is shown again after the upgrade.

    as-stored: the copy byte for byte, compared with what the version 1 CLI printed. times-moved: the copy whose
    times the other tests move (see _v1_home); every time `status` shows has moved by that one amount, and nothing
    else changed, so the moved database is still the one version 1 wrote.
    """
    shift = _v1_home(home, written_ago)
    assert (shift == 0) == (written_ago is None)
    expected = json.loads((DATA / "schema-v1-status.json").read_text())
    for run_key, attempts in expected.items():
        now = check_ok(run_cli(home, "status", "--all", "--run-key", run_key))
        assert len(now) == len(attempts)
        for old, new in zip(attempts, now):
            for field in STATUS_TIMES:
                if old[field] is not None:
                    assert _iso(old[field]) == old[field + "_iso"], (run_key, field)  # how version 1 wrote them
                    old[field] += shift
                    old[field + "_iso"] = _iso(old[field])
                else:
                    assert old[field + "_iso"] is None, (run_key, field)
            for field, value in old.items():
                if field in MOVED:
                    continue
                assert new[field] == value, (run_key, old["attempt_no"], field, new[field], value)
            for field, value in NEW_IN_V2.items():
                assert new[field] == value, (field, new[field])
    assert _version(home) == SCHEMA_VERSION


@pytest.mark.parametrize(
    "written_ago, unlock_pending",
    [(HOUR, True), (25 * HOUR, False)],
    ids=["unlock-pending", "unlock-expired"],
)
def test_an_upgraded_database_works_for_every_command(home, written_ago, unlock_pending):
    """Every command works on an upgraded database, and the key `backup`'s unlock (given at version 1 with a TTL of
    one day) keeps its meaning: written an hour ago, it is still pending and lets one `start --strict` start a new
    job; written 25 hours ago, it expired an hour ago and `start --strict` returns the key's finished job, as it
    does for a strict key without an unlock (README, `start`)."""
    _v1_home(home, written_ago)
    pending, allowed, expires = _unlock_of(home, "backup")
    assert pending == 1 and expires - allowed == 24 * HOUR
    if unlock_pending:
        assert expires > time.time() + 22 * HOUR
    else:
        assert expires < time.time() - HOUR / 2
    # attempt numbers continue where version 1 left them; strict keys and their pending unlock survive
    nxt = check_ok(run_cli(home, "start", "--run-key", "billing", "--sync", "--request-id", "r", "--", "true"))
    assert nxt["attempt_no"] == 4 and nxt["owner"] == "r"
    first = check_ok(run_cli(home, "start", "--run-key", "backup", "--strict", "--sync", "--", "true"))
    if unlock_pending:
        # the override is used: a new attempt, with the unlock's reason
        assert first["accepted"] is True and first["existing"] is False and first["strict_override_used"] is True
        assert first["override_reason"] == "restore test" and first["attempt_no"] == 2
        assert first["status"] == "SUCCEEDED"
    else:
        # refused: the version 1 job answers for the key, and no new job ran
        assert first["accepted"] is False and first["existing"] is True and first["strict_override_used"] is False
        assert first["job_id"] == "b066d043-c7a6-4f06-b697-866ae527ae15" and first["attempt_no"] == 1
        assert first["override_reason"] is None
    # whatever the first start did, the key is strict again: the next start returns that job
    blocked = check_ok(run_cli(home, "start", "--run-key", "backup", "--strict", "--", "true"))
    assert blocked["existing"] is True and blocked["strict_override_used"] is False
    assert blocked["job_id"] == first["job_id"]
    rerun = check_ok(run_cli(home, "rerun", "--run-key", "nightly-import", "--sync"))
    assert rerun["attempt_no"] == 2 and rerun["env"] == {"DB": "prod"} and rerun["cwd"] == "/tmp"
    cleaned = check_ok(run_cli(home, "clean", "--all"))
    # the 7 version 1 jobs, and the new ones: billing 4, nightly-import 2, and backup 2 if the unlock was used
    assert cleaned["deleted"] == 7 + (3 if unlock_pending else 2) and cleaned["skipped"] == []


def test_concurrent_first_commands_upgrade_once(home):
    _v1_home(home)
    procs = [
        subprocess.Popen(
            cli_argv("start", "--run-key", "k%d" % i, "--sync", "--", "true"),
            env=cli_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (out, err)
        assert json.loads(out)["status"] == "SUCCEEDED"
    assert _version(home) == SCHEMA_VERSION


def test_a_database_from_a_newer_orchesjob_is_refused_and_never_touched(home):
    _v1_home(home)
    db = home / "orchesjob.db"
    c = sqlite3.connect(str(db))
    c.execute("PRAGMA user_version=99")
    c.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (("status", "--run-key", "billing"), ("start", "--run-key", "x", "--", "true"), ("clean", "--all")):
        err = check_error(run_cli(home, *args), 1, "database")
        assert "99" in err["message"] and "(%d)" % SCHEMA_VERSION in err["message"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (home / "orchesjob.db-wal").exists() or (home / "orchesjob.db-wal").stat().st_size == 0


@pytest.mark.parametrize("step", [1, 2])
def test_every_step_of_the_ladder_is_defined(step):
    """The ladder has no gap: each released version has its step to the next one."""
    from orchesjob import migrations, store

    assert set(migrations.STEPS) == set(range(1, store.SCHEMA_VERSION))
    assert step in migrations.STEPS


def test_a_fresh_database_and_an_upgraded_one_have_the_same_schema(home, tmp_path):
    fresh = tmp_path / "fresh"
    check_ok(run_cli(fresh, "start", "--run-key", "a", "--sync", "--", "true"))
    _v1_home(home)
    check_ok(run_cli(home, "start", "--run-key", "a", "--sync", "--", "true"))

    def shape(h: Path):
        c = sqlite3.connect(str(h / "orchesjob.db"))
        try:
            tables = {}
            for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                tables[name] = sorted((r[1], r[2], r[3], r[5]) for r in c.execute("PRAGMA table_info(%s)" % name))
            indexes = sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
            return tables, indexes
        finally:
            c.close()

    assert shape(home) == shape(fresh)
