"""`orchesjob doctor`: check what breaks hosts in practice, and say what to do about each finding.

The checks, in order (a check that needs what an earlier one found unsound is reported as skipped):

  state_dir        the state directory, logs/, the database and its -wal/-shm, every file in logs/: owned by the
                   caller, no links, private modes (0700 directories, 0600 files); files of a database creation
                   that a kill left unfinished
  proc             /proc shows this pid namespace and the boot id: without it no job can be judged dead
  database         PRAGMA quick_check
  schema           the schema version against this orchesjob's
  wal              the write-ahead log's size (a reader that never lets go keeps it growing)
  free_space       free bytes and inodes on the state directory's file system
  pending_results  result files a supervisor left for the database (applied by the next reader of the job)
  active_jobs      jobs recorded as STARTING/RUNNING (or still being aborted) whose processes are all gone, or that
                   started before the last reboot
  log_files        log files that belong to no job, and jobs that ran a command but have no log files

Without --fix nothing is changed: paths are inspected with lstat and the database is opened read-only
(store.open_readonly: no schema upgrade, no checkpoint on close; SQLite still makes the -wal and -shm files beside
it when they are missing, as for any reader). `--fix` applies only what cannot lose anything:
modes are tightened (fchmod on what was opened without following links, as every command does), the schema is
upgraded (additive steps in one transaction), waiting results are applied and provably dead jobs settled through
jobs.refresh, the same path every `status` takes, and the WAL is checkpointed. Nothing is ever deleted: files
without a job and jobs without files are reported with what to run. Each finding says whether it was fixed.

On a history of 1,000,000 jobs the cost is quick_check (which reads the whole database) and one scan of the job
ids from the primary key's index, compared with one listing of logs/: about a second or two.
"""

from __future__ import annotations

import os
import stat

from . import home, jobs, life, processes
from .errors import EXIT_FINDINGS, EXIT_OK, OrchesjobError
from .store import SCHEMA_VERSION, Store, open_readonly
from .textout import Json, Terminal, Text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .rows import JobRow

WAL_LIMIT = 64 << 20  # a WAL beyond this means checkpoints cannot keep up (SQLite's own aim is ~4 MiB)
MIN_FREE_BYTES = 100 << 20
MIN_FREE_INODES = 1000
ITEMS = 20  # examples listed per finding; `count` says how many there are
CLASSIFY_BY_ID = 10000  # up to this many jobs without logs are looked up by id; beyond, one scan of the table


CHECKS = ("state_dir", "proc", "database", "schema", "wal", "free_space", "pending_results", "active_jobs", "log_files")


def _n(count: int, noun: str) -> str:
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


