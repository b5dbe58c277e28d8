"""`make pyz`: the single-file CLI runs a job end to end with the oldest Python here (or this one)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

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
