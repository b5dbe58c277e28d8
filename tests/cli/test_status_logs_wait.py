"""status, logs and wait."""

import sys
import time

import pytest

pytestmark = pytest.mark.timeout(120)


# -- status ---------------------------------------------------------------------------------------------------------
def test_status_by_run_key_is_latest_attempt(start_job, ok):
    a = start_job("st", "true", opts=("--sync",))
    b = start_job("st", "sh", "-c", "exit 2", opts=("--sync",))
    s = ok("status", "--run-key", "st")
    assert isinstance(s, dict)
    assert s["job_id"] == b["job_id"] and s["attempt_no"] == 2 and s["status"] == "FAILED" and s["exit_code"] == 2
    assert ok("status", "--job-id", a["job_id"])["status"] == "SUCCEEDED"


def test_status_all_ordered_by_attempt_desc(start_job, ok):
    ids = [start_job("hist", "sh", "-c", "exit %d" % i, opts=("--sync",))["job_id"] for i in range(4)]
    hist = ok("status", "--run-key", "hist", "--all")
    assert isinstance(hist, list)
    assert [h["attempt_no"] for h in hist] == [4, 3, 2, 1]
    assert [h["job_id"] for h in hist] == list(reversed(ids))
    assert [h["exit_code"] for h in hist] == [3, 2, 1, 0]


def test_status_all_needs_run_key(run, assert_error, start_job):
    start_job("k", "true", opts=("--sync",))
    assert_error(run("status", "--all"), 2, "invalid_argument")
    j = run("status", "--run-key", "k").json
    assert_error(run("status", "--job-id", j["job_id"], "--all"), 2, "invalid_argument")
    assert_error(run("status", "--running", "--all"), 2, "invalid_argument")


def test_status_running_lists_only_active(start_job, ok):
    assert ok("status", "--running") == []
    done = start_job("done", "true", opts=("--sync",))
    r1 = start_job("run-1", "sleep", "30")
    r2 = start_job("run-2", "sleep", "30")
    running = ok("status", "--running")
    assert isinstance(running, list)
    ids = {j["job_id"] for j in running}
    assert ids == {r1["job_id"], r2["job_id"]} and done["job_id"] not in ids
    assert all(j["status"] in ("STARTING", "RUNNING") and j["active"] for j in running)
    ok("abort", "--job-id", r1["job_id"], "--grace-seconds", "1")
    assert {j["job_id"] for j in ok("status", "--running")} == {r2["job_id"]}


def test_status_on_fresh_home_creates_nothing(run, ok, assert_error, home):
    assert ok("status", "--running") == []
    assert_error(run("status", "--run-key", "x"), 3, "not_found")
    assert_error(run("status", "--run-key", "x", "--all"), 3, "not_found")
    assert_error(run("status", "--job-id", "x"), 3, "not_found")
    assert not home.exists()


def test_status_needs_a_selector(run, assert_error):
    assert_error(run("status"), 2, "invalid_argument")
    assert_error(run("status", "--run-key", "a", "--job-id", "b"), 2, "invalid_argument")


# -- logs -----------------------------------------------------------------------------------------------------------
def test_logs_streams_raw(start_job, run):
    start_job("lg", "sh", "-c", "printf 'out1\\nout2\\n'; printf 'err1\\n' >&2", opts=("--sync",))
    r = run("logs", "--run-key", "lg")
    assert r.code == 0 and r.out == "out1\nout2\n"
    r = run("logs", "--run-key", "lg", "--stream", "stdout")
    assert r.code == 0 and r.out == "out1\nout2\n"
    r = run("logs", "--run-key", "lg", "--stream", "stderr")
    assert r.code == 0 and r.out == "err1\n"


def test_logs_by_job_id_and_bad_stream(start_job, run, assert_error):
    j = start_job("lg2", "echo", "x", opts=("--sync",))
    assert run("logs", "--job-id", j["job_id"]).out == "x\n"
    assert_error(run("logs", "--job-id", j["job_id"], "--stream", "both"), 2, "invalid_argument")
    assert_error(run("logs", "--job-id", "nope"), 3, "not_found")
    assert_error(run("logs"), 2, "invalid_argument")


