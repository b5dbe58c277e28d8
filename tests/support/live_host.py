"""The SSH host's side of the live tests: this checkout's CLI on one state directory, and the jobs' marker files.

No pytest here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support.cli import run_installed, wait_until


class Host:
    """The SSH host's side: this checkout's CLI on one state directory, and a directory for the jobs' markers."""

    def __init__(self, launcher: str, state: Path, work: Path) -> None:
        self.launcher = launcher
        self.state = state
        self.work = work
        work.mkdir(parents=True, exist_ok=True)

    def cli(self, *args: str) -> Any:
        r = run_installed(self.launcher, self.state, *args, timeout=60)
        if r.code not in (0, 3):
            raise AssertionError(f"orchesjob {' '.join(args)} failed ({r.code}): {r.out}{r.err}")
        return json.loads(r.out) if r.code == 0 else None

    def jobs(self, run_key: str) -> list[dict[str, Any]]:
        """Every attempt of the run key, oldest first (none yet: an empty list)."""
        found = self.cli("status", "--run-key", run_key, "--all")
        return list(reversed(found or []))

    def wait_job(self, run_key: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        """The run key's newest job, once its status is one of ``statuses``."""

        def newest() -> dict[str, Any] | None:
            jobs = self.jobs(run_key)
            return jobs[-1] if jobs and jobs[-1]["status"] in statuses else None

        return wait_until(
            newest, timeout, step=0.3, what=lambda: f"a job of {run_key!r} {sorted(statuses)}: {self.jobs(run_key)}"
        )

    def abort_running(self) -> list[str]:
        """Abort every job still running on this host (a test that failed half-way leaves jobs waiting for a release
        file that no one will write); returns their ids. For the session's teardown."""
        running = self.cli("status", "--running") or []
        for job in running:
            self.cli("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
        return [job["job_id"] for job in running]

    def script(self, name: str, seconds: int) -> str:
        """A job that says ``started`` (so its trigger's log shows the trigger runs), appends one line per
        execution to ``<name>.runs``, records its own pid and its child's, and sleeps ``seconds`` in that child."""
        w = self.work
        return (
            f"echo started; echo run >> {w}/{name}.runs; echo $$ > {w}/{name}.main; sleep {seconds} & "
            f"echo $! > {w}/{name}.child; wait; echo done"
        )

    def runs(self, name: str) -> list[str]:
        path = self.work / f"{name}.runs"
        return path.read_text().splitlines() if path.exists() else []

    def pids(self, name: str, timeout: float = 20) -> list[int]:
        """The job's shell and its child (waiting for the job to have written them)."""
        deadline = time.monotonic() + timeout
        pids = []
        for part in ("main", "child"):
            path = self.work / f"{name}.{part}"
            written = wait_until(
                lambda path=path: path.exists() and path.read_text().strip(),
                max(0.0, deadline - time.monotonic()),
                step=0.1,
                what=f"the job {name} to write {path.name}",
            )
            pids.append(int(written))
        return pids
