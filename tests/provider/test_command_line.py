"""Unit tests of the remote calls (command line and request) and of the parsing of the CLI's answers (no SSH).

The request tests do not trust our reading of JSON: they hand the request to the real CLI and check that every
argument arrives byte for byte in the job, for hand-picked hostile strings and for generated ones. The command line
tests run it through every login shell a host may have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orchesjob
from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider import command as cmd
from orchesjob_provider.exceptions import (
    OrchesjobConflict,
    OrchesjobError,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobLockTimeout,
    OrchesjobNotFound,
    OrchesjobTransportError,
)
from tests.support.cli import cli_argv, cli_env

pytestmark = pytest.mark.timeout(120)

NASTY = [
    "plain",
    "with space",
    "it's",
    'double "quotes"',
    "$(touch /tmp/pwned)",
    "`id`",
    "a; rm -rf /",
    "a && b || c",
    "line1\nline2",
    "tab\there",
    "back\\slash",
    "glob * ? [a]",
    "~root",
    "$HOME ${HOME}",
    "-starts-with-dash",
    "--run-key=evil",
    "",
    "'",
    "''",
    '"\'"\'"',
    "ünïcødé ✓ 日本語 🚀",
    "#comment",
    "a|b>c<d&e",
    "!history",
    "\r\n",
]


class Args(cmd.Verbs[list[Any]]):
    """The verbs' argument lists, as their definitions build them."""

    def call(self, call: cmd.Call) -> list[Any]:
        return list(call.args)


A = Args()
SHELLS = ["/bin/sh", "bash", "zsh", "fish", "tcsh"]


def shells() -> list[str]:
    """The login shells a host may give the SSH user. Under CI each must be installed (.ci/run installs them)."""
    import shutil

    found = [s for s in SHELLS if shutil.which(s)]
    if os.environ.get("CI"):
        assert found == SHELLS, "install zsh, fish and tcsh (apt-get install zsh fish tcsh)"
    return found


def run_requested(tmp_path, argv: list[str]) -> list[str]:
    """What the real CLI's request reader makes of a request carrying `argv` as the command of a job: the job prints
    its own argv as JSON (a real `orchesjob start --request -`, its supervisor and the job as processes)."""
    echo = [sys.executable, "-c", "import json,sys; print(json.dumps(sys.argv[1:]))"]
    call = cmd.define.start("k", [*echo, *argv], mode="default", sync=True)
    proc = subprocess.run(
        cli_argv("start", "--request", "-"),
        input=call.request(None),
        capture_output=True,
        env=cli_env(tmp_path / "oj"),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    with open(job["stdout_file"], "rb") as f:
        return json.loads(f.read())


def test_every_argument_arrives_literally_through_the_request(tmp_path) -> None:
    """Nothing goes through a shell: the request is JSON on stdin, read by the CLI alone."""
    assert run_requested(tmp_path, NASTY) == NASTY


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])), max_size=5))
def test_generated_arguments_arrive_literally(tmp_path_factory, args: list) -> None:
    assert run_requested(tmp_path_factory.mktemp("req"), args) == args


def test_the_request_carries_every_argument_and_the_state_directory() -> None:
    call = cmd.define.start("k$x", ["echo", "a'b"], env={"T": "v;w"}, cwd="/d e", request_id="r")
    request = json.loads(call.request("/srv/oj state"))
    assert request == {"argv": list(call.args[1:]), "state_dir": "/srv/oj state"}
    assert "--env=T=v;w" in request["argv"] and request["argv"][-2:] == ["echo", "a'b"]
    assert "state_dir" not in json.loads(call.request(None))
    assert call.request(None).endswith(b"\n") and call.request(None).count(b"\n") == 1  # one line


