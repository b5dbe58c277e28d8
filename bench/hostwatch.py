"""What watching costs, read from /proc: a process group's SSH connections and CPU time, and the host processes
(sshd sessions and the commands they run) that serve those connections.

Everything runs on one machine in one network namespace, so the "host" side of a connection is found by matching
ports: a client socket of the watched group connected to sshd's port has, on the server side, a socket whose peer
port is the client's local port; the sshd processes holding those sockets, and all their descendants, are what the
host spends on the watching. Linux only; a process that exits while it is read is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ESTABLISHED = "01"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    comm: str
    cpu_ticks: int  # utime + stime
    rss_kb: int


@dataclass(frozen=True)
class Sample:
    connections: int  # the group's established connections to sshd
    host_processes: int  # commands (not sshd itself) running under the sshd sessions of those connections
    host_rss_mb: float  # resident memory of those sessions and commands together
    names: tuple[str, ...] = ()  # the commands' names (for a reader who wants to see what they were)


def processes() -> dict[int, Proc]:
    """Every process now: parent, process group, command name, CPU ticks and resident size."""
    found: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/statm") as f:
                resident_pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # comm is in parentheses and may hold spaces or parentheses: split after the last ')'
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(name)
        found[pid] = Proc(
            pid=pid,
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            comm=comm,
            cpu_ticks=int(fields[11]) + int(fields[12]),
            rss_kb=resident_pages * PAGE_KB,
        )
    return found


def group_cpu_seconds(procs: dict[int, Proc], pgid: int) -> float:
    return sum(p.cpu_ticks for p in procs.values() if p.pgid == pgid) / CLOCK_TICKS


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_connections() -> list[tuple[int, int, int]]:
    """Established TCP connections as (local port, remote port, socket inode), IPv4 and IPv6."""
    rows: list[tuple[int, int, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != ESTABLISHED:
                continue
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            rows.append((local_port, remote_port, int(parts[9])))
    return rows


def descendants(procs: dict[int, Proc], roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


def sample(pgid: int, sshd_port: int, procs: dict[int, Proc] | None = None) -> Sample:
    """The group's connections to sshd and what the host runs for them, now."""
    procs = processes() if procs is None else procs
    group_sockets: set[int] = set()
    for p in procs.values():
        if p.pgid == pgid:
            group_sockets |= socket_inodes(p.pid)
    connections = tcp_connections()
    client_ports = {local for local, remote, inode in connections if remote == sshd_port and inode in group_sockets}
    server_sockets = {inode for local, remote, inode in connections if local == sshd_port and remote in client_ports}
    sessions = [p.pid for p in procs.values() if p.comm.startswith("sshd") and socket_inodes(p.pid) & server_sockets]
    tree = descendants(procs, sessions)
    commands = [pid for pid in tree if not procs[pid].comm.startswith("sshd")]
    rss_kb = sum(procs[pid].rss_kb for pid in tree)
    return Sample(
        connections=len(client_ports),
        host_processes=len(commands),
        host_rss_mb=rss_kb / 1024,
        names=tuple(sorted(procs[pid].comm for pid in commands)),
    )
