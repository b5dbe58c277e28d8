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

from . import home, jobs, processes
from .errors import OrchesjobError
from .processes import signals as signal
from .store import ACTIVE, DatabaseError, Store, database_error, open_store
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Callable

MSG_RECORDED = b"S"
MSG_RUNNING = b"R"
LEFTOVER_GRACE = 2.0
TIMEOUT_GRACE = 5.0
# How long the supervisor keeps trying to record a result (a full disk, a database locked for hours): it stays
# alive meanwhile, so no reader declares the job LOST, and the retry finds the job still running instead of gone.
RESULT_RETRY_SECONDS = 24 * 3600.0
RETRY_MAX_DELAY = 10.0
# Variables that tie a process to a job (processes.MARKER_VAR and what the target is told): a supervisor started
# from inside another job must not carry them, or that job's leftover sweep would take it for its own.
JOB_VARS = (processes.MARKER_VAR, "ORCHESJOB_RUN_KEY", "ORCHESJOB_ATTEMPT")


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
        except BaseException:  # noqa: BLE001 - the middle child reports failure by its exit code only
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
        if any(v in os.environ for v in JOB_VARS):
            _reexec_clean(job_id, notify)  # returns only if it could not
        _supervise(job_id, notify)
    except BaseException:  # noqa: BLE001 - a supervisor never dies silently: report, then exit
        code = 1
        _report_crash(job_id)
    os._exit(code)


def _supervise(job_id: str, notify: int) -> None:
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the target gets them back at their defaults (processes.launch)
    Supervisor(job_id, notify).run()


def _reexec_clean(job_id: str, notify: int) -> None:
    """Become a fresh interpreter without another job's marker in its environment (a job started from a job).

    /proc/PID/environ shows the environment a process was exec'd with; changing os.environ does not change it.
    So a supervisor forked from a process inside job A would still look like A's to A's leftover sweep and abort,
    which would kill it. Only exec gives it an environment of its own. The package is found again from this
    file's location, which also works inside a zipapp.
    """
    if not sys.executable:
        return
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARS}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys; sys.path.insert(0, sys.argv[1]); from orchesjob.supervisor import main_exec; main_exec()"
    os.set_inheritable(notify, True)
    os.execve(sys.executable, [sys.executable, "-I", "-c", code, root, job_id, str(notify)], env)


def main_exec() -> None:
    """Entry of a re-exec'd supervisor (see _reexec_clean): argv is [root, job_id, notify_fd]."""
    job_id, notify = sys.argv[2], int(sys.argv[3])
    code = 0
    try:
        os.set_inheritable(notify, False)
        _supervise(job_id, notify)
    except BaseException:  # noqa: BLE001 - as in _run_detached
        code = 1
        _report_crash(job_id)
    os._exit(code)


