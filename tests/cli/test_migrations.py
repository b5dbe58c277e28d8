"""Schema upgrades: a stored database of every released schema version is upgraded and checked field by field.

tests/data/schema-v1.db was written by the CLI at schema version 1 (finished, failed, aborted, LOST and strict jobs,
a pending unlock); tests/data/schema-v1-status.json is what that CLI printed for `status --all` of each key.
"""

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_helpers import check_error, check_ok, cli_argv, cli_env, run_cli

from orchesjob.store import SCHEMA_VERSION

DATA = Path(__file__).resolve().parents[1] / "data"
# Fields whose values depend on where the database lives now, or that did not exist at version 1.
MOVED = ("stdout_file", "stderr_file")
NEW_IN_V2 = {"liveness": None, "request_id": None, "owner": None, "pid_namespace": None}


def _v1_home(home: Path) -> Path:
    home.mkdir(mode=0o700)
    shutil.copy(DATA / "schema-v1.db", home / "orchesjob.db")
    (home / "orchesjob.db").chmod(0o600)
    (home / "logs").mkdir(mode=0o700)
    return home


def _version(home: Path) -> int:
    c = sqlite3.connect(str(home / "orchesjob.db"))
    try:
        return c.execute("PRAGMA user_version").fetchone()[0]
    finally:
        c.close()


def test_a_version_1_database_is_upgraded_and_every_field_kept(home):
    _v1_home(home)
    expected = json.loads((DATA / "schema-v1-status.json").read_text())
    for run_key, attempts in expected.items():
        now = check_ok(run_cli(home, "status", "--all", "--run-key", run_key))
        assert len(now) == len(attempts)
        for old, new in zip(attempts, now):
            for field, value in old.items():
                if field in MOVED:
                    continue
                assert new[field] == value, (run_key, old["attempt_no"], field, new[field], value)
            for field, value in NEW_IN_V2.items():
                assert new[field] == value, (field, new[field])
    assert _version(home) == SCHEMA_VERSION


def test_an_upgraded_database_works_for_every_command(home, tmp_path):
    _v1_home(home)
    # attempt numbers continue where version 1 left them; strict keys and their pending unlock survive
    nxt = check_ok(run_cli(home, "start", "--run-key", "billing", "--sync", "--request-id", "r", "--", "true"))
    assert nxt["attempt_no"] == 4 and nxt["owner"] == "r"
    override = check_ok(run_cli(home, "start", "--run-key", "backup", "--strict", "--sync", "--", "true"))
    assert override["accepted"] is True and override["strict_override_used"] is True
    assert override["override_reason"] == "restore test"
    blocked = check_ok(run_cli(home, "start", "--run-key", "backup", "--strict", "--", "true"))
    assert blocked["existing"] is True
    rerun = check_ok(run_cli(home, "rerun", "--run-key", "nightly-import", "--sync"))
    assert rerun["attempt_no"] == 2 and rerun["env"] == {"DB": "prod"} and rerun["cwd"] == "/tmp"
    cleaned = check_ok(run_cli(home, "clean", "--all"))
    assert cleaned["deleted"] == 7 + 3 and cleaned["skipped"] == []


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