def test_logs_offset_limit_tail(start_job, run, assert_error):
    start_job("lg3", "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done", opts=("--sync",))
    full = "line1\nline2\nline3\nline4\nline5\n"
    assert run("logs", "--run-key", "lg3").out == full
    assert run("logs", "--run-key", "lg3", "--offset", "6").out == full[6:]
    assert run("logs", "--run-key", "lg3", "--offset", "6", "--limit", "5").out == "line2"
    assert run("logs", "--run-key", "lg3", "--limit", "3").out == "lin"
    assert run("logs", "--run-key", "lg3", "--offset", "1000").out == ""
    assert run("logs", "--run-key", "lg3", "--tail", "2").out == "line4\nline5\n"
    assert run("logs", "--run-key", "lg3", "--tail", "10").out == full
    assert run("logs", "--run-key", "lg3", "--tail", "0").out == ""
    assert_error(run("logs", "--run-key", "lg3", "--tail", "2", "--offset", "1"), 2, "invalid_argument")
    assert_error(run("logs", "--run-key", "lg3", "--offset", "-1"), 2, "invalid_argument")
    assert_error(run("logs", "--run-key", "lg3", "--limit", "abc"), 2, "invalid_argument")


def test_logs_json_chunk_fields(start_job, ok):
    start_job("lgj", "printf", "abcdefghij", opts=("--sync",))
    c = ok("logs", "--run-key", "lgj", "--json", "--offset", "2", "--limit", "4")
    assert set(c) >= {"stream", "offset", "next_offset", "size", "data"}
    assert c["stream"] == "stdout" and c["offset"] == 2 and c["next_offset"] == 6 and c["size"] == 10
    assert c["data"] == "cdef"
    c = ok("logs", "--run-key", "lgj", "--json", "--stream", "stderr")
    assert c["stream"] == "stderr" and c["size"] == 0 and c["data"] == "" and c["next_offset"] == 0
    c = ok("logs", "--run-key", "lgj", "--json", "--tail", "1")
    assert c["data"] == "abcdefghij" and c["next_offset"] == 10 and c["size"] == 10


TEXT = "aé€😀" * 8 + "z"  # 1-, 2-, 3- and 4-byte characters


@pytest.mark.parametrize("limit", [4, 5, 7, 64])
def test_logs_json_never_splits_a_utf8_character(start_job, ok, limit):
    start_job(
        "utf8", sys.executable, "-c", "import sys; sys.stdout.buffer.write(%r)" % TEXT.encode("utf-8"), opts=("--sync",)
    )
    size = len(TEXT.encode("utf-8"))
    offset, parts, calls = 0, [], 0
    while offset < size:
        c = ok("logs", "--run-key", "utf8", "--json", "--offset", str(offset), "--limit", str(limit))
        calls += 1
        assert "\ufffd" not in c["data"], c
        assert c["offset"] == offset and c["size"] == size
        assert c["next_offset"] > offset, "no progress at offset %d with --limit %d: %r" % (offset, limit, c)
        assert c["next_offset"] - offset <= limit
        assert len(c["data"].encode("utf-8")) == c["next_offset"] - offset
        parts.append(c["data"])
        offset = c["next_offset"]
        assert calls < size
    assert "".join(parts) == TEXT


def test_logs_json_holds_back_a_partial_character_while_running(start_job, ok, tmp_path):
    go = tmp_path / "go"
    # writes "ab" + the first two bytes of "€", then waits, then the last byte
    script = (
        "import os, sys, time\n"
        "os.write(1, b'ab\\xe2\\x82')\n"
        "while not os.path.exists(%r): time.sleep(0.05)\n"
        "os.write(1, b'\\xac!')\n" % str(go)
    )
    j = start_job("partial", sys.executable, "-c", script)
    w = ok("wait", "--job-id", j["job_id"], "--stdout-offset", "0", "--timeout", "30")
    assert w["timed_out"] is False
    c = ok("logs", "--job-id", j["job_id"], "--json")
    assert "\ufffd" not in c["data"]
    assert c["data"] in ("", "ab") and c["next_offset"] == len(c["data"])
    if w["logs"]["stdout"]["data"]:
        assert w["logs"]["stdout"]["data"] == "ab" and "\ufffd" not in w["logs"]["stdout"]["data"]
    go.touch()
    done = ok("wait", "--job-id", j["job_id"], "--timeout", "30")
    assert done["status"] == "SUCCEEDED"
    c2 = ok("logs", "--job-id", j["job_id"], "--json", "--offset", str(c["next_offset"]))
    assert c["data"] + c2["data"] == "ab€!"


# -- wait -----------------------------------------------------------------------------------------------------------
def test_wait_times_out_while_running(start_job, ok):
    j = start_job("w1", "sleep", "30")
    t0 = time.monotonic()
    w = ok("wait", "--run-key", "w1", "--timeout", "1")
    assert w["timed_out"] is True and w["status"] == "RUNNING" and w["job_id"] == j["job_id"]
    assert time.monotonic() - t0 < 25
    assert "logs" not in w


