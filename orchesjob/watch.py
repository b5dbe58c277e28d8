"""`wait --watch`: one call that watches many jobs, so a watcher needs one process per host, not one per job.

A triggerer that watches 300 jobs on one host would otherwise keep 300 `wait` processes (and SSH sessions) there.
Here one process follows them all: it re-reads their rows in one query per step, sleeps in poll(2) on the pidfds of
their supervisors (so the end of any job wakes it at once), looks at the log sizes, and returns as soon as any
watched job has news: it ended, its log grew past the offsets the caller holds, or it is not (or no longer) there.
Each entry is answered on its own, so one unknown or cleaned job does not spoil the others' answers.

Cursors make a watcher's progress survive the watcher. An entry may carry, besides the offsets it has read up to,
the offsets it has *delivered* (written to its log) and a cursor name: the delivered offsets are recorded under
that name, and a later call with the same name whose offsets are behind the record (a trigger rebuilt from the
kwargs it deferred with, after a triggerer crash) is answered from the recorded offsets. A crash therefore repeats
at most what was delivered after the last call, never the whole log, and skips nothing.

`--wake-on-eof` lets a long poll be cut short by its caller: the end of stdin (the SSH client closing the channel's
input, or the connection dropping) makes the call answer at once with what it has. A watcher whose set of jobs
changed gets its poll back without waiting for the timeout, and nothing lingers on the host after the caller is gone.
"""

from __future__ import annotations

import os
import select
import time

from . import jobs, life, logfiles
from .contract import STREAMS, WATCH_MAX_ENTRIES, split_watch_spec
from .errors import InvalidArgument, job_not_found
from .store import open_store
from .timeutil import now

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Sequence
    from typing import Any, NamedTuple

    from .rows import JobRow
    from .store import Store

    class Entry(NamedTuple):
        job_id: str
        offsets: tuple[int, int] | None  # read up to: the answer's chunks start here
        delivered: tuple[int, int] | None  # with a cursor: written out by the caller, recorded under the cursor
        cursor: str | None
else:
    from collections import namedtuple

    Entry = namedtuple("Entry", "job_id offsets delivered cursor")

_FULL_REFRESH = 1.0  # seconds between liveness checks of jobs whose supervisor cannot be watched by a pidfd


def parse_entry(spec: str, check_job_id: Any, check_offset: Any, check_cursor: Any) -> Entry:
    """`ID`, `ID:OUT:ERR` (offsets read up to) or `ID:OUT:ERR:DONE_OUT:DONE_ERR:CURSOR` (plus the offsets delivered;
    the cursor is the rest of the value, so it may hold colons). The checks are the CLI's value rules (cli.py)."""
    parts = split_watch_spec(spec)
    job_id = check_job_id(parts[0])
    if len(parts) == 1:
        return Entry(job_id, None, None, None)
    if len(parts) not in (3, 6):
        raise InvalidArgument("--watch %r: give ID, ID:OUT:ERR or ID:OUT:ERR:DONE_OUT:DONE_ERR:CURSOR" % spec[:200])
    names = ("stdout offset", "stderr offset", "delivered stdout offset", "delivered stderr offset")
    numbers = [check_offset(text, "--watch %s" % name) for name, text in zip(names, parts[1:5])]
    if len(parts) == 3:
        return Entry(job_id, (numbers[0], numbers[1]), None, None)
    if numbers[2] > numbers[0] or numbers[3] > numbers[1]:
        raise InvalidArgument("--watch %r: a delivered offset cannot be past the offset read up to" % spec[:200])
    return Entry(job_id, (numbers[0], numbers[1]), (numbers[2], numbers[3]), check_cursor(parts[5]))


def check_entries(entries: Sequence[Entry]) -> None:
    if len(entries) > WATCH_MAX_ENTRIES:
        raise InvalidArgument("--watch: at most %d jobs per call (got %d)" % (WATCH_MAX_ENTRIES, len(entries)))


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


