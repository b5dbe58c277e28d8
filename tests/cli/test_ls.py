"""`ls`, the table of jobs for a person: on a terminal (coloured unless NO_COLOR, fitted to its width, wide
characters aligned by their cells) and not, by run key and by the last N."""

import re
import time
import unicodedata

from tests.support.cli import (
    Pty,
    check_error,
    check_ok,
)


def cell_width(text: str) -> int:
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_ls_lists_the_running_jobs_by_default_without_colour_on_a_pipe(run, start_job):
    start_job("finished", "true", opts=("--sync",))
    a = start_job("runs-a", "sleep", "60")
    b = start_job("runs-b", "sleep", "60")
    r = run("ls")
    assert r.code == 0 and r.err == ""
    assert "\x1b[" not in r.out
    rows = _table(r.out)
    assert rows[0] == ["JOB", "ID", "RUN", "KEY", "ATTEMPT", "STATUS", "STARTED", "DURATION", "EXIT", "PID"]
    assert sorted(row[1] for row in rows[1:]) == ["runs-a", "runs-b"]
    by_key = {"runs-a": a, "runs-b": b}
    for row in rows[1:]:
        assert row[2:4] == ["1", "RUNNING"] and row[-2] == "-"
        assert int(row[-1]) == by_key[row[1]]["pid"]
        assert row[0] == by_key[row[1]]["job_id"][:8]  # the short id: a prefix status, logs, wait and abort take
    # the JSON rows are the same rows, with both ids; --format json is the same as --json
    rows_json = check_ok(run("ls", "--json"))
    assert [j["run_key"] for j in rows_json] == [row[1] for row in rows[1:]]
    assert [j["short_id"] for j in rows_json] == [row[0] for row in rows[1:]]
    assert {j["pid"] for j in rows_json} == {a["pid"], b["pid"]}
    # the same rows again, but read a moment later: a running job's duration is measured at each call
    again = check_ok(run("ls", "--format", "json"))
    for first, second in zip(rows_json, again):
        assert 0 <= first.pop("duration_seconds") <= second.pop("duration_seconds")
    assert again == rows_json


def test_ls_last_and_run_key(run, start_job):
    start_job("k", "sh", "-c", "exit 4", opts=("--sync",))
    time.sleep(1.1)  # start times are whole seconds: keep the order unambiguous
    start_job("k", "sh", "-c", "kill -TERM $$", opts=("--sync",))
    time.sleep(1.1)  # the same: a later whole second for the next start
    start_job("other", "true", opts=("--sync",))
    rows = _table(run("ls", "--last", "2").out)[1:]
    assert [(r[1], r[2], r[3]) for r in rows] == [("other", "1", "SUCCEEDED"), ("k", "2", "FAILED")]
    assert rows[0][-2] == "0" and rows[1][-2] == "SIGTERM"
    rows = _table(run("ls", "--run-key", "k").out)[1:]
    assert [(r[1], r[2], r[3], r[-2]) for r in rows] == [("k", "2", "FAILED", "SIGTERM"), ("k", "1", "FAILED", "4")]
    assert len(_table(run("ls", "--run-key", "k", "--last", "1").out)) == 2
    rows_json = check_ok(run("ls", "--last", "3", "--json"))
    assert [(j["run_key"], j["attempt_no"], j["status"], j["exit_code"], j["signal_name"]) for j in rows_json] == [
        ("other", 1, "SUCCEEDED", 0, None),
        ("k", 2, "FAILED", None, "SIGTERM"),
        ("k", 1, "FAILED", 4, None),
    ]
    assert all(j["duration_seconds"] >= 0 and j["finished_at_iso"] for j in rows_json)


def test_ls_on_a_terminal_is_coloured_unless_no_color_is_set(home, start_job):
    start_job("colourful", "sleep", "60")
    code, out = Pty(home, "ls").finish()
    assert code == 0
    assert "\x1b[1m" in out and "\x1b[36mRUNNING\x1b[0m" in out
    code, out = Pty(home, "ls", env={"NO_COLOR": "1"}).finish()
    assert code == 0 and "\x1b[" not in out and "RUNNING" in out
    code, out = Pty(home, "ls", env={"TERM": "dumb"}).finish()
    assert code == 0 and "\x1b[" not in out


def test_ls_fits_the_terminal_eliding_long_run_keys_in_the_middle(home, run, start_job):
    long_key = "start-" + "x" * 150 + "-end"
    start_job(long_key, "sleep", "60")
    start_job("short", "sleep", "60")
    # not a terminal and no COLUMNS: nothing is cut
    assert long_key in run("ls", env={"COLUMNS": None}).out
    # COLUMNS on a pipe
    out = run("ls", env={"COLUMNS": "80"}).out
    lines = out.splitlines()
    assert all(cell_width(line) <= 80 for line in lines), out
    elided = [line for line in lines if line.split()[1].startswith("start-")]
    assert len(elided) == 1 and "-end " in elided[0] and "\u2026" in elided[0] and long_key not in out
    # 80 columns leave the run key too little room even so: the start time loses its year and seconds
    assert re.search(r"  \d\d-\d\d \d\d:\d\d  ", elided[0]) and not re.search(r"\d\d:\d\d:\d\d", out), out
    # the terminal's own width
    code, out = Pty(home, "ls", cols=90, env={"NO_COLOR": "1"}).finish()
    assert code == 0
    lines = out.splitlines()
    assert all(cell_width(line) <= 90 for line in lines), out
    assert max(cell_width(line) for line in lines) >= 85  # the room is used
    status_at = [line.index("RUNNING") for line in lines[1:]]
    assert len(set(status_at)) == 1, out  # columns stay aligned


def test_ls_aligns_wide_characters_by_their_cells(run, start_job):
    start_job("\u65e5\u672c\u8a9e\u306e\u30ad\u30fc", "sleep", "60")
    start_job("ascii-key", "sleep", "60")
    lines = run("ls").out.splitlines()
    assert len(lines) == 3
    header_status = cell_width(lines[0][: lines[0].index("STATUS")])
    assert {cell_width(line[: line.index("RUNNING")]) for line in lines[1:]} == {header_status}


def test_ls_on_a_fresh_host_and_bad_flags(run, start_job):
    r = run("ls")
    assert (r.code, r.out.strip()) == (0, "no running jobs (orchesjob ls --last 20 lists the latest jobs)")
    assert check_ok(run("ls", "--json")) == []
    assert run("ls", "--last", "5").out.strip() == "no jobs yet"
    check_error(run("ls", "--last", "0"), 2, "invalid_argument")
    check_error(run("ls", "--last", "many"), 2, "invalid_argument")
    check_error(run("ls", "--run-key", ""), 2, "invalid_argument")
    check_error(run("ls", "--run-key", "nope"), 3, "not_found")
    start_job("x", "true", opts=("--sync",))
    check_error(run("ls", "--run-key", "nope"), 3, "not_found")
