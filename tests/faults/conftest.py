"""Fixtures of the fault suite: replayable randomness, trial counts, and the fixtures of the CLI and SSH suites.

- Randomness: one seed per run, from ORCHESJOB_FAULT_SEED or drawn fresh and printed (at the top of every test's
  output and in the run's summary). Each test derives its own generator from the seed and its name, so
  ``ORCHESJOB_FAULT_SEED=N pytest tests/faults -k NAME`` replays one test's trials exactly.
- Trial counts: each test has a CI-sized default; ORCHESJOB_FAULT_TRIALS overrides all of them (``make faults``
  sets 100).
- The real sshd, the CLI launcher, the cutting proxy and ``home`` are the shared fixtures of
  tests/support/fixtures.py, the CLI helpers tests/support/cli.py: the same real parts the other suites use.
- The fuzz statistics (tests/faults/test_fault_argv_fuzz.py) are printed in the run's summary.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.faults.faultlib import FUZZ_TALLY, SEED
from tests.support.guards import prepare_airflow_process

prepare_airflow_process()


def pytest_report_header(config: pytest.Config) -> str:
    return "orchesjob faults: seed %d (replay with ORCHESJOB_FAULT_SEED=%d), trials %s" % (
        SEED,
        SEED,
        os.environ.get("ORCHESJOB_FAULT_TRIALS") or "CI defaults",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """The seed to replay this run with, and how the generated CLI calls of the argv fuzz ended (exit code counts
    per family of calls, for the fault README's table): a report, so it is no test that could pass or fail."""
    terminalreporter.write_line("orchesjob faults: seed %d (replay with ORCHESJOB_FAULT_SEED=%d)" % (SEED, SEED))
    for family, tally in FUZZ_TALLY.items():
        terminalreporter.write_line(
            "orchesjob faults: generated argv (%s): %d examples; exit codes %s" % (family, sum(tally.values()), tally)
        )


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random generator, derived from the run's seed and the test's name."""
    print(
        "fault seed %d: replay with ORCHESJOB_FAULT_SEED=%d pytest tests/faults -k %s"
        % (SEED, SEED, request.node.name.split("[")[0])
    )
    return random.Random("%d:%s" % (SEED, request.node.name))