def _start_offsets(store: Store, entries: Sequence[Entry]) -> list[tuple[int, int] | None]:
    """Where each entry's answer starts: at its offsets, or at its cursor's record where that is further on (the
    caller is a rebuilt copy that does not know how far its predecessor got). The delivered offsets are recorded in
    the same transaction, and a record only ever moves forward (two entries of one job and cursor record the
    further of the two). An orchesjob 1.1.0 database is never written, so not upgraded, by a watch: its cursors
    are simply not recorded until a command that writes has upgraded it."""
    starts: list[tuple[int, int] | None] = [e.offsets for e in entries]
    tracked = [i for i, e in enumerate(entries) if e.cursor is not None]
    if not tracked or store.legacy is not None:
        return starts
    with store.write():
        recorded = store.cursors([entries[i].job_id for i in tracked])
        best: dict[tuple[str, str], tuple[int, int]] = {}
        for i in tracked:
            e = entries[i]
            assert e.offsets is not None and e.delivered is not None and e.cursor is not None
            key = (e.job_id, e.cursor)
            had = recorded.get(key)
            if had is not None:
                starts[i] = (max(e.offsets[0], had[0]), max(e.offsets[1], had[1]))
            top = best.get(key, had)
            best[key] = e.delivered if top is None else (max(e.delivered[0], top[0]), max(e.delivered[1], top[1]))
        record = [(j, c, out, err) for (j, c), (out, err) in best.items() if best[(j, c)] != recorded.get((j, c))]
        if record:
            store.record_cursors(record, now())
    return starts


class _Sleeper:
    """pidfds of the watched jobs' supervisors (and stdin, with wake-on-eof), polled together: the exit of any of
    them, or the end of stdin, ends a step at once."""

    def __init__(self, wake_on_eof: bool) -> None:
        self.fds: dict[str, tuple[int | None, int | None]] = {}  # job id -> (watched pid, fd)
        self.poller = select.poll()
        self.fired: set[str] = set()
        self.woken = False
        self.stdin = -1
        if wake_on_eof:
            self.stdin = 0
            self.poller.register(0, select.POLLIN)

    def watch(self, job: JobRow) -> bool:
        """Keep a pidfd on the job's live supervisor; False when there is none to watch (judge it by polling)."""
        job_id, pid = job["job_id"], job.get("worker_pid")
        old = self.fds.get(job_id)
        if old is not None and old[0] == pid:
            return old[1] is not None
        self.forget(job_id)
        fd = life.wake_fd(job)
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
            if fd == self.stdin:
                self._read_stdin()
                continue
            job_id = by_fd.get(fd)
            if job_id is not None:
                self.fired.add(job_id)
                self.forget(job_id)

    def _read_stdin(self) -> None:
        """Whatever the caller writes is ignored; only the end of its input counts (or a broken one)."""
        try:
            data = os.read(self.stdin, 65536)
        except OSError:
            data = b""
        if not data:
            self.woken = True
            self.poller.unregister(self.stdin)
            self.stdin = -1

    def close(self) -> None:
        for job_id in list(self.fds):
            self.forget(job_id)


def _grown(job: JobRow, start: tuple[int, int] | None) -> bool:
    """Whether a log has bytes past `start` to give: an incomplete UTF-8 character at its end is not news (a chunk
    never ends inside a character), so a job that stopped in the middle of one is quiet, not news every step."""
    return start is not None and any(
        logfiles.readable_end(jobs.log_file(job, s), start[i]) > start[i] for i, s in enumerate(STREAMS)
    )


def _ended(job: JobRow) -> bool:
    return not (jobs.is_active(job) or jobs.is_stopping(job))


