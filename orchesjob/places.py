"""Every state directory a user's jobs may live in, so that a start never misses a running job kept elsewhere.

The state directory is decided by one rule (home.state_dir), but a job may have been started under another: by
orchesjob 1.1.0, which used /var/lib/orchesjob for everyone and took ORCHESJOB_HOME verbatim (no ~ expansion, a
relative path against its working directory, an empty value meaning that directory); by this CLI before a user's
directory was chosen; or under another ORCHESJOB_HOME. `start` therefore looks in each of those places for an
active job of the run key and returns it (with `state_dir` saying where it lives) instead of launching a second
one, and a job id that is not in the state directory is looked for there too (`status`, `wait`, `logs`, `abort`).

Other places are read only, never created, upgraded or written, except by `abort`, which records its verdict in the
job's own database.
"""

from __future__ import annotations

import os
import stat

from . import home, jobs, life
from .store import Store, open_other

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Iterator

    from .rows import JobRow


def candidates() -> list[str]:
    """The other directories (absolute, existing, holding a database file of the caller's), in the order looked."""
    names = []
    value = os.environ.get("ORCHESJOB_HOME")
    if value:
        names.append(home.default_dir())
    names.append(home.SYSTEM_HOME)
    if os.geteuid() != 0:
        names.append(home.xdg_dir())
    if value is not None:
        try:
            names.append(os.path.abspath(value) if value else os.getcwd())  # as 1.1.0 read it
        except OSError:
            pass
    seen = set()
    here = _identity(home.state_dir())
    if here is not None:
        seen.add(here)
    out = []
    for name in names:
        ident = _identity(name)
        if ident is None or ident in seen:
            continue
        seen.add(ident)
        try:
            st = os.lstat(os.path.join(name, home.DB_NAME))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            out.append(name)
    return out


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _stores() -> Iterator[tuple[str, Store]]:
    for directory in candidates():
        try:
            store = open_other(os.path.join(directory, home.DB_NAME))
        except Exception:  # noqa: BLE001 - a place that cannot be read is no evidence either way; see warn below
            home.warn("could not read the orchesjob database in %s; its jobs are not looked at" % directory)
            continue
        if store is None:
            continue
        store.foreign = directory
        try:
            yield directory, store
        finally:
            store.close()


def find_active(run_key: str) -> JobRow | None:
    """The run key's latest job in another place when it is active (or may be: its liveness is unknown, or its
    abort has not finished), with `state_dir` set; None when no other place has one."""
    for _directory, store in _stores():
        job = store.latest(run_key)
        if job is None:
            continue
        if jobs.is_stopping(job):
            return job
        if not jobs.is_active(job):
            continue
        state, why = life.verdict(job)
        if state == life.ALIVE:
            return job
        if state == life.UNKNOWN:
            return jobs.unknown(job, why)
    return None


def find(job_id: str | None, run_key: str | None) -> str | None:
    """The other directory whose database holds this job id (or a job of this run key), or None."""
    for directory, store in _stores():
        found = store.get(job_id) if job_id is not None else store.latest(run_key or "")
        if found is not None:
            return directory
    return None


def open_at(directory: str, write: bool) -> Store | None:
    """Another directory's database: read-only as found, or (write, for `abort`) opened like the state directory's
    own (an older schema is upgraded there, as any writing command of this CLI would)."""
    path = os.path.join(directory, home.DB_NAME)
    if write:
        if not home.database_file(path, create=False):
            return None
        store: Store | None = Store(path)
    else:
        store = open_other(path)
    if store is not None:
        store.foreign = directory
    return store
