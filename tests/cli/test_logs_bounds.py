"""`logs` and `wait` with the largest values the CLI accepts: nothing is sized by the numbers asked for.

An offset past the end is an empty answer (not an error from seeking there), a limit or a tail larger than the log
is the whole log, and printing it costs a bounded amount of memory, whatever the log's size or the limit: the CLI's
peak RSS is measured from a wrapper process (RUSAGE_CHILDREN), so a read sized by the limit (a MemoryError) or by
the whole log fails these tests.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from orchesjob import logfiles
from tests.support.cli import REPO_ROOT, cli_argv, cli_env

HUGE_OFFSET = str(1 << 62)  # the largest offset the CLI accepts
HUGE_LIMIT = str(10**11)
LINE = ("é€😀" + "a" * 81 + "\n").encode("utf-8")  # 1- to 4-byte characters; 9 + 91 = 100 bytes with the number
LINES = 200000  # 20 MB
MIB = 1 << 20

# Runs the command with stdout to a file and reports its exit code and the peak RSS (KiB) of its process.
WRAPPER = r"""
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    code = subprocess.call(sys.argv[2:], stdout=out, stdin=subprocess.DEVNULL)
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _measured(home: Path, out: Path, *args: str) -> "tuple[int, int, str]":
    p = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out)] + cli_argv(*args),
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert p.returncode == 0, p.stderr.decode()
    code, rss = map(int, p.stdout.split())
    return code, rss * 1024, p.stderr.decode("utf-8", "replace")


@pytest.fixture
def big_log(start_job, tmp_path: Path):
    """A finished job whose stdout is a 20 MB log of 100-byte lines; returns (job, the log's bytes)."""
    script = "import sys\nw = sys.stdout.buffer.write\nfor i in range(%d):\n    w(b'%%08d ' %% i + %r)\n" % (
        LINES,
        LINE,
    )
    job = start_job("big", sys.executable, "-c", script, opts=("--sync",))
    assert job["status"] == "SUCCEEDED", job
    data = Path(job["stdout_file"]).read_bytes()
    assert len(data) == LINES * 100
    return job, data


def test_an_offset_past_the_end_is_empty(big_log, run, ok):
    job, data = big_log
    for stream in ("stdout", "stderr"):
        r = run("logs", "--job-id", job["job_id"], "--stream", stream, "--offset", HUGE_OFFSET)
        assert (r.code, r.out, r.err) == (0, "", ""), r
        r = run("logs", "--job-id", job["job_id"], "--stream", stream, "--offset", HUGE_OFFSET, "--limit", HUGE_LIMIT)
        assert (r.code, r.out) == (0, ""), r
        c = ok("logs", "--job-id", job["job_id"], "--stream", stream, "--offset", HUGE_OFFSET, "--json")
        assert c["data"] == "" and c["offset"] == c["next_offset"] == 1 << 62, c
        assert c["size"] == (len(data) if stream == "stdout" else 0)
    # just past the end, and inside the last line
    assert run("logs", "--job-id", job["job_id"], "--offset", str(len(data))).out == ""
    assert run("logs", "--job-id", job["job_id"], "--offset", str(len(data) - 3)).out == "aa\n"


def test_a_huge_limit_prints_the_whole_log_in_bounded_memory(big_log, home, tmp_path):
    job, data = big_log
    code, baseline, _ = _measured(home, tmp_path / "version.out", "version")
    assert code == 0
    out = tmp_path / "logs.out"
    for args in (
        ["--limit", HUGE_LIMIT],
        ["--offset", "0", "--limit", HUGE_LIMIT],
        ["--tail", HUGE_OFFSET],
        ["--tail", str(LINES + 1)],
        [],
    ):
        code, rss, err = _measured(home, out, "logs", "--job-id", job["job_id"], *args)
        assert code == 0, (args, err)
        printed = out.read_bytes()
        assert len(printed) == len(data) and hashlib.sha256(printed).digest() == hashlib.sha256(data).digest(), args
        # one block at a time: far below the 20 MB log, let alone the 10**11 asked for
        assert rss < 100 * MIB, "logs %s: peak RSS %.1f MiB" % (args, rss / MIB)
        assert rss - baseline < 12 * MIB, "logs %s: peak RSS %.1f MiB, %.1f MiB over `version`" % (
            args,
            rss / MIB,
            (rss - baseline) / MIB,
        )
    # a range in the middle, and a tail, still exact
    code, rss, err = _measured(
        home, out, "logs", "--job-id", job["job_id"], "--offset", str(5 * MIB + 7), "--limit", str(3 * MIB)
    )
    assert code == 0 and out.read_bytes() == data[5 * MIB + 7 : 8 * MIB + 7], err
    code, rss, err = _measured(home, out, "logs", "--job-id", job["job_id"], "--tail", "70000")
    assert code == 0 and out.read_bytes() == data[-70000 * 100 :], err


