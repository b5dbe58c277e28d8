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
    from typing import Any

_REFERENCE_FIELDS = (
    "job_id",
    "run_key",
    "command",
    "pid",
    "pid_kind",
    "worker_pid",
    "target_pid",
    "status",
    "exit_code",
    "stdout_file",
    "stderr_file",
    "attempt_no",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "started_at",
    "started_at_iso",
    "finished_at",
    "finished_at_iso",
    "updated_at",
    "updated_at_iso",
    "aborted_at",
    "aborted_at_iso",
)


def is_active(job: dict[str, Any]) -> bool:
    return job["status"] in ACTIVE


def is_stopping(job: dict[str, Any]) -> bool:
    """ABORTED, but its process tree is still being stopped (abort or timeout has not finished yet).

    Such a job is terminal for its caller, yet `start` must not launch the next attempt beside its last processes.
    """
    return job["status"] == "ABORTED" and not job.get("finished_at")


def render(job: dict[str, Any]) -> dict[str, Any]:
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
        liveness=job.get("liveness") or ("verified" if is_active(job) or is_stopping(job) else None),
        request_id=job.get("request_id"),
        owner=job.get("owner"),
        pid_namespace=job.get("pid_ns"),
        imported_from=job.get("imported_from"),
    )
    return out


def _number(value: float | None) -> float | None:
    """Seconds as given: 3600, not 3600.0."""
    return int(value) if value is not None and float(value).is_integer() else value


# -- results ----------------------------------------------------------------------------------------------------
def result_path(job: dict[str, Any]) -> str:
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


def write_result_file(job: dict[str, Any], result: dict[str, Any]) -> None:
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


def read_result_file(job: dict[str, Any]) -> dict[str, Any] | None:
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


def remove_result_file(job: dict[str, Any]) -> None:
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
def imported(job: dict[str, Any]) -> bool:
    """A job orchesjob 1.1.0 launched (its record came over in the upgrade): its pids carry no start time, so its
    processes are recognised by their command lines (processes.legacy_*)."""
    return bool(job.get("imported_from"))


def job_pids(job: dict[str, Any]) -> set[int]:
    """Every live process of the job's target tree (not the supervisor)."""
    if imported(job):
        return set(_members(job))
    return processes.job_pids(job["job_id"], job.get("pgid"), job.get("target_start"))


def supervisor_alive(job: dict[str, Any]) -> bool:
    if imported(job):
        if job.get("worker_pid") is None:  # its `start` died before recording the worker: look for it
            return is_active(job) and processes.find_legacy_worker(job["job_id"]) is not None
        return processes.legacy_worker_alive(job["worker_pid"], job["job_id"])
    return processes.is_alive(job.get("worker_pid"), job.get("worker_start"))


