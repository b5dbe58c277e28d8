"""Is a job still alive, and how to stop all of it.

A pid alone is not an identity: pids are recycled, and a job started before a reboot must never look alive. A
process is therefore recorded as (pid, start time in clock ticks since boot) together with the boot id, read from
/proc on Linux. A job's processes are its process group *and* every process that carries the job's marker in its
environment, which also finds grandchildren that left the group with setsid.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Iterable
    from typing import Callable

MARKER_VAR = "ORCHESJOB_JOB_ID"
_PROC = "/proc"
_HAVE_PROC = os.path.isdir("/proc/self")


def boot_id() -> str | None:
    """The kernel's id of this boot; a job recorded under another boot id cannot be alive."""
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


def can_judge(recorded_ns: str | None) -> bool:
    """Whether this process may conclude from /proc that a job recorded in `recorded_ns` is dead, or signal it.

    Absence proves death only where the job's pids would be visible under the same numbers: the same pid namespace,
    with a /proc that shows it. Without /proc at all (not Linux) the kill(pid, 0) fallback is all there is.
    """
    if not _HAVE_PROC:
        return True
    mine = pid_namespace()
    if mine is None or not proc_is_ours():
        return False
    return not recorded_ns or recorded_ns == mine


def pause_point(name: str) -> None:
    """Stop this process with SIGSTOP at a named moment when ORCHESJOB_PAUSE_AT names it (comma-separated).

    A test hook: races that need a process delayed at one precise step (a reader between its liveness check and
    its write, a supervisor between recording itself and launching) are reproduced by stopping it there and
    resuming it with SIGCONT. Costs one environment lookup when unset.
    """
    wanted = os.environ.get("ORCHESJOB_PAUSE_AT")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), _sig.SIGSTOP)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, is index 0)."""
    try:
        with open("%s/%d/stat" % (_PROC, pid), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    return data[data.rfind(b")") + 2 :].decode("ascii", "replace").split()


def start_time(pid: int | None) -> str | None:
    """The process's start time in clock ticks since boot, or None when it does not exist (or is a zombie)."""
    if not pid:
        return None
    if not _HAVE_PROC:
        return "" if _exists(pid) else None
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_alive(pid: int | None, recorded_start: str | None) -> bool:
    """True when the process with this pid is the very one that was recorded (same start time)."""
    current = start_time(pid)
    if current is None:
        return False
    if recorded_start and current and current != recorded_start:
        return False
    return True


