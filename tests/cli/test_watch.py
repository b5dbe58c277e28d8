"""`wait --watch`: many jobs in one call, each answered on its own, with fair log budgets and delivered cursors."""

import json
import os
import sqlite3
import subprocess
import time

import pytest

from orchesjob.store import SCHEMA_VERSION
from orchesjob.watch import share
from tests.support.cli import cli_argv, cli_env


def _by_id(answer):
    return {j["job_id"]: j for j in answer["jobs"]}


def test_one_call_answers_each_job_and_returns_on_the_first_news(start_job, ok, tmp_path):
    go = tmp_path / "go"
    quiet = start_job("quiet", "sleep", "60")
    talker = start_job("talker", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; echo hello; sleep 60', str(go))
    ender = start_job("ender", "sh", "-c", "sleep 60")
    # nothing new anywhere: the call runs into its timeout and answers every job briefly, in the order asked
    w = ok(
        "wait",
        "--watch",
        quiet["job_id"] + ":0:0",
        "--watch",
        talker["job_id"] + ":0:0",
        "--watch",
        ender["job_id"],
        "--timeout",
        "1",
    )
    assert w["timed_out"] is True
    assert [j["job_id"] for j in w["jobs"]] == [quiet["job_id"], talker["job_id"], ender["job_id"]]
    assert all(j["news"] is False and j["status"] == "RUNNING" and j["active"] is True for j in w["jobs"])
    assert all("logs" not in j and "command" not in j for j in w["jobs"])
    # one job writes: the call returns with its bytes; the others are answered as unchanged
    go.touch()
    t0 = time.monotonic()
    w = ok(
        "wait",
        "--watch",
        quiet["job_id"] + ":0:0",
        "--watch",
        talker["job_id"] + ":0:0",
        "--watch",
        ender["job_id"],
        "--timeout",
        "60",
    )
    assert time.monotonic() - t0 < 45 and w["timed_out"] is False
    got = _by_id(w)
    assert got[talker["job_id"]]["news"] is True
    assert got[talker["job_id"]]["logs"]["stdout"]["data"] == "hello\n"
    assert got[talker["job_id"]]["logs"]["stdout"]["next_offset"] == 6
    assert got[talker["job_id"]]["run_key"] == "talker"  # a job with news is answered whole
    assert got[quiet["job_id"]]["news"] is False and got[ender["job_id"]]["news"] is False


def test_the_end_of_any_job_wakes_the_call(start_job, ok, run, tmp_path):
    go = tmp_path / "go"
    long = start_job("long", "sleep", "60")
    short = start_job("short", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; exit 7', str(go))
    go.touch()
    t0 = time.monotonic()
    w = ok("wait", "--watch", long["job_id"], "--watch", short["job_id"], "--timeout", "60")
    assert time.monotonic() - t0 < 45 and w["timed_out"] is False
    got = _by_id(w)
    assert got[short["job_id"]]["status"] == "FAILED" and got[short["job_id"]]["exit_code"] == 7
    assert got[short["job_id"]]["news"] is True and got[long["job_id"]]["news"] is False
    # an aborted job ends the call too, with its record
    ok("abort", "--job-id", long["job_id"])
    w = ok("wait", "--watch", long["job_id"], "--timeout", "60")
    assert w["jobs"][0]["status"] == "ABORTED" and w["jobs"][0]["news"] is True


def test_gather_collects_output_written_after_the_first_news_but_an_end_answers_at_once(start_job, ok, tmp_path):
    go, go_later = tmp_path / "go", tmp_path / "go-later"
    wait_go = 'while [ ! -e "$0" ]; do sleep 0.05; done; '
    first = start_job("first", "sh", "-c", wait_go + "echo early; sleep 60", str(go))
    later = start_job("later", "sh", "-c", wait_go + "echo late; sleep 60", str(go_later))
    watch = ["--watch", first["job_id"] + ":0:0", "--watch", later["job_id"] + ":0:0", "--timeout", "60"]
    go.touch()
    # without --gather the first line answers the call; the other job has written nothing yet
    try:
        w = ok("wait", *watch)
    finally:
        go_later.touch()  # its line comes after the first answer
    got = _by_id(w)
    assert got[first["job_id"]]["logs"]["stdout"]["data"] == "early\n" and got[later["job_id"]]["news"] is False
    # with --gather the call goes on collecting after the first line, and brings both
    t0 = time.monotonic()
    w = ok("wait", *watch, "--gather", "6")
    took = time.monotonic() - t0
    got = _by_id(w)
    assert got[first["job_id"]]["logs"]["stdout"]["data"] == "early\n"
    assert got[later["job_id"]]["logs"]["stdout"]["data"] == "late\n"
    assert 5 <= took < 45 and w["timed_out"] is False  # it gathered for the whole window, then answered
    # the end of a job is not held back by the window: the call answers as soon as it ends
    ender = start_job("ender", "sh", "-c", "echo bye; sleep 1; exit 3")
    t0 = time.monotonic()
    w = ok(
        "wait",
        "--watch",
        first["job_id"] + ":6:0",
        "--watch",
        ender["job_id"] + ":0:0",
        "--timeout",
        "60",
        "--gather",
        "30",
    )
    assert time.monotonic() - t0 < 20, "an end waited for the gather window"
    got = _by_id(w)
    assert got[ender["job_id"]]["status"] == "FAILED" and got[ender["job_id"]]["logs"]["stdout"]["data"] == "bye\n"


def test_an_unknown_or_cleaned_job_does_not_spoil_the_others(start_job, ok, run):
    live = start_job("live", "sh", "-c", "echo up; sleep 60")
    done = start_job("done", "true", opts=("--sync",))
    ok("clean", "--job-id", done["job_id"])
    w = ok(
        "wait",
        "--watch",
        "no-such-job",
        "--watch",
        done["job_id"] + ":0:0:0:0:c",
        "--watch",
        live["job_id"] + ":0:0",
        "--timeout",
        "30",
    )
    assert w["timed_out"] is False
    got = _by_id(w)
    for gone in ("no-such-job", done["job_id"]):
        assert got[gone]["news"] is True and got[gone]["error"] == "not_found" and got[gone]["exit_code"] == 3
        assert "not found" in got[gone]["message"]
    assert got[live["job_id"]]["status"] == "RUNNING"
    # the live job is answered as usual in the same call (its output was already there)
    assert got[live["job_id"]]["logs"]["stdout"]["data"] == "up\n"


def test_log_bytes_are_bounded_per_stream_and_in_total_and_shared_fairly(start_job, ok):
    big = "head -c 300000 /dev/zero | tr '\\0' x; sleep 60"
    a = start_job("big-a", "sh", "-c", big)
    b = start_job("big-b", "sh", "-c", big)
    small = start_job("small", "sh", "-c", "echo tiny; sleep 60")
    for j in (a, b):  # both have written everything before the call
        deadline = time.monotonic() + 30
        while ok("logs", "--job-id", j["job_id"], "--json", "--limit", "1")["size"] < 300000:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    w = ok(
        "wait",
        "--watch",
        a["job_id"] + ":0:0",
        "--watch",
        b["job_id"] + ":0:0",
        "--watch",
        small["job_id"] + ":0:0",
        "--max-bytes",
        "100000",
        "--max-total-bytes",
        "65536",
    )
    got = _by_id(w)
    sizes = {k: len(got[k]["logs"]["stdout"]["data"]) for k in got}
    assert sum(sizes.values()) <= 65536
    assert sizes[small["job_id"]] == 5  # the small one gets all of its line
    assert abs(sizes[a["job_id"]] - sizes[b["job_id"]]) <= 1 and sizes[a["job_id"]] > 30000  # the rest, halved
    for k in got:
        assert got[k]["logs"]["stdout"]["next_offset"] == sizes[k]
    # the per-stream bound holds when the total would allow more
    w = ok("wait", "--watch", a["job_id"] + ":0:0", "--max-bytes", "1000")
    assert len(w["jobs"][0]["logs"]["stdout"]["data"]) == 1000


def test_a_cursor_records_what_was_delivered_and_never_moves_back(start_job, ok, db):
    j = start_job("cur", "sh", "-c", "echo one; echo two; sleep 60")
    jid = j["job_id"]
    deadline = time.monotonic() + 30
    while ok("logs", "--job-id", jid, "--json")["size"] < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first = ok("wait", "--watch", "%s:0:0:0:0:try-1" % jid)["jobs"][0]
    assert first["logs"]["stdout"]["data"] == "one\ntwo\n" and first["cursor"] == "try-1"
    # the caller read everything but wrote out only "one\n" (it holds "two" back, say): it says so next time
    nxt = ok("wait", "--watch", "%s:8:0:4:0:try-1" % jid, "--timeout", "1")["jobs"][0]
    assert nxt["news"] is False
    row = (
        db()
        .execute(
            "SELECT stdout_offset, stderr_offset FROM watch_cursors WHERE job_id = ? AND cursor = ?", (jid, "try-1")
        )
        .fetchone()
    )
    assert tuple(row) == (4, 0)
    # a caller rebuilt with older offsets (a trigger after a triggerer crash) is answered from what was delivered:
    # "two" comes again (it was never written out), "one" does not
    again = ok("wait", "--watch", "%s:0:0:0:0:try-1" % jid)["jobs"][0]
    assert again["logs"]["stdout"]["offset"] == 4 and again["logs"]["stdout"]["data"] == "two\n"
    assert tuple(db().execute("SELECT stdout_offset FROM watch_cursors WHERE cursor = 'try-1'").fetchone()) == (4,)
    # another cursor (another try) starts where it says; a cursor name may hold colons
    other = ok("wait", "--watch", "%s:0:0:0:0:dag:task:2" % jid)["jobs"][0]
    assert other["logs"]["stdout"]["offset"] == 0 and other["cursor"] == "dag:task:2"
    # without a cursor nothing is recorded and the offsets are taken as given
    plain = ok("wait", "--watch", "%s:0:0" % jid)["jobs"][0]
    assert plain["logs"]["stdout"]["offset"] == 0 and "cursor" not in plain
    assert db().execute("SELECT count(*) FROM watch_cursors").fetchone()[0] == 2
    # the same job may be watched twice in one call (two watchers of it), each answered from its own offsets
    both = ok("wait", "--watch", "%s:0:0" % jid, "--watch", "%s:4:0" % jid)["jobs"]
    assert [b["logs"]["stdout"]["data"] for b in both] == ["one\ntwo\n", "two\n"]
    # clean removes a job's cursors with it
    ok("abort", "--job-id", jid)
    ok("clean", "--job-id", jid)
    assert db().execute("SELECT count(*) FROM watch_cursors").fetchone()[0] == 0


def test_a_caller_can_cut_its_long_poll_short_by_closing_stdin(start_job, home):
    j = start_job("eof", "sleep", "60")
    p = subprocess.Popen(
        cli_argv("wait", "--watch", j["job_id"], "--timeout", "60", "--wake-on-eof"),
        env=cli_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    time.sleep(1.0)  # a negative check: the long poll does not answer on its own within a second
    assert p.poll() is None, "the call returned before its caller hung up"
    t0 = time.monotonic()
    p.stdin.write("anything written is ignored\n")
    p.stdin.flush()
    time.sleep(0.3)  # a negative check: what is written does not wake it, only the end of stdin does
    assert p.poll() is None
    p.stdin.close()
    assert p.wait(timeout=30) == 0 and time.monotonic() - t0 < 10
    out = p.stdout.read()
    answer = json.loads(out)
    assert answer["woken"] is True and answer["timed_out"] is False
    assert answer["jobs"][0]["news"] is False and answer["jobs"][0]["status"] == "RUNNING"
    # without the switch, the end of stdin means nothing (cron and shells give /dev/null)
    r = subprocess.run(
        cli_argv("wait", "--watch", j["job_id"], "--timeout", "1"),
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(r.stdout)["timed_out"] is True


def test_a_damaged_cursor_is_refused_and_the_file_left_unchanged(start_job, ok, run, assert_error, db, home):
    j = start_job("dmg", "sh", "-c", "echo x; sleep 60")
    ok("wait", "--watch", "%s:2:0:2:0:c" % j["job_id"])
    db().execute("UPDATE watch_cursors SET stdout_offset = 'lots'")
    before = (home / "orchesjob.db").read_bytes()
    err = assert_error(run("wait", "--watch", "%s:2:0:2:0:c" % j["job_id"]), 1, "corrupt_database")
    assert "watch cursor" in err["message"]
    assert db().execute("SELECT stdout_offset FROM watch_cursors").fetchone()[0] == "lots"
    assert (home / "orchesjob.db").read_bytes() == before


@pytest.mark.parametrize(
    "args, words",
    [
        (("--watch", "x", "--job-id", "x"), "--job-id"),
        (("--watch", "x", "--stdout-offset", "3"), "--stdout-offset"),
        (("--watch", "x:3"), "ID:OUT:ERR"),
        (("--watch", "x:0:0:c"), "ID:OUT:ERR"),
        (("--watch", "x:-1:0"), "--watch stdout offset"),
        (("--watch", "x:0:zero"), "--watch stderr offset"),
        (("--watch", "x:0:0:1:0:c"), "past the offset read"),
        (("--watch", "x:5:5:1:x:c"), "--watch delivered stderr offset"),
        (("--watch", "x:0:0:0:0:"), "--watch cursor"),
        (("--watch", "x:0:0:0:0:bad\ncursor"), "--watch cursor"),
        (("--watch", ":0:0"), "--job-id"),
        (("--watch", "x", "--max-total-bytes", "100"), "--max-total-bytes"),
        (("--job-id", "x", "--wake-on-eof"), "go with wait --watch"),
        (("--job-id", "x", "--gather", "1"), "go with wait --watch"),
        (("--watch", "x", "--gather", "soon"), "--gather"),
        (("--watch", "x", "--gather", "-1"), "--gather"),
    ],
)
def test_bad_watch_requests_are_refused_clearly(run, assert_error, args, words):
    err = assert_error(run("wait", *args, "--timeout", "1"), 2, "invalid_argument")
    assert words in err["message"]


def test_too_many_jobs_in_one_call_are_refused(run, assert_error):
    args = [a for i in range(1001) for a in ("--watch", "j%d" % i)]
    err = assert_error(run("wait", *args, "--timeout", "1"), 2, "invalid_argument")
    assert "at most 1000" in err["message"]


def test_a_fresh_host_answers_not_found_for_every_job_and_creates_nothing(ok, home):
    w = ok("wait", "--watch", "a:0:0:0:0:c", "--watch", "b", "--timeout", "5")
    assert [j["error"] for j in w["jobs"]] == ["not_found", "not_found"] and w["timed_out"] is False
    assert not home.exists()


def test_share_is_fair_and_bounded():
    assert share([], 10, 100) == []
    assert share([5, 0, 7], 10, 100) == [5, 0, 7]
    assert share([50, 50], 100, 60) == [30, 30]
    assert share([10, 100, 100], 1000, 90) == [10, 40, 40]  # the small want leaves its slice to the others
    assert share([100, 100], 30, 1000) == [30, 30]  # the per-stream cap
    got = share([1000] * 7, 1000, 100)
    assert sum(got) == 100 and max(got) - min(got) <= 1
    assert sum(share([3] * 5, 10, 2)) == 2  # a budget smaller than the streams is never overspent


def test_many_jobs_cost_one_process(start_job, ok, run, tmp_path):
    """Thirty jobs watched by one call: every end is reported once the caller asks again, none is missed."""
    gates = [tmp_path / ("g%d" % i) for i in range(30)]
    started = [
        start_job(
            "many-%d" % i, "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; echo "$1"', str(g), "line-%d" % i
        )
        for i, g in enumerate(gates)
    ]
    offsets = {j["job_id"]: 0 for j in started}
    seen: dict[str, str] = {}
    ended: set[str] = set()
    for g in gates[::3]:
        g.touch()
    for g in gates:
        g.touch()
    deadline = time.monotonic() + 60
    while len(ended) < len(started):
        assert time.monotonic() < deadline, (len(ended), len(started))
        specs = [a for jid in offsets if jid not in ended for a in ("--watch", "%s:%d:0" % (jid, offsets[jid]))]
        w = ok("wait", *specs, "--timeout", "10")
        for j in w["jobs"]:
            if not j["news"]:
                continue
            out = j["logs"]["stdout"]
            seen[j["job_id"]] = seen.get(j["job_id"], "") + out["data"]
            offsets[j["job_id"]] = out["next_offset"]
            if not j["active"] and out["next_offset"] >= out["size"]:
                ended.add(j["job_id"])
    for i, j in enumerate(started):
        assert seen[j["job_id"]] == "line-%d\n" % i  # each line exactly once


def test_a_watch_with_cursors_on_a_version_1_database_upgrades_it(home, ok):
    """The watch_cursors table arrives with schema 2: an upgraded version-1 database records cursors too."""
    import shutil
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    home.mkdir(mode=0o700)
    shutil.copy(data / "schema-v1.db", home / "orchesjob.db")
    (home / "orchesjob.db").chmod(0o600)
    (home / "logs").mkdir(mode=0o700)
    some = ok("status", "--all", "--run-key", "billing")[0]
    w = ok("wait", "--watch", "%s:0:0:0:0:c" % some["job_id"], "--timeout", "5")
    assert w["jobs"][0]["news"] is True and w["jobs"][0]["cursor"] == "c"
    c = sqlite3.connect(str(home / "orchesjob.db"))
    try:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("SELECT cursor FROM watch_cursors").fetchall() == [("c",)]
    finally:
        c.close()


def _log_reaches(path: str, size: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not (os.path.exists(path) and os.path.getsize(path) >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.02)


def test_an_incomplete_character_at_the_end_of_a_log_is_not_news(start_job, ok, tmp_path):
    """A job that stopped writing in the middle of a UTF-8 character (b"abc\\xe2\\x82", then quiet) has given all it
    can: a chunk never ends inside a character. Those two bytes are not news, so a call blocks to its timeout
    instead of answering "news" with no bytes at once, over and over; the rest of the character makes them news."""
    go = tmp_path / "go"
    script = r'printf "abc\342\202"; while [ ! -e "$0" ]; do sleep 0.05; done; printf "\254 done\n"; sleep 60'
    job = start_job("partial-char", "sh", "-c", script, str(go))
    jid = job["job_id"]
    _log_reaches(job["stdout_file"], 5)

    first = ok("wait", "--watch", jid + ":0:0", "--timeout", "10")["jobs"][0]
    assert first["news"] is True
    assert {k: first["logs"]["stdout"][k] for k in ("data", "offset", "next_offset", "size")} == {
        "data": "abc",
        "offset": 0,
        "next_offset": 3,
        "size": 5,
    }

    # From byte 3 on there is nothing to give: every call runs into its timeout, none answers news without bytes.
    calls = []
    until = time.monotonic() + 3.5
    while time.monotonic() < until:
        t0 = time.monotonic()
        answer = ok("wait", "--watch", jid + ":3:0", "--timeout", "1", "--gather", "0.5")
        calls.append((time.monotonic() - t0, answer))
    assert len(calls) <= 4, f"{len(calls)} calls in 3.5 s: the watch answered at once"
    for took, answer in calls:
        assert answer["timed_out"] is True and answer["jobs"][0]["news"] is False, answer
        assert took >= 0.9, took
    # The single-job form with offsets says the same.
    t0 = time.monotonic()
    single = ok("wait", "--job-id", jid, "--stdout-offset", "3", "--stderr-offset", "0", "--timeout", "1")
    assert time.monotonic() - t0 >= 0.9 and single["timed_out"] is True
    assert single["logs"]["stdout"]["data"] == "" and single["logs"]["stdout"]["next_offset"] == 3

    # The rest of the character arrives: now it is news, and the character comes whole.
    go.touch()
    t0 = time.monotonic()
    answer = ok("wait", "--watch", jid + ":3:0", "--timeout", "30")
    assert time.monotonic() - t0 < 20 and answer["timed_out"] is False
    chunk = answer["jobs"][0]["logs"]["stdout"]
    assert (chunk["data"], chunk["offset"], chunk["next_offset"]) == ("\u20ac done\n", 3, 12)
    single = ok("wait", "--job-id", jid, "--stdout-offset", "3", "--stderr-offset", "0", "--timeout", "30")
    assert single["timed_out"] is False and single["logs"]["stdout"]["data"] == "\u20ac done\n"


def test_an_incomplete_character_is_delivered_replaced_when_the_job_ends(start_job, ok, tmp_path):
    go = tmp_path / "go"
    script = r'printf "xyz\342\202"; while [ ! -e "$0" ]; do sleep 0.05; done'
    job = start_job("partial-end", "sh", "-c", script, str(go))
    jid = job["job_id"]
    _log_reaches(job["stdout_file"], 5)
    quiet = ok("wait", "--watch", jid + ":3:0", "--timeout", "1")
    assert quiet["timed_out"] is True and quiet["jobs"][0]["news"] is False
    go.touch()
    answer = ok("wait", "--watch", jid + ":3:0", "--timeout", "30")["jobs"][0]
    assert answer["news"] is True and answer["status"] == "SUCCEEDED"
    chunk = answer["logs"]["stdout"]
    assert (chunk["data"], chunk["next_offset"], chunk["size"]) == ("\ufffd", 5, 5)  # the end: replaced, never held
    single = ok("wait", "--job-id", jid, "--stdout-offset", "3", "--stderr-offset", "0", "--timeout", "30")
    assert single["logs"]["stdout"]["data"] == "\ufffd" and single["logs"]["stdout"]["next_offset"] == 5
