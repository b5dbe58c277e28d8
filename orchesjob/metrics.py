"""`orchesjob metrics`: the state of the host's jobs in the Prometheus text exposition format (version 0.0.4), for
node_exporter's textfile collector (README: a timer writes it to a temporary file in the collector's directory and
renames it into place, so the collector never reads half a file; contrib/systemd has the units).

Labels are bounded: series are per *job family*, never per run. A run key of the Airflow provider,
`airflow/<dag>/<task>/<run id>[/<map index>]`, belongs to the family `airflow/<dag>/<task>` and its series carry
`dag_id` and `task_id`, so an alert can name a task; any other key's family is its first N `/`-separated parts
(`--family-depth`, default 1: `billing/2026-05-02` is `billing`). Only the running jobs, few at any time, get a series
that names the run (`orchesjob_running_job_info`, with `job_id`, `run_key` and the `run_id`).

Series (all gauges):

  orchesjob_jobs{status}                          jobs recorded, by status (every status, zeros included)
  orchesjob_running_jobs                          jobs STARTING or RUNNING, checked against their processes
  orchesjob_oldest_running_job_age_seconds        since the oldest of them started (0 when none runs)
  orchesjob_jobs_finished_recently{status}        jobs that finished within the window, by terminal status
  orchesjob_recent_window_seconds                 the window (--recent-hours, default 24)
  orchesjob_family_last_success{F}                per family with a job finished within the window, its latest
  orchesjob_family_last_status{F,status}            finished job: 1 if it SUCCEEDED, its status (value 1), its exit
  orchesjob_family_last_exit_code{F}                code (absent when a signal ended it or it never ran), attempt
  orchesjob_family_last_attempt{F}                  number, finish time (Unix seconds) and how long it ran
  orchesjob_family_last_finish_time_seconds{F}
  orchesjob_family_last_duration_seconds{F}
  orchesjob_family_running_jobs{F}                per family with a running job: how many run
  orchesjob_family_oldest_running_start_time_seconds{F}   and when the oldest of them started
  orchesjob_running_job_info{F,job_id,run_key,run_id,attempt}   1 per running job
  orchesjob_families_omitted                      families left out by --max-families (0 normally)
  orchesjob_database_size_bytes                   the database file, and its write-ahead log:
  orchesjob_database_wal_size_bytes

  F = family, and for provider keys dag_id and task_id.

Cardinality is bounded: at most --max-families (default 500) families get the per-family series, those whose jobs
finished most recently; how many were left out is a series of its own, so a truncated view is visible. Every query is
served by an index: the counts by status (store.count_by_status), ranges of the finish-time index for the window, and
the active-jobs index. Label values are escaped as the format says (backslash, double quote, newline).
"""

from __future__ import annotations

import os

from . import jobs
from .contract import ACTIVE, TERMINAL
from .store import Store
from .textout import Text
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    Sample = tuple[Sequence[tuple[str, str]], float]

    from .rows import JobRow


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Metric families written in order, each once: HELP, TYPE, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: list[Sample]) -> None:
        self.lines.append("# HELP %s %s" % (name, _escape_help(help_text)))
        self.lines.append("# TYPE %s gauge" % name)
        for labels, value in samples:
            if labels:
                pairs = ",".join('%s="%s"' % (k, escape_label(v)) for k, v in labels)
                self.lines.append("%s{%s} %s" % (name, pairs, _number(value)))
            else:
                self.lines.append("%s %s" % (name, _number(value)))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def family(run_key: str, depth: int) -> tuple[tuple[str, str], ...]:
    """The family labels of a run key: (family, dag_id, task_id) for the provider's keys, (family,) for others."""
    parts = run_key.split("/")
    if len(parts) >= 4 and parts[0] == "airflow" and parts[1] and parts[2]:
        return (("family", "/".join(parts[:3])), ("dag_id", parts[1]), ("task_id", parts[2]))
    return (("family", "/".join(parts[:depth])),)


def run_id(run_key: str) -> str:
    """What names the run within its family: the provider's run id (and map index), else the whole key."""
    parts = run_key.split("/")
    if len(parts) >= 4 and parts[0] == "airflow" and parts[1] and parts[2]:
        return "/".join(parts[3:])
    return run_key


