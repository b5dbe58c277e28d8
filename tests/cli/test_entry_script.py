"""The installed `orchesjob` command (scripts/orchesjob; pip and uv write their interpreter on its first line) starts
the CLI with nothing imported before it: a console-script wrapper imports `re` first, a fifth of a `status` call's
start-up on a host (bench/run.py measures both). Checked by running the script as an installer leaves it, with
Python's own import log."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO_ROOT, Result, check_error, check_ok, cli_env, parse_json, run_cli

SCRIPT = Path(REPO_ROOT) / "scripts" / "orchesjob"
CONSOLE_SCRIPT = (
    "# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom orchesjob.cli import main\nif __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n"
)


def installed(tmp_path: Path, body: str) -> str:
    """`body` as an installer writes a script into a plain venv (none of this environment's .pth files, which may
    import anything at start-up): the venv's interpreter on the first line, executable. The CLI comes from this
    checkout (PYTHONPATH)."""
    venv = tmp_path / "venv"
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    path = venv / "bin" / "orchesjob"
    path.write_text("#!%s\n%s" % (venv / "bin" / "python", body))
    path.chmod(0o755)
    return str(path)


def imports(home: Path, script: str, *args: str) -> tuple[Result, list[str]]:
    """Run the script with Python's import log on: its result and the modules it imported, in order (those after
    `site`, which the interpreter imports before any script, with whatever .pth files of the environment load)."""
    p = subprocess.run(
        [script, *args], env=cli_env(home, {"PYTHONPROFILEIMPORTTIME": "1"}), capture_output=True, cwd=REPO_ROOT
    )
    err = p.stderr.decode("utf-8", "replace")
    modules = [line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:")][1:]
    modules = modules[len(modules) - modules[::-1].index("site") :]
    rest = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    out = p.stdout.decode("utf-8", "replace")
    return Result(p.returncode, parse_json(out), out, rest + "\n" if rest else ""), modules


def test_the_entry_script_imports_nothing_before_the_cli(home, tmp_path):
    assert SCRIPT.read_text().startswith("#!python\n")  # what pip and uv rewrite to their interpreter
    r, modules = imports(home, installed(tmp_path, SCRIPT.read_text().split("\n", 1)[1]), "status", "--run-key", "k")
    check_error(r, 3, "not_found")
    assert "orchesjob.cli" in modules and "_sqlite3" in modules
    assert not {"re", "enum", "argparse", "typing", "json"} & set(modules), modules
    # from Python 3.11 on `_sqlite3` imports functools (and collections, operator... with it) unless the store
    # hands it its stand-in (store._load_sqlite); before 3.11 it never did
    assert not {"functools", "collections", "operator"} & set(modules), modules
    # the console-script wrapper it replaces: `re` (and `enum` with it) before the CLI
    r, modules = imports(home, installed(tmp_path, CONSOLE_SCRIPT), "status", "--run-key", "k")
    check_error(r, 3, "not_found")
    assert modules.index("re") < modules.index("orchesjob.cli")


def test_pyproject_installs_the_entry_script_not_a_console_script():
    text = (Path(REPO_ROOT) / "pyproject.toml").read_text()
    assert 'script-files = ["scripts/orchesjob"]' in text and "\n[project.scripts]" not in text
    assert os.access(str(SCRIPT), os.X_OK)


STATEMENTS = r"""
import sys
assert "functools" not in sys.modules, "the premise: nothing loaded functools before the store"
from orchesjob import store
assert "functools" not in sys.modules, "the stand-in is gone once _sqlite3 is loaded"
conn = store.sqlite3.connect(":memory:", cached_statements=2)
conn.execute("CREATE TABLE t (n INTEGER)")
conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
same = "SELECT n FROM t WHERE n >= ? ORDER BY n"
first = conn.execute(same, (1,))
assert first.fetchone() == (1,)
# the same text again while the first cursor is still reading: a statement of its own, not the one in use
second = conn.execute(same, (3,))
assert second.fetchall() == [(3,), (4,)]
assert first.fetchall() == [(2,), (3,), (4,)]
# more texts than the cache keeps, each one repeated
for round in range(3):
    for k in range(6):
        assert conn.execute("SELECT count(*) + %d FROM t" % k).fetchone() == (5 + k,)
