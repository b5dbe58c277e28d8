"""A real orchesjob 1.1.0, for the tests that upgrade its state or judge its jobs (tests/cli and tests/faults).

A session fixture installs the published orchesjob 1.1.0 (`pip install orchesjob==1.1.0`) into a throwaway venv
made with a Python >= 3.12 found on this machine (1.1.0 requires it; pyenv's versions are looked for as
tools/test-other-pythons.sh does). Nothing of 1.1.0 is kept in the repository. Without such a Python, or without
PyPI, the tests are skipped, except under CI (CI set), where that is a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Result, parse_json
from tests.support.guards import unavailable


# -- a real orchesjob 1.1.0 -------------------------------------------------------------------------------------------
def _python_312() -> str | None:
    """An interpreter >= 3.12 with venv and ensurepip: pyenv's 3.12-3.14, pythonX.Y on PATH, or this one."""
    roots = [os.path.expanduser("~/.pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            roots.insert(0, subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates = []
    for want in ("3.12", "3.13", "3.14"):
        for root in roots:
            candidates += sorted(glob.glob(os.path.join(root, "versions", want + ".*", "bin", "python")))
        found = shutil.which("python" + want)
        if found:
            candidates.append(found)
    candidates.append(sys.executable)
    probe = "import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 12) else 1)"
    for cand in candidates:
        try:
            if subprocess.run([cand, "-c", probe], capture_output=True, timeout=60).returncode == 0:
                return cand
        except (OSError, subprocess.SubprocessError):
            continue
    return None


class V110:
    """The orchesjob 1.1.0 CLI of a throwaway venv, run as `python -m orchesjob` like its own worker is."""

    def __init__(self, root: Path) -> None:
        self.root = root  # world-traversable, so another user can run it too
        self.python = str(root / "venv" / "bin" / "python")
        self.base_prefix = subprocess.run(
            [self.python, "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("ORCHESJOB_")}
        env["ORCHESJOB_HOME"] = str(home)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra or {})
        return env

    def run(
        self,
        home: Path,
        *args: str,
        timeout: float = 60,
        cwd: Path | None = None,
        extra: dict[str, str] | None = None,
    ) -> Result:
        # cwd: a directory without an orchesjob package, so `-m orchesjob` finds 1.1.0 (its worker inherits it)
        p = subprocess.run(
            [self.python, "-m", "orchesjob"] + [str(a) for a in args],
            env=self.env(home, extra),
            cwd=str(cwd or self.root),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        return Result(p.returncode, parse_json(out), out, err)

    def ok(self, home: Path, *args: str) -> Any:
        r = self.run(home, *args)
        assert r.code == 0, "orchesjob 1.1.0 %s: exit %d\n%s\n%s" % (args, r.code, r.out, r.err)
        return r.json


@pytest.fixture(scope="session")
def v110() -> Iterator[V110]:
    python = _python_312()
    if python is None:
        unavailable("no Python >= 3.12 with venv found (orchesjob 1.1.0 needs one; e.g. pyenv install 3.12)")
        return
    root = Path(tempfile.mkdtemp(prefix="orchesjob-1.1.0-"))
    # without this checkout on the path (tools/test-other-pythons.sh puts it on PYTHONPATH): `python -m orchesjob`
    # in the throwaway venv must find 1.1.0, not this CLI
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        os.chmod(str(root), 0o755)
        made = subprocess.run([python, "-m", "venv", str(root / "venv")], capture_output=True, timeout=300, env=env)
        if made.returncode:
            unavailable("could not make a venv with %s: %s" % (python, made.stderr.decode()[-2000:]))
        pip = subprocess.run(
            [
                str(root / "venv" / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "orchesjob==1.1.0",
            ],
            capture_output=True,
            timeout=600,
            cwd=str(root),
            env=env,
        )
        if pip.returncode:
            unavailable("pip install orchesjob==1.1.0 failed: %s" % pip.stderr.decode()[-2000:])
        v = V110(root)
        version = subprocess.run(
            [v.python, "-m", "orchesjob", "--version"], capture_output=True, text=True, cwd=str(root), env=env
        )
        assert version.stdout.strip() == "orchesjob 1.1.0", (version.stdout, version.stderr)
        yield v
    finally:
        shutil.rmtree(str(root), ignore_errors=True)