class Doctor:
    def __init__(self, fix: bool) -> None:
        self.fix = fix
        self.root = home.state_dir()
        self.db_path = os.path.join(self.root, home.DB_NAME)
        self.logs = os.path.join(self.root, home.LOGS)
        self.checks: list[dict[str, Any]] = []
        self.findings: list[dict[str, Any]] = []
        self.ro: Store | None = None
        self.rw: Store | None = None
        self.files: dict[str, set[str]] = {}  # job id -> the kinds of file logs/ holds for it
        self.odd_files: list[str] = []  # names in logs/ that are no job's file

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _check(self, name: str, message: str, **data: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"check": name, "ok": True, "message": message}
        entry.update(data)
        self.checks.append(entry)
        return entry

    def _find(
        self,
        check: dict[str, Any],
        problem: str,
        action: str,
        fixable: bool = False,
        items: list[Any] | None = None,
        count: int | None = None,
    ) -> dict[str, Any]:
        finding: dict[str, Any] = {
            "check": check["check"],
            "problem": problem,
            "action": action,
            "fixable": fixable,
            "fixed": False,
        }
        if items is not None:
            finding["count"] = len(items) if count is None else count
            finding["items"] = items[:ITEMS]
        self.findings.append(finding)
        return finding

    def _fixed(self, finding: dict[str, Any], done: bool, note: str | None = None) -> None:
        finding["fixed"] = done
        if note:
            finding["fix_result"] = note

    def _skip(self, name: str, why: str) -> None:
        self.checks.append({"check": name, "ok": True, "skipped": True, "message": "not checked: %s" % why})

    def _writable(self) -> Store:
        """The database opened as every command opens it (upgrading an older schema), for the fixes."""
        if self.rw is None:
            self.rw = Store(self.db_path)
        return self.rw

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        why = None
        if not self.check_state_dir():
            why = "no state directory yet" if not os.path.lexists(self.root) else "the state directory cannot be used"
        self.check_proc()
        if why is None:
            self.check_free_space()
            if not os.path.lexists(self.db_path):
                why = "no database yet"
            elif not self.check_database():
                why = "the database cannot be read as it is (see database and schema)"
            else:
                self.check_wal()
        if why is None:
            self.check_pending_results()
            self.check_active_jobs()
            self.check_log_files()
        done = {c["check"] for c in self.checks}
        for name in CHECKS:
            if name not in done:
                self._skip(name, why or "")
        self.checks.sort(key=lambda c: CHECKS.index(c["check"]))
        for entry in self.checks:
            entry["ok"] = entry.get("ok", True) and not any(
                f["check"] == entry["check"] and not f["fixed"] for f in self.findings
            )
        left = [f for f in self.findings if not f["fixed"]]
        return {
            "healthy": not left,
            "state_dir": self.root,
            "fix": self.fix,
            "findings_count": len(left),
            "fixed_count": len(self.findings) - len(left),
            "checks": self.checks,
            "findings": self.findings,
        }

    # -- state directory ----------------------------------------------------------------------------------------
    def check_state_dir(self) -> bool:
        """Owner, type and mode of everything in the state directory. False when nothing more can be looked at."""
        c = self._check("state_dir", "")
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            c["message"] = "%s does not exist yet: no job has run as this user (the first start creates it)" % self.root
            c["exists"] = False
            return False
        except OSError as e:
            self._find(
                c,
                "cannot look at %s: %s" % (self.root, e.strerror or e),
                "check the permissions of its parent directories, or set ORCHESJOB_HOME",
            )
            return False
        c["exists"] = True
        if not self._path_ok(c, self.root, st, is_dir=True, top=True):
            return False
        notes = ["%s owned by %s, mode %o" % (self.root, home._who(st.st_uid), stat.S_IMODE(st.st_mode))]
        usable = True
        try:
            lst: os.stat_result | None = os.lstat(self.logs)
        except FileNotFoundError:
            lst = None
            notes.append("no logs/ yet")
        if lst is not None:
            usable = self._path_ok(c, self.logs, lst, is_dir=True) and usable
        for path in (self.db_path, self.db_path + "-wal", self.db_path + "-shm"):
            try:
                fst = os.lstat(path)
            except FileNotFoundError:
                continue
            usable = self._path_ok(c, path, fst, is_dir=False) and usable
        if lst is not None and stat.S_ISDIR(lst.st_mode):
            self._scan_logs(c)
        self._unfinished_creations(c)
        c["message"] = "; ".join(notes)
        return usable

    def _unfinished_creations(self, c: dict[str, Any]) -> None:
        """Private files of a database creation that never got its name (store._create_database: a first command
        killed between making the new database and linking it into place). They never held a job, and nothing reads
        them; one whose creator's pid is alive here may still be in progress and is not reported."""
        prefix = home.DB_NAME + ".new-"
        left = []
        try:
            names = os.listdir(self.root)
            db = os.lstat(self.db_path)
            database: tuple[int, int] | None = (db.st_dev, db.st_ino)
        except FileNotFoundError:
            database = None
        except OSError:
            return
        for name in names:
            if not name.startswith(prefix):
                continue
            pid = name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and processes.exists(int(pid)):
                continue
            try:
                st = os.lstat(os.path.join(self.root, name))
            except OSError:
                continue  # gone meanwhile
            if (st.st_dev, st.st_ino) == database:
                continue  # a second name of the database itself (a kill after the link): the next command drops it
            left.append(name)
        if left:
            self._find(
                c,
                "%s in %s: left by a command killed while it created the database; they hold no jobs and "
                "nothing reads them" % (_n(len(left), "unfinished database file"), self.root),
                "remove them (unless an orchesjob command in another pid namespace, which this one cannot see, is "
                "creating this database right now): cd %s && rm -f -- %s" % (self.root, " ".join(sorted(left))),
                items=sorted(left),
            )

    def _path_ok(self, c: dict[str, Any], path: str, st: os.stat_result, is_dir: bool, top: bool = False) -> bool:
        """Refuse what every command refuses (home._check: links, wrong types, another owner, extra hard links) as
        a finding that no fix can take back; a mode open to others is a finding --fix tightens."""
        try:
            home._check(path, st, is_dir, top)
        except OrchesjobError as e:
            self._find(c, e.message, "as the message says; orchesjob refuses to use the state directory until then")
            return False
        mode = stat.S_IMODE(st.st_mode)
        want = 0o700 if is_dir else 0o600
        if mode & 0o077:
            f = self._find(
                c,
                "%s is mode %o: other users can read what it holds (job commands, environments, logs)" % (path, mode),
                "orchesjob doctor --fix (or chmod %o %s)" % (want, path),
                fixable=True,
            )
            if self.fix:
                done = home._tighten(path, st, want)
                self._fixed(f, done, "mode %o" % want if done else "could not change the mode")
        return True

    def _scan_logs(self, c: dict[str, Any]) -> None:
        """One pass over logs/: what each job has there, and every file's type, owner and mode."""
        me = os.geteuid()
        wide: list[str] = []
        foreign: list[str] = []
        try:
            entries = os.scandir(self.logs)
        except OSError as e:
            self._find(c, "cannot list %s: %s" % (self.logs, e.strerror or e), "check its owner and mode")
            return
        with entries:
            for entry in entries:
                name = entry.name
                job_id, dot, kind = name.partition(".")
                if dot and kind in _JOB_FILES or kind.startswith("result.tmp."):
                    self.files.setdefault(job_id, set()).add(kind if not kind.startswith("result.tmp.") else "tmp")
                else:
                    self.odd_files.append(name)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                # the supervisor's control FIFO (control.py) is the one entry that is no regular file
                right_type = stat.S_ISFIFO(st.st_mode) if kind == "ctl" else stat.S_ISREG(st.st_mode)
                if stat.S_ISLNK(st.st_mode) or not right_type or st.st_uid != me or st.st_nlink > 1:
                    foreign.append(name)
                elif stat.S_IMODE(st.st_mode) & 0o077:
                    wide.append(name)
        if foreign:
            self._find(
                c,
                "%d entries of %s are links, not regular files, have extra hard links or belong to another "
                "user; orchesjob never creates such files" % (len(foreign), self.logs),
                "look at them and remove them (as their owner or root); orchesjob refuses to read or write "
                "through them",
                items=sorted(foreign),
            )
        if wide:
            f = self._find(
                c,
                "%s in %s: readable by other users" % (_n(len(wide), "file"), self.logs),
                "orchesjob doctor --fix (or chmod 600 %s/*)" % self.logs,
                fixable=True,
                items=sorted(wide),
            )
            if self.fix:
                from .progress import Progress

                done = 0
                with Progress("doctor --fix: tightening log files to 600", len(wide)) as shown:
                    for name in wide:
                        path = os.path.join(self.logs, name)
                        try:
                            done += home._tighten(path, os.lstat(path), 0o600)
                        except OSError:
                            pass
                        shown.step()
                self._fixed(f, done == len(wide), "%d of %d tightened to 600" % (done, len(wide)))

    # -- the host -----------------------------------------------------------------------------------------------
    def check_proc(self) -> None:
        c = self._check("proc", "")
        ns, boot = processes.pid_namespace(), processes.boot_id()
        c.update(pid_namespace=ns, boot_id=boot)
        if not processes.HAVE_PROC or not processes.proc_is_ours():
            self._find(
                c,
                (
                    "/proc is not there"
                    if not processes.HAVE_PROC
                    else "/proc shows another pid namespace than this process's"
                )
                + ": a job whose supervisor is gone cannot be stopped from here (abort reaches a job through its "
                "supervisor, or by verified pids), and jobs recorded by orchesjob 1.1.0 cannot be judged (their "
                "liveness stays unknown); jobs of this orchesjob are judged by their locks all the same",
                "mount a /proc of this pid namespace (mount -t proc proc /proc, unshare --pid --fork --mount-proc, "
                "or run the container with its own /proc)",
            )
        elif boot is None:
            self._find(
                c,
                "the boot id (/proc/sys/kernel/random/boot_id) cannot be read: jobs recorded by an earlier build of "
                "this orchesjob, which hold no locks, cannot be told dead by a reboot",
                "make /proc/sys readable in this container",
            )
        c["message"] = "pid namespace %s, boot id %s" % (ns or "unknown", boot or "unknown")

    def check_free_space(self) -> None:
        c = self._check("free_space", "")
        try:
            vfs = os.statvfs(self.root)
        except OSError as e:
            c["message"] = "statvfs failed: %s" % (e.strerror or e)
            return
        free, total = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
        c.update(free_bytes=free, total_bytes=total, free_inodes=vfs.f_favail if vfs.f_files else None)
        c["message"] = "%.1f GiB free of %.1f GiB" % (free / 2**30, total / 2**30)
        action = (
            "make room on that file system; `orchesjob clean --before DATE` deletes finished jobs and their "
            "logs (the biggest logs: ls -S %s | head)" % self.logs
        )
        if free < MIN_FREE_BYTES:
            self._find(
                c,
                "only %d MiB free where the state directory lives: jobs cannot start, logs are cut, "
                "results wait in files" % (free >> 20),
                action,
            )
        if vfs.f_files and vfs.f_favail < MIN_FREE_INODES:
            self._find(
                c,
                "only %d inodes free where the state directory lives: each job needs two log files" % vfs.f_favail,
                action,
            )

    # -- database -----------------------------------------------------------------------------------------------
    def check_database(self) -> bool:
        """Integrity and schema; True when the jobs can be read (the database is sound and of our version)."""
        c = self._check("database", "")
        try:
            self.ro = open_readonly(self.db_path)
            problems = self.ro.quick_check()
        except OrchesjobError as e:
            problems = [e.message]
        c["size_bytes"] = os.path.getsize(self.db_path)
        if problems != ["ok"]:
            self._find(
                c,
                "PRAGMA quick_check: %s" % "; ".join(problems),
                "stop what uses this state directory, keep a copy of %s*, then try `sqlite3 %s .recover | "
                "sqlite3 recovered.db` and move the recovered file into place, or move the database aside to "
                "start afresh (the jobs it recorded are forgotten; running ones keep running)"
                % (self.db_path, self.db_path),
                items=problems,
            )
            return False
        c["message"] = "quick_check ok"
        return self.check_schema()

    def check_schema(self) -> bool:
        assert self.ro is not None
        c = self._check("schema", "")
        try:
            version = self.ro.schema_version()
        except OrchesjobError as e:
            self._find(c, e.message, "see the database check")
            return False
        c["version"] = version
        c["current"] = SCHEMA_VERSION
        if version == SCHEMA_VERSION:
            c["message"] = "schema %d" % version
            self._stray_1_1_0_tables(c)
            return True
        if version > SCHEMA_VERSION:
            self._find(
                c,
                "the database has schema %d, newer than this orchesjob understands (%d)" % (version, SCHEMA_VERSION),
                "upgrade orchesjob on this host",
            )
            return False
        if version == 0:
            return self._unversioned(c)
        f = self._find(
            c,
            "the database has schema %d; this orchesjob uses %d" % (version, SCHEMA_VERSION),
            "nothing to do: the next command upgrades it (orchesjob doctor --fix does it now)",
            fixable=True,
        )
        if not self.fix:
            return False
        try:
            self._writable()
            self._fixed(f, True, "upgraded to schema %d" % SCHEMA_VERSION)
        except OrchesjobError as e:
            self._fixed(f, False, e.message)
            return False
        c["version"] = SCHEMA_VERSION
        self.ro = self.rw  # read on from the upgraded database
        return True

    def _stray_1_1_0_tables(self, c: dict[str, Any]) -> None:
        """Tables only orchesjob 1.1.0 makes, in a database this orchesjob upgraded: 1.1.0 was run on it since.
        It cannot read this schema and must not be run here any more; the tables are left for a person to judge."""
        from .legacy import STRAY_1_1_0_TABLES

        assert self.ro is not None
        stray = self.ro.tables_named(STRAY_1_1_0_TABLES)
        if stray:
            c["stray_tables"] = stray
            self._find(
                c,
                "the database holds tables of orchesjob 1.1.0 (%s) made after it was upgraded: orchesjob 1.1.0 was "
                "run on it since, which cannot read this schema" % ", ".join(stray),
                "make sure nothing runs orchesjob 1.1.0 on this host any more (cron, scripts, a PATH that finds it); "
                "the tables hold nothing this orchesjob reads and can be dropped once 1.1.0 is gone",
            )

    def _unversioned(self, c: dict[str, Any]) -> bool:
        """user_version 0: a file no command has given a schema yet, orchesjob 1.1.0's database, or someone else's."""
        from . import store
        from .legacy import layout

        assert self.ro is not None
        try:
            legacy = layout.recognise(self.ro)
            if legacy is None:
                self.ro._refuse_foreign()
        except OrchesjobError as e:
            self._find(c, e.message, "point ORCHESJOB_HOME at another directory, or move the file aside")
            return False
        if legacy is None:
            c["message"] = "an empty database (the next start creates the schema)"
            return False
        c["message"] = "orchesjob %s's database" % legacy
        f = self._find(
            c,
            "the database is orchesjob %s's: commands read it as it is, and the first command that "
            "writes upgrades it in place, keeping the original as a backup" % legacy,
            "nothing to do (orchesjob doctor --fix upgrades it now)",
            fixable=True,
        )
        if not self.fix:
            return False
        try:
            with self._writable().write():
                pass  # the first write upgrades it (Store._upgrade_legacy)
        except OrchesjobError as e:
            self._fixed(f, False, e.message)
            return False
        backup = store.UPGRADED[-1].get("backup") if store.UPGRADED else None
        self._fixed(
            f,
            True,
            "upgraded to schema %d%s" % (SCHEMA_VERSION, "; the original is kept as %s" % backup if backup else ""),
        )
        c["version"] = SCHEMA_VERSION
        self.ro = self.rw
        return True

    def check_wal(self) -> None:
        c = self._check("wal", "")
        try:
            size = os.lstat(self.db_path + "-wal").st_size
        except OSError:
            size = 0
        c["wal_bytes"] = size
        c["message"] = "write-ahead log %d KiB" % (size >> 10)
        if size > WAL_LIMIT:
            f = self._find(
                c,
                "the write-ahead log is %d MiB: checkpoints cannot keep up, usually because a process "
                "keeps a read transaction open for long" % (size >> 20),
                "find long-lived readers of %s (fuser -v %s); orchesjob doctor --fix checkpoints it"
                % (self.db_path, self.db_path),
                fixable=True,
            )
            if self.fix:
                try:
                    done = self._writable().checkpoint()
                    self._fixed(f, done, "checkpointed" if done else "a reader still holds the log; try again later")
                except OrchesjobError as e:
                    self._fixed(f, False, e.message)

    # -- jobs ---------------------------------------------------------------------------------------------------
    def _readable(self) -> Store:
        assert self.ro is not None
        return self.ro

    def check_pending_results(self) -> None:
        c = self._check("pending_results", "")
        waiting = sorted(i for i, kinds in self.files.items() if "result" in kinds)
        c["message"] = _n(len(waiting), "result file")
        for job_id in waiting:
            job = self._readable().get(job_id)
            if job is None:
                continue  # reported with the files that belong to no job
            pending = jobs.read_result_file(job)
            if pending is None:
                self._find(
                    c,
                    "the result file of %s cannot be read" % _describe(job),
                    "look at %s; the job's record says %s" % (jobs.result_path(job), job["status"]),
                )
                continue
            if jobs.is_active(job) or jobs.is_stopping(job) or job["status"] == "LOST":
                f = self._find(
                    c,
                    "%s is recorded as %s, but its supervisor left a result (%s) that has not reached "
                    "the database yet" % (_describe(job), job["status"], _outcome(pending)),
                    "nothing to do: the next status, wait or start of it applies the result (orchesjob "
                    "doctor --fix does it now)",
                    fixable=True,
                )
                if self.fix:
                    self._apply(f, job, pending)
            elif (job.get("exit_code"), job.get("signal")) == (pending.get("exit_code"), pending.get("signal")):
                f = self._find(
                    c,
                    "%s is %s and its result is recorded, but the result file was left behind"
                    % (_describe(job), job["status"]),
                    "orchesjob doctor --fix removes it",
                    fixable=True,
                )
                if self.fix:
                    jobs.remove_result_file(job)
                    self._fixed(f, not os.path.exists(jobs.result_path(job)), "removed")
            else:
                self._find(
                    c,
                    "%s is recorded as %s (%s) but its result file says %s"
                    % (_describe(job), job["status"], job.get("end_reason"), _outcome(pending)),
                    "look at %s and the job's log; nothing applies it automatically" % jobs.result_path(job),
                )

    def _apply(self, f: dict[str, Any], job: JobRow, pending: dict[str, Any]) -> None:
        """Apply a waiting result the way a reader does (jobs.refresh; a LOST verdict is overturned by finish)."""
        store = self._writable()
        try:
            fresh = store.get(job["job_id"]) or job
            if fresh["status"] == "LOST":
                with store.write():
                    jobs.finish(store, fresh["job_id"], pending)
                jobs.remove_result_file(fresh)
                after = store.get(fresh["job_id"]) or fresh
            else:
                jobs.refresh(store, fresh)
                after = store.get(fresh["job_id"]) or fresh  # what was recorded, not what was shown
        except OrchesjobError as e:
            self._fixed(f, False, e.message)
            return
        done = not os.path.exists(jobs.result_path(job)) and not jobs.is_active(after)
        self._fixed(f, done, "now %s" % after["status"] if done else "still waiting (the database is locked?)")

    def check_active_jobs(self) -> None:
        c = self._check("active_jobs", "")
        store = self._readable()
        recorded = store.active() + store.stopping()
        markers = processes.snapshot_markers() if any(not j.get("life_lock") for j in recorded) else {}
        unknown = []
        from .progress import Progress

        counted = Progress("doctor%s: checking the active jobs" % (" --fix" if self.fix else ""), len(recorded))
        for job in recorded:
            counted.step()
            if os.path.exists(jobs.result_path(job)):
                continue  # pending_results covers it
            state, why = life.verdict(job, markers)
            if state == life.UNKNOWN:
                unknown.append({"job_id": job["job_id"], "why": why})
                continue
            if state == life.ALIVE:
                continue
            shown = "ABORTED and still being stopped" if jobs.is_stopping(job) else job["status"]
            problem = "%s is recorded as %s but nothing of it is alive (%s)" % (_describe(job), shown, why)
            f = self._find(
                c,
                problem,
                "nothing to do: the next status of it records the end (LOST, or ABORTED for "
                "an abort); orchesjob doctor --fix does it now",
                fixable=True,
            )
            if self.fix:
                self._settle(f, job)
        counted.done()
        c["message"] = "%s recorded as active" % _n(len(recorded), "job")
        if unknown:
            c["message"] += (
                "; whether %d of them still run cannot be told from here (see unknown: abort one from its own pid "
                "namespace, or with --assume-dead once you know nothing of it runs)" % len(unknown)
            )
            c["unknown"] = unknown[:ITEMS]

    def _settle(self, f: dict[str, Any], job: JobRow) -> None:
        store = self._writable()
        try:
            jobs.refresh(store, store.get(job["job_id"]) or job)
            after = store.get(job["job_id"]) or job  # what was recorded (a reader that cannot lock only shows it)
        except OrchesjobError as e:
            self._fixed(f, False, e.message)
            return
        done = not jobs.is_active(after) and not jobs.is_stopping(after)
        self._fixed(
            f,
            done,
            "now %s: %s" % (after["status"], after.get("end_reason"))
            if done
            else "still %s in the database (another process holds its lock, or the job came back to life); "
            "try again" % after["status"],
        )

    def check_log_files(self) -> None:
        """Files in logs/ that belong to no job, and jobs that launched their command but have no log files."""
        c = self._check("log_files", "")
        store = self._readable()
        files = {k: set(v) for k, v in self.files.items()}
        missing: list[str] = []
        total = 0
        for job_id in store.job_ids():
            total += 1
            kinds = files.pop(job_id, None)
            if kinds is None or "stdout" not in kinds or "stderr" not in kinds:
                missing.append(job_id)
        if len(missing) <= CLASSIFY_BY_ID:
            launched = list(store.launched(missing))
        else:
            wanted = set(missing)
            launched = [i for i in store.launched() if i in wanted]
        launched.sort()
        # a job that started during this pass: its files may be there now
        launched = [i for i in launched[:1000] if not _both_logs(self.logs, i)] + launched[1000:]
        orphans = sorted(files)
        orphans = [i for i in orphans[:1000] if store.get(i) is None] + orphans[1000:]
        names = sorted("%s.%s" % (i, k.replace("tmp", "result.tmp.*")) for i in orphans for k in self.files[i])
        c["message"] = "%s, %d with log files" % (_n(total, "job"), total - len(missing))
        c.update(jobs=total, jobs_without_logs=len(launched), files_without_job=len(names))
        if names:
            self._find(
                c,
                "%s in %s belong to no job recorded in the database (a deleted or replaced "
                "database, a clean that could not remove them, a copy)" % (_n(len(names), "file"), self.logs),
                "keep what you need and remove the rest (rm %s/JOB-ID.*); orchesjob never reads them" % self.logs,
                items=names,
            )
        if launched:
            self._find(
                c,
                "%s ran a command but have no log file (removed outside orchesjob: a cleaner of old "
                "files in /tmp, a hand, a disk replaced)" % _n(len(launched), "job"),
                "the logs cannot be recovered; the records are intact. `orchesjob clean --job-id ID` removes a "
                "finished job that is no longer needed; keep ORCHESJOB_HOME out of directories that are "
                "cleaned automatically",
                items=launched,
            )
        if self.odd_files:
            c["other_files"] = sorted(self.odd_files)[:ITEMS]


