"""The detached process that runs one job to its end.

`spawn` double-forks: the middle child calls setsid, so the supervisor lives in a session of its own with no
controlling terminal, and its standard streams point at /dev/null, so neither a closed SSH channel nor a SIGHUP of
the caller reaches it. The supervisor launches the target (argv, never a shell) in its own process group, records
it, waits, and records the result: first to a file next to the logs, then to the database. A pipe back to the
caller says "supervisor recorded", "target running", and closes when the result is recorded, so `start` and
`start --sync` react at once instead of polling.
"""

from __future__ import annotations

import os
import sys
import time

from . import jobs, processes
from .processes import _sig as signal
from .errors import LockTimeout, OrchesjobError
from .store import ACTIVE, open_store
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Dict, Optional

MSG_RECORDED = b"S"
MSG_RUNNING = b"R"
LEFTOVER_GRACE = 2.0
TIMEOUT_GRACE = 5.0
RESULT_RETRY_SECONDS = 600.0


def spawn(job_id: str) -> int:
    """Start the supervisor of `job_id` fully detached; return the read end of its notification pipe."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # middle child: new session, then fork the supervisor and leave
        code = 0
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                _run_detached(job_id, w)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    return r


def _run_detached(job_id: str, notify: int) -> None:
    """Body of the supervisor process; never returns."""
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)
        os.closerange(3, notify)
        os.closerange(notify + 1, 65536)
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # the target gets them back at their defaults (processes.launch)
        Supervisor(job_id, notify).run()
    except BaseException:
        code = 1
        _report_crash(job_id)
    os._exit(code)


def _report_crash(job_id: str) -> None:
    """A supervisor bug must not vanish silently: leave the traceback in the job's stderr log."""
    try:
        import traceback

        from .home import logs_dir

        with open(os.path.join(logs_dir(), job_id + ".stderr"), "a") as f:
            f.write("orchesjob: internal error in the supervisor:\n")
            traceback.print_exc(file=f)
    except BaseException:
        pass


class Supervisor:
    def __init__(self, job_id: str, notify: int) -> None:
        self.job_id = job_id
        self.notify: Optional[int] = notify
        self.store = open_store(create=True)
        self.target: Optional[int] = None
        self.term_requested = False

    def _tell(self, msg: bytes) -> None:
        if self.notify is None:
            return
        try:
            os.write(self.notify, msg)
        except OSError:  # the caller went away; the job goes on
            pass

    def _write(self, fn) -> Any:
        """Run fn inside a write transaction, retrying while the database is locked."""
        deadline = time.monotonic() + RESULT_RETRY_SECONDS
        while True:
            try:
                with self.store.write():
                    return fn()
            except LockTimeout:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def run(self) -> None:
        me = os.getpid()
        me_start = processes.start_time(me)
        recorded = self._write(lambda: self.store.update(
            self.job_id, {"worker_pid": me, "worker_start": me_start, "updated_at": now()}, only_if_status=("STARTING",)
        ))
        if not recorded:
            return  # aborted or declared lost before we came up: launch nothing
        self._tell(MSG_RECORDED)
        job = self.store.get(self.job_id)
        assert job is not None
        signal.signal(signal.SIGTERM, self._on_term)
        launched = self._launch(job)
        if launched is None:
            return
        self._wait(job)

    def _on_term(self, signum: int, frame: Any) -> None:
        # abort signals us too; pass it on to the target and stay to record how it ended
        self.term_requested = True
        if self.target is not None:
            processes.send([], signal.SIGTERM, self.target)

    def _launch(self, job: Dict[str, Any]) -> Optional[int]:
        env = dict(os.environ)
        env.update(job.get("env") or {})
        env[processes.MARKER_VAR] = job["job_id"]
        env["ORCHESJOB_RUN_KEY"] = job["run_key"]
        env["ORCHESJOB_ATTEMPT"] = str(job["attempt_no"])
        out = os.open(job["stdout_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(job["stderr_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            pid = processes.launch(job["command"], job.get("cwd"), env, out, err)
        except (OSError, ValueError) as e:
            self._launch_failed(job, err, e)
            return None
        finally:
            os.close(out)
        os.close(err)
        self.target = pid
        fields = {
            "status": "RUNNING", "target_pid": pid, "target_start": processes.start_time(pid), "pgid": pid,
            "updated_at": now(),
        }
        if not self._write(lambda: self.store.update(self.job_id, fields, only_if_status=("STARTING",))):
            # aborted while we were launching: record the process so it can be found, then stop it at once
            self._write(lambda: self.store.update(self.job_id, {k: fields[k] for k in ("target_pid", "target_start", "pgid")}))
            jobs.stop_tree(dict(job, **fields), TIMEOUT_GRACE, include_worker=False)
        self._tell(MSG_RUNNING)
        return pid

    def _launch_failed(self, job: Dict[str, Any], err_fd: int, exc: BaseException) -> None:
        path = getattr(exc, "filename", None)
        if isinstance(exc, PermissionError):
            code = 126
        else:
            code = 127
        if path and job.get("cwd") and path == job["cwd"]:
            why = "working directory %r: %s" % (path, getattr(exc, "strerror", None) or exc)
        elif isinstance(exc, OSError):
            why = "%r: %s" % (job["command"][0], exc.strerror or exc)
        else:
            why = str(exc)
        reason = "could not launch the command: %s" % why
        try:
            os.write(err_fd, ("orchesjob: %s\n" % reason).encode("utf-8", "replace"))
        except OSError:
            pass
        os.close(err_fd)
        result = dict(jobs.outcome(code, reason), finished_at=now(), launch_failed=True)
        self._record(job, result)
        self._tell(MSG_RUNNING)

    def _wait(self, job: Dict[str, Any]) -> None:
        pid = self.target
        assert pid is not None
        timeout = job.get("timeout")
        rc = processes.wait_exit(pid, timeout) if timeout else processes.wait_exit(pid)
        if rc is None:
            self._timeout(job, timeout)
            rc = processes.wait_exit(pid)
        job = self.store.get(self.job_id) or job
        # One-shot jobs end with their command: what it left running in the background is stopped too.
        if jobs.job_pids(job):
            jobs.stop_tree(job, LEFTOVER_GRACE, include_worker=False)
        self._record(job, dict(jobs.outcome(rc), finished_at=now()))

    def _timeout(self, job: Dict[str, Any], timeout: float) -> None:
        reason = "timed out: the job ran longer than its --timeout of %gs" % timeout
        t = now()
        self._write(lambda: self.store.update(
            self.job_id, {"status": "ABORTED", "abort_reason": reason, "aborted_at": t, "updated_at": t},
            only_if_status=ACTIVE,
        ))
        jobs.stop_tree(self.store.get(self.job_id) or job, TIMEOUT_GRACE, include_worker=False)

    def _record(self, job: Dict[str, Any], result: Dict[str, Any]) -> None:
        """File first, then database, then drop the file: a result is never only in memory."""
        try:
            jobs.write_result_file(job, result)
        except OSError:
            pass
        try:
            self._write(lambda: jobs.finish(self.store, self.job_id, result))
        except OrchesjobError:
            return  # the file stays; the next reader applies it
        jobs.remove_result_file(job)