@pytest.mark.parametrize(
    "word",
    ["/opt/orchesjob", "orchesjob", "~/.local/bin/orchesjob", "/usr/bin/python3.11", "/a/b_c-d+e:f@g/h.pyz"],
)
def test_safe_words_stand_on_the_command_line_as_they_are(word: str) -> None:
    assert cmd.check_word(word, "orchesjob_bin") == word
    assert cmd.cli_words(word) == [word]


@pytest.mark.parametrize(
    "word",
    ["", "-x", "/opt/my tools/oj", "/a/$(id)", "/a/`id`", "/a;b", "~root/oj", "/a/b'c", "/a/*", "/a/!x", "/a\\b"],
)
def test_anything_a_shell_might_read_differently_is_refused(word: str) -> None:
    with pytest.raises(ValueError, match="cannot go on the SSH command line"):
        cmd.check_word(word, "orchesjob_bin")


def test_an_argv_prefix_keeps_its_options() -> None:
    assert cmd.cli_words(["/opt/py", "-m", "orchesjob"]) == ["/opt/py", "-m", "orchesjob"]
    with pytest.raises(ValueError):
        cmd.cli_words([])
    with pytest.raises(ValueError):
        cmd.cli_words(["/opt/py", "-c", "import os; os.system('x')"])


def test_the_command_line_reads_the_same_in_every_login_shell(tmp_path) -> None:
    """The line of a call (a checked path with ~/, the verb, --request -) and the uploaded CLI's bootstrap
    (python3 -I -c '...') give the program the same argv and stdin under sh, bash, zsh, fish and tcsh."""
    from orchesjob_provider import launcher

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "oj"
    fake.write_text("#!/bin/sh\nprintf '%s|' \"$@\"; cat\n")
    fake.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    line = " ".join([*cmd.cli_words("~/bin/oj"), "start", "--request", "-"])
    boot = " ".join([sys.executable, "-I", "-c", f"'{launcher.BOOTSTRAP}'"])
    request = cmd.define.status(run_key="$(id) `x` !! 'q' \\").request(None)
    seen = {}
    for shell in shells():
        a = subprocess.run([shell, "-c", line], input=request, capture_output=True, env=env, timeout=30)
        b = subprocess.run(
            [shell, "-c", boot], input=b"print('boot ok')\n" + request, capture_output=True, env=env, timeout=30
        )
        seen[shell] = (a.returncode, a.stdout, b.returncode, b.stdout)
    assert seen["/bin/sh"] == (0, b"start|--request|-|" + request, 0, b"boot ok\n")
    assert all(v == seen["/bin/sh"] for v in seen.values()), seen


def test_nul_bytes_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="NUL"):
        cmd.request_line(["a\x00b"], None)
    with pytest.raises(ValueError, match="NUL"):
        A.start("k", ["echo", "a\x00"])
    with pytest.raises(ValueError, match="NUL"):
        A.start("k\x00", ["echo"])