def _report_crash(job_id: str) -> None:
    """A supervisor bug must not vanish silently: leave the traceback in the job's stderr log."""
    try:
        import traceback

        from .home import logs_dir

        fd = os.open(
            os.path.join(logs_dir(), job_id + ".stderr"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
        with os.fdopen(fd, "a") as f:
            f.write("orchesjob: internal error in the supervisor:\n")
            traceback.print_exc(file=f)
    except BaseException:  # noqa: BLE001 - the crash report is best effort
        pass


class Supervisor:
    def __init__(self, job_id: str, notify: int) -> None:
        self.job_id = job_id
        self.notify: int | None = notify
        store = open_store(create=True)
        assert store is not None  # create=True: it exists or open_store raised
        self.store: Store = store
        self.target: int | None = None
        self.term_requested = False

    def _tell(self, msg: bytes) -> None:
        if self.notify is None:
            return
        try:
            os.write(self.notify, msg)
        except OSError:  # the caller went away; the job goes on
            pass

    def _write(self, fn: Callable[[], Any], seconds: float = RESULT_RETRY_SECONDS) -> Any:
        """Run fn inside a write transaction, retrying with backoff while the database cannot be written.

        A locked database, a full disk and a failing disk are all worth waiting out: the job's result matters more
        than this process's exit. A corrupt database is not; that error is raised at once.
        """
        deadline = time.monotonic() + seconds
        delay = 0.2
        while True:
            try:
                with self.store.write():
                    return fn()
            except OrchesjobError as e:
                if e.error_type == "corrupt_database" or time.monotonic() >= deadline:
                    raise
            except DatabaseError as e:
                err = database_error(e, self.store.path)
                if err.error_type == "corrupt_database" or time.monotonic() >= deadline:
                    raise err from None
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    def run(self) -> None:
        me = os.getpid()
        me_start = processes.start_time(me)
        processes.pause_point("supervisor-before-record")
        recorded = self._write(
            lambda: self.store.update(
                self.job_id,
                {"worker_pid": me, "worker_start": me_start, "updated_at": now()},
                only_if_status=("STARTING",),
            )
        )
        if not recorded:
            return  # aborted or declared lost before we came up: launch nothing
        self._tell(MSG_RECORDED)
        job = self.store.get(self.job_id)
        assert job is not None
        signal.signal(signal.SIGTERM, self._on_term)
        processes.pause_point("supervisor-before-launch")
        launched = self._launch(job)
        if launched is None:
            return
        self._wait(job)

    def _on_term(self, signum: int, frame: Any) -> None:
        # abort signals us too; pass it on to the target and stay to record how it ended
        self.term_requested = True
        if self.target is not None:
            processes.send([], signal.SIGTERM, self.target)

    def _launch(self, job: dict[str, Any]) -> int | None:
        """Launch the command only while the job is still ours to launch, decided under the write lock.

        An abort (or a LOST verdict) that lands between recording ourselves and this point wins: the row is no
        longer STARTING with us as its worker, and the command never starts. If the launch happened but recording
        it could not be committed (a full disk), the retry records the same process instead of launching again.
        """
        env = dict(os.environ)
        env.update(job.get("env") or {})
        env[processes.MARKER_VAR] = job["job_id"]
        env["ORCHESJOB_RUN_KEY"] = job["run_key"]
        env["ORCHESJOB_ATTEMPT"] = str(job["attempt_no"])
        try:
            out = home.open_new_private(job["stdout_file"], os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            self._cannot_launch(job, "could not create the log file %s: %s" % (job["stdout_file"], e.strerror or e))
            return None
        try:
            err = home.open_new_private(job["stderr_file"], os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            os.close(out)
            self._cannot_launch(job, "could not create the log file %s: %s" % (job["stderr_file"], e.strerror or e))
            return None
        me = os.getpid()
        launched: dict[str, Any] = {}

        def launch_if_still_ours() -> bool:
            if not launched:
                fresh = self.store.get(self.job_id)
                if fresh is None or fresh["status"] != "STARTING" or fresh.get("worker_pid") != me:
                    return False
                pid = processes.launch(job["command"], job.get("cwd"), env, out, err)
                launched.update(status="RUNNING", target_pid=pid, target_start=processes.start_time(pid), pgid=pid)
            return self.store.update(self.job_id, dict(launched, updated_at=now()), only_if_status=("STARTING",))

        try:
            running = self._write(launch_if_still_ours)
        except (OSError, ValueError) as e:
            os.close(out)
            self._launch_failed(job, err, e)
            return None
        except BaseException:
            os.close(out)
            os.close(err)
            raise
        os.close(out)
        os.close(err)
        if not launched:
            self._tell(MSG_RUNNING)
            return None  # aborted (or declared lost) before launch: the command never started
        pid: int = launched["target_pid"]
        self.target = pid
        if not running:
            # aborted in the instant between the launch and its record (possible only after a failed commit):
            # record the process so it can be found, then stop it at once
            fields = {k: launched[k] for k in ("target_pid", "target_start", "pgid")}
            self._write(lambda: self.store.update(self.job_id, fields))
            jobs.stop_tree(dict(job, **fields), TIMEOUT_GRACE, include_worker=False)
        self._tell(MSG_RUNNING)
        return pid

    def _cannot_launch(self, job: dict[str, Any], reason: str) -> None:
        """The command was not started (and never will be by this job): record FAILED with the reason."""
        self._record(job, dict(jobs.outcome(None, reason), finished_at=now(), launch_failed=True))
        self._tell(MSG_RUNNING)

    def _launch_failed(self, job: dict[str, Any], err_fd: int, exc: BaseException) -> None:
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

    def _wait(self, job: dict[str, Any]) -> None:
        pid = self.target
        assert pid is not None
        timeout = job.get("timeout")
        rc = processes.wait_exit(pid, timeout) if timeout else processes.wait_exit(pid)
        if rc is None:
            self._timeout(job, float(timeout or 0))
            rc = processes.wait_exit(pid)
        job = self.store.get(self.job_id) or job
        # One-shot jobs end with their command: what it left running in the background is stopped too.
        if jobs.job_pids(job):
            jobs.stop_tree(job, LEFTOVER_GRACE, include_worker=False)
        self._record(job, dict(jobs.outcome(rc), finished_at=now()))

    def _timeout(self, job: dict[str, Any], timeout: float) -> None:
        reason = "timed out: the job ran longer than its --timeout of %gs" % timeout
        t = now()
        self._write(
            lambda: self.store.update(
                self.job_id,
                {"status": "ABORTED", "abort_reason": reason, "aborted_at": t, "updated_at": t},
                only_if_status=ACTIVE,
            )
        )
        jobs.stop_tree(self.store.get(self.job_id) or job, TIMEOUT_GRACE, include_worker=False)

    def _record(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """File first, then database, then drop the file: a result is never only in memory.

        Both are retried with backoff (RESULT_RETRY_SECONDS) while they fail, e.g. on a full disk; this process
        stays alive meanwhile, so readers keep seeing a live job rather than a LOST one.
        """
        deadline = time.monotonic() + RESULT_RETRY_SECONDS
        delay = 0.2
        in_file = False
        while True:
            if not in_file:
                try:
                    jobs.write_result_file(job, result)
                    in_file = True
                except OSError:
                    pass
            try:
                self._write(lambda: jobs.finish(self.store, self.job_id, result), seconds=0)
                break
            except OrchesjobError as e:
                if e.error_type == "corrupt_database" or time.monotonic() >= deadline:
                    return  # a result file, if written, stays for the next reader to apply
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
        jobs.remove_result_file(job)
