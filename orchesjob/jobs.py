"""What a job is: its JSON form, its liveness, and how its end is recorded.

Readers never trust a stored RUNNING blindly. `refresh` looks at the job's processes and its result file and
settles the truth: a result written to the file but not yet to the database is applied; a job with nothing left
alive becomes LOST. Everything that ends a job (the supervisor, a reader reconciling a result file, abort, a
timeout) goes through `finish` so the rules for status, exit code and signal live in one place.
"""

from __future__ import annotations

import os
import time

from . import life, processes
from .contract import ACTIVE, REFERENCE_JOB_FIELDS
from .errors import LockTimeout
from .store import Store, lock_timeout
from .timeutil import iso, now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Mapping
    from typing import Any

    from .rows import JobRow


def is_active(job: Mapping[str, Any]) -> bool:
    """A STARTING or RUNNING job (a job row, or the job object that render makes of it: both have `status`)."""
    return job["status"] in ACTIVE


def is_stopping(job: Mapping[str, Any]) -> bool:
    """ABORTED, but its process tree is still being stopped (abort or timeout has not finished yet).

    Such a job is terminal for its caller, yet `start` must not launch the next attempt beside its last processes.
    """
    return job["status"] == "ABORTED" and not job.get("finished_at")


def render(job: JobRow) -> dict[str, Any]:
    """The job as the CLI prints it: the reference's fields in its order, then ours."""
    pid, kind = (job["target_pid"], "target") if job.get("target_pid") else (job.get("worker_pid"), "worker")
    view: dict[str, Any] = dict(job)
    view["pid"], view["pid_kind"] = (pid, kind) if pid else (None, None)
    for f in ("started_at", "finished_at", "updated_at", "aborted_at"):
        view[f + "_iso"] = iso(view[f])
    out = {f: view.get(f) for f in REFERENCE_JOB_FIELDS}
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
        liveness=job.get("liveness") or ("verified" if is_active(job) or is_stopping(job) else None),
        liveness_reason=job.get("liveness_reason"),
        request_id=job.get("request_id"),
        owner=job.get("owner"),
        pid_namespace=job.get("pid_ns"),
        imported_from=job.get("imported_from"),
    )
    if job.get("state_dir"):
        out["state_dir"] = job["state_dir"]  # a job found under another state directory (places.py)
    return out


def _number(value: float | None) -> float | None:
    """Seconds as given: 3600, not 3600.0."""
    return int(value) if value is not None and float(value).is_integer() else value


def log_file(job: JobRow, stream: str) -> str:
    """The path of the job's "stdout" or "stderr" log."""
    if stream == "stdout":
        return job["stdout_file"]
    if stream == "stderr":
        return job["stderr_file"]
    raise ValueError("no log stream %r" % stream)


# -- results ----------------------------------------------------------------------------------------------------
def result_path(job: JobRow) -> str:
    """Where the supervisor leaves the result until it is in the database (next to the logs)."""
    base: str = job["stdout_file"]
    if base.endswith(".stdout"):
        base = base[: -len(".stdout")]
    return base + ".result"


def outcome(returncode: int | None, reason: str | None = None) -> dict[str, Any]:
    """Exit code, signal and a one-line reason from a returncode as subprocess reports it (negative = signal)."""
    if returncode is None:
        return {"exit_code": None, "signal": None, "end_reason": reason}
    if returncode < 0:
        sig = -returncode
        return {
            "exit_code": None,
            "signal": sig,
            "end_reason": reason or "killed by signal %s" % processes.signal_name(sig),
        }
    return {"exit_code": returncode, "signal": None, "end_reason": reason or "exited with code %d" % returncode}


def write_result_file(job: JobRow, result: dict[str, Any]) -> None:
    """Atomically write the result beside the logs, so it survives a database that cannot be written now.

    No fsync: the database itself runs with synchronous=NORMAL, so a power cut can lose the last commit either way;
    what this file guards against is a locked or unwritable database and a supervisor killed mid-write.
    """
    from .home import open_new_private
    from .jsonout import dumps

    path = result_path(job)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = open_new_private(tmp, os.O_WRONLY)  # O_EXCL, O_NOFOLLOW: never through a file or link already there
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(result))
        os.replace(tmp, path)
    except BaseException:
        # A write that failed (a full disk) must not leave its half-written file behind: it would block every
        # later try under the same name, and the result would never reach a file.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_result_file(job: JobRow) -> dict[str, Any] | None:
    try:
        f = open(result_path(job))
    except OSError:
        return None
    import json

    try:
        with f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not _valid_result(data):
        return None
    result: dict[str, Any] = data
    return result


def _valid_result(data: Any) -> bool:
    """A result file as the supervisor writes it; anything else (damaged, planted) is not a result."""
    if not isinstance(data, dict):
        return False
    for key in ("exit_code", "signal", "finished_at"):
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            return False
    reason = data.get("end_reason")
    if reason is not None and not isinstance(reason, str):
        return False
    return True