def _pgrp(fields: list[str]) -> int:
    return int(fields[2])


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open("%s/%d/environ" % (_PROC, pid), "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def job_pids(job_id: str, pgid: int | None, not_before: str | None = None) -> set[int]:
    """Live (non-zombie) processes of a job: members of its process group and carriers of its marker.

    `not_before` is the target's (the group leader's) start time: it tells a recycled group id from the job's own,
    and a process started before it cannot belong to the job.
    """
    return set(job_members(job_id, pgid, not_before))


def job_members(job_id: str, pgid: int | None, not_before: str | None = None) -> dict[int, int]:
    """job_pids with each process's group id: {pid: pgrp}, so a caller can tell whether a group is the job's."""
    found: dict[int, int] = {}
    if _HAVE_PROC and not proc_is_ours():
        return found  # these pids would name other processes; see can_judge
    if not _HAVE_PROC:
        if pgid and _group_exists(pgid):
            found[pgid] = pgid
        return found
    marker = ("%s=%s" % (MARKER_VAR, job_id)).encode()
    me = os.getpid()
    floor = int(not_before) if not_before else None
    if pgid and not_before:
        # The kernel does not hand out a pid while it is still some group's id. So if a process now holds the
        # group leader's pid but started at another time, the job's group is gone and this is someone else's.
        leader = start_time(pgid)
        if leader is not None and leader != not_before:
            pgid = None
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        fields = _stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        if floor is not None and int(fields[19]) < floor:
            continue
        if (pgid and _pgrp(fields) == pgid) or _has_marker(pid, marker):
            found[pid] = _pgrp(fields)
    return found


# -- jobs orchesjob 1.1.0 launched ----------------------------------------------------------------------------------
# 1.1.0 recorded bare pids, no start time or boot id. A pid is taken for its process only when the process also
# shows what 1.1.0 ran there: its worker is `<python> -m orchesjob _worker --job-id <id>`, its target the job's exact
# argv as a session and group leader (1.1.0 launched it with start_new_session). A recycled pid fails both.
LEGACY_WORKER_ARGV = (b"-m", b"orchesjob", b"_worker", b"--job-id")


def _cmdline(pid: int) -> list[bytes] | None:
    """The argv a live process was started with (None when it is gone, a zombie, or a kernel thread)."""
    try:
        with open("%s/%d/cmdline" % (_PROC, pid), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    if not data:
        return None
    return (data[:-1] if data.endswith(b"\0") else data).split(b"\0")


def _legacy_judgeable(pid: int | None) -> bool:
    return bool(pid) and (not _HAVE_PROC or proc_is_ours())


def legacy_worker_alive(pid: int | None, job_id: str) -> bool:
    """Whether `pid` is the orchesjob 1.1.0 worker of `job_id`, alive (not a zombie)."""
    if pid is None or not _legacy_judgeable(pid):
        return False
    if not _HAVE_PROC:
        return _exists(pid)  # nothing to verify with: alive counts, so nothing runs beside it
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    argv = _cmdline(pid)
    tail = list(LEGACY_WORKER_ARGV) + [job_id.encode("utf-8", "surrogateescape")]
    return argv is not None and len(argv) > len(tail) and argv[-len(tail) :] == tail


def find_legacy_worker(job_id: str) -> int | None:
    """The live orchesjob 1.1.0 worker of `job_id`, searched in /proc (a job whose `start` died before it recorded
    the worker's pid)."""
    if not _HAVE_PROC or not proc_is_ours():
        return None
    for name in os.listdir(_PROC):
        if name.isdigit() and legacy_worker_alive(int(name), job_id):
            return int(name)
    return None


def legacy_target_members(pid: int | None, argv: list[str]) -> dict[int, int]:
    """{pid: pgrp} of the target orchesjob 1.1.0 launched as `pid` and of every process in its group, when `pid`
    is verified as that target (alive, session and group leader, running exactly `argv`); else {}.

    While the verified leader lives its group id cannot be anyone else's, so the whole group is the job's."""
    if pid is None or not _legacy_judgeable(pid):
        return {}
    if not _HAVE_PROC:
        return {pid: pid} if _exists(pid) else {}
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X") or not (int(fields[2]) == pid and int(fields[3]) == pid):
        return {}
    if _cmdline(pid) != [os.fsencode(a) for a in argv]:
        return {}
    found = {pid: pid}
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        other = _stat_fields(int(name))
        if other and other[0] not in ("Z", "X") and _pgrp(other) == pid:
            found[int(name)] = pid
    return found


def snapshot() -> list[tuple[int, int, int, str | None]]:
    """Every live process once: (pid, start ticks, process group, the job id of its marker or None).

    One /proc pass for questions about many jobs at once (`clean`), instead of one pass per job.
    """
    out: list[tuple[int, int, int, str | None]] = []
    if not _HAVE_PROC:
        return out
    prefix = MARKER_VAR.encode() + b"="
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        fields = _stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        marker = None
        try:
            with open("%s/%d/environ" % (_PROC, pid), "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(prefix):
                        marker = item[len(prefix) :].decode("utf-8", "replace")
                        break
        except OSError:
            pass
        out.append((pid, int(fields[19]), _pgrp(fields), marker))
    return out


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def send(pids: Iterable[int], sig: int, pgid: int | None = None) -> bool:
    """Signal a set of verified pids and, with `pgid`, that whole process group; True when anything was signalled.

    Pass a group only when a verified member of the job is in it (see `job_group`): a group id alone can belong
    to an unrelated session once the job's group is empty.
    """
    sent = False
    if pgid:
        try:
            os.killpg(pgid, sig)
            sent = True
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent = True
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def job_group(members: dict[int, int], pgid: int | None) -> int | None:
    """The recorded group id, if one of the job's verified processes is in it now; else None (signal pids only)."""
    if pgid and pgid in members.values():
        return pgid
    return None


def wait_gone(check: Callable[[], object], deadline: float, step: float = 0.02) -> bool:
    """Poll `check()` (which returns the still-alive set) until it is empty or the deadline passes."""
    while True:
        if not check():
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


def pidfd(pid: int | None) -> int | None:
    """A file descriptor that becomes readable when the process exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if not pid or opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


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


def launch(argv: list[str], cwd: str | None, env: dict[str, str], stdout_fd: int, stderr_fd: int) -> int:
    """Start the target in a process group of its own (its pid is the group id) and return its pid.

    posix_spawn instead of subprocess: importing subprocess costs more than everything else the supervisor does for
    a short job. The supervisor is a process of its own, so it simply changes into `cwd` first; a bad cwd or a
    missing or non-executable program raise the OSError an exec would (with the file name set).
    """
    if cwd:
        os.chdir(cwd)
    program = find_program(argv[0], env.get("PATH"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, stdout_fd, 1),
            (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
        ]
        return os.posix_spawn(program, argv, env, file_actions=actions, setpgroup=0, setsigdef=_DEFAULT_SIGNALS)
    finally:
        os.close(devnull)


def wait_exit(pid: int, timeout: float | None = None) -> int | None:
    """Reap the target: its returncode (negative for a signal, as subprocess reports it), or None on timeout."""
    if timeout is None:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    import select

    deadline = time.monotonic() + timeout
    fd = pidfd(pid)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if fd is not None:
                select.select([fd], [], [], remaining)
            else:
                time.sleep(min(0.05, remaining))
    finally:
        if fd is not None:
            os.close(fd)