def test_wait_returns_when_job_ends(start_job, ok, tmp_path):
    go = tmp_path / "go"
    j = start_job("w2", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; exit 7', str(go))
    assert j["status"] == "RUNNING"
    go.touch()
    t0 = time.monotonic()
    w = ok("wait", "--job-id", j["job_id"], "--timeout", "60")
    assert time.monotonic() - t0 < 45, "wait did not return before its timeout although the job ended"
    assert w["timed_out"] is False and w["status"] == "FAILED" and w["exit_code"] == 7


def test_wait_on_finished_job_returns_at_once(start_job, ok):
    start_job("w3", "true", opts=("--sync",))
    t0 = time.monotonic()
    w = ok("wait", "--run-key", "w3", "--timeout", "60")
    assert w["timed_out"] is False and w["status"] == "SUCCEEDED"
    assert time.monotonic() - t0 < 45


def test_wait_stdout_offset_returns_on_new_output(start_job, ok, tmp_path):
    go = tmp_path / "go"
    script = 'echo first; while [ ! -e "$0" ]; do sleep 0.05; done; echo second; sleep 60'
    j = start_job("w4", "sh", "-c", script, str(go))
    t0 = time.monotonic()
    w = ok("wait", "--job-id", j["job_id"], "--stdout-offset", "0", "--timeout", "60")
    assert time.monotonic() - t0 < 45
    assert w["timed_out"] is False and w["status"] == "RUNNING"
    out = w["logs"]["stdout"]
    assert set(out) >= {"stream", "offset", "next_offset", "size", "data"}
    assert out["offset"] == 0 and out["data"] == "first\n" and out["next_offset"] == 6
    assert w["logs"]["stderr"]["data"] == ""
    go.touch()
    t0 = time.monotonic()
    w2 = ok("wait", "--job-id", j["job_id"], "--stdout-offset", str(out["next_offset"]), "--timeout", "60")
    assert time.monotonic() - t0 < 45
    assert w2["timed_out"] is False and w2["status"] == "RUNNING"
    assert w2["logs"]["stdout"]["data"] == "second\n" and w2["logs"]["stdout"]["next_offset"] == 13
    # nothing new: the long poll runs into its timeout
    w3 = ok("wait", "--job-id", j["job_id"], "--stdout-offset", "13", "--timeout", "1")
    assert w3["timed_out"] is True and w3["logs"]["stdout"]["data"] == ""


def test_wait_stderr_offset_and_max_bytes(start_job, ok):
    j = start_job("w5", "sh", "-c", "printf 0123456789 >&2; sleep 60")
    w = ok("wait", "--job-id", j["job_id"], "--stderr-offset", "0", "--max-bytes", "4", "--timeout", "60")
    assert w["timed_out"] is False
    e = w["logs"]["stderr"]
    assert e["data"] == "0123" and e["next_offset"] == 4 and e["size"] == 10


def test_wait_unknown_and_bad_values(run, assert_error, start_job):
    assert_error(run("wait", "--job-id", "nope", "--timeout", "1"), 3, "not_found")
    start_job("w6", "true", opts=("--sync",))
    assert_error(run("wait", "--run-key", "nope", "--timeout", "1"), 3, "not_found")
    assert_error(run("wait", "--run-key", "w6", "--timeout", "-1"), 2, "invalid_argument")
    assert_error(run("wait", "--run-key", "w6", "--timeout", "soon"), 2, "invalid_argument")
    assert_error(run("wait", "--run-key", "w6", "--max-bytes", "0"), 2, "invalid_argument")
    assert_error(run("wait", "--run-key", "w6", "--stdout-offset", "-3"), 2, "invalid_argument")


def test_logs_into_a_closed_pipe_is_quiet(start_job, home, tmp_path):
    import subprocess

    from tests.support.cli import cli_argv, cli_env

    start_job("big", sys.executable, "-c", "import sys; sys.stdout.write('x' * 4000000)", opts=("--sync",))
    err = tmp_path / "err"
    with open(str(err), "wb") as ef:
        reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        writer = subprocess.Popen(
            cli_argv("logs", "--run-key", "big"), env=cli_env(home), stdout=reader.stdin, stderr=ef
        )
        assert reader.stdin is not None and reader.stdout is not None  # both are pipes
        reader.stdin.close()
        out = reader.stdout.read()
        reader.stdout.close()
        reader.wait(timeout=60)
        writer.wait(timeout=60)
    assert out == b"x" * 10
    assert writer.returncode in (0, 1, -13, 141)
    assert "Traceback" not in err.read_text()


@pytest.mark.parametrize("args", [("--timeout", "0"), ("--timeout", "0.2")])
def test_wait_short_timeouts(start_job, ok, args):
    j = start_job("wshort", "sleep", "30")
    w = ok("wait", "--job-id", j["job_id"], *args)
    assert w["timed_out"] is True and w["status"] == "RUNNING"
