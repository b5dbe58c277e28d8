"""The test processes as /proc shows them: which belong to a state directory, which is a job's supervisor, which has
stopped itself at a pause point (ORCHESJOB_PAUSE_AT). Used by the CLI tests and the fault suite alike."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tests.support.cli import stat_state, wait_until


def stat_fields(pid: int) -> list[str] | None:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].decode("ascii", "replace").split()


def environ(pid: int) -> list[bytes]:
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def cmdline(pid: int) -> list[bytes]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def live_pids() -> Iterable[int]:
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            st = stat_fields(int(name))
            if st and st[0] not in ("Z", "X"):
                yield int(name)


def processes_of_home(home: Path) -> set[int]:
    needle = ("ORCHESJOB_HOME=%s" % home).encode()
    return {pid for pid in live_pids() if needle in environ(pid)}


def supervisor_pids(home: Path, start_pid: int) -> set[int]:
    """Supervisors spawned from `start_pid`'s session: same home, the command line a supervisor gives itself
    (`orchesjob supervisor JOB-ID`; an `orchesjob start` one in the instant before), in a session of their own that
    they do not lead (the double fork's grandchild)."""
    st0 = stat_fields(start_pid)
    out = set()
    for pid in processes_of_home(home):
        if pid == start_pid:
            continue
        cmd = cmdline(pid)
        if not cmd:
            continue  # gone between the two reads (or a zombie: its command line is empty)
        if not cmd[0].startswith(b"orchesjob supervisor ") and (b"orchesjob" not in cmd or b"start" not in cmd):
            continue
        st = stat_fields(pid)
        if st is None:
            continue
        sid = int(st[3])
        if sid != pid and (st0 is None or sid != int(st0[3])):
            out.add(pid)
    return out


def stopped_supervisor(home: Path, caller: int, timeout: float = 30) -> int:
    """The supervisor spawned by `caller` (a `start`) once it has stopped itself at its pause point."""

    def find() -> int | None:
        for pid in supervisor_pids(home, caller):
            if stat_state(pid) == "T":
                return pid
        return None

    found: int = wait_until(find, timeout, step=0.01, what="the supervisor to stop at its pause point")
    return found