def collect(store: Store | None, db_path: str | None, recent_seconds: float, max_families: int, depth: int = 1) -> Text:
    t = now()
    since = int(t - recent_seconds)
    by_status: dict[str, int] = dict.fromkeys(ACTIVE + TERMINAL, 0)
    recent: dict[str, int] = dict.fromkeys(TERMINAL, 0)
    running: list[JobRow] = []
    last: list[tuple[tuple[tuple[str, str], ...], dict[str, Any]]] = []
    omitted = 0
    if store is not None:
        running = [j for j in (jobs.refresh(store, j) for j in store.active()) if jobs.is_active(j)]
        by_status = store.count_by_status()  # after the refresh: a job found dead is counted as LOST
        recent = store.count_finished_since(since)
        seen: set[tuple[tuple[str, str], ...]] = set()
        others: set[tuple[tuple[str, str], ...]] = set()
        for job in store.finished_since(since):
            labels = family(job["run_key"], depth)
            if labels in seen or labels in others:
                continue
            if len(seen) < max_families:
                seen.add(labels)
                last.append((labels, job))
            else:
                others.add(labels)  # only counted: the rest of the window is read for this alone
        omitted = len(others)
    out = Exposition()
    out.gauge(
        "orchesjob_jobs",
        "Jobs recorded in the orchesjob state database, by status.",
        [((("status", s),), n) for s, n in by_status.items()],
    )
    out.gauge(
        "orchesjob_running_jobs",
        "Jobs STARTING or RUNNING now (checked against their processes).",
        [((), len(running))],
    )
    oldest = min((j["started_at"] for j in running), default=None)
    out.gauge(
        "orchesjob_oldest_running_job_age_seconds",
        "Seconds since the oldest running job started; 0 when no job runs.",
        [((), max(0, t - oldest) if oldest is not None else 0)],
    )
    out.gauge(
        "orchesjob_jobs_finished_recently",
        "Jobs that finished within the recent window (orchesjob_recent_window_seconds), by status.",
        [((("status", s),), n) for s, n in recent.items()],
    )
    out.gauge(
        "orchesjob_recent_window_seconds",
        "The window of the *_recently and orchesjob_family_last_* series.",
        [((), recent_seconds)],
    )
    out.gauge(
        "orchesjob_family_last_success",
        "1 if the latest job of the family that finished within the window SUCCEEDED, else 0.",
        [(k, 1 if j["status"] == "SUCCEEDED" else 0) for k, j in last],
    )
    out.gauge(
        "orchesjob_family_last_status",
        "The status of that job (the sample with value 1).",
        [(k + (("status", j["status"]),), 1) for k, j in last],
    )
    out.gauge(
        "orchesjob_family_last_exit_code",
        "The exit code of that job (absent when a signal ended it or its command never ran).",
        [(k, j["exit_code"]) for k, j in last if j.get("exit_code") is not None],
    )
    out.gauge(
        "orchesjob_family_last_attempt", "The attempt number of that job.", [(k, j["attempt_no"]) for k, j in last]
    )
    out.gauge(
        "orchesjob_family_last_finish_time_seconds",
        "When that job finished, in Unix seconds.",
        [(k, j["finished_at"]) for k, j in last],
    )
    out.gauge(
        "orchesjob_family_last_duration_seconds",
        "How long that job ran, in seconds.",
        [(k, max(0, j["finished_at"] - j["started_at"])) for k, j in last],
    )
    families: dict[tuple[tuple[str, str], ...], list[JobRow]] = {}
    for j in running:
        families.setdefault(family(j["run_key"], depth), []).append(j)
    out.gauge(
        "orchesjob_family_running_jobs",
        "Jobs of the family running now.",
        [(k, len(js)) for k, js in families.items()],
    )
    out.gauge(
        "orchesjob_family_oldest_running_start_time_seconds",
        "When the oldest running job of the family started, in Unix seconds.",
        [(k, min(j["started_at"] for j in js)) for k, js in families.items()],
    )
    out.gauge(
        "orchesjob_running_job_info",
        "1 for each running job, naming it (job id, run key, run id, attempt): only running jobs have this series.",
        [
            (
                family(j["run_key"], depth)
                + (
                    ("job_id", j["job_id"]),
                    ("run_key", j["run_key"]),
                    ("run_id", run_id(j["run_key"])),
                    ("attempt", str(j["attempt_no"])),
                ),
                1,
            )
            for j in running
        ],
    )
    out.gauge(
        "orchesjob_families_omitted",
        "Families with a job finished within the window left out of the per-family series (--max-families).",
        [((), omitted)],
    )
    out.gauge("orchesjob_database_size_bytes", "Size of the state database file in bytes.", [((), _size(db_path))])
    out.gauge(
        "orchesjob_database_wal_size_bytes",
        "Size of the state database's write-ahead log in bytes.",
        [((), _size(db_path + "-wal") if db_path else 0)],
    )
    return Text(out.text(), encoding="utf-8")


def _size(path: str | None) -> int:
    if not path:
        return 0
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
