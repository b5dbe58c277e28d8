"""Security through the real SSH path: hostile strings in every field a DAG controls, file modes after real use,
and a state directory shared with wider permissions or owned by someone else.

The corpus holds shell metacharacters (quotes, $(), backticks, ;, |, &, redirections, newlines, globs), leading
dashes that look like flags, unicode (right-to-left marks, non-breaking spaces, emoji), control characters and a
4000-character string. Every ``touch CANARY`` in it is a command that would run if any layer (the hook's command
line, the remote login shell, the CLI, the supervisor) let a shell see the string. Checks: the canary never
appears, and the job's argv, environment, working directory, run key and reasons are exactly what was given, both
as recorded (status) and as the job itself received them (it writes them to a file).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli_argv, cli_env, run_cli, write_cli_launcher
from tests.support.guards import unavailable
from tests.support.hooks import wait_ended

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.sshd,
    pytest.mark.airflow,
    pytest.mark.usefixtures("airflow_available"),
]

CONN_ID = "orchesjob_sec"
NOBODY = 65534

TEMPLATES = [
    "$(touch {c})",
    "`touch {c}`",
    "; touch {c}",
    ";touch {c};",
    "| touch {c}",
    "|| touch {c}",
    "&& touch {c}",
    "& touch {c} &",
    "\ntouch {c}\n",
    "\rtouch {c}",
    "'; touch {c}; '",
    '"; touch {c}; "',
    "'\"$(touch {c})\"'",
    "\\'; touch {c}; \\'",
    "$(touch${{IFS}}{c})",
    "x > {c}",
    "x >> {c}",
    "<(touch {c})",
    ">(touch {c})",
    "$((1+1))",
    "${{PATH}}",
    "$HOME",
    "$$",
    "$!",
    "$0",
    "$@",
    "!!",
    "!-1",
    "~",
    "~root",
    "*",
    "?",
    "[a-z]*",
    "{{a,b}}",
    "#; touch {c}",
    "\\",
    "\\\\",
    "'",
    '"',
    "' '",
    '"\'"',
    "",
    " ",
    "\t",
    "-",
    "--",
    "-rf",
    "--run-key=evil",
    "--help",
    "-e touch {c}",
    "--env=X=$(touch {c})",
    "--cwd=/",
    "%s%n%x",
    "{{}}",
    "%(x)s",
    "ünïcödé ✓ 日本 🚀",
    "\u202eevil\u202c",
    "\u00a0nbsp",
    "zero\u200bwidth",
    "\x1b[31mred\x1b[0m",
    "bell\x07",
    "tab\there",
    "a" * 4000,
    "$(touch {c})" * 50,
    "exec touch {c}",
    "eval 'touch {c}'",
    "`` $() ${{}} ''",
]
# A command that reports what it received: its argv, some variables, its working directory.
REPORT = (
    "import json, os, sys; out = sys.argv[1]; names = json.loads(os.environ['OJ_NAMES']); "
    "json.dump({'argv': sys.argv[2:], 'env': {k: os.environ.get(k) for k in names}, 'cwd': os.getcwd()}, "
    "open(out, 'w'))"
)


@pytest.fixture
def sec(
    sshd: Any, orchesjob_launcher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A hook whose state directory holds metacharacters (it travels inside the request on standard input), and a
    canary path. The CLI's own path must be a plain word (it is the one thing on the SSH command line; a path full
    of metacharacters is refused before any connection, see test_a_hostile_cli_path_is_refused_before_connecting)."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    monkeypatch.setenv("AIRFLOW_CONN_%s" % CONN_ID.upper(), sshd.airflow_connection_json())
    canary = tmp_path / "CANARY"
    weird = tmp_path / ("dir 'q' \"d\" $(touch %s) `x` ;&|" % canary)
    launcher = write_cli_launcher(tmp_path / "bin" / "orchesjob", python=sys.executable)
    home = weird / "home"
    hook = OrchesjobHook(
        CONN_ID,
        orchesjob_bin=launcher,
        orchesjob_home=str(home),
        retry_backoff=0.1,
        ssh_hook_kwargs={"conn_retry_attempts": 1},
    )
    try:
        yield {
            "hook": hook,
            "canary": canary,
            "home": home,
            "dir": weird,
            "corpus": [t.format(c=canary) for t in TEMPLATES],
        }
    finally:
        hook.close()
        assert not canary.exists(), "an injected command ran"


def _report_job(
    hook: Any, key: str, out: Path, args: list[str], env: dict[str, str], cwd: str | None = None
) -> dict[str, Any]:
    command = [sys.executable, "-c", REPORT, str(out), *args]
    names = sorted(env)
    env = dict(env, OJ_NAMES=json.dumps(names))
    job = hook.start(key, command, env=env, cwd=cwd, mode="reuse_success")
    final = wait_ended(hook, job["job_id"])
    assert final["status"] == "SUCCEEDED", final
    recorded = hook.status(job_id=job["job_id"])
    # The hook's answers name the variables but never carry their values (they would reach XCom); the values
    # themselves are checked below, as the job received them.
    assert recorded["command"] == command and recorded["env"] == dict.fromkeys(env, "***")
    assert recorded["run_key"] == key
    assert recorded["cwd"] == cwd
    got = json.loads(out.read_text())
    assert got["argv"] == args, "the job received other arguments than given"
    assert got["env"] == {k: env[k] for k in names}, "the job received other variables than given"
    return got


def test_a_hostile_cli_path_is_refused_before_connecting_and_works_through_a_link(
    sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's path is the one word on the SSH command line: a path full of metacharacters is refused with a
    message naming the way out (a link), and that way out works."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    monkeypatch.setenv("AIRFLOW_CONN_%s" % CONN_ID.upper(), sshd.airflow_connection_json())
    canary = tmp_path / "CANARY"
    weird = tmp_path / ("dir 'q' \"d\" $(touch %s) `x` ;&|" % canary)
    launcher = write_cli_launcher(weird / "bin" / "orchesjob", python=sys.executable)
    home = str(tmp_path / "home")
    with pytest.raises(ValueError, match="cannot go on the SSH command line.*link") as refused:
        hook = OrchesjobHook(CONN_ID, orchesjob_bin=launcher, orchesjob_home=home, retry_backoff=0.1)
        try:
            hook.status(run_key="k")
        finally:
            hook.close()
    assert repr(launcher) in str(refused.value)
    link = tmp_path / "orchesjob-link"
    link.symlink_to(launcher)
    hook = OrchesjobHook(CONN_ID, orchesjob_bin=str(link), orchesjob_home=home, retry_backoff=0.1)
    try:
        job = hook.start("k", ["true"], mode="reuse_success")
        assert wait_ended(hook, job["job_id"])["status"] == "SUCCEEDED"
    finally:
        hook.close()
    assert not canary.exists(), "an injected command ran"


def test_hostile_arguments_and_environment_arrive_verbatim(sec: dict[str, Any]) -> None:
    hook, corpus, weird = sec["hook"], sec["corpus"], sec["dir"]
    out = weird / "report $(x).json"
    _report_job(hook, "args", out, corpus, {})
    env = {"V%02d" % i: s for i, s in enumerate(corpus)}
    for i, name in enumerate(["A B", "$(touch %s)" % sec["canary"], "`x`", ";x", "ü", "-x", "X\ny"]):
        env[name] = "value %d" % i
    _report_job(hook, "env", weird / "report-env.json", [], env)


def test_hostile_run_keys_are_just_keys(sec: dict[str, Any]) -> None:
    from orchesjob_provider.exceptions import OrchesjobInvalidArgument

    hook = sec["hook"]
    accepted = rejected = 0
    for key in sec["corpus"]:
        valid = 0 < len(key) <= 256 and key.isprintable()
        if not valid:
            with pytest.raises(OrchesjobInvalidArgument):
                hook.start(key, ["true"])
            rejected += 1
            continue
        job = hook.start(key, ["true"])
        assert job["run_key"] == key and job["command"] == ["true"]
        assert hook.status(run_key=key)["job_id"] == job["job_id"]
        accepted += 1
    listed = {j["run_key"] for j in hook.status(running=True)}
    assert listed <= set(sec["corpus"])
    print("run keys accepted %d, rejected as invalid %d" % (accepted, rejected))


def test_hostile_working_directories_arrive_verbatim(sec: dict[str, Any]) -> None:
    hook, weird = sec["hook"], sec["dir"]
    names = [s for s in sec["corpus"] if s and "/" not in s and s not in (".", "..") and len(s.encode()) <= 255]
    # components of a few deep paths (PATH_MAX is 4096), every usable corpus string once
    paths, current = [], weird / "cwds"
    for name in names:
        if len(str(current / name).encode()) > 3500:
            paths.append(current)
            current = weird / "cwds" / ("p%d" % len(paths))
        current = current / name
    paths.append(current)
    for i, path in enumerate(paths):
        path.mkdir(parents=True)
        got = _report_job(hook, "cwd-%d" % i, weird / ("cwd-%d.json" % i), [], {}, cwd=str(path))
        assert got["cwd"] == str(path)


def test_hostile_reasons_are_recorded_verbatim(sec: dict[str, Any]) -> None:
    hook = sec["hook"]
    reasons = [s for s in sec["corpus"] if len(s) <= 4096] + ["".join(sec["corpus"])[:4096]]
    for i, reason in enumerate(reasons[::4]):  # a quarter of them through abort, the rest below
        job = hook.start("abort-%d" % i, ["sleep", "60"])
        aborted = hook.abort(job_id=job["job_id"], reason=reason, grace_seconds=1)
        assert aborted["abort_reason"] == reason and aborted["status"] == "ABORTED"
    done = hook.start("reasons", ["true"], mode="strict")
    wait_ended(hook, done["job_id"])
    for reason in reasons[1::4]:
        again = hook.rerun(job_id=done["job_id"], reason=reason)
        assert again["rerun_reason"] == reason
        wait_ended(hook, again["job_id"])
    for reason in reasons[2::4]:
        unlocked = hook.unlock("reasons", reason=reason)
        assert unlocked["reason"] == reason
    strict = hook.start("reasons", ["true"], mode="strict")
    assert strict["strict_override_used"] is True and strict["override_reason"] == reasons[2::4][-1]


# ------------------------------------------------------------------------------------------------- file modes
def _modes(home: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(home.stat().st_mode)}
    for p in home.rglob("*"):
        out[str(p.relative_to(home))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def test_state_files_are_private_after_real_use_whatever_the_umask(sec: dict[str, Any], tmp_path: Path) -> None:
    """Over SSH, with a remote umask of 000: the state directory and logs/ are 0700, the database (and its WAL
    and shared-memory files) and every log are 0600, after successes, failures, aborts and running jobs."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    loose = tmp_path / "loose-orchesjob"
    loose.write_text('#!/bin/sh\numask 000\nexec %s "$@"\n' % _q(str(sec["hook"].settings.orchesjob_bin)))
    loose.chmod(0o755)
    home = tmp_path / "modes-home"
    with OrchesjobHook(CONN_ID, orchesjob_bin=str(loose), orchesjob_home=str(home)) as hook:
        ok_job = hook.start("ok", ["sh", "-c", "echo out; echo err >&2"])
        bad = hook.start("bad", ["sh", "-c", "exit 3"])
        long = hook.start("long", ["sleep", "60"])
        victim = hook.start("victim", ["sleep", "60"])
        hook.abort(job_id=victim["job_id"], grace_seconds=1)
        for job in (ok_job, bad):
            wait_ended(hook, job["job_id"])
        modes = _modes(home)
        hook.abort(job_id=long["job_id"], grace_seconds=1)
    wrong = {}
    for name, mode in modes.items():
        want = 0o700 if name in (".", "logs") else 0o600
        if mode != want:
            wrong[name] = oct(mode)
    assert not wrong, "files of the state directory with other modes than 0700/0600: %s" % wrong
    assert {"orchesjob.db", "logs"} <= set(modes), modes


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


