"""What a job is: its JSON form, its liveness, and how its end is recorded.

Readers never trust a stored RUNNING blindly. `refresh` looks at the job's processes and its result file and
settles the truth: a result written to the file but not yet to the database is applied; a job with nothing left
alive becomes LOST. Everything that ends a job (the supervisor, a reader reconciling a result file, abort, a
timeout) goes through `finish` so the rules for status, exit code and signal live in one place.
"""

from __future__ import annotations

import os
import time

from . import processes
from .errors import LockTimeout
from .store import ACTIVE, Store, lock_timeout
from .timeutil import iso, now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Dict, Optional, Tuple

_REFERENCE_FIELDS = (
    "job_id", "run_key", "command", "pid", "pid_kind", "worker_pid", "target_pid", "status", "exit_code",
    "stdout_file", "stderr_file", "attempt_no", "rerun_of_job_id", "rerun_reason", "abort_reason",
    "started_at", "started_at_iso", "finished_at", "finished_at_iso", "updated_at", "updated_at_iso",
    "aborted_at", "aborted_at_iso",
)


def is_active(job: Dict[str, Any]) -> bool:
    return job["status"] in ACTIVE


def is_stopping(job: Dict[str, Any]) -> bool:
    """ABORTED, but its process tree is still being stopped (abort or timeout has not finished yet).

    Such a job is terminal for its caller, yet `start` must not launch the next attempt beside its last processes.
    """
    return job["status"] == "ABORTED" and not job.get("finished_at")


def render(job: Dict[str, Any]) -> Dict[str, Any]:
    """The job as the CLI prints it: the reference's fields in its order, then ours."""
    pid, kind = (job["target_pid"], "target") if job.get("target_pid") else (job.get("worker_pid"), "worker")
    view = dict(job)
    view["pid"], view["pid_kind"] = (pid, kind) if pid else (None, None)
    for f in ("started_at", "finished_at", "updated_at", "aborted_at"):
        view[f + "_iso"] = iso(job.get(f))
    out = {f: view.get(f) for f in _REFERENCE_FIELDS}
    out.update(
        strict=job["strict"],
        strict_override_used=job["strict_override_used"],
        override_reason=job.get("override_reason"),
        cwd=job.get("cwd"),
        env=job.get("env") or {},
        timeout=_number(job.get("timeout")),
        signal=job.get("signal"),
        signal_name=processes.signal_name(job.get("signal")),
        end_reason=job.get("end_reason"),
        active=is_active(job),
    )
    return out


def _number(value: Optional[float]) -> Optional[float]:
    """Seconds as given: 3600, not 3600.0."""
    return int(value) if value is not None and float(value).is_integer() else value


# -- results ----------------------------------------------------------------------------------------------------
def result_path(job: Dict[str, Any]) -> str:
    """Where the supervisor leaves the result until it is in the database (next to the logs)."""
    base = job["stdout_file"]
    if base.endswith(".stdout"):
        base = base[: -len(".stdout")]
    return base + ".result"


def outcome(returncode: Optional[int], reason: Optional[str] = None) -> Dict[str, Any]:
    """Exit code, signal and a one-line reason from a returncode as subprocess reports it (negative = signal)."""
    if returncode is None:
        return {"exit_code": None, "signal": None, "end_reason": reason}
    if returncode < 0:
        sig = -returncode
        return {"exit_code": None, "signal": sig,
                "end_reason": reason or "killed by signal %s" % processes.signal_name(sig)}
    return {"exit_code": returncode, "signal": None, "end_reason": reason or "exited with code %d" % returncode}


def write_result_file(job: Dict[str, Any], result: Dict[str, Any]) -> None:
    """Atomically write the result beside the logs, so it survives a database that cannot be written now.

    No fsync: the database itself runs with synchronous=NORMAL, so a power cut can lose the last commit either way;
    what this file guards against is a locked or unwritable database and a supervisor killed mid-write.
    """
    from .jsonout import dumps

    path = result_path(job)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(dumps(result))
    os.replace(tmp, path)


