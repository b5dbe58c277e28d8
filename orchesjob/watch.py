"""`wait --watch`: one call that watches many jobs, so a watcher needs one process per host, not one per job.

A triggerer that watches 300 jobs on one host would otherwise keep 300 `wait` processes (and SSH sessions) there.
Here one process follows them all: it re-reads their rows in one query per step, sleeps in poll(2) on the pidfds of
their supervisors (so the end of any job wakes it at once), looks at the log sizes, and returns as soon as any
watched job has news: it ended, its log grew past the offsets the caller holds, or it is not (or no longer) there.
Each job is answered on its own, so one unknown or cleaned job does not spoil the others' answers.

Cursors make a watcher's progress survive the watcher. An entry may name a cursor: the offsets it sends are what
its caller has already delivered (it only asks for more once it has handled the previous answer), so they are
recorded under that name, and a later call with the same name and older offsets (a trigger rebuilt from the
kwargs it deferred with, after a triggerer crash) is answered from the recorded offsets. The most a crash repeats
is the one answer that was in flight.
"""

from __future__ import annotations

import os
import select
import time

from . import jobs, logfiles, processes
from .errors import InvalidArgument, job_not_found
from .store import open_store
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Sequence
    from typing import Any, NamedTuple

    from .store import Store

    class Entry(NamedTuple):
        job_id: str
        offsets: tuple[int, int] | None
        cursor: str | None
else:
    from collections import namedtuple

    Entry = namedtuple("Entry", "job_id offsets cursor")

MAX_ENTRIES = 1000
MIN_TOTAL_BYTES = 65536
DEFAULT_TOTAL_BYTES = 1 << 20
STREAMS = ("stdout", "stderr")
_FULL_REFRESH = 1.0  # seconds between liveness checks of jobs whose supervisor cannot be watched by a pidfd


def parse_entry(spec: str, check_job_id: Any, check_offset: Any, check_cursor: Any) -> Entry:
    """`ID`, `ID:STDOUT_OFFSET:STDERR_OFFSET` or `ID:STDOUT_OFFSET:STDERR_OFFSET:CURSOR` (the cursor is the rest
    of the value, so it may hold colons itself). The checks are the CLI's value rules, passed in (cli.py)."""
    parts = spec.split(":", 3)
    job_id = check_job_id(parts[0])
    if len(parts) == 1:
        return Entry(job_id, None, None)
    if len(parts) == 2:
        raise InvalidArgument("--watch %r: give ID, ID:STDOUT_OFFSET:STDERR_OFFSET or "
                              "ID:STDOUT_OFFSET:STDERR_OFFSET:CURSOR" % spec[:200])
    out, err = (check_offset(text, "--watch %s offset" % name) for name, text in zip(STREAMS, parts[1:3]))
    cursor = check_cursor(parts[3]) if len(parts) == 4 else None
    return Entry(job_id, (out, err), cursor)


def check_entries(entries: Sequence[Entry]) -> None:
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgument("--watch: at most %d jobs per call (got %d)" % (MAX_ENTRIES, len(entries)))
    seen: set[str] = set()
    for e in entries:
        if e.job_id in seen:
            raise InvalidArgument("--watch: job %s is named twice" % e.job_id)
        seen.add(e.job_id)