def test_start_args_modes_and_options() -> None:
    args = A.start(
        "-key",
        ["prog", "--flag", "x y"],
        mode="reuse_success",
        cwd="/w d",
        env={"A": "1=2", "B": "$x"},
        timeout=2.5,
        start_timeout=10,
        request_id="-rid",
    )
    assert args == [
        "start",
        "--run-key=-key",
        "--request-id=-rid",
        "--reuse-success",
        "--start-timeout=10",
        "--cwd=/w d",
        "--env=A=1=2",
        "--env=B=$x",
        "--timeout=2.5",
        "--",
        "prog",
        "--flag",
        "x y",
    ]
    assert "--strict" in A.start("k", ["p"], mode="strict")
    default = A.start("k", ["p"], mode="default")
    assert "--strict" not in default and "--reuse-success" not in default
    assert "--sync" in A.start("k", ["p"], sync=True)
    with pytest.raises(ValueError):
        A.start("k", ["p"], mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        A.start("k", [])
    with pytest.raises(ValueError):
        A.start("k", ["p"], env={"A=B": "x"})


def test_string_command_runs_through_sh() -> None:
    assert cmd.normalize_command("echo a; echo b") == ["/bin/sh", "-c", "echo a; echo b"]
    assert cmd.normalize_command(["echo", 1]) == ["echo", "1"]
    with pytest.raises(ValueError):
        cmd.normalize_command("   ")


def test_selectors_need_exactly_one() -> None:
    assert A.status(run_key="k") == ["status", "--run-key=k"]
    assert A.status(job_id="j") == ["status", "--job-id=j"]
    assert A.status(run_key="k", all_attempts=True) == ["status", "--run-key=k", "--all"]
    assert A.status(running=True) == ["status", "--running"]
    bads: list[dict[str, Any]] = [{}, {"run_key": "k", "job_id": "j"}]
    for bad in bads:
        with pytest.raises(ValueError):
            A.status(**bad)
    with pytest.raises(ValueError):
        A.status(job_id="j", all_attempts=True)


def test_wait_logs_abort_rerun_unlock_clean_args() -> None:
    assert A.wait(job_id="j", timeout=30, stdout_offset=0, stderr_offset=12, max_bytes=100) == [
        "wait",
        "--job-id=j",
        "--timeout=30",
        "--stdout-offset=0",
        "--stderr-offset=12",
        "--max-bytes=100",
    ]
    assert A.logs(run_key="k", stream="stderr", offset=5, limit=7) == [
        "logs",
        "--run-key=k",
        "--stream=stderr",
        "--offset=5",
        "--limit=7",
        "--json",
    ]
    assert A.abort(job_id="j", reason="why; not", grace_seconds=0.5) == [
        "abort",
        "--job-id=j",
        "--reason=why; not",
        "--grace-seconds=0.5",
    ]
    assert A.rerun(run_key="k", reason="r") == ["rerun", "--run-key=k", "--reason=r"]
    assert A.unlock("k", reason="r", ttl="30m") == ["unlock", "--run-key=k", "--reason=r", "--ttl=30m"]
    assert A.clean(all_jobs=True, run_key="k", dry_run=True) == ["clean", "--all", "--run-key=k", "--dry-run"]
    assert A.clean(job_id="j") == ["clean", "--job-id=j"]
    with pytest.raises(ValueError):
        A.clean()
    with pytest.raises(ValueError):
        A.clean(job_id="j", all_jobs=True)
    with pytest.raises(ValueError):
        A.logs(job_id="j", stream="both")
    with pytest.raises(ValueError):
        A.wait(job_id="j", stdout_offset=-1)


@pytest.mark.parametrize(
    "value, text",
    [(30, "30"), (2.5, "2.5"), (3.0, "3"), ("45", "45"), ("1.25", "1.25"), (0.1, "0.1"), (1e-7, "1e-07")],
)
def test_numbers_render_plainly(value, text) -> None:
    assert A.wait(job_id="j", timeout=value)[2] == f"--timeout={text}"


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), "soon", [1]])
def test_bad_numbers_are_refused(value) -> None:
    with pytest.raises(ValueError):
        A.wait(job_id="j", timeout=value)


# --------------------------------------------------------------------------- parsing


def test_parse_success_object_and_list() -> None:
    assert cmd.parse_output('{"job_id": "x", "status": "RUNNING"}\n', 0) == {"job_id": "x", "status": "RUNNING"}
    assert cmd.parse_output(b'[{"job_id": "x"}]', 0, b"") == [{"job_id": "x"}]


def test_parse_tolerates_a_login_banner_before_the_json() -> None:
    out = 'Welcome to host!\nlast login: never {not json\n{\n  "version": "1.0.0",\n  "contract": 1\n}\n'
    assert cmd.parse_output(out, 0) == {"version": "1.0.0", "contract": 1}