def read_result_file(job: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        f = open(result_path(job))
    except OSError:
        return None
    import json

    try:
        with f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_result_file(job: Dict[str, Any]) -> None:
    try:
        os.unlink(result_path(job))
    except OSError:
        pass


def finish(store: Store, job_id: str, result: Dict[str, Any]) -> bool:
    """Record how a job ended. Call inside a write transaction.

    An active or LOST job becomes SUCCEEDED (exit 0) or FAILED; an ABORTED job keeps its status and gains the
    exit code or signal. A LOST verdict is overturned by a real result: a result that exists is never dropped.
    """
    fields = {k: result.get(k) for k in ("exit_code", "signal", "end_reason")}
    fields["finished_at"] = result.get("finished_at") or now()
    fields["updated_at"] = now()
    status = "SUCCEEDED" if fields["exit_code"] == 0 and not fields["signal"] else "FAILED"
    if result.get("launch_failed"):
        status = "FAILED"
    if store.update(job_id, dict(fields, status=status), only_if_status=ACTIVE + ("LOST",)):
        return True
    aborted = dict(fields)
    aborted.pop("finished_at")
    job = store.get(job_id)
    if job and job["status"] == "ABORTED":
        if job.get("abort_reason") and not result.get("launch_failed"):
            aborted["end_reason"] = "%s (%s)" % (job["abort_reason"], fields["end_reason"])
        if not job.get("finished_at"):
            aborted["finished_at"] = fields["finished_at"]
        return store.update(job_id, aborted, only_if_status=("ABORTED",))
    return False


# -- liveness -----------------------------------------------------------------------------------------------------
def job_pids(job: Dict[str, Any]) -> set:
    """Every live process of the job's target tree (not the supervisor)."""
    return processes.job_pids(job["job_id"], job.get("pgid"), job.get("target_start"))


def supervisor_alive(job: Dict[str, Any]) -> bool:
    return processes.is_alive(job.get("worker_pid"), job.get("worker_start"))


def refresh(store: Store, job: Dict[str, Any]) -> Dict[str, Any]:
    """Settle an active job's real state; terminal jobs are returned as they are.

    Order matters: a pending result file wins; then a different boot id means dead; then a live supervisor means
    alive; then any live process of the job means alive (a supervisor killed by OOM does not make a running
    command LOST); only when nothing is left is the job LOST.
    """
    if is_stopping(job):
        return _settle_abort(store, job)
    if not is_active(job):
        return job
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    current_boot = processes.boot_id()
    if job.get("boot_id") and current_boot and job["boot_id"] != current_boot:
        return _mark_lost(store, job, "the host rebooted after the job started")
    if supervisor_alive(job) or job_pids(job):
        return job
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    fresh = store.get(job["job_id"])
    if fresh is not None and not is_active(fresh):
        return fresh
    if job["status"] == "STARTING" and not job.get("target_pid"):
        reason = "the job's start was interrupted before its command was launched"
    else:
        reason = "the supervisor and every process of the job disappeared without recording a result"
    return _mark_lost(store, job, reason)


def _settle_abort(store: Store, job: Dict[str, Any]) -> Dict[str, Any]:
    """Close an ABORTED record whose abort never finished (the aborting process died), once nothing is alive."""
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    if supervisor_alive(job) or job_pids(job):
        return job
    t = now()
    fields = {"finished_at": t, "updated_at": t, "end_reason": job.get("end_reason") or "aborted"
              + (": %s" % job["abort_reason"] if job.get("abort_reason") else "")}
    try:
        with store.write(wait=_settle_wait()):
            fresh = store.get(job["job_id"]) or job
            if is_stopping(fresh):
                store.update(job["job_id"], fields, only_if_status=("ABORTED",))
    except LockTimeout:
        return dict(job, **fields)
    return store.get(job["job_id"]) or job


def _settle_wait() -> float:
    """How long a reader waits for the lock to record what it found out: briefly, since it can answer anyway."""
    return min(2.0, lock_timeout())


def _apply_pending(store: Store, job: Dict[str, Any], pending: Dict[str, Any]) -> Dict[str, Any]:
    try:
        with store.write(wait=_settle_wait()):
            finish(store, job["job_id"], pending)
    except LockTimeout:
        # The result is safe in its file; show it now and let a later reader persist it.
        shown = dict(job)
        shown.update({k: pending.get(k) for k in ("exit_code", "signal", "end_reason", "finished_at")})
        shown["status"] = "SUCCEEDED" if pending.get("exit_code") == 0 and not pending.get("signal") else "FAILED"
        return shown
    remove_result_file(job)
    return store.get(job["job_id"]) or job


def _mark_lost(store: Store, job: Dict[str, Any], reason: str) -> Dict[str, Any]:
    t = now()
    fields = {"status": "LOST", "end_reason": reason, "finished_at": t, "updated_at": t}
    try:
        with store.write(wait=_settle_wait()):
            store.update(job["job_id"], fields, only_if_status=ACTIVE)
    except LockTimeout:
        return dict(job, **fields)  # the verdict stands; a later reader records it
    return store.get(job["job_id"]) or job


# -- stopping -----------------------------------------------------------------------------------------------------
def stop_tree(job: Dict[str, Any], grace: float, include_worker: bool) -> Dict[str, bool]:
    """SIGTERM the job's whole tree (and its supervisor), wait `grace` seconds, SIGKILL whatever is left."""
    from .processes import _sig as signal

    worker = job.get("worker_pid") if include_worker and supervisor_alive(job) else None
    pgid = job.get("pgid")
    sent = {
        "sent_term_target": processes.send(job_pids(job), signal.SIGTERM, pgid),
        "sent_term_worker": bool(worker) and processes.send([worker], signal.SIGTERM),
        "sent_kill_target": False,
        "sent_kill_worker": False,
    }
    deadline = time.monotonic() + grace
    processes.wait_gone(lambda: job_pids(job), deadline)
    left = job_pids(job)
    if left:
        sent["sent_kill_target"] = processes.send(left, signal.SIGKILL, pgid)
    if worker:
        # The supervisor outlives the target only to record how it ended; give it a moment, then stop it too.
        processes.wait_gone(lambda: supervisor_alive(job), max(deadline, time.monotonic() + 1.0))
        if supervisor_alive(job):
            sent["sent_kill_worker"] = processes.send([worker], signal.SIGKILL)
    processes.wait_gone(lambda: job_pids(job), time.monotonic() + 2.0)
    return sent


def lookup(store: Optional[Store], run_key: Optional[str], job_id: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """The job a command names (the latest attempt for a run key), or NotFound."""
    from .errors import NotFound

    job = None
    if store is not None:
        job = store.get(job_id) if job_id is not None else store.latest(run_key or "")
    if job is None:
        what = "job id %r" % job_id if job_id is not None else "run key %r" % run_key
        raise NotFound("no job with %s" % what)
    return job, job["job_id"]
