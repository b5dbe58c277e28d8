"""One plain function per CLI command: validated Python values in, a JSON-ready value out.

Nothing here knows about argv; cli.py parses and validates, these functions decide and act.
"""

from __future__ import annotations

import os
import select
import time

from . import __version__, CONTRACT_VERSION, jobs, logfiles, processes
from .errors import InconsistentState, NotFound
from .store import ACTIVE, Store, open_store
from .timeutil import now, with_iso

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Dict, List, Optional, Sequence

DEFAULT_START_TIMEOUT = 10.0
SUPERVISOR_UP_TIMEOUT = 60.0


# -- start and rerun ----------------------------------------------------------------------------------------------
def _new_job(store: Store, run_key: str, command: Sequence[str], cwd: Optional[str], env: Dict[str, str],
             timeout: Optional[float], strict: bool, **extra: Any) -> Dict[str, Any]:
    """Insert a STARTING job (call inside a write transaction). The caller is its worker until the supervisor
    records itself, so a caller that dies before that leaves a job any reader can declare LOST."""
    job_id = _job_id()
    logs = os.path.join(os.path.dirname(store.path), "logs")
    t = now()
    me = os.getpid()
    job = {
        "job_id": job_id, "run_key": run_key, "attempt_no": store.next_attempt(run_key), "status": "STARTING",
        "command": list(command), "cwd": cwd, "env": dict(env), "timeout": timeout, "strict": strict,
        "worker_pid": me, "worker_start": processes.start_time(me), "boot_id": processes.boot_id(),
        "stdout_file": os.path.join(logs, job_id + ".stdout"), "stderr_file": os.path.join(logs, job_id + ".stderr"),
        "started_at": t, "updated_at": t,
    }
    job.update(extra)
    store.insert(job)
    return job


def _job_id() -> str:
    """A random (version 4) UUID, without importing uuid on the start path."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _launch(store: Store, job_id: str, sync: bool, start_timeout: float) -> Dict[str, Any]:
    """Spawn the supervisor and wait for it as asked: until the target runs (async) or the job ends (sync)."""
    from . import supervisor

    store.close()
    try:
        fd = supervisor.spawn(job_id)
    finally:
        store.reopen()
    try:
        up_deadline = time.monotonic() + SUPERVISOR_UP_TIMEOUT
        run_deadline = time.monotonic() + start_timeout
        seen = b""
        while sync or supervisor.MSG_RUNNING not in seen:
            # Always wait until the supervisor has recorded itself: before that, only this process vouches for the
            # job. Then async waits up to start_timeout for the target; sync waits for the pipe to close, which
            # happens once the result is recorded.
            if supervisor.MSG_RECORDED not in seen:
                deadline: Optional[float] = max(up_deadline, run_deadline)
            else:
                deadline = None if sync else run_deadline
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            data = os.read(fd, 16)
            if not data:
                break  # the supervisor exited (finished, or died: refresh below tells which)
            seen += data
    finally:
        os.close(fd)
    if sync:
        job, _ = wait_for(store, job_id, None)
        return job
    return jobs.refresh(store, store.get(job_id) or {})


def _params_match(job: Dict[str, Any], command: Sequence[str], cwd: Optional[str], env: Dict[str, str],
                  timeout: Optional[float]) -> bool:
    return (job["command"] == list(command) and (job.get("cwd") or None) == (cwd or None)
            and (job.get("env") or {}) == env and job.get("timeout") == timeout)


def start(run_key: str, command: Sequence[str], *, sync: bool = False, strict: bool = False,
          reuse_success: bool = False, start_timeout: float = DEFAULT_START_TIMEOUT, cwd: Optional[str] = None,
          env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
    """Start `command` under `run_key`, or return the job that already answers for that key.

    The decision and the insert share one BEGIN IMMEDIATE transaction, and the partial unique index on active
    run keys backs it up, so concurrent callers all get the same job.
    """
    env = env or {}
    store = open_store(create=True)
    assert store is not None
    override_used = False
    with store.write():
        latest = store.latest(run_key)
        if latest is not None:
            latest = jobs.refresh(store, latest)
        reuse = None
        if latest is not None:
            if jobs.is_active(latest) or jobs.is_stopping(latest):
                reuse = latest  # never a new attempt beside processes of the last one that are still alive
            elif strict:
                info = store.run_key_info(run_key) or {}
                expires = info.get("unlock_expires_at")
                if info.get("unlock_pending") and (expires is None or expires > now()):
                    override_used = True
                    store.consume_unlock(run_key)
                else:
                    reuse = latest
            elif reuse_success and latest["status"] == "SUCCEEDED":
                reuse = latest
        if reuse is None:
            job = _new_job(store, run_key, command, cwd, env, timeout, strict, strict_override_used=override_used,
                           override_reason=(store.run_key_info(run_key) or {}).get("unlock_reason")
                           if override_used else None)
    if reuse is not None:
        job = reuse
        if sync and jobs.is_active(job):
            job, _ = wait_for(store, job["job_id"], None)
        out = _start_view(job, existing=True, sync=sync, strict=strict, reuse_success=reuse_success)
        out["parameters_match"] = _params_match(reuse, command, cwd, env, timeout)
        return out
    job = _launch(store, job["job_id"], sync, start_timeout)
    out = _start_view(job, existing=False, sync=sync, strict=strict, reuse_success=reuse_success)
    out["parameters_match"] = True
    return out


def _start_view(job: Dict[str, Any], existing: bool, sync: bool, strict: bool, reuse_success: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "accepted": not existing,
        "existing": existing,
        "mode": "sync" if sync else "async",
        "strict": strict,
        "reuse_success": reuse_success,
        "strict_override_used": bool(job.get("strict_override_used")) and not existing,
    }
    view = jobs.render(job)
    view.pop("strict", None)
    view.pop("strict_override_used", None)
    out.update(view)
    out["job_strict"] = job["strict"]
    return out


def rerun(run_key: Optional[str], job_id: Optional[str], *, sync: bool = False, reason: Optional[str] = None,
          start_timeout: float = DEFAULT_START_TIMEOUT) -> Dict[str, Any]:
    """A new execution of a finished job's command, cwd, env and timeout, whatever strict mode says."""
    store = open_store(create=False)
    if store is None:
        jobs.lookup(None, run_key, job_id)  # raises NotFound: a fresh host has nothing to rerun
    with store.write():
        src, _ = jobs.lookup(store, run_key, job_id)
        src = jobs.refresh(store, src)
        if jobs.is_active(src):
            raise InconsistentState("job %s is still %s; rerun needs a finished job" % (src["job_id"], src["status"]))
        latest = jobs.refresh(store, store.latest(src["run_key"]) or src)
        if jobs.is_active(latest) or jobs.is_stopping(latest):
            raise InconsistentState("run key %r already has an active job %s (%s)"
                                    % (src["run_key"], latest["job_id"], latest["status"]))
        job = _new_job(store, src["run_key"], src["command"], src.get("cwd"), src.get("env") or {},
                       src.get("timeout"), src["strict"], rerun_of_job_id=src["job_id"], rerun_reason=reason)
    job = _launch(store, job["job_id"], sync, start_timeout)
    out = _start_view(job, existing=False, sync=sync, strict=job["strict"], reuse_success=False)
    out["parameters_match"] = True
    return out


