"""`orchesjob ls`: jobs as an aligned table for a person at a terminal, or the same rows as JSON (`--json`).

Which jobs: the running ones by default (STARTING and RUNNING, checked against their processes as `status --running`
does), the latest N by start time (`--last N`: index jobs_started_at), or one run key's attempts, newest first
(`--run-key K`, with `--last N` its latest N). Columns: run key, attempt, status, started (local time), duration (so
far, for a job still running), exit code or signal, pid. The table fits the terminal: only the run key column gives
way, elided in the middle; colour only on a terminal and never with NO_COLOR (textout.Terminal).
"""

from __future__ import annotations

from . import jobs, processes
from .store import Store
from .textout import Terminal, Text, cells, duration, elide, local_time, pad
from .timeutil import iso, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# status -> SGR colour on a terminal
_COLOURS = {
    "STARTING": "36",
    "RUNNING": "36",
    "SUCCEEDED": "32",
    "FAILED": "31",
    "LOST": "35",
    "ABORTED": "33",
    "CANCELLED": "2",
}
# (header, row field, aligned right)
_COLUMNS = (
    ("RUN KEY", "run_key", False),
    ("ATTEMPT", "attempt", True),
    ("STATUS", "status", False),
    ("STARTED", "started", False),
    ("DURATION", "duration", True),
    ("EXIT", "exit", False),
    ("PID", "pid", True),
)
_MIN_KEY = 12  # the run key column never gets narrower than this, whatever the terminal
_GAP = "  "


def select(store: Store | None, last: int | None, run_key: str | None) -> list[dict[str, Any]]:
    """The jobs to list, refreshed like `status` refreshes them, as rows (see row)."""
    if store is None:
        if run_key is not None:
            from .errors import run_key_not_found

            raise run_key_not_found(run_key)
        return []
    if run_key is not None:
        found = store.recent(last if last is not None else -1, run_key)  # LIMIT -1: all of them
        if not found:
            from .errors import run_key_not_found

            raise run_key_not_found(run_key)
        store.run_key_info(run_key)  # checked like every value read, before a refresh may write
        picked = found
    elif last is not None:
        picked = store.recent(last)
    else:
        picked = [j for j in (jobs.refresh(store, j) for j in store.active()) if jobs.is_active(j)]
        return [row(j) for j in picked]
    t = now()
    return [row(jobs.refresh(store, j) if jobs.is_active(j) or jobs.is_stopping(j) else j, t) for j in picked]


def row(job: dict[str, Any], at: int | None = None) -> dict[str, Any]:
    """One job as `ls --json` prints it: what the table shows, in the units of the job object."""
    t = now() if at is None else at
    started, finished = job.get("started_at"), job.get("finished_at")
    end = finished if finished is not None else (t if jobs.is_active(job) or jobs.is_stopping(job) else None)
    pid, kind = (job["target_pid"], "target") if job.get("target_pid") else (job.get("worker_pid"), "worker")
    return {
        "job_id": job["job_id"],
        "run_key": job["run_key"],
        "attempt_no": job["attempt_no"],
        "status": job["status"],
        "active": jobs.is_active(job),
        "started_at": started,
        "started_at_iso": iso(started),
        "finished_at": finished,
        "finished_at_iso": iso(finished),
        "duration_seconds": max(0, end - started) if end is not None and started is not None else None,
        "exit_code": job.get("exit_code"),
        "signal": job.get("signal"),
        "signal_name": processes.signal_name(job.get("signal")),
        "pid": pid or None,
        "pid_kind": kind if pid else None,  # as the job object has them (jobs.render)
    }


def _cells_of(r: dict[str, Any]) -> dict[str, str]:
    if r["exit_code"] is not None:
        code = str(r["exit_code"])
    elif r["signal"] is not None:
        code = r["signal_name"] or processes.signal_name(r["signal"]) or str(r["signal"])
    else:
        code = "-"
    return {
        "run_key": r["run_key"],
        "attempt": str(r["attempt_no"]),
        "status": r["status"],
        "started": local_time(r["started_at"]),
        "duration": duration(r["duration_seconds"]),
        "exit": code,
        "pid": str(r["pid"]) if r["pid"] else "-",
    }


def render(rows: list[dict[str, Any]], term: Terminal, empty: str) -> Text:
    """The rows as an aligned table (or the `empty` sentence when there are none)."""
    if not rows:
        return Text(empty + "\n")
    table = [_cells_of(r) for r in rows]
    widths = {f: max([cells(h)] + [cells(c[f]) for c in table]) for h, f, _ in _COLUMNS}
    if term.width is not None:
        others = sum(w for f, w in widths.items() if f != "run_key") + len(_GAP) * (len(_COLUMNS) - 1)
        room = max(_MIN_KEY, term.width - others)
        if widths["run_key"] > room:
            widths["run_key"] = room
            for c in table:
                c["run_key"] = elide(c["run_key"], room, term.ellipsis)
    lines = [_GAP.join(pad(h, widths[f], right) for h, f, right in _COLUMNS).rstrip()]
    if term.color:
        lines[0] = term.paint(lines[0], "1")
    for c in table:
        parts = []
        for _, f, right in _COLUMNS:
            text = pad(c[f], widths[f], right)
            if f == "status":
                text = term.paint(c[f], _COLOURS.get(c[f], "")) + text[len(c[f]) :]
            parts.append(text)
        lines.append(_GAP.join(parts).rstrip())
    return Text("\n".join(lines) + "\n")
