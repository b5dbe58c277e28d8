"""Is a job alive: evidence the kernel keeps, and "unknown" where there is none.

A job started by this orchesjob holds two flock(2) locks, shared, on files next to its logs:

- ``<id>.supervisor.lock``: taken by `start` before the job's row exists and handed on (through fork) to the
  supervisor, which holds it for its whole life;
- ``<id>.job.lock``: taken by the supervisor right before it launches the command and handed on to the command as
  an open descriptor (the supervisor then closes its own): from then on the job's own processes hold it, down to
  any grandchild that did not close it.

The kernel releases a flock lock when the last descriptor of its open file description closes, which a process's
death does, whatever pid or time namespace the reader is in, however /proc is mounted, and however pids were
reused since. A reader tests a lock with a non-blocking exclusive flock on a descriptor of its own: refused means
some process holds it; granted (and at once released) means none does. Nothing re-takes a lock once it is free (the
supervisor only ever holds the one it was handed), so "free" is final: the job can be declared LOST.

Before that verdict, further evidence of life is still looked for, and any of it keeps the job alive: a process
that has the job's log open for writing (a read lease is refused by the kernel, again in any namespace: the job's
command has its log as stdout and stderr), and, where /proc shows the job's pid namespace, a process that carries
the job's marker. A job whose lock file is missing, or cannot be tested, is "unknown": never LOST, never started
again.

Jobs without these locks (recorded by orchesjob 1.1.0, or by an earlier build of this one) are alive until proven
dead: proven by a reboot since (boot id; own builds only), or, where their pid namespace is known to be this one, by
their supervisor's (worker's) pid naming no live process *and* no process writing their logs.
"""

from __future__ import annotations

import os

from . import processes

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from .rows import JobRow

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"
HELD, FREE, MISSING, ERROR = "held", "free", "missing", "error"


# -- the files ----------------------------------------------------------------------------------------------------
def _base(job: JobRow) -> str:
    base: str = job["stdout_file"]
    return base[: -len(".stdout")] if base.endswith(".stdout") else base


def supervisor_lock(job: JobRow) -> str:
    return _base(job) + ".supervisor.lock"


def job_lock(job: JobRow) -> str:
    return _base(job) + ".job.lock"


def control_path(job: JobRow) -> str:
    """The supervisor's control FIFO (control.py)."""
    return _base(job) + ".ctl"


def job_files(job: JobRow) -> list[str]:
    """Files that the job's processes hold open: its lock and its logs (by path; processes.file_ids)."""
    files = [job["stdout_file"], job["stderr_file"]]
    if job.get("life_lock"):
        files.append(job_lock(job))
    return files


def hold_new(path: str) -> int:
    """Create `path` (0600, never through an existing file or link) and hold a shared lock on it; the descriptor."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def probe(path: str) -> str:
    """HELD when some process holds a lock on `path`, FREE when none does, MISSING when there is no such file,
    ERROR when it cannot be told (not a regular file, a file system without flock)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return MISSING
    except OSError:
        return ERROR
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ERROR
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return HELD
        except OSError:
            return ERROR
        return FREE  # closing the descriptor below releases it at once
    finally:
        os.close(fd)