# -- reading ------------------------------------------------------------------------------------------------------
def status(run_key: Optional[str], job_id: Optional[str], running: bool, all_: bool) -> Any:
    store = open_store(create=False)
    if running:
        if store is None:
            return []
        active = [jobs.refresh(store, j) for j in store.active()]
        return [jobs.render(j) for j in active if jobs.is_active(j)]
    if all_:
        history = store.history(run_key) if store is not None else []
        if not history:
            raise NotFound("no job with run key %r" % run_key)
        history[0] = jobs.refresh(store, history[0])
        return [jobs.render(jobs.refresh(store, j)) for j in history]
    job, _ = jobs.lookup(store, run_key, job_id)
    return jobs.render(jobs.refresh(store, job))


def wait_for(store: Store, job_id: str, timeout: Optional[float],
             offsets: Optional[Dict[str, int]] = None) -> "tuple[Dict[str, Any], bool]":
    """Block until the job is terminal, a log grows past `offsets`, or `timeout` passes; returns (job, timed_out).

    While the supervisor lives, its exit is watched through a pidfd, so the end of a job is noticed at once; the
    database is also re-read every few tens of milliseconds (an abort from elsewhere, a dead supervisor).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    watched_pid, fd = None, None
    try:
        while True:
            job = jobs.refresh(store, store.get(job_id) or {})
            if not job or not (jobs.is_active(job) or jobs.is_stopping(job)):
                return job, False  # an abort in progress is not an end yet: wait for the record to be closed
            if offsets and any(logfiles.size(job[s + "_file"]) > offsets.get(s, 0) for s in ("stdout", "stderr")):
                return job, False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return job, True
            step = 0.05 if offsets else 0.25
            if job.get("worker_pid") != watched_pid:
                if fd is not None:
                    os.close(fd)
                watched_pid = job.get("worker_pid")
                fd = processes.pidfd(watched_pid) if jobs.supervisor_alive(job) else None
            if fd is None:
                step = 0.05
            step = step if remaining is None else min(step, remaining)
            if fd is not None:
                ready, _, _ = select.select([fd], [], [], step)
                if ready:
                    os.close(fd)
                    fd, watched_pid = None, -1
                    time.sleep(0.002)
            else:
                time.sleep(step)
    finally:
        if fd is not None:
            os.close(fd)


def wait(run_key: Optional[str], job_id: Optional[str], timeout: float, stdout_offset: Optional[int],
         stderr_offset: Optional[int], max_bytes: int) -> Dict[str, Any]:
    store = open_store(create=False)
    job, jid = jobs.lookup(store, run_key, job_id)
    offsets = None
    if stdout_offset is not None or stderr_offset is not None:
        offsets = {"stdout": stdout_offset or 0, "stderr": stderr_offset or 0}
    job, timed_out = wait_for(store, jid, timeout, offsets)
    out = jobs.render(job)
    out["timed_out"] = timed_out
    if offsets is not None:
        final = not jobs.is_active(job)
        out["logs"] = {s: logfiles.chunk(job[s + "_file"], s, offsets[s], max_bytes, final) for s in ("stdout", "stderr")}
    return out


def logs(run_key: Optional[str], job_id: Optional[str], stream: str, offset: Optional[int], limit: Optional[int],
         tail: Optional[int], as_json: bool) -> Any:
    """The log as bytes (for people and pipes) or, with as_json, as one chunk object for programs."""
    store = open_store(create=False)
    job, _ = jobs.lookup(store, run_key, job_id)
    job = jobs.refresh(store, job)
    path = job[stream + "_file"]
    if tail is not None:
        data = logfiles.tail_bytes(path, tail)
        if not as_json:
            return data
        total = logfiles.size(path)
        return {"stream": stream, "offset": total - len(data), "next_offset": total, "size": total,
                "data": data.decode("utf-8", "replace")}
    start_at = offset or 0
    if as_json:
        return logfiles.chunk(path, stream, start_at, limit if limit is not None else 1 << 20, not jobs.is_active(job))
    return logfiles.read_bytes(path, start_at, limit)


# -- changing -----------------------------------------------------------------------------------------------------
def abort(run_key: Optional[str], job_id: Optional[str], reason: Optional[str], grace: float) -> Dict[str, Any]:
    """Mark ABORTED first (so a strict start sees the key consumed), then stop the whole process tree."""
    store = open_store(create=False)
    job, jid = jobs.lookup(store, run_key, job_id)
    t = now()
    with store.write():
        job = jobs.refresh(store, store.get(jid) or job)
        if not jobs.is_active(job):
            raise InconsistentState("job %s is already %s; there is nothing to abort" % (jid, job["status"]))
        store.update(jid, {"status": "ABORTED", "abort_reason": reason, "aborted_at": t, "updated_at": t},
                     only_if_status=ACTIVE)
    sent = jobs.stop_tree(job, grace, include_worker=bool(job.get("target_pid")))
    with store.write():
        final = store.get(jid) or job
        if not final.get("finished_at"):
            # The supervisor could not record the end (it was gone or was killed): close the record here.
            fields = {"finished_at": now(), "updated_at": now()}
            if not final.get("end_reason"):
                fields["end_reason"] = "aborted" + (": %s" % reason if reason else "")
            store.update(jid, fields, only_if_status=("ABORTED",))
    out = jobs.render(store.get(jid) or job)
    out["aborted"] = True
    out.update(sent)
    return out


def unlock(run_key: str, reason: Optional[str], ttl: Optional[float]) -> Dict[str, Any]:
    store = open_store(create=False)
    if store is None:
        raise NotFound("no job with run key %r" % run_key)
    t = now()
    with store.write():
        latest = store.latest(run_key)
        if latest is None:
            raise NotFound("no job with run key %r" % run_key)
        latest = jobs.refresh(store, latest)
        if jobs.is_active(latest):
            raise InconsistentState("run key %r has an active job %s (%s); unlock needs a finished one"
                                    % (run_key, latest["job_id"], latest["status"]))
        expires = int(t + ttl) if ttl is not None else None
        store.set_unlock(run_key, reason, t, expires)
    return with_iso({"unlocked": True, "run_key": run_key, "reason": reason, "allowed_at": t, "expires_at": expires},
                    "allowed_at", "expires_at")


def clean(before: Optional[int], after: Optional[int], all_: bool, job_id: Optional[str], run_key: Optional[str],
          dry_run: bool) -> Dict[str, Any]:
    """Delete terminal jobs and their files; active jobs are never touched."""
    store = open_store(create=False)
    result: Dict[str, Any] = {"deleted": 0, "errors": 0, "dry_run": dry_run, "matched": 0, "items": []}
    if store is None:
        if job_id is not None:
            raise NotFound("no job with job id %r" % job_id)
        return result
    if job_id is not None:
        job, _ = jobs.lookup(store, None, job_id)
        if jobs.is_active(jobs.refresh(store, job)):
            raise InconsistentState("job %s is %s; only finished jobs can be cleaned" % (job_id, job["status"]))
    if dry_run:  # a preview writes nothing, so it takes no write lock either
        selected = store.select_terminal(before=before, after=after, run_key=run_key, job_id=job_id)
    else:
        with store.write():
            selected = store.select_terminal(before=before, after=after, run_key=run_key, job_id=job_id)
            store.delete([j["job_id"] for j in selected])
    items: List[Dict[str, Any]] = []
    errors = 0
    for j in selected:
        items.append(with_iso({"job_id": j["job_id"], "run_key": j["run_key"], "status": j["status"],
                               "selected_at": j.get("finished_at")}, "selected_at"))
        if dry_run:
            continue
        for path in (j["stdout_file"], j["stderr_file"], jobs.result_path(j)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                errors += 1
    result.update(deleted=0 if dry_run else len(selected), matched=len(selected), errors=errors, items=items)
    return result


def version() -> Dict[str, Any]:
    import sys

    return {"version": __version__, "contract": CONTRACT_VERSION, "python": sys.version.split()[0]}
