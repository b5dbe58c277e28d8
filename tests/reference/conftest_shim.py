"""The conftest that orchesjob 1.1.0's own tests expect, pointed at THIS repository's CLI.

tools/test_reference.sh copies this file to `tests/conftest.py` next to the test modules it extracts from the
orchesjob 1.1.0 sdist (the sdist ships the test modules without their conftest). Not collected by `make test`:
its name does not start with `test_` and it is not called conftest.py here.

What the 1.1.0 tests import from it (`from tests.conftest import ...`) and use as fixtures:

- `home`: a fresh, not yet created ORCHESJOB_HOME under tmp_path;
- `cli(*args)` -> (stdout, stderr, returncode) and `jcli(*args)` -> parsed JSON (exit code 0 asserted), both running
  `<this interpreter> -m orchesjob ARGS...` with ORCHESJOB_HOME=home, the way 1.1.0's own tests invoke the CLI;
- `wait_for_running`, `kill_pid`, `iso_now`, `far_future_iso`, `far_past_iso`.

The script puts this repository first on PYTHONPATH, so `-m orchesjob` is ours; `pytest_sessionstart` checks that
and stops the run if it is not. Tests listed in tests/reference/divergences.txt (ORCHESJOB_REF_DIVERGENCES) are
skipped with the reason written there; a listed module is not collected at all; a listed name that matches
nothing stops the run (the list must not go stale).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def _divergences() -> dict[str, str]:
    """{name: reason} from the divergences file; a name is `test_x.py` or `test_x.py::test_name`."""
    path = os.environ.get("ORCHESJOB_REF_DIVERGENCES")
    out: dict[str, str] = {}
    if not path:
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition(" ")
            reason = reason.strip()
            if not reason:
                raise pytest.UsageError("divergences: %r has no reason" % name)
            out[name] = reason
    return out


_DIVERGENCES = _divergences()
_SKIPPED_MODULES = {n: r for n, r in _DIVERGENCES.items() if "::" not in n}
_SKIPPED_TESTS = {n: r for n, r in _DIVERGENCES.items() if "::" in n}
collect_ignore = sorted(_SKIPPED_MODULES)


def pytest_sessionstart(session: pytest.Session) -> None:
    repo = os.environ.get("ORCHESJOB_REF_REPO")
    if not repo:
        return
    probe = subprocess.run(
        [sys.executable, "-c", "import orchesjob, sys; sys.stdout.write(orchesjob.__file__)"],
        capture_output=True,
        text=True,
        cwd=_HERE,
    )
    where = os.path.realpath(probe.stdout.strip() or "?")
    if not where.startswith(os.path.realpath(repo) + os.sep):
        raise pytest.UsageError("`python -m orchesjob` would run %s, not this repository's CLI (%s)" % (where, repo))


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [
        "reference tests against: %s -m orchesjob (ORCHESJOB_REF_REPO=%s)"
        % (sys.executable, os.environ.get("ORCHESJOB_REF_REPO"))
    ]
    for name, reason in sorted(_SKIPPED_MODULES.items()):
        lines.append("not collected: %s: %s" % (name, reason))
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen = set()
    for item in items:
        name = item.nodeid.split("/")[-1]
        if name in _SKIPPED_TESTS:
            seen.add(name)
            item.add_marker(pytest.mark.skip(reason="divergence from 1.1.0: " + _SKIPPED_TESTS[name]))
    collected_modules = {i.nodeid.split("/")[-1].split("::")[0] for i in items}
    stale = [n for n in _SKIPPED_TESTS if n not in seen and n.split("::")[0] in collected_modules]
    stale += [n for n in _SKIPPED_MODULES if not os.path.exists(os.path.join(_HERE, n))]
    if stale:
        raise pytest.UsageError("divergences.txt names tests that do not exist: %s" % ", ".join(sorted(stale)))


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "orchesjob_home"
    yield h
    _kill_leftovers(h)


def _run(home: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ORCHESJOB_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "orchesjob", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def cli(home: Path) -> Callable[..., tuple[str, str, int]]:
    def _cli(*args: str) -> tuple[str, str, int]:
        r = _run(home, args)
        return r.stdout, r.stderr, r.returncode

    return _cli


@pytest.fixture
def jcli(home: Path) -> Callable[..., Any]:
    def _jcli(*args: str) -> Any:
        r = _run(home, args)
        assert r.returncode == 0, "orchesjob %s exited %d\nstdout: %s\nstderr: %s" % (
            list(args),
            r.returncode,
            r.stdout,
            r.stderr,
        )
        return json.loads(r.stdout)

    return _jcli


# -- helpers the 1.1.0 tests import -------------------------------------------------------------------------------
def iso_now(offset_seconds: int = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_seconds)).isoformat()


def far_future_iso() -> str:
    return iso_now(3600)


def far_past_iso() -> str:
    return "2000-01-01T00:00:00+00:00"


def kill_pid(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_running(
    home: Path, cli: Callable[..., tuple[str, str, int]], run_key: str, timeout: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        out, _, rc = cli("status", "--run-key", run_key)
        if rc == 0:
            last = json.loads(out)
            if last["status"] == "RUNNING" and last.get("worker_pid"):
                return last
        time.sleep(0.05)
    raise TimeoutError("job %r did not reach RUNNING within %ss; last=%r" % (run_key, timeout, last))


def _kill_leftovers(home: Path) -> None:
    """SIGKILL whatever a test left running under its state directory (found by ORCHESJOB_HOME in /proc)."""
    needle = ("ORCHESJOB_HOME=%s" % home).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
