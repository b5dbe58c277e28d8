"""A job row in orchesjob 1.1.0's terms read in ours: its negative exit codes, its missing end reasons.

Applied by the row codec (orchesjob/rows.py) to every row imported from 1.1.0 (`imported_from` set): before the
upgrade through the views, and after it, when a 1.1.0 worker that was still running writes its job's end.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def present_row(job: dict[str, Any]) -> None:
    """A job row 1.1.0 wrote (before the upgrade, or after it, by a 1.1.0 worker that was still running) in our
    terms: 1.1.0's exit code -N (killed by signal N) is signal N; its -1 (the command or the worker could not be
    launched) is no exit code; a finished job without an end reason gets one."""
    code = job.get("exit_code")
    if code is not None and code < 0 and job.get("signal") is None:
        job["exit_code"] = None
        if code == -1:
            job["end_reason"] = job.get("end_reason") or (
                "orchesjob 1.1.0 recorded exit code -1: the command (or its worker) could not be launched"
            )
        else:
            job["signal"] = -code
    if job.get("end_reason") or "status" not in job:
        return
    status = job["status"]
    if job.get("signal") is not None:
        from ..processes import signal_name

        job["end_reason"] = "killed by signal %s" % signal_name(job["signal"])
    elif job.get("exit_code") is not None and status in ("SUCCEEDED", "FAILED", "ABORTED"):
        job["end_reason"] = "exited with code %d" % job["exit_code"]
    elif status == "LOST":
        job["end_reason"] = "orchesjob 1.1.0 declared the job lost (its worker was gone)"
    elif status == "ABORTED":
        job["end_reason"] = "aborted" + (": %s" % job["abort_reason"] if job.get("abort_reason") else "")
