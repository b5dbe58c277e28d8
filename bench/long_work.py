"""Long work at scale: `clean` and the upgrade of an orchesjob 1.1.0 database, at 1,000,000 jobs (100,000 with
--quick). Wall seconds of the whole CLI process, as a person at a terminal waits for them; these are not ratios
(the work dominates start-up by far), so they drift with the machine: compare figures of one run.

- clean_dry_run_<n>_s, clean_dry_run_<n>_mb: `clean --all --dry-run` with its 1.1.0-compatible answer (an item
  per job), and the size of that answer;
- clean_summary_dry_run_<n>_s: the same preview with --summary (counts only);
- clean_<n>_s: `clean --all --summary`, deleting every job (their log files do not exist: each unlink is one failed
  system call, as for logs removed by hand);
- migration_<n>_s: the first writing command on an orchesjob 1.1.0 database of n finished jobs (the real 1.1.0,
  installed with pip into a throwaway venv, writes the first job; SQL copies it n times): backup, conversion,
  logs made private, commit.

Run by `python bench/run.py --long-work-only [--quick]`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        why = p.stderr[-500:].decode(errors="replace")
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), p.returncode, why))
    return dt, p.stdout


def install_110(into: str) -> str:
    """orchesjob 1.1.0 in a venv of a Python >= 3.12 (what it requires); its python."""
    sys.path.insert(0, ROOT)
    from tests.support.v110 import _python_312

    python = _python_312()
    if python is None:
        raise RuntimeError("no Python >= 3.12 with venv here: orchesjob 1.1.0 needs one")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "venv", into], check=True, env=env)
    venv_python = os.path.join(into, "bin", "python")
    subprocess.run(
        [venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "orchesjob==1.1.0"],
        check=True,
        env=env,
        cwd=into,
    )
    return venv_python


def history_110(python_110: str, home: str, jobs: int) -> None:
    """A 1.1.0 state directory of `jobs` finished jobs: the first written by 1.1.0 itself, the others copies of it
    under their own ids, keys (a tenth as many as jobs) and attempt numbers."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("ORCHESJOB_")}
    env["ORCHESJOB_HOME"] = home
    subprocess.run(
        [python_110, "-m", "orchesjob", "start", "--run-key", "history-0", "--sync", "--", "true"],
        check=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(python_110)),
        capture_output=True,
    )
    keys = max(1, jobs // 10)
    conn = sqlite3.connect(os.path.join(home, "orchesjob.db"), isolation_level=None)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    replaced = {
        "job_id": "printf('%08x-0000-4000-8000-%012x', i, i)",
        "run_key": f"'history-' || (i % {keys})",
        "attempt_no": f"i / {keys} + 1",
        "started_at": f"started_at - {jobs} + i",
        "finished_at": f"finished_at - {jobs} + i",
        "stdout_file": "replace(stdout_file, job_id, printf('%08x-0000-4000-8000-%012x', i, i))",
        "stderr_file": "replace(stderr_file, job_id, printf('%08x-0000-4000-8000-%012x', i, i))",
    }
    select = ", ".join(replaced.get(c, c) for c in columns)
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO jobs (%s) WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %d) "
        "SELECT %s FROM seq, (SELECT * FROM jobs LIMIT 1)" % (", ".join(columns), jobs - 1, select)
    )
    key_columns = [r[1] for r in conn.execute("PRAGMA table_info(run_keys)")]
    conn.execute("DELETE FROM run_keys")
    latest = {
        "run_key": "run_key",
        "job_id": "max(job_id)",
        "created_at": "min(started_at)",
    }
    conn.execute(
        "INSERT INTO run_keys (%s) SELECT %s FROM jobs GROUP BY run_key"
        % (", ".join(key_columns), ", ".join(latest.get(c, "NULL") for c in key_columns))
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def measure(cli: list[str], seed: Callable[[str, int, int], None], quick: bool) -> dict[str, Any]:
    n = 100_000 if quick else 1_000_000
    label = "100k" if quick else "1m"
    tmp = tempfile.mkdtemp(prefix="orchesjob-long-")
    fig: dict[str, Any] = {}
    try:
        home = os.path.join(tmp, "clean")
        seed(home, n, max(1, n // 10))
        env = dict(os.environ, ORCHESJOB_HOME=home)
        env.pop("PYTHONPATH", None)
        dt, out = _timed(cli + ["clean", "--all", "--dry-run"], env)
        fig["clean_dry_run_%s_s" % label] = dt
        fig["clean_dry_run_%s_mb" % label] = len(out) / 1e6
        dt, out = _timed(cli + ["clean", "--all", "--dry-run", "--summary"], env)
        fig["clean_summary_dry_run_%s_s" % label] = dt
        fig["clean_summary_dry_run_%s_bytes" % label] = len(out)
        dt, out = _timed(cli + ["clean", "--all", "--summary"], env)
        if json.loads(out)["deleted"] != n:
            raise RuntimeError("clean deleted %s of %d jobs" % (json.loads(out)["deleted"], n))
        fig["clean_%s_s" % label] = dt

        python_110 = install_110(os.path.join(tmp, "venv-1.1.0"))
        home = os.path.join(tmp, "legacy")
        history_110(python_110, home, n)
        env = dict(os.environ, ORCHESJOB_HOME=home)
        env.pop("PYTHONPATH", None)
        dt, out = _timed(cli + ["unlock", "--run-key", "history-0", "--reason", "bench"], env)
        if json.loads(out).get("migrated_from", {}).get("version") != "1.1.0":
            raise RuntimeError("the first write did not upgrade the 1.1.0 database: %r" % out[:300])
        fig["migration_%s_s" % label] = dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fig
