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
import select  # here, not where used: `start` loads this module before it writes a job (commands._launch)
import sys
import time

from . import control, home, jobs, life, processes
from .contract import ACTIVE
from .errors import OrchesjobError
from .processes import signals as signal
from .store import DatabaseError, Store, database_error, open_store_patiently
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Callable

    from .rows import JobRow

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


def spawn(job_id: str, life_fd: int) -> int:
    """Start the supervisor of `job_id` fully detached; return the read end of its notification pipe.

    `life_fd` is the job's supervisor lock (life.py), held by the caller: the supervisor inherits it through the
    fork and holds it until it exits, so there is no moment at which nobody vouches for the job."""
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
                _run_detached(job_id, w, life_fd)
        except BaseException:  # noqa: BLE001 - the middle child reports failure by its exit code only
            code = 1
        os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    return r


def _run_detached(job_id: str, notify: int, life_fd: int) -> None:
    """Body of the supervisor process; never returns."""
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)
        keep = sorted((notify, life_fd))
        os.closerange(3, keep[0])
        os.closerange(keep[0] + 1, keep[1])
        os.closerange(keep[1] + 1, 65536)
        if any(v in os.environ for v in JOB_VARS):
            _reexec_clean(job_id, notify, life_fd)  # returns only if it could not
        _supervise(job_id, notify, life_fd)
    except BaseException:  # noqa: BLE001 - a supervisor never dies silently: report, then exit
        code = 1
        _report_crash(job_id)
    os._exit(code)


def _supervise(job_id: str, notify: int, life_fd: int) -> None:
    _retitle("orchesjob supervisor %s" % job_id, notify, life_fd)
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the target gets them back at their defaults (processes.launch)
    Supervisor(job_id, notify, life_fd).run()


def _retitle(title: str, notify: int, life_fd: int) -> None:
    """Overwrite this process's command line (what `ps` shows) with `title`.

    The supervisor is a fork of the `start` that launched it, so it would show that command line, with the job's
    command, cwd and --env values, to every user of the host for as long as the job runs. The argument area is this
    process's own memory; /proc/self/mem writes it in place (the kernel then shows the new text). Where that is not
    allowed, the supervisor becomes a fresh interpreter whose command line holds only the job id."""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rfind(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])
        text = title.encode("ascii", "replace")[: max(0, end - start - 1)]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(text + b"\0" * (end - start - len(text)))
    except (OSError, ValueError, IndexError):
        if os.environ.get("_ORCHESJOB_REEXECED") != "1" and sys.executable:
            _reexec(title.rpartition(" ")[2], dict(os.environ), notify, life_fd)


def _reexec_clean(job_id: str, notify: int, life_fd: int) -> None:
    """Become a fresh interpreter without another job's marker in its environment (a job started from a job).

    /proc/PID/environ shows the environment a process was exec'd with; changing os.environ does not change it.
    So a supervisor forked from a process inside job A would still look like A's to A's leftover sweep and abort,
    which would kill it. Only exec gives it an environment of its own."""
    if not sys.executable:
        return
    _reexec(job_id, {k: v for k, v in os.environ.items() if k not in JOB_VARS}, notify, life_fd)