def remove_result_file(job: JobRow) -> None:
    try:
        os.unlink(result_path(job))
    except OSError:
        pass


def finish(store: Store, job_id: str, result: dict[str, Any]) -> bool:
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
def refresh(store: Store, job: JobRow) -> JobRow:
    """Settle an active job's real state; terminal jobs are returned as they are.

    A pending result file wins. Then the evidence of life.py: alive, unknown (shown as `liveness: "unknown"`,
    never acted on) or dead, and only dead becomes LOST, a verdict taken again under the write lock (`_mark_lost`).
    """
    if is_stopping(job):
        return _settle_abort(store, job)
    if not is_active(job):
        return job
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    state, why = life.verdict(job)
    if state == life.ALIVE:
        return job
    if state == life.UNKNOWN:
        fresh = store.get(job["job_id"])  # a supervisor that just recorded the end removes its lock files
        if fresh is not None and not is_active(fresh):
            return fresh
        return unknown(job, why)
    processes.pause_point("lost-verdict")
    return _mark_lost(store, job, why)


def unknown(job: JobRow, why: str) -> JobRow:
    """The job as it was read, shown with liveness "unknown" and why: nothing is recorded (unknown decides nothing)."""
    shown = job.copy()
    shown["liveness"] = "unknown"
    shown["liveness_reason"] = why
    return shown


_IDENTITY = ("status", "worker_pid", "worker_start", "target_pid", "target_start", "pgid")


def _settle_abort(store: Store, job: JobRow) -> JobRow:
    """Close an ABORTED record whose abort never finished (the aborting process died), once nothing is alive."""
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    state, why = life.verdict(job)
    if state == life.UNKNOWN:
        return unknown(job, why)
    if state == life.ALIVE:
        return job
    t = now()
    closed = job.copy()
    closed["finished_at"] = t
    closed["updated_at"] = t
    closed["end_reason"] = job.get("end_reason") or "aborted" + (
        ": %s" % job["abort_reason"] if job.get("abort_reason") else ""
    )
    try:
        with store.write(wait=_settle_wait()):
            fresh = store.get(job["job_id"]) or job
            if is_stopping(fresh) and life.verdict(fresh)[0] == life.DEAD:
                fields = {k: closed[k] for k in ("finished_at", "updated_at", "end_reason")}
                store.update(job["job_id"], fields, only_if_status=("ABORTED",))
    except LockTimeout:
        return closed
    return store.get(job["job_id"]) or job


def _settle_wait() -> float:
    """How long a reader waits for the lock to record what it found out: briefly, since it can answer anyway."""
    return min(2.0, lock_timeout())


def _apply_pending(store: Store, job: JobRow, pending: dict[str, Any]) -> JobRow:
    try:
        with store.write(wait=_settle_wait()):
            finish(store, job["job_id"], pending)
            # Only once the result is committed: inside a larger transaction (start, rerun) that could still roll
            # back, deleting the file now would lose the result.
            store.after_commit(lambda: remove_result_file(job))
    except LockTimeout:
        # The result is safe in its file; show it now and let a later reader persist it.
        shown = job.copy()
        shown["exit_code"] = pending.get("exit_code")
        shown["signal"] = pending.get("signal")
        shown["end_reason"] = pending.get("end_reason")
        shown["finished_at"] = pending.get("finished_at")
        shown["status"] = "SUCCEEDED" if pending.get("exit_code") == 0 and not pending.get("signal") else "FAILED"
        return shown
    return store.get(job["job_id"]) or job


def _mark_lost(store: Store, job: JobRow, why: str) -> JobRow:
    """Declare LOST what was seen dead, as a compare-and-set under the write lock.

    The verdict outside the lock came from a read that may be stale: the supervisor may have recorded itself, the
    command may have started or ended since. So under the lock the row is read again; if any of its process
    identity changed, or a result file appeared, or the evidence no longer says dead, the verdict is dropped. Only
    a row still exactly as observed becomes LOST (and the UPDATE itself repeats the identity as its condition). A
    reader that cannot get the lock shows the verdict without recording it.
    """
    t = now()
    lost = job.copy()
    lost["status"] = "LOST"
    lost["end_reason"] = _lost_reason(job, why)
    lost["finished_at"] = t
    lost["updated_at"] = t
    fields = {k: lost[k] for k in ("status", "end_reason", "finished_at", "updated_at")}
    try:
        with store.write(wait=_settle_wait()):
            fresh = store.get(job["job_id"])
            if fresh is None or not is_active(fresh):
                return fresh or job
            if any(fresh.get(k) != job.get(k) for k in _IDENTITY):
                return fresh  # it moved on since we looked; the next reader judges the new state
            if read_result_file(fresh) is not None:
                return fresh
            if life.verdict(fresh)[0] != life.DEAD:
                return fresh
            store.update(
                job["job_id"],
                fields,
                only_if_status=ACTIVE,
                only_if={k: fresh.get(k) for k in _IDENTITY if k != "status"},
            )
    except LockTimeout:
        # Not recorded (the database is busy, or read only here); a later reader decides again. What was seen dead
        # stays dead (a released lock is never taken again, a gone worker never comes back), so the verdict is
        # shown, unless a result waits in its file, or a job without locks is still STARTING (its supervisor may be
        # alive but not yet recorded: it may be the one waiting for this lock).
        if read_result_file(job) is not None or (job["status"] == "STARTING" and not job.get("life_lock")):
            return unknown(job, "the database is busy; the verdict is not recorded")
        return lost
    return store.get(job["job_id"]) or job


