"""`orchesjob metrics`: the state of the host's jobs in the Prometheus text exposition format (version 0.0.4), for
node_exporter's textfile collector (README: a cron line writes it to a temporary file in the collector's directory and
renames it into place, so the collector never reads half a file).

Series (all gauges):

  orchesjob_jobs{status}                          jobs recorded, by status (every status, zeros included)
  orchesjob_running_jobs                          jobs STARTING or RUNNING, checked against their processes
  orchesjob_oldest_running_job_age_seconds        since the oldest of them started (0 when none runs)
  orchesjob_jobs_finished_recently{status}        jobs that finished within the window, by terminal status: aborts
                                                  and LOST jobs show here
  orchesjob_recent_window_seconds                 the window (--recent-hours, default 24)
  orchesjob_run_key_last_success{run_key}         per run key with a job finished within the window, its latest
  orchesjob_run_key_last_status{run_key,status}     finished job: 1 if it SUCCEEDED, its status (value 1), its exit
  orchesjob_run_key_last_exit_code{run_key}         code (absent when a signal ended it or it never ran), attempt
  orchesjob_run_key_last_attempt{run_key}           number, finish time (Unix seconds) and how long it ran
  orchesjob_run_key_last_finish_time_seconds{run_key}
  orchesjob_run_key_last_duration_seconds{run_key}
  orchesjob_run_keys_omitted                      run keys left out by --max-keys (0 normally)
  orchesjob_database_size_bytes                   the database file, and its write-ahead log:
  orchesjob_database_wal_size_bytes

Cardinality is bounded: at most --max-keys (default 500) run keys get per-key series, the ones whose jobs finished
most recently; how many were left out is itself a series, so a truncated view is visible. Every query is served by
an index: the counts by status (store.count_by_status), ranges of the finish-time index for the window, and the
active-jobs index. Label values are escaped as the format says (backslash, double quote, newline).
"""

from __future__ import annotations

import os

from . import jobs
from .store import ACTIVE, TERMINAL, Store
from .textout import Text
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    Sample = tuple[Sequence[tuple[str, str]], float]


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


def collect(store: Store | None, db_path: str | None, recent_seconds: float, max_keys: int) -> Text:
    t = now()
    since = int(t - recent_seconds)
    by_status: dict[str, int] = dict.fromkeys(ACTIVE + TERMINAL, 0)
    recent: dict[str, int] = dict.fromkeys(TERMINAL, 0)
    running: list[dict[str, Any]] = []
    last: list[dict[str, Any]] = []
    omitted = 0
    if store is not None:
        running = [j for j in (jobs.refresh(store, j) for j in store.active()) if jobs.is_active(j)]
        by_status = store.count_by_status()  # after the refresh: a job found dead is counted as LOST
        recent = store.count_finished_since(since)
        seen: set[str] = set()
        if max_keys > 0:
            for job in store.finished_since(since):
                if job["run_key"] in seen:
                    continue
                if len(seen) == max_keys:
                    omitted = store.count_keys_finished_since(since) - max_keys
                    break
                seen.add(job["run_key"])
                last.append(job)
        else:
            omitted = store.count_keys_finished_since(since)
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
        "The window of the *_recently and orchesjob_run_key_* series.",
        [((), recent_seconds)],
    )
    per_key = [(("run_key", j["run_key"]),) for j in last]
    out.gauge(
        "orchesjob_run_key_last_success",
        "1 if the latest job of the run key that finished within the window SUCCEEDED, else 0.",
        [(k, 1 if j["status"] == "SUCCEEDED" else 0) for k, j in zip(per_key, last)],
    )
    out.gauge(
        "orchesjob_run_key_last_status",
        "The status of that job (the sample with value 1).",
        [(k + (("status", j["status"]),), 1) for k, j in zip(per_key, last)],
    )
    out.gauge(
        "orchesjob_run_key_last_exit_code",
        "The exit code of that job (absent when a signal ended it or its command never ran).",
        [(k, j["exit_code"]) for k, j in zip(per_key, last) if j.get("exit_code") is not None],
    )
    out.gauge(
        "orchesjob_run_key_last_attempt",
        "The attempt number of that job.",
        [(k, j["attempt_no"]) for k, j in zip(per_key, last)],
    )
    out.gauge(
        "orchesjob_run_key_last_finish_time_seconds",
        "When that job finished, in Unix seconds.",
        [(k, j["finished_at"]) for k, j in zip(per_key, last)],
    )
    out.gauge(
        "orchesjob_run_key_last_duration_seconds",
        "How long that job ran, in seconds.",
        [(k, max(0, j["finished_at"] - j["started_at"])) for k, j in zip(per_key, last)],
    )
    out.gauge(
        "orchesjob_run_keys_omitted",
        "Run keys with a job finished within the window left out of the per-key series (--max-keys).",
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
