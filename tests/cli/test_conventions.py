"""The conventions a person expects of a command-line tool, checked on the CLI as a process: usage for a bare
`orchesjob` and `orchesjob help [COMMAND]`, "did you mean", one error line on a terminal (JSON stays the answer
on a pipe), `--format json|table` on every command with a view, shell completion run by the real shells, and the
man page read by man and groff. Help, completion and the man page are written from the parser's own table
(orchesjob/arguments.py): the tests compare each against that table, so none of them can drift from what is parsed."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchesjob import arguments as argv
from tests.support.cli import REPO_ROOT, Pty, check_error, check_ok, cli_argv, cli_env

HAS_FORMAT = sorted(name for name, (_, spec, _) in argv.COMMANDS.items() if "--format" in spec)


def flags_in_help(text: str) -> set[str]:
    """The long options an options: section lists."""
    section = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", section, re.M)) - {"--help"}


# -- usage and help ---------------------------------------------------------------------------------------------------
def test_a_bare_orchesjob_prints_usage_to_a_person_and_an_error_object_to_a_program(home, run):
    code, out = Pty(home).finish()
    assert code == 2
    assert out.startswith("usage: orchesjob COMMAND") and "{" not in out.splitlines()[0]
    assert "\ncommands:\n" in out and "\nexit status:\n" in out
    r = run()  # a pipe: a program reads one JSON error, as always
    err = check_error(r, 2, "invalid_argument")
    assert "a command is needed" in err["message"]


def test_help_prints_the_program_s_help_with_environment_exit_codes_and_examples(run):
    r = run("help")
    assert r.code == 0 and r.err == ""
    out = r.out
    for section in ("commands:", "environment:", "exit status:", "examples:"):
        assert "\n%s\n" % section in out, section
    for name, (summary, _, _) in argv.COMMANDS.items():
        assert re.search(r"^  %s +%s$" % (re.escape(name), re.escape(summary)), out, re.M), name
    for variable in ("ORCHESJOB_HOME", "ORCHESJOB_LOCK_TIMEOUT", "NO_COLOR"):
        assert "\n  %s" % variable in out
    for code in ("0", "2", "3", "5", "6", "130"):
        assert re.search(r"^  %s +\S" % code, out, re.M), code
    assert run("--help").out == out and run("-h").out == out


@pytest.mark.parametrize("name", sorted(argv.COMMANDS))
def test_help_of_each_command_lists_exactly_the_options_its_parser_takes(run, name):
    r = run("help", name)
    assert r.code == 0, r
    _, spec, _ = argv.COMMANDS[name]
    assert r.out.startswith("usage: orchesjob %s" % name)
    if spec:
        assert flags_in_help(r.out) == set(spec)
    if name in argv.POSITIONAL:
        assert "[%s]" % argv.POSITIONAL[name][0] in r.out.splitlines()[0]
    if name not in ("help", "completion", "version"):  # --help after the command is the same text
        assert run(name, "--help").out == r.out


def test_help_of_an_unknown_command_is_a_mistake_with_a_suggestion(run):
    err = check_error(run("help", "stauts"), 2, "invalid_argument")
    assert "unknown command 'stauts'" in err["message"] and "did you mean status" in err["message"]


# -- did you mean ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, wanted",
    [
        (("statsu",), "did you mean status"),
        (("strat", "--run-key", "k"), "did you mean start"),
        (("cleen", "--all"), "did you mean clean"),
        (("status", "--run-kye", "k"), "did you mean --run-key"),
        (("logs", "--stram", "stderr", "--run-key", "k"), "did you mean --stream"),
        (("logs", "--run-key", "k", "--flow"), "did you mean --follow"),
        (("ls", "--stats", "FAILED"), "did you mean --status"),
        (("wait", "--running"), "an option of status"),
        (("ls", "--status", "FAILD"), "did you mean FAILED"),
        (("completion", "bsh"), "did you mean bash"),
    ],
)
def test_a_typo_gets_a_suggestion(run, args, wanted):
    err = check_error(run(*args), 2, "invalid_argument")
    assert wanted in err["message"], err
    assert "unknown" in err["message"] or "not a status" in err["message"] or "needs a shell" in err["message"]


def test_no_suggestion_for_what_is_not_close(run):
    err = check_error(run("frobnicate"), 2, "invalid_argument")
    assert "did you mean" not in err["message"] and "the commands are start, status" in err["message"]


# -- errors: one line for a person, one object for a program -----------------------------------------------------
def test_on_a_terminal_an_error_is_one_line_and_on_a_pipe_one_json_object_plus_that_line(home, run):
    code, out = Pty(home, "status", "--run-key", "nope").finish()
    assert code == 3
    assert out.splitlines() == ["orchesjob: run_key not found: no job with run key 'nope'"], out
    r = run("status", "--run-key", "nope")
    err = check_error(r, 3, "not_found")
    assert r.err.strip() == "orchesjob: " + err["message"]
    # asked for JSON on a terminal: the object too
    code, out = Pty(home, "status", "--run-key", "nope", "--format", "json").finish()
    assert code == 3
    assert json.loads(out.split("orchesjob: ")[0])["error"] == "not_found"
    code, out = Pty(home, "statsu").finish()
    assert code == 2 and len(out.splitlines()) == 1 and out.startswith("orchesjob: unknown command 'statsu'")


# -- --format json|table ------------------------------------------------------------------------------------------
def test_every_command_with_a_view_takes_format_json_and_table(run, ok, start_job, home):
    job = start_job("fmt", "sh", "-c", "echo out; exit 3", opts=("--sync",))
    assert HAS_FORMAT == sorted(
        ["start", "status", "wait", "logs", "abort", "rerun", "unlock", "clean", "ls", "doctor"]
    ), "a command gained --format: give it a case here"
    tables = {
        "start": ("start", "--run-key", "fmt2", "--sync", "--format", "table", "--", "true"),
        "status": ("status", "--run-key", "fmt", "--format", "table"),
        "wait": ("wait", "--run-key", "fmt", "--format", "table"),
        "logs": ("logs", "--run-key", "fmt", "--format", "table"),
        "abort": ("abort", "--run-key", "fmt", "--format", "table"),  # a finished job: refused, one line
        "rerun": ("rerun", "--run-key", "fmt2", "--sync", "--format", "table"),
        "unlock": ("unlock", "--run-key", "fmt", "--format", "table"),
        "ls": ("ls", "--last", "5", "--format", "table"),
        "doctor": ("doctor", "--format", "table"),
        "clean": ("clean", "--job-id", job["job_id"], "--dry-run", "--format", "table"),
    }
    assert sorted(tables) == HAS_FORMAT
    for name in tables:  # in this order: rerun needs what start started
        r = run(*tables[name])
        assert "Traceback" not in r.err, r
        if name == "abort":
            check_error(r, 4)
            continue
        assert r.code in (0, 1) and r.json is None, (name, r)  # a view, not JSON (doctor: 1 with findings)
        r_json = run(*[a if a != "table" else "json" for a in tables[name]])
        assert r_json.json is not None or name == "logs", (name, r_json)
    view = run(*tables["status"]).out
    assert re.search(r"^job id +%s$" % job["job_id"], view, re.M) and re.search(r"^exit code +3$", view, re.M)
    assert run(*tables["logs"]).out == "out\n"
    assert check_ok(run("logs", "--run-key", "fmt", "--format", "json"))["data"] == "out\n"
    assert check_ok(run("logs", "--run-key", "fmt", "--json")) == check_ok(
        run("logs", "--run-key", "fmt", "--format", "json")
    )
    assert "would delete 1 finished job" in run(*tables["clean"]).out
    assert "run key 'fmt'" in run(*tables["unlock"]).out
    # the same answer as JSON, whatever the spelling
    as_json = check_ok(run("status", "--run-key", "fmt", "--format", "json"))
    assert as_json == check_ok(run("status", "--run-key", "fmt"))
    check_error(run("status", "--run-key", "fmt", "--format", "xml"), 2, "invalid_argument")
    err = check_error(run("ls", "--json", "--format", "table"), 2, "invalid_argument")
    assert "contradict" in err["message"]


def test_doctor_keeps_text_as_another_name_of_table(run):
    assert run("doctor", "--format", "text").out == run("doctor", "--format", "table").out


# -- completion -----------------------------------------------------------------------------------------------------
def completion_script(home: Path, shell: str, tmp_path: Path) -> Path:
    r = subprocess.run(cli_argv("completion", shell), env=cli_env(home), capture_output=True, cwd=REPO_ROOT)
    assert r.returncode == 0 and r.stderr == b"", r
    path = tmp_path / ("orchesjob." + shell)
    path.write_bytes(r.stdout)
    return path


def bash_complete(script: Path, line: str) -> list[str]:
    """What bash offers after `line` (the word being completed is its last, possibly empty, word)."""
    program = """