def share(wants: Sequence[int], cap: int, total: int) -> list[int]:
    """How many bytes each stream gets: at most `cap` each and `total` together, shared fairly.

    Water-filling: every stream that still wants bytes gets an equal slice of what is left, a stream that wants
    less than its slice leaves the rest to the others, until the budget or the wants run out. A burst of one job's
    output therefore cannot starve the lines of the others in the same answer.
    """
    need = [max(0, min(w, cap)) for w in wants]
    grant = [0] * len(need)
    left = total
    open_ = [i for i, n in enumerate(need) if n]
    while open_ and left > 0:
        each = max(1, left // len(open_))
        still = []
        for i in open_:
            g = min(need[i] - grant[i], each, left)
            grant[i] += g
            left -= g
            if grant[i] < need[i]:
                still.append(i)
        open_ = still
    return grant


def _effective_offsets(store: Store, entries: Sequence[Entry]) -> dict[str, tuple[int, int]]:
    """The offsets to answer from: the caller's, or its cursor's recorded ones when those are further on. The
    caller's offsets are recorded as delivered in the same transaction (they only ever move a cursor forward)."""
    offsets = {e.job_id: e.offsets for e in entries if e.offsets is not None}
    with_cursor = [e for e in entries if e.cursor is not None and e.offsets is not None]
    if not with_cursor:
        return offsets
    with store.write():
        recorded = store.cursors([e.job_id for e in with_cursor])
        ack = []
        for e in with_cursor:
            assert e.offsets is not None and e.cursor is not None
            had = recorded.get((e.job_id, e.cursor))
            if had is None or e.offsets[0] > had[0] or e.offsets[1] > had[1]:
                best = e.offsets if had is None else (max(e.offsets[0], had[0]), max(e.offsets[1], had[1]))
                ack.append((e.job_id, e.cursor, best[0], best[1]))
                offsets[e.job_id] = best
            else:
                offsets[e.job_id] = had
        if ack:
            store.record_cursors(ack, now())
    return offsets


class _Supervisors:
    """pidfds of the watched jobs' supervisors, polled together: the exit of any of them ends a step at once."""

    def __init__(self) -> None:
        self.fds: dict[str, tuple[int | None, int | None]] = {}  # job id -> (watched pid, fd)
        self.poller = select.poll()
        self.fired: set[str] = set()

    def watch(self, job: dict[str, Any]) -> bool:
        """Keep a pidfd on the job's live supervisor; False when there is none to watch (judge it by polling)."""
        job_id, pid = job["job_id"], job.get("worker_pid")
        old = self.fds.get(job_id)
        if old is not None and old[0] == pid:
            return old[1] is not None
        self.forget(job_id)
        fd = processes.pidfd(pid) if jobs.supervisor_alive(job) else None
        self.fds[job_id] = (pid, fd)
        if fd is not None:
            self.poller.register(fd, select.POLLIN)
        return fd is not None

    def forget(self, job_id: str) -> None:
        old = self.fds.pop(job_id, None)
        if old is not None and old[1] is not None:
            self.poller.unregister(old[1])
            os.close(old[1])

    def sleep(self, seconds: float) -> None:
        by_fd = {fd: job_id for job_id, (_, fd) in self.fds.items() if fd is not None}
        for fd, _ in self.poller.poll(max(0.0, seconds) * 1000):
            job_id = by_fd.get(fd)
            if job_id is not None:
                self.fired.add(job_id)
                self.forget(job_id)

    def close(self) -> None:
        for job_id in list(self.fds):
            self.forget(job_id)


def _grown(job: dict[str, Any], offsets: tuple[int, int] | None) -> bool:
    return offsets is not None and any(
        logfiles.size(job[s + "_file"]) > offsets[i] for i, s in enumerate(STREAMS))


def _ended(job: dict[str, Any]) -> bool:
    return not (jobs.is_active(job) or jobs.is_stopping(job))


def watch(entries: Sequence[Entry], timeout: float, max_bytes: int, max_total: int) -> dict[str, Any]:
    """Block until a watched job has news or `timeout` passes; answer every entry, in the order given."""
    check_entries(entries)
    store = open_store(create=False)
    if store is None:  # no database yet: nothing of what was asked for exists
        return _answer(entries, {}, {}, set(), max_bytes, max_total, timed_out=False)
    offsets = _effective_offsets(store, entries)
    ids = [e.job_id for e in entries]
    deadline = time.monotonic() + timeout
    step = 0.05 if offsets else 0.25
    sup = _Supervisors()
    last_full = 0.0
    try:
        while True:
            rows = store.get_many(ids)
            t = time.monotonic()
            full, news = t - last_full >= _FULL_REFRESH, set()
            if full:
                last_full = t
            for job_id in ids:
                job = rows.get(job_id)
                if job is None:
                    news.add(job_id)
                    sup.forget(job_id)
                    continue
                if not _ended(job) and (full or job_id in sup.fired or not sup.watch(job)):
                    job = rows[job_id] = jobs.refresh(store, job)
                    sup.fired.discard(job_id)
                if _ended(job):
                    sup.forget(job_id)
                    news.add(job_id)
                elif _grown(job, offsets.get(job_id)):
                    news.add(job_id)
            remaining = deadline - time.monotonic()
            if news or remaining <= 0:
                return _answer(entries, rows, offsets, news, max_bytes, max_total, timed_out=not news)
            sup.sleep(min(step, remaining))
    finally:
        sup.close()


def _answer(entries: Sequence[Entry], rows: dict[str, dict[str, Any]], offsets: dict[str, tuple[int, int]],
            news: set[str], max_bytes: int, max_total: int, timed_out: bool) -> dict[str, Any]:
    """Every entry's answer: a whole job (with its new log bytes) where there is news, a short line otherwise."""
    readers = [(e.job_id, i, s) for e in entries if e.job_id in news and e.job_id in rows
               and offsets.get(e.job_id) is not None for i, s in enumerate(STREAMS)]
    wants = [logfiles.size(rows[j][s + "_file"]) - offsets[j][i] for j, i, s in readers]
    grants = {(j, s): g for (j, _, s), g in zip(readers, share(wants, max_bytes, max_total))}
    out = []
    for e in entries:
        job = rows.get(e.job_id)
        if job is None:
            # the CLI's error object for this one job (as `status --job-id` would print it), the others go on
            out.append(dict(job_not_found(e.job_id).to_json(), job_id=e.job_id, news=True))
            continue
        if e.job_id not in news:
            out.append({"job_id": e.job_id, "news": False, "status": job["status"], "active": jobs.is_active(job)})
            continue
        view = jobs.render(job)
        view["news"] = True
        at = offsets.get(e.job_id)
        if at is not None:
            final = not jobs.is_active(job)
            view["logs"] = {s: logfiles.chunk(job[s + "_file"], s, at[i], grants.get((e.job_id, s), 0), final)
                            for i, s in enumerate(STREAMS)}
        if e.cursor is not None:
            view["cursor"] = e.cursor
        out.append(view)
    return {"jobs": out, "timed_out": timed_out}