@pytest.mark.parametrize(
    "error, code, cls",
    [
        ("invalid_argument", 2, OrchesjobInvalidArgument),
        ("not_found", 3, OrchesjobNotFound),
        ("inconsistent_state", 4, OrchesjobConflict),
        ("lock_timeout", 5, OrchesjobLockTimeout),
        ("corrupt_database", 1, OrchesjobError),
        ("some_future_error", 3, OrchesjobNotFound),
    ],
)
def test_parse_error_json_maps_to_typed_exceptions(error, code, cls) -> None:
    payload = {"error": error, "message": 'it\'s "bad"', "exit_code": code}
    with pytest.raises(cls) as info:
        cmd.parse_output(json.dumps(payload), code, "orchesjob: it's bad\n", command="orchesjob x")
    exc = info.value
    assert type(exc) is cls
    assert exc.error_type == error
    assert exc.exit_code == code
    assert exc.payload == payload
    assert exc.command == "orchesjob x"
    assert 'it\'s "bad"' in str(exc)


def test_typed_exceptions_are_airflow_exceptions_and_pickle() -> None:
    import pickle

    from orchesjob_provider.compat import AirflowException

    exc = OrchesjobNotFound("gone", exit_code=3, payload={"error": "not_found"}, stderr="e", command="c")
    assert isinstance(exc, AirflowException)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is OrchesjobNotFound
    assert (again.message, again.exit_code, again.payload, again.stderr, again.command) == (
        "gone",
        3,
        {"error": "not_found"},
        "e",
        "c",
    )


@pytest.mark.parametrize(
    "code, stderr",
    [
        (127, "sh: 1: orchesjob: not found"),
        (127, "bash: /opt/x/orchesjob: No such file or directory"),
        (126, "sh: 1: /opt/x/orchesjob: Permission denied"),
        (1, "/usr/bin/python3: No module named orchesjob"),
    ],
)
def test_missing_cli_is_incompatible(code, stderr) -> None:
    with pytest.raises(OrchesjobIncompatibleCli, match="could not be run"):
        cmd.parse_output("", code, stderr)


@pytest.mark.parametrize(
    "out, code",
    [("", None), ("", -1), ('{"job_id": "x"', 0), ("Traceback ...", 1), ("", 0)],
)
def test_no_status_or_no_json_is_a_transport_error(out, code) -> None:
    with pytest.raises(OrchesjobTransportError):
        cmd.parse_output(out, code, "")


def test_check_version() -> None:
    assert cmd.check_version({"version": "1.2.3", "contract": CONTRACT_VERSION})["contract"] == CONTRACT_VERSION
    with pytest.raises(OrchesjobIncompatibleCli, match="contract 1") as refused:
        cmd.check_version({"version": "0.1.0", "contract": 1})  # predates --request-id
    # both versions and what to do, in the words a user reads in the task log
    assert "the remote orchesjob 0.1.0 speaks JSON contract 1" in str(refused.value)
    assert f"this provider is orchesjob {orchesjob.__version__} and speaks JSON contract {CONTRACT_VERSION}" in str(
        refused.value
    )
    assert f"pip install 'orchesjob=={orchesjob.__version__}'" in str(refused.value)
    with pytest.raises(OrchesjobIncompatibleCli, match="contract 2"):
        cmd.check_version({"version": "0.1.0", "contract": 2})  # predates requests on stdin
    with pytest.raises(OrchesjobIncompatibleCli, match="contract 99"):
        cmd.check_version({"version": "9.0.0", "contract": 99})
    with pytest.raises(OrchesjobIncompatibleCli, match="did not report"):
        cmd.check_version({"version": "1.1.0"})
    with pytest.raises(OrchesjobIncompatibleCli):
        cmd.check_version(["nope"])


def test_is_terminal() -> None:
    assert cmd.is_terminal({"status": "RUNNING", "active": False})
    assert not cmd.is_terminal({"status": "SUCCEEDED", "active": True})
    assert cmd.is_terminal({"status": "FAILED"})
    assert not cmd.is_terminal({"status": "STARTING"})
