"""`orchesjob ls`: jobs as an aligned table for a person at a terminal, or the same rows as JSON (`--format json`).

Which jobs: the running ones by default (STARTING and RUNNING, checked against their processes as `status --running`
does), the latest N by start time (`--last N`: index jobs_started_at), one run key's attempts, newest first
(`--run-key K`, with `--last N` its latest N), the jobs whose run key starts with a prefix (`--run-key-prefix`, the
latest N by start time), or the jobs of some statuses (`--status`: the active ones, and the latest N that finished
in each terminal status, by the status and finish-time index). Columns: job id (its shortest unique prefix, at least
8 characters: what `status`, `logs`, `wait` and `abort` take), run key, attempt, status, started (local time),
duration (so far, for a job still running), exit code or signal, pid. The table fits the terminal: only the run key
column gives way, elided in the middle; colour only on a terminal and never with NO_COLOR (textout.Terminal).
`--watch` redraws it in place every few seconds (Watch).
"""

from __future__ import annotations

from . import jobs, processes
from .contract import ACTIVE
from .store import Store
from .textout import STATUS_COLOURS, Output, Terminal, Text, cells, duration, elide, local_time, pad
from .timeutil import iso, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Callable, TextIO

    from .rows import JobRow

# (header, row field, aligned right)
_COLUMNS = (
    ("JOB ID", "short_id", False),
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
SHORT_ID = 8  # the shortest job id prefix shown: a UUID's first group
DEFAULT_LAST = 20  # how many jobs --status and --run-key-prefix list without --last


def select(
    store: Store | None,
    last: int | None,
    run_key: str | None,
    statuses: Sequence[str] = (),
    prefix: str | None = None,
) -> list[dict[str, Any]]:
    """The jobs to list, refreshed like `status` refreshes them, as rows (see row) with their short ids."""
    if store is None:
        if run_key is not None:
            from .errors import run_key_not_found

            raise run_key_not_found(run_key)
        return []
    t = now()
    if run_key is not None:
        found = store.recent(last if last is not None else -1, run_key)  # LIMIT -1: all of them
        if not found:
            from .errors import run_key_not_found

            raise run_key_not_found(run_key)
        store.run_key_info(run_key)  # checked like every value read, before a refresh may write
        picked = [_fresh(store, j) for j in found]
    elif prefix is not None:
        picked = [_fresh(store, j) for j in store.with_key_prefix(prefix, last or DEFAULT_LAST, statuses)]
    elif statuses:
        picked = []
        if any(s in ACTIVE for s in statuses):
            picked += [jobs.refresh(store, j) for j in store.active()]
        for status in statuses:
            if status not in ACTIVE:
                picked += store.latest_with_status(status, last or DEFAULT_LAST)
        picked.sort(key=lambda j: (j.get("finished_at") or t + 1, j.get("started_at") or 0), reverse=True)
        picked = picked[: last or DEFAULT_LAST]
    elif last is not None:
        picked = [_fresh(store, j) for j in store.recent(last)]
    else:
        picked = [j for j in (jobs.refresh(store, j) for j in store.active()) if jobs.is_active(j)]
    if statuses:
        picked = [j for j in picked if j["status"] in statuses]
    rows = [row(j, t) for j in picked]
    for r in rows:
        r["short_id"] = short_id(store, r["job_id"])
    return rows


def _fresh(store: Store, job: JobRow) -> JobRow:
    return jobs.refresh(store, job) if jobs.is_active(job) or jobs.is_stopping(job) else job


def short_id(store: Store, job_id: str) -> str:
    """The shortest prefix of `job_id` (at least SHORT_ID characters) that no other job's id starts with: one more
    character than it shares with either of its neighbours in the primary key's order."""
    shared = 0
    for other in store.id_neighbours(job_id):
        if other is not None:
            n = 0
            for a, b in zip(job_id, other):
                if a != b:
                    break
                n += 1
            shared = max(shared, n)
    return job_id[: max(SHORT_ID, shared + 1)]


def row(job: Mapping[str, Any], at: int | None = None) -> dict[str, Any]:
    """One job as `ls --json` prints it: what the table shows, in the units of the job object. `job` is a job row,
    or the job object itself (the view of `status --all`): the fields read here have the same names in both."""
    t = now() if at is None else at
    started, finished = job.get("started_at"), job.get("finished_at")
    end = finished if finished is not None else (t if jobs.is_active(job) or jobs.is_stopping(job) else None)
    pid, kind = (job["target_pid"], "target") if job.get("target_pid") else (job.get("worker_pid"), "worker")
    return {
        "job_id": job["job_id"],
        "short_id": job["job_id"][:SHORT_ID],  # select() makes it the unique prefix
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
        "short_id": r.get("short_id") or r["job_id"][:SHORT_ID],
        "run_key": r["run_key"],
        "attempt": str(r["attempt_no"]),
        "status": r["status"],
        "started": local_time(r["started_at"]),
        "started_short": _short_time(r["started_at"]),
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
        if others + _MIN_KEY > term.width:  # too narrow even so (80 columns): the start time without its year
            for c in table:
                c["started"] = c["started_short"]
            narrow = max([cells("STARTED")] + [cells(c["started"]) for c in table])
            others -= widths["started"] - narrow
            widths["started"] = narrow
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
                text = term.paint(c[f], STATUS_COLOURS.get(c[f], "")) + text[len(c[f]) :]
            parts.append(text)
        lines.append(_GAP.join(parts).rstrip())
    return Text("\n".join(lines) + "\n")


class Watch(Output):
    """`ls --watch`: the table again every `interval` seconds, in place on a terminal (like `watch`), one after the
    other with a time line through a pipe; until Ctrl-C (exit 130, quietly)."""

    def __init__(self, rows: Callable[[], list[dict[str, Any]]], term: Terminal, empty: str, interval: float) -> None:
        self.rows, self.term, self.empty, self.interval = rows, term, empty, interval

    def emit(self, stdout: TextIO) -> int:
        import sys
        import time

        from .errors import EXIT_INTERRUPTED

        tty = stdout.isatty()
        try:
            while True:
                table = render(self.rows(), self.term, self.empty).text
                head = "every %gs: orchesjob ls, %s (Ctrl-C ends it)\n" % (self.interval, local_time(now()))
                if tty:
                    # home, clear the screen, draw: the table stays where it is and changes in place
                    out = "\x1b[H\x1b[2J" + self.term.paint(head, "2") + "\n" + table
                else:
                    out = head + table + "\n"
                stdout.buffer.write(out.encode(getattr(stdout, "encoding", None) or "utf-8", "replace"))
                stdout.buffer.flush()
                time.sleep(self.interval)
        except KeyboardInterrupt:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            return EXIT_INTERRUPTED


def _short_time(ts: int | None) -> str:
    """The start time for a narrow terminal: 12-02 14:03 (month-day, hours and minutes)."""
    if ts is None:
        return "-"
    import time

    return time.strftime("%m-%d %H:%M", time.localtime(ts))