def _lost_reason(job: JobRow, why: str) -> str:
    if job["status"] == "STARTING" and not job.get("target_pid"):
        # a supervisor killed between the launch and its commit leaves this row too: say only what is known
        return "its start ended before a launch of its command was recorded (%s)" % why
    if imported(job):
        return "its orchesjob 1.1.0 worker and command disappeared without recording a result (%s)" % why
    return "%s, without a recorded result" % why


def imported(job: JobRow) -> bool:
    """A job orchesjob 1.1.0 launched (its record came over in the upgrade)."""
    return bool(job.get("imported_from"))


# -- stopping from outside the supervisor -------------------------------------------------------------------------
def stop_from_outside(job: JobRow, grace: float) -> dict[str, bool]:
    """SIGTERM the job's processes, wait `grace` seconds, SIGKILL what is left, when its supervisor cannot do it (it
    is gone, or predates the control FIFO). Only processes verified as the job's are signalled, each through a
    pidfd (processes.signal_verified): they carry its marker, hold its lock or log files open, or are in the group
    of a command verified that way while it is alive. An orchesjob 1.1.0 worker is verified by its command line."""
    from .processes import signals as signal

    files = processes.file_ids(life.job_files(job))
    jid = job["job_id"]
    leader = job.get("pgid") or (job.get("target_pid") if imported(job) else None)

    def is_jobs(pid: int) -> bool:
        return processes.carries_marker(pid, jid) or processes.holds_any(pid, files)

    def members() -> dict[int, int]:
        found = processes.find(jid, files)
        if leader and leader in found:  # the command itself, verified: its group is the job's while it lives
            found.update(processes.find(None, set(), group=leader))
        return found

    def in_group(pid: int) -> bool:
        return is_jobs(pid) or (bool(leader) and processes.pgrp(pid) == leader and is_jobs(int(leader or 0)))

    sup_files = processes.file_ids([life.supervisor_lock(job)]) if job.get("life_lock") else set()

    def worker_is_jobs(pid: int) -> bool:
        if imported(job):
            from .legacy.workers import is_legacy_worker

            return is_legacy_worker(pid, jid)
        if job.get("life_lock"):
            return processes.holds_any(pid, sup_files)
        # an earlier build's supervisor: its pid and start time, in its own namespace (a mismatch signals nothing)
        return processes.can_see(job.get("pid_ns")) and processes.start_time(pid) == job.get("worker_start")

    def workers() -> list[int]:
        if imported(job):
            from .legacy.workers import find_legacy_worker

            found = find_legacy_worker(jid)
            return [found] if found else []
        if job.get("life_lock"):
            return list(processes.find(None, sup_files))
        worker = job.get("worker_pid")
        return [worker] if worker and processes.exists(worker) and worker_is_jobs(worker) else []

    def send(sig: int) -> tuple[bool, bool]:
        target = False
        for pid in members():
            target = processes.signal_verified(pid, sig, in_group) or target
        sup = False
        for pid in workers():
            sup = processes.signal_verified(pid, sig, worker_is_jobs) or sup
        return target, sup

    sent = {"sent_term_target": False, "sent_term_worker": False, "sent_kill_target": False, "sent_kill_worker": False}
    sent["sent_term_target"], sent["sent_term_worker"] = send(signal.SIGTERM)
    processes.wait_until(lambda: not members(), time.monotonic() + grace, step=0.1)
    if members() or workers():
        sent["sent_kill_target"], sent["sent_kill_worker"] = send(signal.SIGKILL)
    processes.wait_until(lambda: not members(), time.monotonic() + 2.0, step=0.1)
    return sent


def lookup(store: Store | None, run_key: str | None, job_id: str | None) -> tuple[JobRow, str]:
    """The job a command names (the latest attempt for a run key), or NotFound."""
    from .errors import job_not_found, run_key_not_found

    job = None
    if store is not None:
        job = store.get(job_id) if job_id is not None else store.latest(run_key or "")
        if job is not None:
            store.run_key_info(job["run_key"])  # its run key record is checked too, before anything acts on the job
    if job is None:
        raise job_not_found(job_id) if job_id is not None else run_key_not_found(run_key)
    return job, job["job_id"]