def _reexec(job_id: str, env: dict[str, str], notify: int, life_fd: int) -> None:
    """exec a fresh interpreter that goes on as this supervisor; its command line holds only paths and the job id.
    The package is found again from this file's location, which also works inside a zipapp."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys; sys.path.insert(0, sys.argv[1]); from orchesjob.supervisor import main_exec; main_exec()"
    for fd in (notify, life_fd):
        if fd >= 0:
            os.set_inheritable(fd, True)
    env["_ORCHESJOB_REEXECED"] = "1"
    os.execve(sys.executable, [sys.executable, "-I", "-c", code, root, job_id, str(notify), str(life_fd)], env)


def main_exec() -> None:
    """Entry of a re-exec'd supervisor: argv is [root, job_id, notify_fd, life_fd]."""
    job_id, notify, life_fd = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    code = 0
    try:
        for fd in (notify, life_fd):
            if fd >= 0:
                os.set_inheritable(fd, False)
        _supervise(job_id, notify, life_fd)
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
    def __init__(self, job_id: str, notify: int, life_fd: int) -> None:
        self.job_id = job_id
        self.notify: int | None = notify
        self.life_fd = life_fd  # the supervisor lock, held until this process exits
        # a busy lock here would end the job LOST before its launch: wait it out as the writes below do
        self.store: Store = open_store_patiently(RESULT_RETRY_SECONDS)
        self.target: int | None = None
        # Set just before the target is reaped: from then on its pid and group id may belong to anyone, so nothing
        # (the SIGTERM handler included) signals them any more.
        self.reaping = False
        self.term_requested = False
        self.term_passed = False
        self.kill_at: float | None = None  # when a stop escalates to SIGKILL
        self.ctl: int | None = None
        self.ctl_keep: int | None = None
        self.ctl_pending = bytearray()
        self.timed_out = False

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
        job = self.store.get(self.job_id)
        assert job is not None
        try:
            self._listen(job)
            self._tell(MSG_RECORDED)
            signal.signal(signal.SIGTERM, self._on_term)
            processes.pause_point("supervisor-before-launch")
            if self._launch(job) is not None:
                self._wait(job)
        finally:
            self._close(job)

    def _listen(self, job: JobRow) -> None:
        """Open the control FIFO before launching, so that an abort of a RUNNING job always finds it (control.py).
        Without it (a file system that cannot hold a FIFO) `abort` falls back to signalling verified processes."""
        try:
            self.ctl = control.listen(life.control_path(job))
            self.ctl_keep = control.keep_open(life.control_path(job))
        except OSError:
            self.ctl = self.ctl_keep = None

    def _close(self, job: JobRow) -> None:
        """The job is recorded as ended (or was never ours): remove what only a live supervisor needs."""
        for fd in (self.ctl, self.ctl_keep):
            if fd is not None:
                os.close(fd)
        self.ctl = self.ctl_keep = None
        control.remove(life.control_path(job))
        fresh = self.store.get(self.job_id) or job
        if fresh["status"] not in ACTIVE:
            # Nothing holds the job lock any more: its file goes too (clean keeps a job whose lock is still held).
            # The supervisor lock goes last; this process holds it until it exits.
            life.remove_if_free(life.job_lock(job))
            try:
                os.unlink(life.supervisor_lock(job))
            except OSError:
                pass

    def _on_term(self, signum: int, frame: Any) -> None:
        # `kill` of the supervisor (an admin, a service manager): pass it on to the command and stay to record how
        # it ended. Only while the command is unreaped: its group id is then certainly still the job's.
        self.term_requested = True
        if self.target is not None and not self.reaping:
            self.term_passed = processes.killpg(self.target, signal.SIGTERM) or self.term_passed

    def _launch(self, job: JobRow) -> int | None:
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
        try:
            lock = [life.hold_new(life.job_lock(job))]
        except OSError as e:
            os.close(out)
            os.close(err)
            self._cannot_launch(job, "could not create the lock file %s: %s" % (life.job_lock(job), e.strerror or e))
            return None
        me = os.getpid()
        launched: dict[str, Any] = {}

        def launch_if_still_ours() -> bool:
            if not launched:
                fresh = self.store.get(self.job_id)
                if fresh is None or fresh["status"] != "STARTING" or fresh.get("worker_pid") != me:
                    return False
                pid = processes.launch(job["command"], job.get("cwd"), env, out, err, lock[0])
                launched.update(status="RUNNING", target_pid=pid, target_start=processes.start_time(pid), pgid=pid)
                processes.pause_point("supervisor-after-launch")  # launched, not yet recorded
            return self.store.update(self.job_id, dict(launched, updated_at=now()), only_if_status=("STARTING",))

        try:
            running = self._write(launch_if_still_ours)
        except (OSError, ValueError) as e:
            os.close(out)
            self._drop_job_lock(job, lock)
            self._launch_failed(job, err, e)
            return None
        except BaseException:
            os.close(out)
            os.close(err)
            self._drop_job_lock(job, lock)
            raise
        os.close(out)
        os.close(err)
        if not launched:
            self._drop_job_lock(job, lock)
            self._tell(MSG_RUNNING)
            self._write(self._close_unlaunched)
            return None  # aborted (or declared lost) before launch: the command never started
        os.close(lock[0])  # from now on only the command's processes hold the job lock
        pid: int = launched["target_pid"]
        self.target = pid
        if not running:
            # aborted in the instant between the launch and its record (possible only after a failed commit):
            # record the process so it can be found, then stop it at once
            fields = {k: launched[k] for k in ("target_pid", "target_start", "pgid")}
            self._write(lambda: self.store.update(self.job_id, fields))
            self._stop(job, TIMEOUT_GRACE)
        self._tell(MSG_RUNNING)
        return pid

    def _close_unlaunched(self) -> None:
        """An abort won before the launch: make sure its record is closed (`abort` normally closes it itself)."""
        fresh = self.store.get(self.job_id)
        if fresh is not None and fresh["status"] == "ABORTED" and not fresh.get("finished_at"):
            reason = fresh.get("abort_reason")
            self.store.update(
                self.job_id,
                {
                    "finished_at": now(),
                    "updated_at": now(),
                    "end_reason": "aborted before its command was launched" + (": %s" % reason if reason else ""),
                },
                only_if_status=("ABORTED",),
            )

    @staticmethod
    def _drop_job_lock(job: JobRow, lock: list[int]) -> None:
        if lock:
            os.close(lock[0])
            lock.clear()
            life.remove_if_free(life.job_lock(job))

    def _cannot_launch(self, job: JobRow, reason: str) -> None:
        """The command was not started (and never will be by this job): record FAILED with the reason."""
        self._record(job, dict(jobs.outcome(None, reason), finished_at=now(), launch_failed=True))
        self._tell(MSG_RUNNING)

    def _launch_failed(self, job: JobRow, err_fd: int, exc: BaseException) -> None:
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

    # -- while the command runs ---------------------------------------------------------------------------------
    def _wait(self, job: JobRow) -> None:
        """Wait for the command to exit, without reaping it; meanwhile serve abort requests, the timeout and a
        SIGTERM. Then stop what it left behind while its zombie still pins its group id, reap it, record the end."""
        pid = self.target
        assert pid is not None
        timeout = job.get("timeout")
        deadline = time.monotonic() + float(timeout) if timeout else None
        exit_fd = processes.pidfd(pid)
        try:
            while True:
                rc = processes.exit_status(pid)
                if rc is not None:
                    break
                if self.term_requested and not self.term_passed:
                    self.term_passed = processes.killpg(pid, signal.SIGTERM)
                t = time.monotonic()
                if deadline is not None and t >= deadline and not self.timed_out:
                    self._timeout(job, float(timeout or 0))
                if self.kill_at is not None and t >= self.kill_at:
                    self._signal_all(job, signal.SIGKILL)
                    self.kill_at = None
                waits = [x - t for x in (deadline if not self.timed_out else None, self.kill_at) if x is not None]
                step = max(0.0, min(waits + [1.0]))
                fds = [fd for fd in (exit_fd, self.ctl) if fd is not None]
                if exit_fd is None:
                    step = min(step, 0.05)  # no pidfd (an old kernel): look again soon
                try:
                    ready, _, _ = select.select(fds, [], [], step)
                except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may still cut it short
                    ready = []
                if self.ctl is not None and self.ctl in ready:
                    for _verb, grace in control.read_requests(self.ctl, self.ctl_pending):
                        self._stop(job, grace)
        finally:
            if exit_fd is not None:
                os.close(exit_fd)
        self._sweep(job)
        self.reaping = True
        processes.reap(pid)
        job = self.store.get(self.job_id) or job
        self._record(job, dict(jobs.outcome(rc), finished_at=now()))

    def _stop(self, job: JobRow, grace: float) -> None:
        """SIGTERM the command's group and the job's other processes now, SIGKILL after `grace` (abort, timeout)."""
        self._signal_all(job, signal.SIGTERM)
        at = time.monotonic() + grace
        self.kill_at = at if self.kill_at is None else min(self.kill_at, at)

    def _signal_all(self, job: JobRow, sig: int) -> bool:
        """The command's group (pinned by the unreaped command) and every verified process of the job outside it."""
        pid = self.target
        if pid is None or self.reaping:
            return False
        sent = processes.killpg(pid, sig)
        files = processes.file_ids([life.job_lock(job)])
        candidates = processes.find(job["job_id"], files if life.probe(life.job_lock(job)) == life.HELD else set())
        for other, group in candidates.items():
            if group != pid:
                sent = processes.signal_verified(other, sig, lambda p: self._is_jobs(job, p, files)) or sent
        return sent

    def _is_jobs(self, job: JobRow, pid: int, files: set[tuple[int, int]]) -> bool:
        return (
            processes.carries_marker(pid, job["job_id"])
            or processes.holds_any(pid, files)
            or (self.target is not None and not self.reaping and processes.pgrp(pid) == self.target)
        )

    def _left(self, job: JobRow) -> bool:
        """Whether anything of the job is still alive besides the (exited) command itself."""
        pid = self.target
        if life.probe(life.job_lock(job)) == life.HELD:
            return True
        return bool(processes.find(job["job_id"], set(), group=pid))

    def _sweep(self, job: JobRow) -> None:
        """One-shot jobs end with their command: what it left running in the background is stopped too, while the
        command's zombie keeps its group id from being reused."""
        if not self._left(job):
            return
        processes.pause_point("supervisor-before-sweep")
        self._signal_all(job, signal.SIGTERM)
        processes.wait_until(lambda: not self._left(job), time.monotonic() + LEFTOVER_GRACE)
        if self._left(job):
            self._signal_all(job, signal.SIGKILL)
            processes.wait_until(lambda: not self._left(job), time.monotonic() + 2.0)

    def _timeout(self, job: JobRow, timeout: float) -> None:
        self.timed_out = True
        reason = "timed out: the job ran longer than its --timeout of %gs" % timeout
        t = now()
        self._write(
            lambda: self.store.update(
                self.job_id,
                {"status": "ABORTED", "abort_reason": reason, "aborted_at": t, "updated_at": t},
                only_if_status=ACTIVE,
            )
        )
        self._stop(job, TIMEOUT_GRACE)

    def _record(self, job: JobRow, result: dict[str, Any]) -> None:
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
