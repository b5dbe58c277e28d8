"""What a test does when a part it needs is missing (sshd, Airflow, a Python, root): one rule for every suite.

On a developer's machine the test is skipped with the reason; under CI (``CI`` set) it fails, because a green CI run
must mean the test ran. The Airflow guard is the same rule for a whole module that imports Airflow at its top; the
conftest of a directory of such modules applies it (tests/provider/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))


def unavailable(message: str) -> None:
    """Skip on a developer machine without the part; fail under CI, where skipping would hide a broken setup."""
    if IN_CI:
        pytest.fail(message + " (CI is set: this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


class _WithoutAirflow(pytest.Module):
    """A test module that needs Airflow, collected where Airflow is not installed: skipped whole, before its imports
    run (they would fail), with the reason."""

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        pytest.skip(f"Airflow is not installed in {sys.executable} (the [airflow] extra)", allow_module_level=True)


def airflow_guard(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """For a conftest's ``pytest_pycollect_makemodule``: a module that imports Airflow is skipped whole when Airflow
    is missing on a developer machine; under CI (or with Airflow) it is collected as usual, so a missing Airflow
    fails its import there, as it should."""
    if IN_CI or importlib.util.find_spec("airflow") is not None:
        return None
    return _WithoutAirflow.from_parent(parent, path=module_path)


def prepare_airflow_process() -> None:
    """The settings of a test process that imports Airflow: an AIRFLOW_HOME of its own (Airflow writes airflow.cfg
    there on import; keep that out of the user's home), no example DAGs, and asyncssh's per-channel INFO lines kept
    out of a failing test's captured log (the provider leaves that logger to whoever configures logging)."""
    import logging
    import tempfile

    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-airflow-home-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
