"""`--format table`: the answers of the JSON commands as views for people.

The JSON answer is computed as always and only its presentation changes, so a view can never say something the JSON
would not: one job (start, status, wait, abort, rerun) as an aligned list of its fields, several jobs (status
--running, status --all) as the rows `ls` prints, unlock and clean as a sentence or two. Colour as textout.Terminal
decides (a terminal, no NO_COLOR, no TERM=dumb).
"""

from __future__ import annotations

from . import processes
from .textout import Terminal, Text, duration, local_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COLOURS = {
    "STARTING": "36",
    "RUNNING": "36",
    "SUCCEEDED": "32",
    "FAILED": "31",
    "LOST": "35",
    "ABORTED": "33",
    "CANCELLED": "2",
}


def view(command: str, answer: Any, term: Terminal) -> Text:
    """The view of `command`'s JSON `answer`."""
    if isinstance(answer, list):
        from . import table

        return table.render([table.row(j) for j in answer], term, "no jobs")
    if command == "clean":
        return Text(clean_summary(answer))
    if command == "unlock":
        return Text(_unlock(answer))
    return Text(job_view(command, answer, term))


def _when(ts: Any) -> str:
    return local_time(ts) if ts is not None else "-"


def job_view(command: str, job: dict[str, Any], term: Terminal) -> str:
    lines: list[str] = []
    if command == "start" or command == "rerun":
        if job.get("existing"):
            lines.append("returned the job that answers for run key %r: nothing was started" % job["run_key"])
        else:
            lines.append("started a new job")
    elif command == "abort":
        lines.append("aborted")
    elif command == "wait" and job.get("timed_out"):
        lines.append("still running when the wait ended (--timeout)")
    status = job["status"]
    rows: list[tuple[str, str]] = [
        ("job id", job["job_id"]),
        ("run key", job["run_key"]),
        (
            "attempt",
            str(job["attempt_no"]) + (" (after %s)" % job["rerun_of_job_id"] if job.get("rerun_of_job_id") else ""),
        ),
        ("status", term.paint(status, COLOURS.get(status, ""))),
    ]
    if job.get("liveness") == "unknown":
        rows.append(("liveness", "unknown: %s" % job.get("liveness_reason")))
    import shlex

    rows.append(("command", shlex.join(job.get("command") or [])))
    if job.get("cwd"):
        rows.append(("cwd", job["cwd"]))
    rows.append(("started", _when(job.get("started_at"))))
    rows.append(("finished", _when(job.get("finished_at"))))
    end = job.get("finished_at")
    if end is None and job.get("active"):
        import time

        end = int(time.time())
    if job.get("started_at") is not None and end is not None:
        rows.append(("duration", duration(end - job["started_at"])))
    if job.get("exit_code") is not None:
        rows.append(("exit code", str(job["exit_code"])))
    elif job.get("signal") is not None:
        rows.append(("signal", job.get("signal_name") or processes.signal_name(job["signal"]) or str(job["signal"])))
    if job.get("end_reason"):
        rows.append(("how it ended", job["end_reason"]))
    for field, label in (("abort_reason", "abort reason"), ("rerun_reason", "rerun reason")):
        if job.get(field):
            rows.append((label, job[field]))
    if job.get("target_pid"):
        rows.append(("pid", "%s (supervisor %s)" % (job["target_pid"], job.get("worker_pid"))))
    elif job.get("worker_pid"):
        rows.append(("pid", "%s (the supervisor; the command is not running)" % job["worker_pid"]))
    rows.append(("stdout", job["stdout_file"]))
    rows.append(("stderr", job["stderr_file"]))
    width = max(len(label) for label, _ in rows)
    lines += ["%-*s  %s" % (width, label, value) for label, value in rows]
    for stream in ("stdout", "stderr"):
        chunk = (job.get("logs") or {}).get(stream)
        if chunk and chunk.get("data"):
            lines.append("--- %s, bytes %d-%d" % (stream, chunk["offset"], chunk["next_offset"]))
            lines.append(chunk["data"].rstrip("\n"))
    return "\n".join(lines) + "\n"


def clean_summary(result: dict[str, Any]) -> str:
    """What a clean did (or would do) in a line or two: the counts, never the list."""
    n = result["deleted"]
    jobs = "%d finished job%s" % (n, "" if n == 1 else "s")
    if result.get("dry_run"):
        lines = ["would delete %s and their logs (dry run: nothing was deleted)" % jobs]
    else:
        lines = ["deleted %s and their logs" % jobs]
    skipped = result.get("skipped_count", len(result.get("skipped") or []))
    if skipped:
        lines.append(
            "kept %d job%s whose processes may still be alive (a later clean takes them)"
            % (skipped, "" if skipped == 1 else "s")
        )
    if result.get("errors"):
        lines.append("%d log file%s could not be removed" % (result["errors"], "" if result["errors"] == 1 else "s"))
    return "\n".join(lines) + "\n"


def _unlock(answer: dict[str, Any]) -> str:
    text = "run key %r: the next start --strict runs it again" % answer["run_key"]
    if answer.get("expires_at") is not None:
        text += " (until %s)" % local_time(answer["expires_at"])
    return text + "\n"
