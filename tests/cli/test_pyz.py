"""`make pyz`: the single-file CLI runs a job end to end with the oldest Python here (or this one)."""

import __future__

import glob
import hashlib
import importlib.util
import json
import marshal
import os
import shutil
import stat
import subprocess
import sys

import pytest

from orchesjob.codebuild import compile_archive
from orchesjob.contract import CONTRACT_VERSION
from tests.support.cli import REPO_ROOT

pytestmark = pytest.mark.timeout(120)


def _oldest_python():
    found = [p for p in glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")) if os.access(p, os.X_OK)]
    which = shutil.which("python3.9")
    found += [which] if which else []
    return found[0] if found else sys.executable


def test_zipapp_builds_and_runs_a_job(tmp_path):
    target = tmp_path / "orchesjob.pyz"
    subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "build_pyz.py"), str(target)], check=True, capture_output=True
    )
    assert os.access(str(target), os.X_OK)
    python = _oldest_python()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the pyz alone, not the checkout
    env["ORCHESJOB_HOME"] = str(tmp_path / "home")
    version = json.loads(
        subprocess.run(
            [python, str(target), "version"], env=env, capture_output=True, check=True, cwd=str(tmp_path)
        ).stdout
    )
    assert version["contract"] == CONTRACT_VERSION
    job = json.loads(
        subprocess.run(
            [python, str(target), "start", "--sync", "--run-key", "pyz", "--", "echo", "from pyz"],
            env=env,
            capture_output=True,
            check=True,
            cwd=str(tmp_path),
        ).stdout
    )
    assert job["status"] == "SUCCEEDED" and job["exit_code"] == 0
    with open(job["stdout_file"]) as f:
        assert f.read() == "from pyz\n"


# -- the compiled code kept beside the zipapp (orchesjob/codeload.py, orchesjob/codebuild.py) --------------------
MARK = "served from the file of codes"


def _built(tmp_path):
    """A fresh orchesjob.pyz in a directory of its own, and an environment that runs it alone."""
    target = tmp_path / "zipapp" / "orchesjob.pyz"
    target.parent.mkdir()
    subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "build_pyz.py"), str(target)], check=True, capture_output=True
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["ORCHESJOB_HOME"] = str(tmp_path / "home")
    return target, env


def _run(target, env, *args):
    # -S: no .pth file of this environment loads modules (__future__, functools...) before the archive runs
    return subprocess.run([sys.executable, "-I", "-S", str(target), *args], env=env, capture_output=True, text=True)


def _codes_path(target):
    return str(target) + ".%s.codes" % sys.implementation.cache_tag


def _header(target, digest=None):
    data = target.read_bytes()
    return importlib.util.MAGIC_NUMBER + (digest or hashlib.sha256(data).digest())


def _plant(target, header, damage=None):
    """Put a file of codes beside `target` whose orchesjob.errors (every call imports it) also writes MARK to
    stderr: a call that prints MARK ran code from the file."""
    codes = compile_archive(str(target), target.read_bytes())
    with open(os.path.join(REPO_ROOT, "orchesjob", "errors.py")) as f:
        source = f.read() + "\nimport sys as _s\n_s.stderr.write(%r)\n" % (MARK + "\n")
    codes["orchesjob.errors"] = (False, marshal.dumps(compile(source, "errors.py", "exec")))
    if damage == "module":
        codes["orchesjob.errors"] = (False, b"\xff not marshalled code")
    if damage == "stdlib":  # the marked code as a module of the standard library the CLI imports after it
        codes = {name: entry for name, entry in codes.items() if name != "orchesjob.errors"}
        with open(__future__.__file__) as f:
            source = f.read() + "\nimport sys as _s\n_s.stderr.write(%r)\n" % (MARK + "\n")
        codes["__future__"] = (False, marshal.dumps(compile(source, "__future__.py", "exec")))
    blob = header + marshal.dumps(codes)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    path = _codes_path(target)
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


def test_the_first_run_keeps_the_compiled_code_beside_the_zipapp_and_the_next_runs_use_it(tmp_path):
    target, env = _built(tmp_path)
    first = _run(target, env, "start", "--sync", "--run-key", "k", "--", "echo", "compiled")
    assert first.returncode == 0, first.stderr
    path = _codes_path(target)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
    with open(path, "rb") as f:
        assert f.read(len(_header(target))) == _header(target)  # this interpreter, these very bytes
    assert sorted(os.listdir(target.parent)) == ["orchesjob.pyz", os.path.basename(path)]  # no temporary left
    second = _run(target, env, "status", "--run-key", "k")
    assert second.returncode == 0 and json.loads(second.stdout)["status"] == "SUCCEEDED"
    _plant(target, _header(target))
    third = _run(target, env, "status", "--run-key", "k")
    assert MARK in third.stderr and json.loads(third.stdout)["status"] == "SUCCEEDED"  # it runs what the file holds


@pytest.mark.parametrize(
    "problem",
    [
        "another archive",
        "another interpreter",
        "group-writable",
        "a link",
        "truncated",
        "damaged module",
        "a module not of the package",
    ],
)
def test_compiled_code_unfit_to_use_is_never_run_and_the_call_still_answers(tmp_path, problem):
    target, env = _built(tmp_path)
    header = _header(target)
    if problem == "another archive":
        header = _header(target, hashlib.sha256(b"some other zipapp").digest())
    elif problem == "another interpreter":
        header = b"\x00\x00\r\n" + header[4:]
    damage = {"truncated": "truncated", "damaged module": "module", "a module not of the package": "stdlib"}
    path = _plant(target, header, damage=damage.get(problem))
    if problem == "group-writable":
        os.chmod(path, 0o620)
    elif problem == "a link":
        planted_size = os.stat(path).st_size
        os.rename(path, path + ".elsewhere")
        os.symlink(path + ".elsewhere", path)
    answer = _run(target, env, "version")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["contract"] == CONTRACT_VERSION
    assert MARK not in answer.stderr
    if problem == "a link":  # not followed, nor written through: replaced by a file of its own
        assert not os.path.islink(path) and os.stat(path + ".elsewhere").st_size == planted_size
    again = _run(target, env, "version")
    assert again.returncode == 0 and MARK not in again.stderr


def test_a_directory_where_the_code_would_go_leaves_the_zipapp_working(tmp_path):
    target, env = _built(tmp_path)
    os.mkdir(_codes_path(target))
    for _ in range(2):
        answer = _run(target, env, "version")
        assert answer.returncode == 0 and json.loads(answer.stdout)["contract"] == CONTRACT_VERSION
    assert sorted(os.listdir(target.parent)) == ["orchesjob.pyz", os.path.basename(_codes_path(target))]
    assert os.listdir(_codes_path(target)) == []