source "$1"
read -r -a COMP_WORDS <<< "$2"
[[ $2 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE=$2
COMP_POINT=${#2}
_orchesjob
printf '%s\\n' "${COMPREPLY[@]}"
"""
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", str(script), line], capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r
    return sorted(w for w in r.stdout.decode().splitlines() if w)


def test_bash_completion_through_compgen(home, tmp_path):
    script = completion_script(home, "bash", tmp_path)
    assert bash_complete(script, "orchesjob ") == sorted(argv.COMMANDS)
    assert bash_complete(script, "orchesjob st") == ["start", "status"]
    assert bash_complete(script, "orchesjob logs --st") == ["--stream"]
    assert bash_complete(script, "orchesjob logs --stream ") == ["stderr", "stdout"]
    assert bash_complete(script, "orchesjob ls --status F") == ["FAILED"]
    assert bash_complete(script, "orchesjob ls --format ") == ["json", "table"]
    assert bash_complete(script, "orchesjob help lo") == ["logs"]
    assert bash_complete(script, "orchesjob completion ") == ["bash", "fish", "zsh"]
    (tmp_path / "subdir").mkdir()
    os.chdir(tmp_path)
    try:
        assert bash_complete(script, "orchesjob start --cwd sub") == ["subdir"]
    finally:
        os.chdir(REPO_ROOT)
    assert "bash" in bash_complete(script, "orchesjob start --run-key k -- bas")  # the commands on the PATH
    # every command's options, exactly as the parser has them
    for name, (_, spec, _) in argv.COMMANDS.items():
        wanted = sorted(set(spec) | set(argv.SHORT.get(name, {})) | {"--help"})
        assert bash_complete(script, "orchesjob %s -" % name) == wanted, name


def test_zsh_completion_loads_and_registers(home, tmp_path):
    script = completion_script(home, "zsh", tmp_path)
    r = subprocess.run(["zsh", "-n", str(script)], capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(script, fpath / "_orchesjob")
    program = 'fpath=(%s $fpath); autoload -U compinit; compinit -u -D; print -r -- "$_comps[orchesjob]"' % fpath
    r = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0 and r.stdout.decode().strip() == "_orchesjob", r
    text = script.read_text()
    for name, (_, spec, _) in argv.COMMANDS.items():
        for flag in spec:
            assert "'%s" % flag in text or "'*%s" % flag in text or "{%s" % flag in text, (name, flag)


def fish_complete(script: Path, line: str) -> list[str]:
    r = subprocess.run(
        ["fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", str(script), line], capture_output=True
    )
    assert r.returncode == 0 and r.stderr == b"", r
    return sorted(w.split("\t")[0] for w in r.stdout.decode().splitlines() if w)


def test_fish_completion_through_complete_c(home, tmp_path):
    script = completion_script(home, "fish", tmp_path)
    assert fish_complete(script, "orchesjob st") == ["start", "status"]
    assert fish_complete(script, "orchesjob logs --stream ") == ["stderr", "stdout"]
    assert fish_complete(script, "orchesjob ls --status FA") == ["FAILED"]
    assert "--run-key-prefix" in fish_complete(script, "orchesjob ls --run")
    assert fish_complete(script, "orchesjob completion ") == ["bash", "fish", "zsh"]


def test_completion_needs_a_known_shell(run):
    check_error(run("completion"), 2, "invalid_argument")
    check_error(run("completion", "tcsh"), 2, "invalid_argument")


# -- the manual -----------------------------------------------------------------------------------------------------
def man_page(run) -> str:
    r = run("help", "--man")
    assert r.code == 0 and r.err == "" and r.out.startswith(".TH ORCHESJOB 1 ")
    return r.out


def test_the_man_page_renders_without_warnings_and_documents_every_option(run, tmp_path):
    page = tmp_path / "orchesjob.1"
    page.write_text(man_page(run))
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r
    r = subprocess.run(
        ["man", "-l", str(page)],
        capture_output=True,
        env=dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8"),
    )
    assert r.returncode == 0, r
    text = re.sub(r".\x08", "", r.stdout.decode())  # overstrike bold, if man left it
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "EXIT STATUS", "FILES", "EXAMPLES"):
        assert re.search(r"^%s$" % section, text, re.M), section
    for name, (_, spec, _) in argv.COMMANDS.items():
        assert "orchesjob %s" % name in text, name
        for flag in spec:
            assert flag in text, (name, flag)
    assert "ORCHESJOB_LOCK_TIMEOUT" in text


def test_the_shipped_man_page_is_the_one_the_cli_writes(run):
    """docs/orchesjob.1 is for packagers; `orchesjob help --man > docs/orchesjob.1` refreshes it."""
    assert (Path(REPO_ROOT) / "docs" / "orchesjob.1").read_text() == man_page(run)