# What logs/ holds for a job: its logs, a result waiting to be recorded, its locks and its supervisor's FIFO.
_JOB_FILES = ("stdout", "stderr", "result", "supervisor.lock", "job.lock", "ctl")


def _both_logs(logs: str, job_id: str) -> bool:
    return all(os.path.lexists(os.path.join(logs, job_id + s)) for s in (".stdout", ".stderr"))


def _describe(job: JobRow) -> str:
    return "job %s (run key %r, attempt %s)" % (job["job_id"], job["run_key"], job["attempt_no"])


def _outcome(result: dict[str, Any]) -> str:
    return str(result.get("end_reason") or "exit code %s" % result.get("exit_code"))


def run(fix: bool, text: bool, term: Terminal) -> Any:
    """The report, as JSON or as text for a person; exit status 0 when healthy, 1 with findings left."""
    report = Doctor(fix).run()
    code = EXIT_OK if report["healthy"] else EXIT_FINDINGS
    if not text:
        return Json(report, code)
    return Text(render(report, term), code)


_LABELS = {
    "state_dir": "state directory",
    "proc": "/proc",
    "database": "database",
    "schema": "schema",
    "wal": "write-ahead log",
    "free_space": "free space",
    "pending_results": "pending results",
    "active_jobs": "active jobs",
    "log_files": "log files",
}


