"""The installed `orchesjob` command (scripts/orchesjob; pip and uv write their interpreter on its first line) starts
the CLI with nothing imported before it: a console-script wrapper imports `re` first, a fifth of a `status` call's
start-up on a host (bench/run.py measures both). Checked by running the script as an installer leaves it, with
Python's own import log."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO_ROOT, Result, check_error, cli_env, parse_json

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
    assert "orchesjob.cli" in modules
    assert not {"re", "enum", "argparse", "typing", "json"} & set(modules), modules
    # the console-script wrapper it replaces: `re` (and `enum` with it) before the CLI
    r, modules = imports(home, installed(tmp_path, CONSOLE_SCRIPT), "status", "--run-key", "k")
    check_error(r, 3, "not_found")
    assert modules.index("re") < modules.index("orchesjob.cli")


def test_pyproject_installs_the_entry_script_not_a_console_script():
    text = (Path(REPO_ROOT) / "pyproject.toml").read_text()
    assert 'script-files = ["scripts/orchesjob"]' in text and "\n[project.scripts]" not in text
    assert os.access(str(SCRIPT), os.X_OK)
