"""Bad input, generated: hypothesis feeds the CLI arbitrary argv and checks the output contract on every call.

argv = a subcommand (or junk) + a random mix of real flags, ``--flag=value`` forms, switches and junk tokens +
sometimes ``-- COMMAND``. Values are drawn from interesting literals (numbers at the edges, durations, dates,
existing run keys and job ids), arbitrary unicode, control characters, bytes that are not UTF-8 (passed as raw
argv bytes), and strings up to ~120 KB. For every call:

- never a traceback, and an exit code from {0, 1, 2, 3, 4, 5};
- stdout is exactly one JSON value (except the documented plain-text outputs: a successful ``logs`` without
  ``--json`` prints the log, ``--help`` prints usage);
- a failure is one ``{error, message, exit_code}`` object whose type belongs to its exit code, and one stderr line;
- a rejected call (exit != 0) leaves the database as it was: same rows, same bytes of the main file, no WAL left
  behind, no new log files.

Examples: 300 in CI (well under a minute), 20 x ORCHESJOB_FAULT_TRIALS in the full run; the seed is the suite's.

Safety: a generated `start` may run whatever its argv names. As root the CLI (and so every job) runs as `nobody`
with the system Python, with PATH limited to a directory holding only true, false and echo.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.faults.faultlib import FULL, FUZZ_TALLY, SEED, checkpoint, contract_problems, db_rows
from tests.support.cli import Result, _kill_leftovers, cli_argv, cli_env, parse_json
from tests.support.guards import unavailable

pytestmark = pytest.mark.timeout(1800)

EXAMPLES = int(os.environ["ORCHESJOB_FAULT_TRIALS"]) * 20 if FULL else 300
NOBODY = 65534

SUBCOMMANDS = [
    "start",
    "status",
    "wait",
    "logs",
    "abort",
    "rerun",
    "unlock",
    "clean",
    "version",
    "--version",
    "help",
    "-h",
]
FLAGS = [
    "--run-key",
    "--job-id",
    "--sync",
    "--strict",
    "--reuse-success",
    "--start-timeout",
    "--cwd",
    "--env",
    "--timeout",
    "--running",
    "--all",
    "--stdout-offset",
    "--stderr-offset",
    "--max-bytes",
    "--stream",
    "--offset",
    "--limit",
    "--tail",
    "--json",
    "--reason",
    "--grace-seconds",
    "--ttl",
    "--before",
    "--after",
    "--dry-run",
    "--version",
    "--help",
    "-h",
    "--",
    "-",
    "---",
    "--run-key=",
    "--env=",
]
LITERALS = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "-0",
    "007",
    "1.5",
    "-1.5",
    "1e3",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "-inf",
    "NaN",
    "0x10",
    "1_000",
    "٣",
    "²",
    "9" * 40,
    "18446744073709551616",
    "30s",
    "30m",
    "2h",
    "1d",
    "0s",
    "-5m",
    "1w",
    "h",
    "@0",
    "@-1",
    "@1e20",
    "@9999999999999",
    "2026-01-31",
    "2026-01-31T14:00",
    "2026-01-31T14:00:00+09:00",
    "2026-13-45T25:61",
    "0000-00-00",
    "9999-12-31T23:59:59Z",
    "stdout",
    "stderr",
    "both",
    "KEY=VALUE",
    "=x",
    "x=",
    "A=B=C",
    "PATH=/tmp",
    "k0",
    "k1",
    "strict",
    "nope",
    "--",
    "-x",
    ".",
    "..",
    "/",
    "/nonexistent",
    "~",
    "$(id)",
    "`id`",
    "a;b",
    "*",
]
SAFE_COMMANDS = [["true"], ["false"], ["echo", "fuzz"], ["/nonexistent/orchesjob-fuzz-cmd"], ["echo"]]

KNOWN_IDS: list[str] = []

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
_controls = st.text(
    st.characters(min_codepoint=1, max_codepoint=31) | st.sampled_from("\x7f\x85\u2028\u2029\u202e\ufeff\u200b"),
    min_size=1,
    max_size=8,
)
# bytes that are not UTF-8 reach the CLI as raw argv bytes (surrogate-escaped here, encoded back by os.fsencode)
_not_utf8 = st.binary(min_size=1, max_size=12).map(lambda b: os.fsdecode(b.replace(b"\0", b"\x80")))
_huge = st.builds(
    lambda c, n: c * (n // len(c.encode())),
    st.sampled_from(["a", "-", "\n", "é", "€", "🚀", "=", "0"]),
    st.integers(1000, 120000),
)
VALUES = st.one_of(
    st.sampled_from(LITERALS),
    _text,
    _controls,
    _not_utf8,
    _huge,
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.deferred(lambda: st.sampled_from(KNOWN_IDS or ["-"])),
    st.builds(lambda a, b: a + b, st.sampled_from(LITERALS), _text),
)
TOKENS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(FLAGS), VALUES).map(list),
        st.tuples(st.sampled_from(FLAGS), VALUES).map(lambda t: [t[0] + "=" + t[1]]),
        st.sampled_from(FLAGS).map(lambda f: [f]),
        VALUES.map(lambda v: [v]),
    ),
    max_size=8,
).map(lambda groups: [tok for g in groups for tok in g])
JUNK_ARGV = st.tuples(
    st.one_of(st.sampled_from(SUBCOMMANDS), VALUES),
    TOKENS,
    st.one_of(st.none(), st.sampled_from(SAFE_COMMANDS).map(lambda c: ["--"] + c)),
).map(lambda t: [t[0]] + t[1] + (t[2] or []))


# Nearly valid calls: a command's own flags with plausible values, each value sometimes replaced by anything.
def _mostly(plausible, rare=VALUES):
    """Seven draws in eight from `plausible`, else anything at all."""
    return st.one_of(*[plausible] * 7, rare)


_keys = _mostly(st.sampled_from(["k0", "k1", "strict", "nope", "new-key"]))
_ids = _mostly(st.deferred(lambda: st.sampled_from(KNOWN_IDS or ["-"])))
HUGE_NUMBERS = ["1e20", "1e300", "99999999999999999999", "9" * 30]
_small = _mostly(st.sampled_from(["0", "0.5", "1", "2"] + HUGE_NUMBERS))
_ints = _mostly(st.one_of(st.integers(-3, 1 << 20).map(str), st.sampled_from(HUGE_NUMBERS)))
_text_or_any = _mostly(st.one_of(st.text(max_size=50), _not_utf8))
_dates = _mostly(
    st.sampled_from(
        [
            "2026-01-31",
            "@0",
            "@4102444800",
            "2000-01-01T00:00:00+09:00",
            "9999-12-31",
            "0001-01-01",
            "@1e300",
            "@99999999999999999999",
            "@-99999999999999999999",
        ]
    )
)
_durations = _mostly(
    st.sampled_from(["90", "30s", "30m", "2h", "1d", "99999999999999999999d", "1e20", "99999999999999999999"])
)
_envs = _mostly(st.builds(lambda k, v: "%s=%s" % (k, v), st.sampled_from(["A", "PATH", "X_1"]), _text))
_paths = _mostly(
    st.one_of(st.sampled_from(["/", "/tmp", "/nonexistent", ".", "relative/dir"]), _not_utf8.map(lambda b: "/tmp/" + b))
)
VALID_FLAGS = {
    "start": [
        ("--run-key", _keys),
        ("--sync", None),
        ("--strict", None),
        ("--reuse-success", None),
        ("--start-timeout", _small),
        ("--cwd", _paths),
        ("--env", _envs),
        ("--timeout", _small),
    ],
    "status": [("--run-key", _keys), ("--job-id", _ids), ("--running", None), ("--all", None)],
    "wait": [
        ("--run-key", _keys),
        ("--job-id", _ids),
        ("--timeout", _small),
        ("--stdout-offset", _ints),
        ("--stderr-offset", _ints),
        ("--max-bytes", _ints),
    ],
    "logs": [
        ("--run-key", _keys),
        ("--job-id", _ids),
        ("--stream", st.sampled_from(["stdout", "stderr", "x"])),
        ("--offset", _ints),
        ("--limit", _ints),
        ("--tail", _ints),
        ("--json", None),
    ],
    "abort": [("--run-key", _keys), ("--job-id", _ids), ("--reason", _text_or_any), ("--grace-seconds", _small)],
    "rerun": [
        ("--run-key", _keys),
        ("--job-id", _ids),
        ("--sync", None),
        ("--reason", _text_or_any),
        ("--start-timeout", _small),
    ],
    "unlock": [("--run-key", _keys), ("--reason", _text_or_any), ("--ttl", _durations)],
    "clean": [
        ("--before", _dates),
        ("--after", _dates),
        ("--all", None),
        ("--job-id", _ids),
        ("--run-key", _keys),
        ("--dry-run", None),
    ],
}


SELECTORS = {
    "start": [["--run-key"]],
    "unlock": [["--run-key"]],
    "status": [["--run-key"], ["--job-id"], ["--running"]],
    "wait": [["--run-key"], ["--job-id"]],
    "logs": [["--run-key"], ["--job-id"]],
    "abort": [["--run-key"], ["--job-id"]],
    "rerun": [["--run-key"], ["--job-id"]],
    "clean": [["--before"], ["--after"], ["--before", "--after"], ["--all"], ["--job-id"], ["--all", "--run-key"]],
}


@st.composite
def near_valid_argv(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(VALID_FLAGS)))
    spec = dict(VALID_FLAGS[command])
    chosen = []
    if draw(st.integers(0, 19)) > 0:  # now and then without the flag that selects what to act on
        chosen += [(flag, spec[flag]) for flag in draw(st.sampled_from(SELECTORS[command]))]
    unique = draw(st.integers(0, 9)) > 0  # now and then a flag twice, or two selectors
    optional = [
        fv
        for fv in VALID_FLAGS[command]
        if not unique or command == "clean" or fv[0] not in ("--run-key", "--job-id", "--running")
    ]
    chosen += draw(st.lists(st.sampled_from(optional), max_size=4, unique_by=(lambda fv: fv[0]) if unique else None))
    if unique:
        chosen = list(dict(chosen).items())
    argv = [command]
    for flag, values in draw(st.permutations(chosen)):
        if values is None:
            argv.append(flag)
        elif draw(st.integers(0, 3)) > 0:
            argv += [flag, draw(values)]
        else:
            argv.append("%s=%s" % (flag, draw(values)))
    if command == "start":
        argv += ["--"] + draw(st.sampled_from(SAFE_COMMANDS))
    return argv


class Sandbox:
    """A state directory and a way to run the CLI against it, as `nobody` when we are root."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="orchesjob-fuzz-"))
        os.chmod(self.base, 0o711)
        self.home = self.base / "home"
        self.home.mkdir(mode=0o700)
        self.bin = self.base / "bin"
        self.bin.mkdir()
        for name in ("true", "false", "echo"):
            found = shutil.which(name, path="/usr/bin:/bin")
            assert found, name
            os.symlink(found, self.bin / name)
        os.chmod(self.bin, 0o755)
        if os.geteuid() == 0:
            os.chown(self.home, NOBODY, NOBODY)
            python = shutil.which("python3", path="/usr/bin:/bin")
            setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
            if not python or not setpriv:
                unavailable("running as root: setpriv and /usr/bin/python3 are needed to run the CLI as nobody")
            assert python and setpriv  # unavailable raised otherwise
            as_nobody = [setpriv, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
            self.prefix: list[str] = as_nobody + cli_argv(python=python)
        else:
            self.prefix = cli_argv()
        self.env = cli_env(self.home, {"PATH": str(self.bin)})
        self.db = self.home / "orchesjob.db"

    def run(self, argv: list[str], timeout: float = 120) -> Result:
        full: list[str | bytes] = [*self.prefix, *(os.fsencode(a) for a in argv)]
        p = subprocess.run(full, env=self.env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        return Result(p.returncode, parse_json(out), out, p.stderr.decode("utf-8", "replace"))

    def active_jobs(self) -> int:
        rows = db_rows(self.db)
        jobs = dict(rows).get("jobs", [])
        return sum(1 for row in jobs if "STARTING" in row or "RUNNING" in row)

    def wait_idle(self) -> None:
        """No job of an earlier example may still change the database under the next one."""
        deadline = time.monotonic() + 30
        while self.active_jobs():
            if time.monotonic() > deadline:
                for row in self.run(["status", "--running"]).json or []:
                    self.run(["abort", "--job-id", row["job_id"], "--grace-seconds", "1"])
                deadline = time.monotonic() + 30
            time.sleep(0.02)

    def freeze(self) -> None:
        """Remember the populated state; every example starts from it (so a failure replays and shrinks)."""
        self.wait_idle()
        checkpoint(self.db)
        self.pristine = self.base / "pristine"
        shutil.copytree(self.home, self.pristine)

    def restore(self) -> None:
        self.wait_idle()
        _kill_leftovers(self.home)
        for name in os.listdir(self.home):
            path = self.home / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for src in [self.pristine] + list(self.pristine.rglob("*")):
            dst = self.home / src.relative_to(self.pristine)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                shutil.copy2(src, dst)
            os.chmod(dst, stat.S_IMODE(src.stat().st_mode))
            if os.geteuid() == 0:
                os.chown(dst, NOBODY, NOBODY)

    def snapshot(self) -> dict[str, Any]:
        checkpoint(self.db)
        return {
            "rows": db_rows(self.db),
            "bytes": hashlib.sha256(self.db.read_bytes()).hexdigest(),
            "logs": sorted(os.listdir(self.home / "logs")),
        }


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        r = box.run(["version"])
        if r.code != 0:
            unavailable("the CLI does not run in the fuzz sandbox: %s %s" % (r.out, r.err))
        for key, code in (("k0", 0), ("k1", 3)):
            job = box.run(["start", "--sync", "--run-key", key, "--", "echo", "output of %s" % key])
            assert job.code == 0, job
            KNOWN_IDS.append(job.json["job_id"])
            job = box.run(["start", "--sync", "--run-key", key, "--", "false" if code else "true"])
            KNOWN_IDS.append(job.json["job_id"])
        assert box.run(["start", "--sync", "--strict", "--run-key", "strict", "--", "true"]).code == 0
        assert box.run(["unlock", "--run-key", "strict", "--reason", "fuzz"]).code == 0
        box.freeze()
        yield box
    finally:
        _kill_leftovers(box.home)
        shutil.rmtree(box.base, ignore_errors=True)


# What the generated runs above found, pinned down: numbers at the edges of every numeric flag, and bytes that are
# not UTF-8 in the free-text flags. Each must be accepted or rejected cleanly (exit 2), never an internal error,
# and a rejected call must not have started anything.
EDGE_CASES = [
    ["unlock", "--run-key", "k0", "--ttl", "99999999999999999999d"],
    ["unlock", "--run-key", "k0", "--ttl", "99999999999999999999"],
    ["start", "--run-key", "edge-start-timeout", "--start-timeout", "1e300", "--", "true"],
    ["start", "--run-key", "edge-timeout", "--timeout", "1e300", "--", "true"],
    ["clean", "--before", "@1e300"],
    ["clean", "--before", "@99999999999999999999"],
    ["clean", "--after", "@-99999999999999999999"],
    ["clean", "--before", "9999-12-31T23:59:59+14:00"],
    ["logs", "--run-key", "k0", "--offset", "99999999999999999999999"],
    ["logs", "--run-key", "k0", "--limit", "99999999999999999999999"],
    ["logs", "--run-key", "k0", "--tail", "99999999999999999999999"],
    ["wait", "--run-key", "k0", "--timeout", "1e300"],
    ["wait", "--run-key", "k0", "--stdout-offset", "99999999999999999999999"],
    ["abort", "--run-key", "k0", "--grace-seconds", "1e300"],
    ["start", "--run-key", "edge-cwd", "--cwd", os.fsdecode(b"/tmp/\xf1"), "--", "true"],
    ["unlock", "--run-key", "k0", "--reason", os.fsdecode(b"bad \xf1")],
    ["rerun", "--run-key", "k0", "--reason", os.fsdecode(b"\xff\xfe")],
]


def _edge_id(argv: list[str]) -> str:
    flag = [a for a in argv[1:] if a.startswith("--") and a not in ("--", "--run-key")][-1]
    return "%s %s=%s" % (argv[0], flag, ascii(argv[argv.index(flag) + 1])[1:-1])


@pytest.mark.parametrize("argv", EDGE_CASES, ids=[_edge_id(a) for a in EDGE_CASES])
def test_edge_values_are_accepted_or_rejected_cleanly(sandbox: Sandbox, argv: list[str]) -> None:
    sandbox.restore()
    before = sandbox.snapshot()
    r = sandbox.run(argv)
    problems = contract_problems(r, raw_ok=r.code == 0 and argv[0] == "logs")
    sandbox.wait_idle()
    if r.code != 0 and sandbox.snapshot()["rows"] != before["rows"]:
        problems.append("the call failed, yet it changed the database (a job was started or a key changed)")
    assert not problems, "orchesjob %r: %s\nexit %s\nstdout: %s\nstderr: %s" % (
        argv,
        "; ".join(problems),
        r.code,
        r.out[:800],
        r.err[:800],
    )


# CI reports the first failing example as found (the edge cases below are the minimal repros); the full run also
# shrinks it, which can take minutes.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    phases=list(Phase) if FULL else [Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def check_call(sandbox: Sandbox, argv: list[str], family: str) -> None:
    sandbox.restore()
    before = sandbox.snapshot()
    r = sandbox.run(argv)
    tally = FUZZ_TALLY.setdefault(family, {})
    tally[str(r.code)] = tally.get(str(r.code), 0) + 1
    if os.environ.get("ORCHESJOB_FUZZ_DEBUG"):
        print(r.code, (r.json or {}).get("message", "")[:80] if r.code else argv[:6])
    shown = [a if len(a) < 80 else a[:40] + "...(%d chars)" % len(a) for a in argv]
    # plain text for people: a log, usage, and --version's one line
    raw_ok = r.code == 0 and (argv[0] in ("logs", "--version", "-V") or r.out.startswith("usage: orchesjob"))
    problems = contract_problems(r, raw_ok=raw_ok)
    if r.code != 0 and not problems:
        sandbox.wait_idle()
        after = sandbox.snapshot()
        if after["rows"] != before["rows"]:
            problems.append("the rejected call changed rows of the database")
        if after["bytes"] != before["bytes"]:
            problems.append("the rejected call changed the database file")
        if after["logs"] != before["logs"]:
            problems.append("the rejected call created or removed log files")
    assert not problems, "orchesjob %r: %s\nexit %s\nstdout: %s\nstderr: %s" % (
        shown,
        "; ".join(problems),
        r.code,
        r.out[:1500],
        r.err[:1500],
    )


@seed(SEED)
@FUZZ_SETTINGS
@given(argv=JUNK_ARGV)
def test_generated_junk_argv_keeps_the_output_contract(sandbox: Sandbox, argv: list[str]) -> None:
    """Anything at all: mostly rejected, and a rejected call changes nothing."""
    check_call(sandbox, argv, "junk")


@seed(SEED)
@FUZZ_SETTINGS
@given(argv=near_valid_argv())
def test_generated_nearly_valid_argv_keeps_the_output_contract(sandbox: Sandbox, argv: list[str]) -> None:
    """A command's own flags with plausible values, sometimes one of them bad: many calls do real work (start,
    abort, rerun, unlock, clean), the rest are rejected without a trace."""
    check_call(sandbox, argv, "nearly valid")
