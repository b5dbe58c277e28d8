"""Processes: finding a job's, signalling only those, launching and waiting for the command.

Nothing here decides whether a job is alive (life.py does, from locks the kernel releases at death). This module
answers "which processes are the job's, right now" for the moments something must be signalled, and it is careful
about one thing above all: a pid is only a number, reused by the kernel once its process is reaped. So a process is
signalled only while it is *pinned*:

- the supervisor signals the command's process group while the command is its unreaped child (a zombie still holds
  its pid and its group id, so the group cannot be anyone else's), and never after reaping it;
- any other process signals a pid through a pidfd opened *before* checking that the process is the job's (it carries
  the job's marker in its environment, or holds one of the job's files open, or is in the group of a leader verified
  that way), and only while that pidfd says the process has not exited: the pidfd names one process for good.

Everything that reads /proc works only where /proc shows this process's own pid namespace (`proc_is_ours`); in
another namespace the job's pids are invisible or name other processes, and nothing is signalled.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Iterable
    from typing import Callable

MARKER_VAR = "ORCHESJOB_JOB_ID"
PROC = "/proc"
HAVE_PROC = os.path.isdir("/proc/self")


def boot_id() -> str | None:
    """The kernel's id of this boot (recorded with each job, shown by doctor)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def pid_namespace() -> str | None:
    """The pid namespace this process lives in (e.g. "pid:[4026531836]"); None without /proc.

    Pids mean something only inside one pid namespace: a reader in another container, or under `unshare --pid`,
    sees none of the job's pids, or other processes under the same numbers.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def proc_is_ours() -> bool:
    """Whether /proc shows our own pid namespace (after `unshare --pid` without a new /proc mount it does not, and
    every pid read there names some other process)."""
    try:
        return int(os.readlink("/proc/self")) == os.getpid()
    except (OSError, ValueError):
        return False


def can_see(recorded_ns: str | None) -> bool:
    """Whether this process sees the pids of a job recorded in pid namespace `recorded_ns` under the same numbers:
    the same namespace, recorded (a job whose namespace nobody recorded could be in any), with a /proc showing it."""
    if not recorded_ns or not HAVE_PROC:
        return False
    return recorded_ns == pid_namespace() and proc_is_ours()


INITIAL_PID_NS = "pid:[4026531836]"  # the kernel's fixed inode number for the first pid namespace (PROC_PID_INIT_INO)


def sees_whole_host() -> bool:
    """Whether this process is in the host's initial pid namespace with its own /proc: then every process of the
    host, in any pid namespace below, is visible here (under other numbers than its own namespace gives it)."""
    return HAVE_PROC and pid_namespace() == INITIAL_PID_NS and proc_is_ours()


def pause_point(name: str) -> None:
    """Stop this process with SIGSTOP at a named moment when ORCHESJOB_PAUSE_AT names it (comma-separated).

    A test hook: races that need a process delayed at one precise step (a reader between its liveness check and
    its write, a supervisor between recording itself and launching) are reproduced by stopping it there and
    resuming it with SIGCONT. Costs one environment lookup when unset.
    """
    wanted = os.environ.get("ORCHESJOB_PAUSE_AT")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signals.SIGSTOP)


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, is index 0)."""
    try:
        with open("%s/%d/stat" % (PROC, pid), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    return data[data.rfind(b")") + 2 :].decode("ascii", "replace").split()


def start_time(pid: int | None) -> str | None:
    """The process's start time in clock ticks since boot, as this process's time namespace shows it; kept in the
    job record for people (doctor), never used to decide anything."""
    if not pid or not HAVE_PROC:
        return None
    fields = stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def exists(pid: int | None) -> bool:
    """Whether some live (not zombie) process has this pid: which one, this cannot say."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not HAVE_PROC:
        return True
    fields = stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")  # unreadable stat: it exists, count it


def pgrp(pid: int) -> int | None:
    fields = stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[2])


def carries_marker(pid: int, job_id: str) -> bool:
    """Whether the process was started with ORCHESJOB_JOB_ID=<job_id> in its environment (every process the job's
    command starts inherits it, unless it clears its environment)."""
    marker = ("%s=%s" % (MARKER_VAR, job_id)).encode()
    try:
        with open("%s/%d/environ" % (PROC, pid), "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def holds_any(pid: int, files: set[tuple[int, int]]) -> bool:
    """Whether the process has one of `files` ((st_dev, st_ino) pairs) open: the job's lock or log files, which its
    processes inherit."""
    if not files:
        return False
    base = "%s/%d/fd" % (PROC, pid)
    try:
        names = os.listdir(base)
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat("%s/%s" % (base, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in files:
            return True
    return False


def file_ids(paths: Iterable[str]) -> set[tuple[int, int]]:
    out = set()
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def pids() -> list[int]:
    me = os.getpid()
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit() and int(n) != me]


def find(job_id: str | None, files: set[tuple[int, int]], group: int | None = None) -> dict[int, int]:
    """{pid: process group} of live processes that look like the job's: they carry its marker, hold one of its
    `files` open, or are in `group` (pass a group only while it is pinned: see the module docstring).

    A candidate list only: whoever signals them checks each again through a pidfd (signal_verified)."""
    found: dict[int, int] = {}
    if not HAVE_PROC or not proc_is_ours():
        return found
    for pid in pids():
        fields = stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        g = int(fields[2])
        if (group and g == group) or (job_id and carries_marker(pid, job_id)) or holds_any(pid, files):
            found[pid] = g
    return found


def snapshot_markers() -> dict[str, list[int]]:
    """{job id: pids} of every live process that carries a job marker: one /proc pass for questions about many jobs
    (clean, doctor)."""
    out: dict[str, list[int]] = {}
    if not HAVE_PROC or not proc_is_ours():
        return out
    prefix = MARKER_VAR.encode() + b"="
    for pid in pids():
        fields = stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        try:
            with open("%s/%d/environ" % (PROC, pid), "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(prefix):
                        out.setdefault(item[len(prefix) :].decode("utf-8", "replace"), []).append(pid)
                        break
        except OSError:
            pass
    return out


# -- signalling ---------------------------------------------------------------------------------------------------
def pidfd(pid: int | None) -> int | None:
    """A file descriptor naming this process for good (Linux 5.3+); readable once it has exited. None without."""
    opener = getattr(os, "pidfd_open", None)
    if not pid or opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


_PIDFDS: list[bool] = []


def pidfds_work() -> bool:
    """Whether this kernel has pidfd_open and pidfd_send_signal (asked once: a pidfd of this process itself)."""
    if not _PIDFDS:
        fd = pidfd(os.getpid())
        _PIDFDS.append(fd is not None and hasattr(signals, "pidfd_send_signal"))
        if fd is not None:
            os.close(fd)
    return _PIDFDS[0]


def exited(fd: int) -> bool:
    """Whether the process a pidfd names has exited (a zombie counts as exited)."""
    import select

    try:
        ready, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def signal_verified(pid: int, sig: int, is_the_jobs: Callable[[int], bool]) -> bool:
    """Send `sig` to `pid` only if `is_the_jobs(pid)` holds for the very process that then gets the signal.

    A pidfd is opened first; the check reads /proc/PID, which could already be another process if the first one
    exited and its pid was reused, so the pidfd is asked afterwards whether its process is still running: if it is,
    /proc/PID was its, and the signal goes through the pidfd, which cannot reach anyone else. Without pidfds (Linux
    before 5.3) the check and os.kill leave a window of microseconds, the best an older kernel allows."""
    send = getattr(signals, "pidfd_send_signal", None)
    if send is None or not pidfds_work():
        if not is_the_jobs(pid):
            return False
        try:
            os.kill(pid, sig)
        except OSError:
            return False
        return True
    fd = pidfd(pid)
    if fd is None:
        return False  # gone already
    try:
        if not is_the_jobs(pid) or exited(fd):
            return False
        send(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def killpg(pgid: int, sig: int) -> bool:
    """Signal a process group. Only for a group whose leader is the caller's unreaped child (see module doc)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_until(done: Callable[[], bool], deadline: float, step: float = 0.02) -> bool:
    """Poll `done()` until it is true or the deadline passes."""
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def signal_name(signum: int | None) -> str | None:
    """SIGKILL for 9, and so on; None when there was no signal."""
    if signum is None:
        return None
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return "SIG%d" % signum


# -- launching the target -------------------------------------------------------------------------------------------
if TYPE_CHECKING:
    import signal as _sig
else:
    try:
        import _signal as _sig  # the C module: the `signal` wrapper imports enum, which the hot path does not need
    except ImportError:  # pragma: no cover
        import signal as _sig
# The signal module for the rest of the package (same functions and constants as `signal`, without its import cost).
signals = _sig

# Signals the target gets back at their default disposition, whatever the supervisor ignores or handles.
_DEFAULT_SIGNALS = tuple(
    getattr(_sig, n) for n in ("SIGPIPE", "SIGXFSZ", "SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT") if hasattr(_sig, n)
)


def find_program(name: str, path: str | None) -> str:
    """Resolve argv[0] on the job's own PATH, the way a shell would; raise the OSError exec would give."""
    import errno

    if "/" in name:
        return name
    denied = None
    for d in (path if path is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = denied or candidate
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def launch(argv: list[str], cwd: str | None, env: dict[str, str], stdout_fd: int, stderr_fd: int, keep_fd: int) -> int:
    """Start the target in a process group of its own (its pid is the group id) and return its pid.

    `keep_fd` (the job's lock) is passed on to the command as an open descriptor; every other descriptor of the
    supervisor is close-on-exec. posix_spawn instead of subprocess: importing subprocess costs more than everything
    else the supervisor does for a short job. The supervisor is a process of its own, so it simply changes into
    `cwd` first; a bad cwd or a missing or non-executable program raise the OSError an exec would.
    """
    if cwd:
        os.chdir(cwd)
    program = find_program(argv[0], env.get("PATH"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(keep_fd, True)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, stdout_fd, 1),
            (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
        ]
        return os.posix_spawn(program, argv, env, file_actions=actions, setpgroup=0, setsigdef=_DEFAULT_SIGNALS)
    finally:
        os.set_inheritable(keep_fd, False)
        os.close(devnull)


def exit_status(pid: int) -> int | None:
    """The returncode of an exited child *without reaping it* (negative for a signal, as subprocess reports it), or
    None while it runs. The zombie keeps its pid and group id out of reuse until `reap`."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or info.si_pid == 0:
        return None
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