def render(report: dict[str, Any], term: Terminal) -> str:
    lines = ["orchesjob doctor: %s%s" % (report["state_dir"], " (--fix)" if report["fix"] else "")]
    for c in report["checks"]:
        mine = [f for f in report["findings"] if f["check"] == c["check"]]
        if c.get("skipped"):
            mark, colour = "skip", "2"
        elif any(not f["fixed"] for f in mine):
            mark, colour = "FINDING", "31"
        elif mine:
            mark, colour = "FIXED", "33"
        else:
            mark, colour = "ok", "32"
        label = _LABELS.get(c["check"], c["check"])
        lines.append("  %s %-17s %s" % (term.paint("%-8s" % mark, colour), label, c["message"]))
        for f in mine:
            lines.append("           - %s" % f["problem"])
            for item in f.get("items", [])[:5]:
                lines.append("               %s" % item)
            if f.get("count", 0) > 5:
                lines.append("               ... %d in all" % f["count"])
            if f["fixed"]:
                lines.append("             fixed: %s" % f.get("fix_result", "done"))
            else:
                if f.get("fix_result"):
                    lines.append("             not fixed: %s" % f["fix_result"])
                lines.append("             what to do: %s" % f["action"])
    left, fixed = report["findings_count"], report["fixed_count"]
    if left:
        summary = term.paint("%d finding%s" % (left, "" if left == 1 else "s"), "31")
    else:
        summary = term.paint("healthy", "32")
    if fixed:
        summary += " (%d fixed)" % fixed
    lines.append(summary)
    return "\n".join(lines) + "\n"
