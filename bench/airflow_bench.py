"""Provider figures for bench/run.py: from a job's end to the Airflow task's end, and SSH calls per minute.

Runs a real DAG (bench/dags) through a private sshd and a private Airflow home with SQLite, like `make demo`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.airflow_sandbox import AirflowSandbox  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402


def _counting_launcher(path: Path, calls: Path) -> str:
    """The CLI on the "host", logging each invocation's verb, so SSH round trips can be counted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f"echo \"$(date +%s.%N) $1\" >> '{calls}'\n"
        f"PYTHONPATH='{ROOT}' exec '{sys.executable}' -m orchesjob \"$@\"\n"
    )
    path.chmod(0o755)
    return str(path)


def _task_end(db: Path) -> float:
    with sqlite3.connect(str(db)) as c:
        (end,) = c.execute("SELECT end_date FROM task_instance WHERE dag_id = 'bench_orchesjob'").fetchone()
    when = datetime.fromisoformat(str(end).replace(" ", "T"))
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def measure(job_seconds: float = 5.0, long_job_seconds: float = 60.0) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="orchesjob-airflow-bench-") as tmp:
        base = Path(tmp)
        server = SshServer(base / "sshd").start()
        try:
            calls = base / "calls.log"
            launcher = _counting_launcher(base / "bin" / "orchesjob", calls)
            home = base / "host-state"
            sandbox = AirflowSandbox(
                base,
                python=sys.executable,
                dags_folder=ROOT / "bench" / "dags",
                connections={"bench_ssh": server.airflow_connection()},
                extra_env={"ORCHESJOB_REMOTE_BIN": launcher, "ORCHESJOB_REMOTE_HOME": str(home)},
            )
            sandbox.setup()
            runs = [("deferrable", "1", job_seconds), ("polling", "0", job_seconds), ("rate", "1", long_job_seconds)]
            for label, deferrable, seconds in runs:
                if calls.exists():
                    calls.unlink()
                env = {"BENCH_DEFERRABLE": deferrable, "BENCH_JOB_SECONDS": str(seconds), "BENCH_LABEL": label}
                run = subprocess.run(
                    [sys.executable, str(ROOT / "tools" / "dag_run.py"), "bench_orchesjob", "2026-01-01"],
                    env=sandbox.env(**env),
                    cwd=str(base),
                    capture_output=True,
                    text=True,
                    timeout=seconds + 300,
                )
                if run.returncode != 0:
                    raise RuntimeError("bench DAG failed:\n" + run.stdout[-3000:] + run.stderr[-3000:])
                jobs = json.loads(
                    subprocess.run(
                        [launcher, "status", "--running"],
                        capture_output=True,
                        text=True,
                        env=dict(os.environ, ORCHESJOB_HOME=str(home)),
                    ).stdout
                    or "[]"
                )
                assert not jobs, "a bench job is still running"
                job = json.loads(
                    subprocess.run(
                        [launcher, "status", "--run-key", "bench-manual__2026-01-01T00:00:00+00:00-%s" % label],
                        capture_output=True,
                        text=True,
                        env=dict(os.environ, ORCHESJOB_HOME=str(home)),
                    ).stdout
                )
                with open(job["stdout_file"]) as f:
                    ended = float(f.read().strip())
                if label == "rate":
                    verbs = [line.split()[1] for line in calls.read_text().splitlines() if len(line.split()) > 1]
                    figures["ssh_round_trips_per_min"] = (len(verbs) - 1) / (seconds / 60.0)  # minus `version`
                else:
                    figures["airflow_end_to_finish_s_%s" % label] = _task_end(sandbox.db_path) - ended
        finally:
            server.stop()
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
