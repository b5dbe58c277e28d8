"""One plain function per CLI command: validated Python values in, a JSON-ready value out.

Nothing here knows about argv; cli.py parses and validates, these functions decide and act.
"""

from __future__ import annotations

import os
import time

from . import home, jobs, life, logfiles, processes
from .contract import ACTIVE, CONTRACT_VERSION, DEFAULT_START_TIMEOUT, VERSION
from .errors import InconsistentState, InvalidArgument, NotFound, job_not_found, run_key_not_found
from .store import Store, open_store, open_store_patiently
from .timeutil import now, with_iso

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Sequence
    from typing import Any

    from .rows import JobRow


# -- start and rerun ----------------------------------------------------------------------------------------------
def _new_job(
    store: Store,
    run_key: str,
    command: Sequence[str],
    cwd: str | None,
    env: dict[str, str],
    timeout: float | None,
    strict: bool,
    *,
    strict_override_used: bool = False,
    override_reason: str | None = None,
    rerun_of_job_id: str | None = None,
    rerun_reason: str | None = None,
    request_id: str | None = None,
    owner: str | None = None,
) -> tuple[JobRow, int]:
    """Insert a STARTING job (call inside a write transaction) and return it with the descriptor of its supervisor
    lock (life.py), taken before the row exists. The caller holds that lock until the supervisor it spawns holds
    it too, so from the first moment the row exists some process vouches for the job; a caller that dies before
    spawning leaves a job whose lock is free, which any reader then declares LOST (nothing was launched)."""
    job_id = _job_id()
    logs = os.path.join(os.path.dirname(store.path), "logs")
    t = now()
    me = os.getpid()
    job: JobRow = {
        "job_id": job_id,
        "run_key": run_key,
        "attempt_no": store.next_attempt(run_key),
        "status": "STARTING",
        "command": list(command),
        "cwd": cwd,
        "env": dict(env),
        "timeout": timeout,
        "strict": strict,
        "strict_override_used": strict_override_used,
        "override_reason": override_reason,
        "rerun_of_job_id": rerun_of_job_id,
        "rerun_reason": rerun_reason,
        "abort_reason": None,
        "exit_code": None,
        "signal": None,
        "end_reason": None,
        "worker_pid": me,
        "worker_start": processes.start_time(me),
        "target_pid": None,
        "target_start": None,
        "pgid": None,
        "boot_id": processes.boot_id(),
        "pid_ns": processes.pid_namespace(),
        "request_id": request_id,
        "owner": owner,
        "stdout_file": os.path.join(logs, job_id + ".stdout"),
        "stderr_file": os.path.join(logs, job_id + ".stderr"),
        "started_at": t,
        "finished_at": None,
        "updated_at": t,
        "aborted_at": None,
        "imported_from": None,
        "life_lock": True,
    }
    fd = life.hold_new(life.supervisor_lock(job))
    store.after_rollback(lambda: _drop_lock(job, fd))
    store.insert(job)
    return job, fd


def _drop_lock(job: JobRow, fd: int) -> None:
    """Give up the supervisor lock of a job whose row was not committed (nothing will ever use the file)."""
    os.close(fd)
    try:
        os.unlink(life.supervisor_lock(job))
    except OSError:
        pass