conn.close()
import functools  # whoever needs functools later gets the real one
assert hasattr(functools, "reduce") and hasattr(functools, "partial")
print("ok")
"""


def test_the_store_loads_sqlite_without_functools_and_its_statements_stay_right():
    """A process that imports the store first (as the CLI does) uses the stand-in statement cache: statements
    repeated, one repeated while its first use is still being read, more texts than the cache keeps. (`-S`: no
    .pth file of this environment loads functools first.)"""
    p = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, %r)\n%s" % (REPO_ROOT, STATEMENTS)],
        capture_output=True,
        cwd="/",
    )
    assert p.returncode == 0 and p.stdout == b"ok\n", p.stderr.decode()


# What the CLI's own counting says about one call: every connection it made, and whether each was closed before the
# process left (cli._leave ends it without the interpreter's teardown, after store.close_all).
COUNTED = """
import sys
import orchesjob.store as store
made = []
real_init = store._Connection.__init__
def counted(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    made.append(self)
store._Connection.__init__ = counted
real_close_all = store.close_all
def close_all():
    real_close_all()
    closed = 0
    for conn in made:
        try:
            conn.execute("SELECT 1")
        except store.sqlite3.ProgrammingError:
            closed += 1
    sys.stderr.write("connections=%d closed=%d\\n" % (len(made), closed))
store.close_all = close_all
from orchesjob.cli import main
main()
"""


def test_a_status_opens_the_database_once_and_closes_it_before_leaving(home):
    check_ok(run_cli(home, "start", "--sync", "--run-key", "once", "--", "true"))
    p = subprocess.run(
        [sys.executable, "-c", COUNTED, "status", "--run-key", "once"], env=cli_env(home), capture_output=True
    )
    assert p.returncode == 0 and parse_json(p.stdout.decode())["status"] == "SUCCEEDED", p.stderr
    assert "connections=1 closed=1" in p.stderr.decode()
    # closed as a full exit closes it: the WAL checkpointed into the database and its files removed
    assert sorted(n for n in os.listdir(home) if n.startswith("orchesjob.db")) == ["orchesjob.db"]


def test_the_cli_forgets_closed_connections_as_it_goes():
    """A supervisor opens a connection per poll for days: the list close_all walks holds the open ones only."""
    import sqlite3

    from orchesjob import store

    before = len(store._OPENED)
    for _ in range(200):
        conn = store._Connection(":memory:")
        conn.close()
        del conn
    assert len(store._OPENED) - before <= 9
    kept = store._Connection(":memory:")
    store.close_all()
    try:
        kept.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        pass
    else:
        raise AssertionError("close_all left a connection open")


def test_an_answer_that_cannot_be_written_is_not_a_success(home):
    """The CLI leaves without the interpreter's teardown (cli._leave), which would have reported a failed final
    flush: an answer lost to a full disk must still end with exit 1, whichever way it is written."""
    check_ok(run_cli(home, "start", "--sync", "--run-key", "full", "--", "echo", "a line to lose"))
    for args in (
        ("status", "--run-key", "full"),
        ("status", "--run-key", "full", "--format", "table"),
        ("--version",),
        ("help", "status"),
        ("logs", "--run-key", "full"),
    ):
        with open("/dev/full", "w") as full:
            p = subprocess.run(
                [sys.executable, "-m", "orchesjob", *args], env=cli_env(home), stdout=full, stderr=subprocess.PIPE
            )
        assert p.returncode == 1, (args, p.returncode, p.stderr)