def remove_if_free(path: str) -> bool:
    """Delete a lock file nobody holds (taken exclusively while it is unlinked); False if held or unusable."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def log_writers(job: JobRow) -> str:
    """HELD when some process has the job's stdout or stderr log open for writing, FREE when none has, ERROR when
    the kernel will not say.

    The kernel grants a read lease (F_SETLEASE, F_RDLCK) on a file only while nobody has it open for writing, in
    any namespace: the lease is taken and released at once, nothing else happens. (Only the file's owner may take
    one, which the state directory's rules guarantee; a missing log has no writer.)"""
    import fcntl

    setlease = getattr(fcntl, "F_SETLEASE", 1024)
    for path in (job["stdout_file"], job["stderr_file"]):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError:
            return ERROR
        try:
            try:
                fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
            except BlockingIOError:
                return HELD
            except OSError:
                return ERROR
            try:
                fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
            except OSError:
                pass
        finally:
            os.close(fd)
    return FREE


# -- verdicts -----------------------------------------------------------------------------------------------------
def verdict(job: JobRow, markers: dict[str, list[int]] | None = None) -> tuple[str, str]:
    """(ALIVE, DEAD or UNKNOWN, why) for an active job. `markers` is a processes.snapshot_markers() to use instead
    of a /proc pass of its own (callers asking about many jobs)."""
    if job.get("life_lock"):
        return _locked(job, markers)
    return _legacy(job, markers)


def _other_evidence(job: JobRow, markers: dict[str, list[int]] | None) -> str | None:
    """A reason the job is alive though its locks say nothing, or None: its logs are being written, or (in its pid
    namespace) a process carries its marker."""
    if log_writers(job) == HELD:
        return "a process has its log open for writing"
    if processes.can_see(job.get("pid_ns")):
        found = markers.get(job["job_id"]) if markers is not None else processes.find(job["job_id"], set())
        if found:
            return "a process carries its marker"
    return None


def _locked(job: JobRow, markers: dict[str, list[int]] | None) -> tuple[str, str]:
    sup = probe(supervisor_lock(job))
    if sup == HELD:
        return ALIVE, "its supervisor holds its lock"
    if sup != FREE:
        return UNKNOWN, "its supervisor's lock file %s is %s" % (supervisor_lock(job), _what(sup))
    own = probe(job_lock(job))
    if own == HELD:
        return ALIVE, "processes of its command hold its lock"
    if own == ERROR:
        return UNKNOWN, "its lock file %s cannot be tested" % job_lock(job)
    other = _other_evidence(job, markers)
    if other:
        return ALIVE, other
    if own == MISSING and job.get("target_pid"):
        # the supervisor makes this file before it launches: its command ran, and its lock is gone
        return UNKNOWN, "its command was launched but its lock file %s is missing" % job_lock(job)
    return DEAD, "its supervisor and every process of its command are gone (their locks are released)"


def _what(state: str) -> str:
    return "missing" if state == MISSING else "not testable"


def _legacy(job: JobRow, markers: dict[str, list[int]] | None) -> tuple[str, str]:
    if job.get("imported_from"):
        return _imported(job)
    boot, now_boot = job.get("boot_id"), processes.boot_id()
    if boot and now_boot and boot != now_boot:
        return DEAD, "the host rebooted after the job started"
    writers = log_writers(job)
    if writers == HELD:
        return ALIVE, "a process has its log open for writing"
    if not processes.can_see(job.get("pid_ns")):
        return UNKNOWN, "it runs in pid namespace %s, which this process cannot see" % (
            job.get("pid_ns") or "(not recorded)"
        )
    if processes.exists(job.get("worker_pid")):
        return ALIVE, "a process with its supervisor's pid is running"
    found = markers.get(job["job_id"]) if markers is not None else processes.find(job["job_id"], set())
    if found:
        return ALIVE, "a process carries its marker"
    if writers == ERROR and processes.exists(job.get("target_pid")):
        # the leases cannot say whether its command still writes its logs: the command's pid is all there is
        return ALIVE, "a process with its command's pid is running"
    return DEAD, "its supervisor and its command are gone"


def _imported(job: JobRow) -> tuple[str, str]:
    """A job orchesjob 1.1.0 launched. Its worker keeps the job's logs open for writing until the command has
    ended (and the command has them as stdout and stderr), so while a read lease is refused it is alive. Granted,
    the worker has closed them: it is gone, or about to record the result, which a LOST verdict would then drop.
    So the worker itself must be seen gone: by its recorded pid, where its pid namespace is known to be this one
    (the upgrade records it when it sees the worker), or, from the host's initial pid namespace, where every
    process of the host is visible, by no process running `-m orchesjob _worker --job-id ID`."""
    writers = log_writers(job)
    if writers == HELD:
        return ALIVE, "a process has its log open for writing"
    if writers == ERROR:
        return UNKNOWN, "the kernel will not say whether its logs are being written (a file system without leases)"
    from .legacy.workers import find_legacy_worker

    if processes.can_see(job.get("pid_ns")):
        worker = job.get("worker_pid")
        if worker is None and find_legacy_worker(job["job_id"]) is not None:
            return ALIVE, "its orchesjob 1.1.0 worker is running"
        if processes.exists(worker):
            return ALIVE, "a process with its orchesjob 1.1.0 worker's pid is running"
        return DEAD, "its orchesjob 1.1.0 worker and command are gone"
    if processes.sees_whole_host():
        if find_legacy_worker(job["job_id"]) is not None:
            return ALIVE, "its orchesjob 1.1.0 worker is running"
        return DEAD, "its orchesjob 1.1.0 worker and command are gone"
    return UNKNOWN, "it was started by orchesjob 1.1.0 in a pid namespace this process cannot see"


def lingering(job: JobRow, markers: dict[str, list[int]] | None = None) -> str | None:
    """Why processes of a *finished* job may still be alive (then `clean` keeps it), or None.

    Its locks, where it has them (a missing lock file was removed by its supervisor once nothing held it); a job
    without them is judged as an active one would be, and anything but DEAD keeps it."""
    if job.get("life_lock"):
        for path, who in ((job_lock(job), "processes of its command"), (supervisor_lock(job), "its supervisor")):
            state = probe(path)
            if state == HELD:
                return "%s hold its lock" % who
            if state == ERROR:
                return "its lock file %s cannot be tested" % path
        return None
    state, why = _legacy(job, markers)
    return None if state == DEAD else why


def wake_fd(job: JobRow) -> int | None:
    """A pidfd of the job's supervisor, to wake a waiter the moment it exits (never a verdict: the waiter reads the
    job again). Only for a supervisor verified as this job's: it holds the job's supervisor lock open."""
    pid = job.get("worker_pid")
    if not pid or not job.get("life_lock") or not processes.can_see(job.get("pid_ns")):
        return None
    fd = processes.pidfd(pid)
    if fd is None:
        return None
    if processes.holds_any(pid, processes.file_ids([supervisor_lock(job)])) and not processes.exited(fd):
        return fd
    os.close(fd)
    return None