def refresh(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    """Settle an active job's real state; terminal jobs are returned as they are.

    Order matters: a pending result file wins; then a different boot id means dead; then a reader that cannot see
    the job's pid namespace stops (absence of a pid proves nothing there); then a live supervisor or any live
    process of the job means alive (a supervisor killed by OOM does not make a running command LOST); only when
    nothing is left is the job LOST, and that verdict is taken again under the write lock (`_mark_lost`).
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
    if not processes.can_judge(job.get("pid_ns")):
        return dict(job, liveness="unknown")
    if _anything_alive(job):
        return job
    processes.pause_point("lost-verdict")
    return _mark_lost(store, job, None)


def _anything_alive(job: dict[str, Any]) -> bool:
    return supervisor_alive(job) or bool(job_pids(job))


def _lost_reason(job: dict[str, Any]) -> str:
    if imported(job):
        return "its orchesjob 1.1.0 worker and command disappeared without recording a result"
    if job["status"] == "STARTING" and not job.get("target_pid"):
        return "the job's start was interrupted before its command was launched"
    return "the supervisor and every process of the job disappeared without recording a result"


_IDENTITY = ("status", "worker_pid", "worker_start", "target_pid", "target_start", "pgid")


def still_alive(job: dict[str, Any], snap: list[tuple[int, int, int, str | None]]) -> bool:
    """Whether a process snapshot (processes.snapshot) holds the job's supervisor or any process of its tree.

    The same identity rules as job_pids, for many jobs against one /proc pass; a job in a pid namespace this
    process cannot see counts as alive until its record says it ended.
    """
    if not processes.can_judge(job.get("pid_ns")):
        return not job.get("finished_at")
    if imported(job):
        return _anything_alive(job)
    floor = int(job["target_start"]) if job.get("target_start") else None
    worker, worker_start = job.get("worker_pid"), job.get("worker_start")
    pgid = job.get("pgid")
    jid = job["job_id"]
    for pid, start, pgrp, marker in snap:
        if worker and pid == worker and (not worker_start or str(start) == worker_start):
            return True
        if floor is not None and start < floor:
            continue
        if marker == jid:
            return True
        if pgid and pgrp == pgid:
            if floor is None or any(p == pgid and s != floor for p, s, _, _ in snap):
                continue  # an unverifiable or recycled group id
            return True
    return False


def _settle_abort(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    """Close an ABORTED record whose abort never finished (the aborting process died), once nothing is alive."""
    pending = read_result_file(job)
    if pending is not None:
        return _apply_pending(store, job, pending)
    if not processes.can_judge(job.get("pid_ns")):
        return dict(job, liveness="unknown")
    if _anything_alive(job):
        return job
    t = now()
    fields = {
        "finished_at": t,
        "updated_at": t,
        "end_reason": job.get("end_reason")
        or "aborted" + (": %s" % job["abort_reason"] if job.get("abort_reason") else ""),
    }
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


def _apply_pending(store: Store, job: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    try:
        with store.write(wait=_settle_wait()):
            finish(store, job["job_id"], pending)
            # Only once the result is committed: inside a larger transaction (start, rerun) that could still roll
            # back, deleting the file now would lose the result.
            store.after_commit(lambda: remove_result_file(job))
    except LockTimeout:
        # The result is safe in its file; show it now and let a later reader persist it.
        shown = dict(job)
        shown.update({k: pending.get(k) for k in ("exit_code", "signal", "end_reason", "finished_at")})
        shown["status"] = "SUCCEEDED" if pending.get("exit_code") == 0 and not pending.get("signal") else "FAILED"
        return shown
    return store.get(job["job_id"]) or job


def _mark_lost(store: Store, job: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """Declare LOST what was seen dead, as a compare-and-set under the write lock.

    The verdict outside the lock came from a read that may be stale: the supervisor may have recorded itself, the
    command may have started or ended since. So under the lock the row is read again; if any of its process
    identity changed, or a result file appeared, or anything of it is alive now, the verdict is dropped. Only a row
    still exactly as observed, with nothing of it alive, becomes LOST (and the UPDATE itself repeats the identity
    as its condition). A reader that cannot get the lock shows the verdict without recording it.
    """
    t = now()
    why = reason or _lost_reason(job)
    fields = {"status": "LOST", "end_reason": why, "finished_at": t, "updated_at": t}
    try:
        with store.write(wait=_settle_wait()):
            fresh = store.get(job["job_id"])
            if fresh is None or not is_active(fresh):
                return fresh or job
            if any(fresh.get(k) != job.get(k) for k in _IDENTITY):
                return fresh  # it moved on since we looked; the next reader judges the new state
            if read_result_file(fresh) is not None:
                return fresh
            if reason is None and _anything_alive(fresh):
                return fresh
            store.update(
                job["job_id"],
                fields,
                only_if_status=ACTIVE,
                only_if={k: fresh.get(k) for k in _IDENTITY if k != "status"},
            )
    except LockTimeout:
        # Not recorded; a later reader decides again. What to show meanwhile: a STARTING job may have a supervisor
        # that is alive but not yet recorded (it may be the one waiting for this lock), so absence proves nothing
        # yet; a job whose processes were all recorded cannot come back, so its verdict can be shown, checked again.
        if (
            job["status"] == "STARTING"
            or read_result_file(job) is not None
            or (reason is None and _anything_alive(job))
        ):
            return dict(job, liveness="unknown")
        return dict(job, **fields)
    return store.get(job["job_id"]) or job


# -- stopping -----------------------------------------------------------------------------------------------------
def stop_tree(job: dict[str, Any], grace: float, include_worker: bool) -> dict[str, bool]:
    """SIGTERM the job's whole tree (and its supervisor), wait `grace` seconds, SIGKILL whatever is left.

    Only processes verified as the job's are signalled; the recorded process group is signalled as a group only
    while one of those verified processes is in it, never on the strength of the number alone.
    """
    from .processes import signals as signal

    worker = job.get("worker_pid") if include_worker and supervisor_alive(job) else None
    members = _members(job)
    sent = {
        "sent_term_target": processes.send(members, signal.SIGTERM, processes.job_group(members, _pgid(job))),
        "sent_term_worker": worker is not None and processes.send([worker], signal.SIGTERM),
        "sent_kill_target": False,
        "sent_kill_worker": False,
    }
    deadline = time.monotonic() + grace
    processes.wait_gone(lambda: job_pids(job), deadline)
    left = _members(job)
    if left:
        sent["sent_kill_target"] = processes.send(left, signal.SIGKILL, processes.job_group(left, _pgid(job)))
    if worker:
        # The supervisor outlives the target only to record how it ended; give it a moment, then stop it too.
        processes.wait_gone(lambda: supervisor_alive(job), max(deadline, time.monotonic() + 1.0))
        if supervisor_alive(job):
            sent["sent_kill_worker"] = processes.send([worker], signal.SIGKILL)
    processes.wait_gone(lambda: job_pids(job), time.monotonic() + 2.0)
    return sent


def _members(job: dict[str, Any]) -> dict[int, int]:
    if imported(job):
        return processes.legacy_target_members(job.get("target_pid"), job["command"])
    return processes.job_members(job["job_id"], job.get("pgid"), job.get("target_start"))


def _pgid(job: dict[str, Any]) -> int | None:
    """The job's process group: orchesjob 1.1.0 made its target a group leader (pgid = target pid)."""
    pgid: int | None = job.get("pgid") or (job.get("target_pid") if imported(job) else None)
    return pgid


def lookup(store: Store | None, run_key: str | None, job_id: str | None) -> tuple[dict[str, Any], str]:
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