def _job_id() -> str:
    """A random (version 4) UUID, without importing uuid on the start path."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _launch(store: Store, job_id: str, life_fd: int, sync: bool, start_timeout: float) -> JobRow:
    """Spawn the supervisor and wait for it as asked: until the target runs (async) or the job ends (sync).

    The callers import the supervisor module before they write the job: an import that fails here (no file
    descriptor left) would leave a recorded job without a supervisor (LOST, never run)."""
    import select  # loaded with the supervisor module, before the job was written

    from . import supervisor

    store.close()
    processes.pause_point("start-before-spawn")
    try:
        fd = supervisor.spawn(job_id, life_fd)
    finally:
        os.close(life_fd)  # the supervisor holds the lock now (or was never spawned: then the job is LOST)
        # the job is committed: a busy lock now must not turn the answer into lock_timeout ("nothing was done")
        store = open_store_patiently(supervisor.RESULT_RETRY_SECONDS)
    try:
        run_deadline = time.monotonic() + start_timeout
        seen = b""
        while sync or supervisor.MSG_RUNNING not in seen:
            # Wait until the supervisor has recorded itself (or died: the pipe closes), however long others hold
            # the database lock; then async waits up to start_timeout for the target, and sync for the pipe to
            # close, once the result is recorded.
            if supervisor.MSG_RECORDED not in seen:
                deadline: float | None = None
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
    return jobs.refresh(store, _still_there(store, job_id))


def _still_there(store: Store, job_id: str) -> JobRow:
    """The job's row, or not_found: `clean` may delete a finished job while a caller still waits on it."""
    job = store.get(job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


def _params_match(
    job: JobRow, command: Sequence[str], cwd: str | None, env: dict[str, str], timeout: float | None
) -> bool:
    return (
        job["command"] == list(command)
        and (job.get("cwd") or None) == (cwd or None)
        and (job.get("env") or {}) == env
        and job.get("timeout") == timeout
    )


def start(
    run_key: str,
    command: Sequence[str],
    *,
    sync: bool = False,
    strict: bool = False,
    reuse_success: bool = False,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    request_id: str | None = None,
    adopt_mismatch: bool = False,
) -> dict[str, Any]:
    """Start `command` under `run_key`, or return the job that already answers for that key.

    The decision and the insert share one BEGIN IMMEDIATE transaction, and the partial unique index on active
    run keys backs it up, so concurrent callers all get the same job. A `request_id` names the caller's request:
    a repeat of it (a transport retry whose first try did reach the host) returns the job the first try answered
    with, whatever happened to that job since, so one request never causes two executions. The job's owner
    becomes the latest request that was answered with it (see abort --if-owner), unless that answer was a job
    whose command, cwd, env or timeout differ from the request's (`parameters_match` false): such a caller is
    expected to refuse the job, so its request is recorded (a repeat gets the same answer) but the job keeps its
    owner. `adopt_mismatch` is the caller saying it takes such a job anyway: then it becomes the owner too.
    """
    from . import places, supervisor  # noqa: F401 - loaded before anything is written (see _launch)

    env = env or {}
    store = open_store(create=True)
    assert store is not None
    override_used = False
    same_request = False
    life_fd: int | None = None
    job: JobRow | None = None
    with store.write():
        reuse = None
        latest = store.latest(run_key)
        store.run_key_info(run_key)  # a damaged run key record is refused here, before anything acts or writes
        if latest is not None:
            latest = jobs.refresh(store, latest)
        answered, cleaned = store.answered_request(run_key, request_id) if request_id is not None else (None, None)
        if cleaned is not None:
            raise _request_cleaned(run_key, cleaned)
        if answered is not None:
            reuse, same_request = jobs.refresh(store, answered), True
        elif latest is not None and (jobs.is_active(latest) or jobs.is_stopping(latest)):
            reuse = latest  # never a new attempt beside processes of the last one that are still alive
        else:
            from . import places

            reuse = places.find_active(run_key)  # started under another state directory (places.py)
            if reuse is None and latest is not None:
                if strict:
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
            # the unlock's reason, also as rerun_reason where orchesjob 1.1.0 keeps it
            why = (store.run_key_info(run_key) or {}).get("unlock_reason") if override_used else None
            job, life_fd = _new_job(
                store,
                run_key,
                command,
                cwd,
                env,
                timeout,
                strict,
                strict_override_used=override_used,
                override_reason=why,
                rerun_reason=why,
                rerun_of_job_id=latest["job_id"] if latest is not None else None,
                request_id=request_id,
                owner=request_id,
            )
        matches = reuse is None or _params_match(reuse, command, cwd, env, timeout)
        if request_id is not None and not same_request and not (reuse is not None and reuse.get("state_dir")):
            target = reuse if reuse is not None else job
            assert target is not None  # a new job was inserted when no job was reused
            # A caller answered with a job of other parameters refuses it (unless it says it adopts it): it must
            # not become the owner, or the owner it replaced could no longer abort its own job (abort --if-owner).
            takes_over = matches or adopt_mismatch
            store.record_request(run_key, request_id, target["job_id"], now(), take_ownership=takes_over)
            if takes_over:
                target["owner"] = request_id
    if reuse is not None:
        job = reuse
        if sync and jobs.is_active(job) and not job.get("state_dir"):
            job, _ = wait_for(store, job["job_id"], None)
        out = _start_view(job, existing=True, sync=sync, strict=strict, reuse_success=reuse_success)
        out["parameters_match"] = matches
        out["same_request"] = same_request
        if job.get("state_dir"):
            home.warn(
                "run key %r has an active job %s in the state directory %s (not %s): it was returned instead of "
                "starting the command again" % (run_key, job["job_id"], job["state_dir"], home.state_dir())
            )
        return out
    assert life_fd is not None and job is not None
    job = _launch(store, job["job_id"], life_fd, sync, start_timeout)
    out = _start_view(job, existing=False, sync=sync, strict=strict, reuse_success=reuse_success)
    out["parameters_match"] = True
    out["same_request"] = False
    return out


def _request_cleaned(run_key: str, record: dict[str, Any]) -> InconsistentState:
    """A repeat of a request whose job `clean` deleted: refused, never run again (the first answer was that job)."""
    return InconsistentState(
        "request %r of run key %r was answered with job %s (%s), which has since been cleaned; the request is not "
        "run again: use a new request id to run the command again"
        % (record["request_id"], run_key, record["job_id"], record.get("job_status") or "finished"),
        error_type="request_cleaned",
        job_id=record["job_id"],
        job_status=record.get("job_status"),
    )


def _start_view(job: JobRow, existing: bool, sync: bool, strict: bool, reuse_success: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
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


def rerun(
    run_key: str | None,
    job_id: str | None,
    *,
    sync: bool = False,
    reason: str | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT,
) -> dict[str, Any]:
    """A new execution of a finished job's command, cwd, env and timeout, whatever strict mode says."""
    from . import supervisor  # noqa: F401 - loaded before anything is written (see _launch)

    store = open_store(create=False)
    if store is None:
        jobs.lookup(None, run_key, job_id)  # raises NotFound: a fresh host has nothing to rerun
    assert store is not None
    with store.write():
        src, _ = jobs.lookup(store, run_key, job_id)
        assert store is not None  # lookup raised NotFound otherwise
        src = jobs.refresh(store, src)
        if jobs.is_active(src):
            raise InconsistentState(
                "Cannot rerun active job: status=%s; job %s has not finished" % (src["status"], src["job_id"])
            )
        latest = jobs.refresh(store, store.latest(src["run_key"]) or src)
        if jobs.is_active(latest) or jobs.is_stopping(latest):
            raise InconsistentState(
                "Cannot rerun active job: run key %r already has an active job %s (%s)"
                % (src["run_key"], latest["job_id"], latest["status"])
            )
        job, life_fd = _new_job(
            store,
            src["run_key"],
            src["command"],
            src.get("cwd"),
            src.get("env") or {},
            src.get("timeout"),
            src["strict"],
            rerun_of_job_id=src["job_id"],
            rerun_reason=reason,
        )
    job = _launch(store, job["job_id"], life_fd, sync, start_timeout)
    out = _start_view(job, existing=False, sync=sync, strict=job["strict"], reuse_success=False)
    out["parameters_match"] = True
    out["rerun"] = True  # as orchesjob 1.1.0 marks a rerun's output
    return out


# -- reading ------------------------------------------------------------------------------------------------------
def _locate(run_key: str | None, job_id: str | None, write: bool = False) -> tuple[Store, JobRow]:
    """The store and job a command names: the state directory's (a run key's latest attempt), else, for a job id
    it does not hold or a run key it has no job of, another directory's (places.py; read-only unless `write`)."""
    store = open_store(create=False)
    job = None
    if store is not None:
        job = store.get(job_id) if job_id is not None else store.latest(run_key or "")
        if job is not None:
            store.run_key_info(job["run_key"])  # its run key record is checked too, before anything acts on the job
            return store, job
    from . import places

    directory = places.find(job_id, run_key)
    other = places.open_at(directory, write) if directory is not None else None
    if other is not None:
        job = other.get(job_id) if job_id is not None else other.latest(run_key or "")
        if job is not None:
            return other, job
    raise job_not_found(job_id) if job_id is not None else run_key_not_found(run_key)


MIN_PREFIX = 4  # the shortest job id prefix taken on the command line (ls shows at least 8 characters)


def resolve_job(token: str) -> str:
    """The job id a command line names: the id itself, or the one job whose id starts with `token`.

    An exact id is passed on as it is (it may be a job of another state directory, which _locate finds). A prefix is
    looked up in this state directory's primary key index: none is not_found, several is a mistake that names them."""
    store = open_store(create=False)
    if store is None or store.get(token) is not None:
        return token
    if len(token) < MIN_PREFIX:
        raise InvalidArgument(
            "%r is too short for a job id prefix: give at least %d characters (ls shows them)" % (token, MIN_PREFIX)
        )
    found = store.ids_with_prefix(token, 6)
    if not found:
        return token  # not a prefix of anything here: looked up as an id (and in the other places), or not_found
    if len(found) > 1:
        raise InvalidArgument(
            "job id prefix %r is ambiguous: it starts %s%s; give more of it"
            % (token, ", ".join(found[:5]), " and more" if len(found) > 5 else ""),
            matches=found[:5],
        )
    return found[0]


def status(run_key: str | None, job_id: str | None, running: bool, all_: bool) -> Any:
    if not (running or all_):
        located, job = _locate(run_key, job_id)  # it opens the database itself: once per call, not twice
        return jobs.render(jobs.refresh(located, job))
    store = open_store(create=False)
    if running:
        if store is None:
            return []
        active = [jobs.refresh(store, j) for j in store.active()]
        return [jobs.render(j) for j in active if jobs.is_active(j)]
    history = store.history(run_key) if store is not None and run_key is not None else []  # --all
    if store is None or not history:
        raise NotFound("No jobs found for run_key: %s (run_key not found)" % run_key)
    store.run_key_info(history[0]["run_key"])  # checked like every value read, before a refresh may write
    history[0] = jobs.refresh(store, history[0])
    return [jobs.render(jobs.refresh(store, j)) for j in history]


def wait_for(
    store: Store, job_id: str, timeout: float | None, offsets: dict[str, int] | None = None
) -> tuple[JobRow, bool]:
    """Block until the job is terminal, a log grows past `offsets`, or `timeout` passes; returns (job, timed_out).

    While the supervisor lives, its exit is watched through a pidfd, so the end of a job is noticed at once; the
    database is also re-read every few tens of milliseconds (an abort from elsewhere, a dead supervisor).
    """
    import select  # here: a `status` call does not need it

    deadline = None if timeout is None else time.monotonic() + timeout
    watched_pid, fd = None, None
    try:
        while True:
            job = jobs.refresh(store, _still_there(store, job_id))
            if not job or not (jobs.is_active(job) or jobs.is_stopping(job)):
                return job, False  # an abort in progress is not an end yet: wait for the record to be closed
            if offsets and any(
                logfiles.readable_end(jobs.log_file(job, s), offsets.get(s, 0)) > offsets.get(s, 0)
                for s in ("stdout", "stderr")
            ):
                return job, False  # new bytes to give; an incomplete character at the log's end is not news yet
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return job, True
            step = 0.05 if offsets else 0.25
            if job.get("worker_pid") != watched_pid:
                if fd is not None:
                    os.close(fd)
                watched_pid = job.get("worker_pid")
                fd = life.wake_fd(job)
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


def wait(
    run_key: str | None,
    job_id: str | None,
    timeout: float,
    stdout_offset: int | None,
    stderr_offset: int | None,
    max_bytes: int,
) -> dict[str, Any]:
    store, job = _locate(run_key, job_id)
    jid = job["job_id"]
    offsets = None
    if stdout_offset is not None or stderr_offset is not None:
        offsets = {"stdout": stdout_offset or 0, "stderr": stderr_offset or 0}
    job, timed_out = wait_for(store, jid, timeout, offsets)
    out = jobs.render(job)
    out["timed_out"] = timed_out
    if offsets is not None:
        final = not jobs.is_active(job)
        out["logs"] = {
            s: logfiles.chunk(jobs.log_file(job, s), s, offsets[s], max_bytes, final) for s in ("stdout", "stderr")
        }
    return out


def logs(
    run_key: str | None,
    job_id: str | None,
    stream: str,
    offset: int | None,
    limit: int | None,
    tail: int | None,
    as_json: bool,
    follow: bool = False,
    attempt: int | None = None,
) -> Any:
    """The log as Blocks of bytes that cli.main writes out as they are read (for people and pipes), or, with
    as_json, as one chunk object for programs (at most logfiles.MAX_CHUNK bytes; read on from next_offset), or, with
    follow, a follow.Follow that prints it as it grows until the job has ended (`logs --follow`).

    Nothing is sized by the numbers asked for: an offset past the end is an empty answer, a limit or a tail larger
    than the log is the whole log, read in bounded blocks. `attempt` picks an earlier attempt of `run_key`."""
    if attempt is not None and run_key is not None:
        store, job = _attempt(run_key, attempt)
    else:
        store, job = _locate(run_key, job_id)
    job = jobs.refresh(store, job)
    path = jobs.log_file(job, stream)
    start_at = offset or 0
    if tail is not None:
        start_at, end = logfiles.tail_range(path, tail)
        limit = end - start_at
    if follow:
        from .follow import Follow

        return Follow(store, job, stream, start_at, by_run_key=run_key is not None and attempt is None)
    if as_json:
        return logfiles.chunk(path, stream, start_at, limit if limit is not None else 1 << 20, not jobs.is_active(job))
    return logfiles.blocks(path, start_at, limit)


def _attempt(run_key: str, attempt: int) -> tuple[Store, JobRow]:
    """Attempt `attempt` of a run key, or not_found saying which attempts there are."""
    store, latest = _locate(run_key, None)
    job = store.attempt(run_key, attempt)
    if job is None:
        raise NotFound(
            "run key %r has no attempt %d (its latest is attempt %d; clean may have deleted older ones)"
            % (run_key, attempt, latest["attempt_no"])
        )
    store.run_key_info(run_key)
    return store, job


# -- changing -----------------------------------------------------------------------------------------------------
def abort(
    run_key: str | None,
    job_id: str | None,
    reason: str | None,
    grace: float,
    if_owner: str | None = None,
    assume_dead: bool = False,
) -> dict[str, Any]:
    """Mark ABORTED first (so a strict start sees the key consumed), then have the whole process tree stopped.

    The job's supervisor, when it listens on its control FIFO, is asked to do it (control.py): it alone can signal
    the command's group without any doubt about whose group it is. Without a supervisor, only processes verified as
    the job's are signalled (jobs.stop_from_outside), and a job whose processes this process cannot see (another
    pid namespace) is refused. `assume_dead` closes a job whose liveness is unknown without signalling anything:
    a person's word that nothing of it runs any more.

    With `if_owner`, only a job whose owner is that request id is aborted: a caller that has since been replaced
    (a stale Airflow try whose job a newer try reattached to) is refused, whatever order the two run in, because
    the check and the ABORTED mark happen under the same write lock as the reattaching start's ownership change.
    """
    from . import control

    store, job = _locate(run_key, job_id, write=True)
    jid = job["job_id"]
    t = now()
    ctl: int | None = None
    try:
        with store.write():
            job = jobs.refresh(store, store.get(jid) or job)
            _check_owner(job, if_owner)
            if not jobs.is_active(job):
                raise InconsistentState(
                    "Job is not running: %s status=%s; there is nothing to abort" % (jid, job["status"])
                )
            unknown = job.get("liveness") == "unknown"
            if assume_dead:
                if not unknown:
                    raise InconsistentState(
                        "job %s is verified alive (%s); abort it without --assume-dead" % (jid, life.verdict(job)[1]),
                        error_type="liveness_known",
                    )
                why = "aborted with --assume-dead: nothing was signalled" + (" (%s)" % reason if reason else "")
                store.update(
                    jid,
                    {
                        "status": "ABORTED",
                        "abort_reason": reason,
                        "aborted_at": t,
                        "updated_at": t,
                        "finished_at": t,
                        "end_reason": why,
                    },
                    only_if_status=ACTIVE,
                )
                return dict(_abort_view(store, jid, job), **dict.fromkeys(_SENT, False))
            if job["status"] == "STARTING" and not job.get("target_pid") and _launch_decided_here(job):
                # Nothing was launched, and nothing will be: the record is closed now (see _launch_decided_here).
                store.update(
                    jid,
                    {
                        "status": "ABORTED",
                        "abort_reason": reason,
                        "aborted_at": t,
                        "updated_at": t,
                        "finished_at": t,
                        "end_reason": "aborted before its command was launched" + (": %s" % reason if reason else ""),
                    },
                    only_if_status=ACTIVE,
                )
                return dict(_abort_view(store, jid, job), **dict.fromkeys(_SENT, False))
            if job.get("life_lock"):
                ctl = control.connect(life.control_path(job))
            reach = processes.can_see(job.get("pid_ns")) or processes.sees_whole_host()
            if ctl is None and not reach:
                raise InconsistentState(
                    "job %s cannot be stopped from here: %s, and its supervisor does not answer; abort it from its "
                    "own pid namespace, or, once you know nothing of it runs, with --assume-dead"
                    % (jid, job.get("liveness_reason") or "its processes are in pid namespace %s" % job.get("pid_ns")),
                    error_type="other_pid_namespace",
                )
            store.update(
                jid,
                {"status": "ABORTED", "abort_reason": reason, "aborted_at": t, "updated_at": t},
                only_if_status=ACTIVE,
            )
    except BaseException:
        if ctl is not None:
            os.close(ctl)
        raise
    if ctl is not None:
        sent = _abort_through_supervisor(store, job, ctl, grace)
    else:
        sent = jobs.stop_from_outside(job, grace)
    with store.write():
        final = store.get(jid) or job
        if not final.get("finished_at") and life.verdict(final)[0] == life.DEAD:
            # The supervisor could not record the end (it was gone or was killed): close the record here.
            fields: dict[str, Any] = {"finished_at": now(), "updated_at": now()}
            if not final.get("end_reason"):
                fields["end_reason"] = "aborted" + (": %s" % reason if reason else "")
            store.update(jid, fields, only_if_status=("ABORTED",))
    return dict(_abort_view(store, jid, job), **sent)


_SENT = ("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker")


def _launch_decided_here(job: JobRow) -> bool:
    """True when a STARTING job without a recorded command can be closed as never launched.

    A row without a target pid does not prove that nothing runs: a supervisor killed between its launch and the
    commit that records it leaves exactly that row behind while its command runs on. Two facts are proof. Its
    supervisor holds its lock: a live supervisor launches only while the row is STARTING, decided under the write
    lock this caller holds, and one that launched but could not commit re-checks the row and stops what it
    launched. Or the verdict is DEAD: no supervisor and no process of the command is left. Anything else goes
    through the normal abort, which finds and stops the processes by their evidence.
    """
    if job.get("life_lock") and life.probe(life.supervisor_lock(job)) == life.HELD:
        return True
    return life.verdict(job)[0] == life.DEAD


def _abort_view(store: Store, jid: str, job: JobRow) -> dict[str, Any]:
    out = jobs.render(store.get(jid) or job)
    out["aborted"] = True
    return out


def _check_owner(job: JobRow, if_owner: str | None) -> None:
    if if_owner is None or job.get("owner") == if_owner:
        return
    jid = job["job_id"]
    raise InconsistentState(
        (
            "job %s is owned by request %r, not %r: a newer request took it over; not aborted"
            % (jid, job["owner"], if_owner)
        )
        if job.get("owner")
        else (
            "job %s has no owner request (it was started without --request-id), so it is not %r's; not aborted"
            % (jid, if_owner)
        ),
        error_type="not_owner",
        owner=job.get("owner"),
    )


def _abort_through_supervisor(store: Store, job: JobRow, ctl: int, grace: float) -> dict[str, bool]:
    """Ask the supervisor to stop the job (SIGTERM to its group now, SIGKILL after `grace`) and wait until it has
    recorded the end, or is gone, or `grace` plus the time its last sweep may take has passed."""
    import select

    from . import control
    from .supervisor import LEFTOVER_GRACE

    jid = job["job_id"]
    try:
        asked = control.send(ctl, control.ABORT, grace)
    finally:
        os.close(ctl)
    deadline = time.monotonic() + grace + 2 * LEFTOVER_GRACE + 5.0
    final = job
    while asked and time.monotonic() < deadline:
        final = store.get(jid) or job
        if final.get("finished_at") or life.probe(life.supervisor_lock(job)) != life.HELD:
            break
        fd = life.wake_fd(final)
        try:
            if fd is not None:
                select.select([fd], [], [], 0.1)
            else:
                time.sleep(0.05)
        finally:
            if fd is not None:
                os.close(fd)
    final = store.get(jid) or job
    launched = bool(job.get("target_pid"))
    return {
        "sent_term_target": asked and launched,
        "sent_term_worker": asked,  # the supervisor was asked to stop it (through its FIFO, not a signal)
        "sent_kill_target": final.get("signal") == 9,
        "sent_kill_worker": False,
    }


def unlock(run_key: str, reason: str | None, ttl: float | None) -> dict[str, Any]:
    store = open_store(create=False)
    if store is None:
        raise run_key_not_found(run_key)
    t = now()
    with store.write():
        latest = store.latest(run_key)
        if latest is None:
            raise run_key_not_found(run_key)
        store.run_key_info(run_key)  # a damaged run key record is refused here, before anything writes
        latest = jobs.refresh(store, latest)
        if jobs.is_active(latest):
            raise InconsistentState(
                "Cannot unlock active job: status=%s; run key %r has the active job %s, unlock "
                "needs a finished one" % (latest["status"], run_key, latest["job_id"])
            )
        expires = int(t + ttl) if ttl is not None else None
        store.set_unlock(run_key, reason, t, expires)
    return with_iso(
        {"unlocked": True, "run_key": run_key, "reason": reason, "allowed_at": t, "expires_at": expires},
        "allowed_at",
        "expires_at",
    )


def clean(
    before: int | None,
    after: int | None,
    all_: bool,
    job_id: str | None,
    run_key: str | None,
    dry_run: bool,
    summary: bool = False,
) -> dict[str, Any]:
    """Delete terminal jobs and their files; never a job while anything of it is alive.

    Active jobs are not selected at all. A terminal job can still have processes (an ABORTED job whose aborting
    process died midway): deleting its row would let the next `start` run beside them, so such jobs are listed in
    `skipped` with the reason, and deleted by a later clean once they are gone.

    With `summary` the answer has the counts only (`skipped_count` for the skipped list): a clean of a long history
    answers in a few bytes instead of an object per job. On a terminal, each phase shows its progress on stderr.
    """
    from .progress import Progress

    store = open_store(create=False)
    result: dict[str, Any] = {"deleted": 0, "errors": 0, "dry_run": dry_run, "matched": 0}
    if not summary:
        result.update(items=[], skipped=[])
    else:
        result.update(skipped_count=0)
    if store is None:
        if job_id is not None:
            raise job_not_found(job_id)
        return result
    if job_id is not None:
        job, _ = jobs.lookup(store, None, job_id)
        assert store is not None  # lookup raised NotFound otherwise
        job = jobs.refresh(store, job)
        if jobs.is_active(job):
            raise InconsistentState("job %s is %s; only finished jobs can be cleaned" % (job_id, job["status"]))
        why = "its abort has not finished" if jobs.is_stopping(job) else life.lingering(job)
        if why:
            raise InconsistentState(
                "job %s is %s but processes of it may still be alive (%s); it can be cleaned once they are gone"
                % (job_id, job["status"], why)
            )
    skipped: list[dict[str, Any]] = []
    shown = Progress("reading the jobs to clean")
    reading = shown if shown.tty else None
    with shown:
        if dry_run:  # a preview writes nothing, so it takes no write lock either
            found = store.select_terminal(before=before, after=after, run_key=run_key, job_id=job_id, progress=reading)
            shown.start(len(found), "checking that nothing of them runs")
            selected = _cleanable(store, found, skipped, True, shown)
        else:
            with store.write():
                found = store.select_terminal(
                    before=before, after=after, run_key=run_key, job_id=job_id, progress=reading
                )
                shown.start(len(found), "checking that nothing of them runs")
                selected = _cleanable(store, found, skipped, False, shown)
                shown.start(len(selected), "deleting the records")
                store.delete(selected, shown)
        errors = 0
        if not dry_run:
            shown.start(len(selected), "removing the log files")
            for j in selected:
                for path in (j["stdout_file"], j["stderr_file"], jobs.result_path(j), life.control_path(j)):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        errors += 1
                shown.step()
    result.update(deleted=len(selected), matched=len(selected), errors=errors)
    if summary:
        result["skipped_count"] = len(skipped)
        return result
    result["items"] = [
        with_iso(
            {
                "job_id": j["job_id"],
                "run_key": j["run_key"],
                "status": j["status"],
                "selected_at": j.get("finished_at"),
            },
            "selected_at",
        )
        for j in selected
    ]
    result["skipped"] = skipped
    return result


def _cleanable(
    store: Store, selected: list[JobRow], skipped: list[dict[str, Any]], dry_run: bool, progress: Any
) -> list[JobRow]:
    """The selected jobs nothing of which may be alive (unless `dry_run`, their lock files are then removed); the
    others go to `skipped` with the reason. `progress` is told each job checked."""
    markers = processes.snapshot_markers() if any(not j.get("life_lock") for j in selected) else {}
    keep = []
    for j in selected:
        progress.step()
        if jobs.is_stopping(j):
            j = jobs.refresh(store, j)  # closes the abort's record if nothing of it is left
        if jobs.is_stopping(j):
            why: str | None = "its abort has not finished: processes of the job may still be alive"
        else:
            why = life.lingering(j, markers)
            if why is None and j.get("life_lock") and not dry_run:
                # taken and removed here, so that nothing can hold it between this check and the delete
                if not (life.remove_if_free(life.job_lock(j)) and life.remove_if_free(life.supervisor_lock(j))):
                    why = "its lock is held again"
        if why is None:
            keep.append(j)
            continue
        skipped.append({"job_id": j["job_id"], "run_key": j["run_key"], "status": j["status"], "reason": why})
    return keep


# -- for people at the host and for monitoring (modules of their own, imported only by these commands) ----------
def ls(
    last: int | None,
    run_key: str | None,
    as_json: bool,
    term: Any,
    statuses: Sequence[str] = (),
    prefix: str | None = None,
    watch: float | None = None,
) -> Any:
    """Running jobs (default), the latest `last` jobs, a run key's attempts, the jobs of some statuses or of a run
    key prefix: rows as JSON, or a table.Text (with `watch`, a table.Watch that redraws it every `watch` seconds)."""
    from . import table

    def rows() -> list[dict[str, Any]]:
        return table.select(open_store(create=False), last, run_key, statuses, prefix)

    if as_json:
        return rows()
    if run_key is not None:
        empty = "no jobs for run key %r" % run_key
    elif prefix is not None:
        empty = "no jobs whose run key starts with %r" % prefix
    elif statuses:
        empty = "no %s jobs" % "/".join(statuses)
    elif last is not None:
        empty = "no jobs yet"
    else:
        empty = "no running jobs (orchesjob ls --last 20 lists the latest jobs)"
    if watch is not None:
        return table.Watch(rows, term, empty, watch)
    return table.render(rows(), term, empty)


def doctor(fix: bool, text: bool, term: Any) -> Any:
    """Checks of the state directory, the database and the jobs' processes and files (doctor.py)."""
    from . import doctor as doctor_mod

    return doctor_mod.run(fix, text, term)


def metrics(recent_seconds: float, max_families: int, depth: int = 1) -> Any:
    """The Prometheus text exposition of the jobs (metrics.py)."""
    from . import metrics as metrics_mod
    from .home import DB_NAME, state_dir

    store = open_store(create=False)
    return metrics_mod.collect(
        store,
        store.path if store is not None else os.path.join(state_dir(), DB_NAME),
        recent_seconds,
        max_families,
        depth,
    )


def code_path() -> str:
    """Where this CLI's code is: the zipapp file it runs from, or its package directory. ``version`` says it, so a
    host with several copies (a pipx install, a provider's upload in ~/.cache/orchesjob) shows which one answered."""
    here = os.path.dirname(os.path.abspath(__file__))
    probe = here
    while probe and not os.path.isdir(probe):  # inside an archive: its path runs through the archive file
        if os.path.isfile(probe):
            return probe
        probe = os.path.dirname(probe)
    return here


def version() -> dict[str, Any]:
    import sys

    return {
        "version": VERSION,
        "contract": CONTRACT_VERSION,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "path": code_path(),
    }
