"""One trial of the full-state-directory fault (tests/faults/test_fault_races.py), run as a program inside
``unshare --mount --propagation private``: the whole ORCHESJOB_HOME becomes a small tmpfs that only this mount
namespace (this program, the CLI calls it makes, their supervisors and the jobs' commands) sees.

``python full_disk_trial.py PARAMS.json REPORT.json``, with the checkout on PYTHONPATH (``cli_env`` puts it there). The
trial mounts the tmpfs, fills it with a filler file at the moment PARAMS names (before the start, while the command
runs, right when it ends), frees it after a delay, and drives the CLI around that: the start, a status and a retry
`start --reuse-success` while the disk is full, a `wait` until the job ends, a last retry; sometimes a neighbour job of
another key runs through it all (its supervisor keeps the database open). Every CLI answer is recorded as it came (exit
code, stdout, stderr) with whether the disk was full when it was asked; the test checks them with the output contract
helpers and the evidence of fault_job.py (marker and flock files live outside the tmpfs). Nothing is judged here.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.faults.faultlib import Evidence, job_argv
from tests.support.cli import REPO_ROOT, cli_argv, cli_env


class Trial:
    def __init__(self, p: dict) -> None:
        self.p = p
        self.home = Path(p["home"])
        self.key = p["key"]
        self.marker, self.lock, self.gate = Path(p["marker"]), Path(p["lock"]), Path(p["gate"])
        self.filler = self.home / "filler"
        self.t0 = time.monotonic()
        self.calls: list[dict] = []
        self.notes: list[str] = []
        self.full = False
        self.filled_bytes = 0
        self.freed = threading.Event()

    def at(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def note(self, text: str) -> None:
        self.notes.append("%.3f %s" % (self.at(), text))

    @property
    def command(self):
        return job_argv(self.marker, self.lock, gate=self.gate, exit=self.p["exit"], write_bytes=self.p["write_bytes"])

    # -- the CLI -------------------------------------------------------------------------------------------------
    def _record(self, phase: str, args, proc_code: int, out: bytes, err: bytes, started: float) -> dict:
        rec = {
            "phase": phase,
            "args": [str(a) for a in args],
            "code": proc_code,
            "out": out.decode("utf-8", "replace"),
            "err": err.decode("utf-8", "replace"),
            "started": started,
            "ended": self.at(),
            "disk_full_at_start": None,
        }
        self.calls.append(rec)
        return rec

    def oj(self, phase: str, *args, timeout: float = 150) -> dict:
        started, full = self.at(), self.full
        p = subprocess.run(
            cli_argv(*args),
            env=cli_env(self.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=str(REPO_ROOT),
        )
        rec = self._record(phase, args, p.returncode, p.stdout, p.stderr, started)
        rec["disk_full_at_start"] = full
        return rec

    def oj_popen(self, *args) -> tuple:
        started, full = self.at(), self.full
        proc = subprocess.Popen(
            cli_argv(*args),
            env=cli_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
        )
        return proc, args, started, full

    def oj_finish(self, phase: str, handle: tuple, timeout: float = 150) -> dict:
        proc, args, started, full = handle
        out, err = proc.communicate(timeout=timeout)
        rec = self._record(phase, args, proc.returncode, out, err, started)
        rec["disk_full_at_start"] = full
        return rec

    # -- the disk ------------------------------------------------------------------------------------------------
    def fill(self) -> None:
        """Write the filler until the tmpfs refuses another byte."""
        fd = os.open(str(self.filler), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written = 0
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1):
                block = b"\0" * size
                while True:
                    try:
                        n = os.write(fd, block)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
                    written += n
                    if n < size:
                        break
        finally:
            os.close(fd)
        self.filled_bytes += written
        self.full = True
        self.note("filled: %d bytes of filler" % written)

    def free_later(self, delay: float) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)  # the scenario: the disk stays full this long (a trial's random parameter)
            self.free()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th

    def free(self) -> None:
        if self.freed.is_set():
            return
        try:
            os.unlink(str(self.filler))
        except FileNotFoundError:
            pass
        self.full = False
        self.freed.set()
        self.note("freed")

    def open_gate(self, why: str) -> None:
        if not self.gate.exists():
            self.gate.touch()
            self.note("gate opened (%s; disk %s)" % (why, "full" if self.full else "free"))

    def wait_for_begin(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Evidence(self.marker).begins():
                return True
            time.sleep(0.01)
        return False

    def df(self) -> dict:
        st = os.statvfs(str(self.home))
        return {"size": st.f_blocks * st.f_frsize, "free": st.f_bavail * st.f_frsize}


def run(p: dict) -> dict:
    t = Trial(p)
    t.home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%dk,mode=0700" % p["size_kib"], "tmpfs", str(t.home)], check=True
    )
    t.note("tmpfs of %d KiB on the state directory" % p["size_kib"])
    if p["warm"]:
        t.oj("warm", "start", "--run-key", t.key + "-warm", "--sync", "--", sys.executable, "-c", "pass")
    if p["neighbour"]:  # another job runs through it all (its supervisor keeps the database open), ending with ours
        t.oj(
            "warm",
            "start",
            "--run-key",
            t.key + "-neighbour",
            "--",
            *job_argv(Path(p["neighbour_marker"]), Path(p["neighbour_lock"]), gate=t.gate),
        )

    moment = p["moment"]
    free_thread = None
    if moment == "before-start":
        t.fill()
        free_thread = t.free_later(p["free_after"])
    first = t.oj_popen("start", "--run-key", t.key, "--request-id", "first", "--", *t.command)
    began = False
    if moment != "before-start":
        began = t.wait_for_begin()
        t.note("the first command began: %s" % began)
    if moment == "while-running" and began:
        time.sleep(p["delay"])  # random jitter: the disk fills anywhere in the command's run
        t.fill()
        free_thread = t.free_later(p["free_after"])
    elif moment == "at-the-end" and began:
        if p["gate_first"]:
            t.open_gate("right before the fill")
            time.sleep(p["delay"])  # random jitter between the two
            t.fill()
        else:
            t.fill()
            time.sleep(p["delay"])  # random jitter between the two
            t.open_gate("right after the fill")
        free_thread = t.free_later(p["free_after"])
    elif free_thread is None:
        t.fill()  # the command never began (the start is still waiting): the disk is full all the same
        free_thread = t.free_later(p["free_after"])

    for what in p["meanwhile"]:
        if what == "status":
            t.oj("meanwhile", "status", "--run-key", t.key)
        elif what == "retry":
            t.oj("meanwhile", "start", "--run-key", t.key, "--reuse-success", "--", *t.command)
        elif what == "gate":
            t.open_gate("while the disk is full" if t.full else "meanwhile")
    free_thread.join()
    t.note("df after freeing: %r" % t.df())
    t.open_gate("after the disk was freed")
    t.oj_finish("first", first)

    for _ in range(6):
        rec = t.oj("after", "wait", "--run-key", t.key, "--timeout", "20")
        try:
            if json.loads(rec["out"])["status"] not in ("STARTING", "RUNNING"):
                break
        except (ValueError, KeyError, TypeError):
            break
    t.oj("after", "status", "--run-key", t.key, "--all")
    if p["neighbour"]:
        t.oj("after", "wait", "--run-key", t.key + "-neighbour", "--timeout", "60")
    t.oj("final", "start", "--run-key", t.key, "--reuse-success", "--sync", "--", *t.command)
    t.oj("final", "status", "--run-key", t.key, "--all")

    logs = {}
    problems = []
    logs_dir = t.home / "logs"
    for f in sorted(logs_dir.iterdir()) if logs_dir.is_dir() else []:
        logs[f.name] = f.stat().st_size
        if f.name.endswith(".stderr"):
            text = f.read_text(errors="replace")
            if "Traceback" in text or "internal error" in text:
                problems.append("%s: %s" % (f.name, text[-2000:]))
    return {
        "calls": t.calls,
        "notes": t.notes,
        "filled_bytes": t.filled_bytes,
        "logs": logs,
        "log_problems": problems,
        "home_files": sorted(os.listdir(str(t.home))),
    }


def main() -> int:
    with open(sys.argv[1]) as f:
        params = json.load(f)
    report = run(params)
    with open(sys.argv[2], "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
