"""Fixtures of the fault suite: replayable randomness, trial counts, and the fixtures of the CLI and SSH suites.

- Randomness: one seed per run, from ORCHESJOB_FAULT_SEED or drawn fresh and printed (at the top of every test's
  output and in the run's summary). Each test derives its own generator from the seed and its name, so
  ``ORCHESJOB_FAULT_SEED=N pytest tests/faults -k NAME`` replays one test's trials exactly.
- Trial counts: each test has a CI-sized default; ORCHESJOB_FAULT_TRIALS overrides all of them (``make faults``
  sets 100).
- The real sshd and the CLI launcher come from tests/provider/conftest.py, the CLI helpers from
  tests/cli/cli_helpers.py: the same real parts the other suites use.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.cli.cli_helpers import _kill_leftovers  # noqa: E402
from tests.provider.conftest import IN_CI, _unavailable, orchesjob_launcher, sshd  # noqa: E402,F401
from tests.support.v110 import v110  # noqa: E402,F401 - the session fixture of a real orchesjob 1.1.0

_seed_text = os.environ.get("ORCHESJOB_FAULT_SEED")
SEED = int(_seed_text) if _seed_text else random.SystemRandom().randrange(1, 2**31)
FULL = bool(os.environ.get("ORCHESJOB_FAULT_TRIALS"))


def trials(ci: int, full: int | None = None) -> int:
    """The number of trials of a test: its CI size, or in the full run (ORCHESJOB_FAULT_TRIALS set) that number,
    or ``full`` for the few tests whose one trial is itself large (hundreds of processes)."""
    value = os.environ.get("ORCHESJOB_FAULT_TRIALS")
    if not value:
        return ci
    return full if full is not None else max(1, int(value))


def pytest_report_header(config: pytest.Config) -> str:
    return "orchesjob faults: seed %d (replay with ORCHESJOB_FAULT_SEED=%d), trials %s" % (
        SEED,
        SEED,
        os.environ.get("ORCHESJOB_FAULT_TRIALS") or "CI defaults",
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    terminalreporter.write_line("orchesjob faults: seed %d (replay with ORCHESJOB_FAULT_SEED=%d)" % (SEED, SEED))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random generator, derived from the run's seed and the test's name."""
    print(
        "fault seed %d: replay with ORCHESJOB_FAULT_SEED=%d pytest tests/faults -k %s"
        % (SEED, SEED, request.node.name.split("[")[0])
    )
    return random.Random("%d:%s" % (SEED, request.node.name))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh ORCHESJOB_HOME (not created yet); whatever a test leaves running in it is killed afterwards."""
    h = tmp_path / "ojhome"
    yield h
    _kill_leftovers(h)
    if h.exists():
        os.chmod(str(h), 0o700)


@pytest.fixture
def airflow_available() -> None:
    try:
        import airflow  # noqa: F401
        import asyncssh  # noqa: F401
        import paramiko  # noqa: F401
    except ImportError as exc:
        _unavailable(f"Airflow and its SSH libraries are needed for the SSH faults: {exc}")