# ------------------------------------------------------------------------------------ shared state directory
def _as_nobody(argv: list[str]) -> list[str]:
    python = shutil.which("python3", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not python or not setpriv:
        unavailable("setpriv and /usr/bin/python3 are needed to act as another user")
    assert python and setpriv  # unavailable raised otherwise
    return [setpriv, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", python] + argv[1:]


@pytest.fixture
def reachable(tmp_path: Path) -> Path:
    """A directory other users can traverse (pytest's temporary directories are private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as two users")
    base = Path(os.path.realpath(tmp_path))
    for parent in [base] + list(base.parents):
        if parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)
    return base


def test_wide_state_directory_of_our_own_is_tightened_with_a_warning(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    (home / "logs").mkdir(parents=True)
    os.chmod(home, 0o777)
    os.chmod(home / "logs", 0o777)
    r = run_cli(home, "start", "--sync", "--run-key", "k", "--", "true")
    assert r.code == 0, r
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("orchesjob: warning:")]
    assert any(str(home) in w for w in warnings), r.err
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o700], ids=["0777", "0755", "0700"])
def test_state_directory_owned_by_another_user_is_refused(reachable: Path, mode: int) -> None:
    """root uses an ORCHESJOB_HOME that belongs to nobody. Whatever its mode, its owner can replace the database
    root reads (and `rerun` runs commands from it) or plant links there, so the CLI refuses it (`state_dir`, naming
    the owner) and creates or changes nothing in it, for reading and writing commands alike."""
    import pwd

    home = reachable / ("theirs-%o" % mode)
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chmod(home, mode)
    owner = "%s (uid %d)" % (pwd.getpwuid(NOBODY).pw_name, NOBODY)
    for args in (["start", "--sync", "--run-key", "k", "--", "true"], ["status", "--running"]):
        r = run_cli(home, *args)
        assert r.code == 1 and r.json is not None and r.json["error"] == "state_dir", r
        assert str(home) in r.json["message"] and owner in r.json["message"], r.json
        assert os.listdir(home) == [], "something was created in nobody's state directory"
        assert stat.S_IMODE(home.stat().st_mode) == mode and home.stat().st_uid == NOBODY


def test_another_user_cannot_read_our_jobs_in_a_shared_state_directory(reachable: Path) -> None:
    """A world-writable ORCHESJOB_HOME shared by root and nobody: nobody learns nothing of root's jobs (their
    commands, environment, output) through the CLI or by reading the files."""
    home = reachable / "shared"
    home.mkdir()
    os.chmod(home, 0o777)
    secret = "s3cr3t-%d" % os.getpid()
    r = run_cli(
        home, "start", "--sync", "--run-key", "root-job", "--env", "TOKEN=%s" % secret, "--", "sh", "-c", "echo $TOKEN"
    )
    assert r.code == 0, r
    job = r.json
    env = cli_env(home)
    for args in (
        ["status", "--run-key", "root-job"],
        ["status", "--running"],
        ["logs", "--run-key", "root-job"],
        ["status", "--job-id", job["job_id"]],
    ):
        p = subprocess.run(_as_nobody(cli_argv(*args)), env=env, cwd="/", capture_output=True, timeout=60)
        assert secret.encode() not in p.stdout + p.stderr, "nobody read root's job through %s" % args
        assert b"Traceback" not in p.stdout + p.stderr, p.stderr
    for path in (home / "orchesjob.db", Path(job["stdout_file"]), Path(job["stderr_file"])):
        p = subprocess.run(
            _as_nobody([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())", str(path)]),
            capture_output=True,
            timeout=60,
        )
        assert p.returncode != 0 and secret.encode() not in p.stdout, "nobody could read %s" % path