def watch(
    entries: Sequence[Entry],
    timeout: float,
    max_bytes: int,
    max_total: int,
    wake_on_eof: bool = False,
    gather: float = 0.0,
) -> dict[str, Any]:
    """Block until a watched job has news, `timeout` passes or (wake_on_eof) stdin ends; answer every entry, in the
    order given.

    `gather`: when the only news is new output, go on collecting for up to that many seconds before answering. A
    watcher of many chatty jobs otherwise makes a call per line; with it, one call carries every line written in
    the window. The end of a job, a job gone, the end of stdin and the timeout still answer at once."""
    check_entries(entries)
    ids = list(dict.fromkeys(e.job_id for e in entries))
    store = open_store(create=False)
    others = _elsewhere([i for i in ids if store is None or store.get(i) is None])
    if store is None and not others:  # no database yet: nothing of what was asked for exists
        return _answer(entries, {}, [e.offsets for e in entries], set(), max_bytes, max_total, False, False)
    starts = _start_offsets(store, entries) if store is not None else [e.offsets for e in entries]
    deadline = time.monotonic() + timeout
    step = 0.05 if any(s is not None for s in starts) else 0.25
    sleeper = _Sleeper(wake_on_eof)
    last_full = 0.0
    gather_until: float | None = None  # set by the first output news
    try:
        while True:
            rows = store.get_many(ids) if store is not None else {}
            for job_id, other in others.items():
                row = other.get(job_id)
                if row is not None:
                    rows[job_id] = row
            t = time.monotonic()
            full = t - last_full >= _FULL_REFRESH
            if full:
                last_full = t
            settled: set[str] = set()  # job ids that are gone or ended
            for job_id in ids:
                job = rows.get(job_id)
                if job is None:
                    sleeper.forget(job_id)
                    settled.add(job_id)
                    continue
                if not _ended(job) and (full or job_id in sleeper.fired or not sleeper.watch(job)):
                    job = rows[job_id] = jobs.refresh(others.get(job_id) or store or _never(), job)
                    sleeper.fired.discard(job_id)
                if _ended(job):
                    sleeper.forget(job_id)
                    settled.add(job_id)
            news = {i for i, e in enumerate(entries) if e.job_id in settled or _grown(rows[e.job_id], starts[i])}
            t = time.monotonic()
            remaining = deadline - t
            if news and gather > 0 and not settled and not sleeper.woken and remaining > 0:
                if gather_until is None:
                    gather_until = min(deadline, t + gather)
                if t < gather_until:  # only output so far: let more of it arrive
                    sleeper.sleep(min(step, gather_until - t))
                    continue
            if news or remaining <= 0 or sleeper.woken:
                return _answer(
                    entries,
                    rows,
                    starts,
                    news,
                    max_bytes,
                    max_total,
                    timed_out=not news and not sleeper.woken,
                    woken=sleeper.woken,
                )
            sleeper.sleep(min(step, remaining))
    finally:
        sleeper.close()
        for other in others.values():
            other.close()


def _elsewhere(job_ids: list[str]) -> dict[str, Store]:
    """Read-only stores of other state directories for the jobs the state directory does not hold (places.py)."""
    if not job_ids:
        return {}
    from . import places

    out: dict[str, Store] = {}
    for job_id in job_ids:
        directory = places.find(job_id, None)
        other = places.open_at(directory, write=False) if directory is not None else None
        if other is not None:
            out[job_id] = other
    return out


def _never() -> Store:  # pragma: no cover - a row was read from one of the two stores
    raise AssertionError("a watched job without a store")


def _answer(
    entries: Sequence[Entry],
    rows: dict[str, JobRow],
    starts: Sequence[tuple[int, int] | None],
    news: set[int],
    max_bytes: int,
    max_total: int,
    timed_out: bool,
    woken: bool,
) -> dict[str, Any]:
    """Every entry's answer: a whole job (with its new log bytes) where there is news, a short line otherwise."""
    readers = [
        (i, k, s)
        for i, e in enumerate(entries)
        if i in news and e.job_id in rows and starts[i] is not None
        for k, s in enumerate(STREAMS)
    ]
    wants = [
        logfiles.size(jobs.log_file(rows[entries[i].job_id], s)) - starts[i][k]  # type: ignore[index]
        for i, k, s in readers
    ]
    grants = {(i, s): g for (i, _, s), g in zip(readers, share(wants, max_bytes, max_total))}
    out = []
    for i, e in enumerate(entries):
        job = rows.get(e.job_id)
        if job is None:
            # the CLI's error object for this one job (as `status --job-id` would print it); the others go on
            out.append(dict(job_not_found(e.job_id).to_json(), job_id=e.job_id, news=True))
            continue
        if i not in news:
            out.append({"job_id": e.job_id, "news": False, "status": job["status"], "active": jobs.is_active(job)})
            continue
        view = jobs.render(job)
        view["news"] = True
        at = starts[i]
        if at is not None:
            final = not jobs.is_active(job)
            view["logs"] = {
                s: logfiles.chunk(jobs.log_file(job, s), s, at[k], grants.get((i, s), 0), final)
                for k, s in enumerate(STREAMS)
            }
        if e.cursor is not None:
            view["cursor"] = e.cursor
        out.append(view)
    return {"jobs": out, "timed_out": timed_out, "woken": woken}