def test_json_with_a_huge_limit_or_tail_is_a_bounded_chunk(big_log, home, tmp_path, ok):
    """A JSON chunk holds at most 4 MiB whatever --limit or --tail asks; reading on from next_offset gives the
    rest, and the pieces are exactly the log."""
    job, data = big_log
    for first in (["--limit", HUGE_LIMIT], ["--tail", HUGE_OFFSET]):
        code, rss, err = _measured(home, tmp_path / "chunk.json", "logs", "--job-id", job["job_id"], "--json", *first)
        assert code == 0, err
        assert rss < 100 * MIB, "logs --json %s: peak RSS %.1f MiB" % (first, rss / MIB)
        import json

        c = json.loads((tmp_path / "chunk.json").read_text())
        assert c["offset"] == 0 and c["size"] == len(data)
        assert 0 < c["next_offset"] <= logfiles.MAX_CHUNK
        parts = [c["data"]]
        while c["next_offset"] < c["size"]:
            c = ok(
                "logs", "--job-id", job["job_id"], "--json", "--offset", str(c["next_offset"]), "--limit", HUGE_LIMIT
            )
            assert c["next_offset"] > c["offset"]
            parts.append(c["data"])
        assert "".join(parts).encode("utf-8") == data
    c = ok("logs", "--job-id", job["job_id"], "--json", "--tail", "2")
    assert c["data"].encode("utf-8") == data[-200:] and c["offset"] == len(data) - 200
    assert c["next_offset"] == c["size"] == len(data)


def test_wait_with_huge_offsets_and_the_largest_chunk(big_log, ok):
    job, data = big_log
    w = ok(
        "wait",
        "--job-id",
        job["job_id"],
        "--stdout-offset",
        HUGE_OFFSET,
        "--stderr-offset",
        HUGE_OFFSET,
        "--max-bytes",
        str(logfiles.MAX_CHUNK),
        "--timeout",
        "5",
    )
    for stream in ("stdout", "stderr"):
        c = w["logs"][stream]
        assert c["data"] == "" and c["offset"] == c["next_offset"] == 1 << 62, c
    w = ok(
        "wait",
        "--job-id",
        job["job_id"],
        "--stdout-offset",
        str(len(data) - 250),
        "--max-bytes",
        str(logfiles.MAX_CHUNK),
        "--timeout",
        "5",
    )
    assert w["logs"]["stdout"]["data"].encode("utf-8") == data[-250:]


def _reference_tail(data: bytes, n: int) -> bytes:
    if n <= 0:
        return b""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        return b"\n".join(lines[:-1][-n:]) + b"\n"
    return b"\n".join(lines[-n:])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\n\n",
        b"a",
        b"a\n",
        b"a\nb",
        b"a\nb\n",
        b"\n\na\n\n",
        b"x" * 200000,
        (b"y" * 70000 + b"\n") * 3,
        b"z\n" * 100000,
        b"a\n" + b"q" * 140000,
    ],
)
def test_tail_range_is_the_last_lines(tmp_path, data):
    path = tmp_path / "log"
    path.write_bytes(data)
    for n in (0, 1, 2, 3, 5, 99999, 100000, 100001, 1 << 62):
        start, end = logfiles.tail_range(str(path), n)
        assert end == len(data)
        assert data[start:end] == _reference_tail(data, n), (n, start)
    assert logfiles.tail_range(str(tmp_path / "missing"), 5) == (0, 0)


def test_read_bytes_is_sized_by_the_file(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    assert logfiles.read_bytes(str(path), 1 << 62, 10**11) == b""
    assert logfiles.read_bytes(str(path), 10, None) == b""
    assert logfiles.read_bytes(str(path), 3, 10**11) == b"3456789"
    assert logfiles.read_bytes(str(path), 3, 2) == b"34"
    assert b"".join(logfiles.blocks(str(path), 1 << 62, None)) == b""
    assert b"".join(logfiles.blocks(str(path), 2, 10**11)) == b"23456789"
    assert b"".join(logfiles.blocks(str(tmp_path / "missing"), 0, None)) == b""
    c = logfiles.chunk(str(path), "stdout", 1 << 62, 10**11, True)
    assert (c["data"], c["next_offset"], c["size"]) == ("", 1 << 62, 10)
