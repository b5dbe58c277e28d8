"""The CLI as a separate process, for every suite: how to start it (argv, environment, a real terminal), how to read
its answers, and the waits and process checks the black-box tests share."""

import collections
import fcntl
import hashlib
import json
import os
import pty
import select
import shlex
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

REPO_ROOT = str(Path(__file__).resolve().parents[2])
PathLike = Union[str, "os.PathLike[str]"]

# The fields every job object of the 1.1.0 reference carries.
REFERENCE_JOB_FIELDS = (
    "job_id",
    "run_key",
    "command",
    "pid",
    "pid_kind",
    "worker_pid",
    "target_pid",
    "status",
    "exit_code",
    "stdout_file",
    "stderr_file",
    "attempt_no",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "started_at",
    "started_at_iso",
    "finished_at",
    "finished_at_iso",
    "updated_at",
    "updated_at_iso",
    "aborted_at",
    "aborted_at_iso",
)
OUR_JOB_FIELDS = ("strict", "cwd", "env", "timeout", "signal", "signal_name", "end_reason", "active")
START_FIELDS = ("accepted", "existing", "mode", "strict", "strict_override_used", "parameters_match", "reuse_success")
TERMINAL = ("SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")
ACTIVE = ("STARTING", "RUNNING")

Result = collections.namedtuple("Result", "code json out err")


# -- plain helpers (usable from fixtures and tests) ---------------------------------------------------------------
def cli_argv(*args: str, python: str = sys.executable) -> list[str]:
    """The argv that runs this checkout's CLI (with ``cli_env``'s PYTHONPATH) under ``python``."""
    return [python, "-m", "orchesjob"] + [str(a) for a in args]


def cli_env(home: Path, env: Optional[Mapping[str, Optional[str]]] = None) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("ORCHESJOB_DEBUG", None)
    e.pop("ORCHESJOB_LOCK_TIMEOUT", None)
    e["PYTHONPATH"] = REPO_ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["ORCHESJOB_HOME"] = str(home)
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    if env:
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
    return e


def write_cli_launcher(path: PathLike, python: str = sys.executable, repo_root: PathLike = REPO_ROOT) -> str:
    """Write ``#!/bin/sh`` + ``exec PYTHON -m orchesjob "$@"`` (with PYTHONPATH set to the checkout) at ``path``.

    This is the CLI as the SSH user on the "remote" host runs it: a non-login SSH command has a bare PATH and none of
    our environment, so the provider is given this absolute path, exactly as a user would point it at a venv or the
    zipapp on a real host. Returns the path as a string.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(repo_root))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(python)} -m orchesjob "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    return str(path)


def run_installed(launcher: str, home: Path, *args: str, timeout: float = 120) -> Result:
    """The CLI through an executable (a launcher from ``write_cli_launcher``, as the SSH user runs it) against the
    state directory ``home``, with this process's environment otherwise (what a host's own shell would have)."""
    p = subprocess.run(
        [launcher, *args],
        env=dict(os.environ, ORCHESJOB_HOME=str(home)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    out = p.stdout.decode("utf-8", "replace")
    return Result(p.returncode, parse_json(out), out, p.stderr.decode("utf-8", "replace"))


def parse_json(out: str) -> Any:
    try:
        return json.loads(out)
    except ValueError:
        return None


def run_cli(home: Path, *args: str, env: Optional[dict[str, str]] = None, timeout: float = 60) -> Result:
    p = subprocess.run(
        cli_argv(*args),
        env=cli_env(home, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    return Result(p.returncode, parse_json(out), out, err)


def popen_cli(
    home: Path, *args: str, env: Optional[Mapping[str, Optional[str]]] = None, **popen: Any
) -> subprocess.Popen:
    """The CLI in the background (a caller to kill, stop or race), its stdout and stderr pipes: read with ``finish``."""
    popen.setdefault("cwd", REPO_ROOT)
    return subprocess.Popen(
        cli_argv(*args),
        env=cli_env(home, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def finish(p: subprocess.Popen, timeout: float = 120) -> Result:
    """The Result of a ``popen_cli`` process, once it has exited (within ``timeout`` seconds)."""
    out, err = p.communicate(timeout=timeout)
    o, e = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    return Result(p.returncode, parse_json(o), o, e)


def check_ok(r: Result) -> Any:
    assert r.code == 0, "expected exit 0, got %d\nstdout: %s\nstderr: %s" % (r.code, r.out, r.err)
    assert "Traceback" not in r.out and "Traceback" not in r.err, r.err
    assert r.json is not None, "stdout is not one JSON document: %r" % r.out
    return r.json


def check_error(r: Result, code: int, error_type: Optional[str] = None) -> dict[str, Any]:
    """A failure: the exit code, one JSON object {error, message, exit_code}, one `orchesjob: ...` stderr line."""
    ctx = "\nstdout: %s\nstderr: %s" % (r.out, r.err)
    assert "Traceback" not in r.out and "Traceback" not in r.err, ctx
    assert r.code == code, "expected exit %d, got %d%s" % (code, r.code, ctx)
    assert isinstance(r.json, dict), "stdout is not one JSON object" + ctx
    assert {"error", "message", "exit_code"} <= set(r.json), ctx
    assert r.json["exit_code"] == code, ctx
    assert isinstance(r.json["message"], str) and r.json["message"].strip(), ctx
    if error_type is not None:
        assert r.json["error"] == error_type, ctx
    lines = [ln for ln in r.err.splitlines() if not ln.startswith("orchesjob: warning:")]
    assert len(lines) == 1, "expected one stderr line" + ctx
    assert lines[0].startswith("orchesjob: "), ctx
    assert r.json["message"] in lines[0], ctx
    return r.json


def stat_state(pid: int) -> Optional[str]:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def proc_start_time(pid: int) -> Optional[str]:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[19].decode()


def pid_alive(pid: int) -> bool:
    """os.kill(pid, 0), with a zombie (exited, not yet reaped by an init that may never reap) counted as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return stat_state(pid) not in (None, "Z", "X")


def leave_released_locks(job: dict[str, Any]) -> None:
    """Put back a job's lock files as a crashed supervisor leaves them: present, held by nobody.

    Tests that rewrite a finished job's row into an "active" one (a stuck STARTING job, pids that were reused)
    need this: the supervisor removed its lock files when it recorded the end, and a job whose lock file is
    missing is judged "unknown" (never LOST), as tampering deserves."""
    base = job["stdout_file"][: -len(".stdout")]
    for suffix in (".supervisor.lock", ".job.lock"):
        fd = os.open(base + suffix, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


def db_exec(home: Path, sql: str, *args: Any) -> None:
    """Run one SQL statement on the state database directly (autocommit), as damage or time passing would."""
    c = sqlite3.connect(str(home / "orchesjob.db"), timeout=30, isolation_level=None)
    try:
        c.execute(sql, args)
    finally:
        c.close()


def kill_job_processes(job: dict) -> None:
    """SIGKILL a job's supervisor and command, so nothing of it is alive and nobody recorded its end."""
    for pid in (job["worker_pid"], job["target_pid"]):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(
        lambda: all(stat_state(p) in (None, "Z") for p in (job["worker_pid"], job["target_pid"]) if p),
        what="the job's processes to die",
    )


def wait_until(
    pred: Callable[..., Any],
    timeout: float = 30.0,
    step: float = 0.05,
    what: Union[str, Callable[[], str]] = "condition",
) -> Any:
    """Poll ``pred`` every ``step`` seconds until it returns something true, and return that; after ``timeout``
    seconds fail saying ``what`` never came (a callable ``what`` is asked then, to describe the state at the end)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(step)


def wait_terminal(call: Callable[..., Any], job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job once it has ended, asked through the CLI's own `wait` (long polls of at most 30 s, until `timeout`).

    `call(*args, timeout=SECONDS)` runs one CLI call and returns its JSON answer, having checked it as its caller
    checks every call (the CLI tests' check_ok, the fault suite's output contract)."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(1.0, deadline - time.monotonic())
        job = call("wait", "--job-id", job_id, "--timeout", "%g" % min(left, 30), timeout=left + 30)
        if job["status"] in TERMINAL:
            assert job["timed_out"] is False
            return dict(job)
        if time.monotonic() > deadline:
            raise AssertionError("job %s still %s after %ss" % (job_id, job["status"], timeout))


def open_files(pid: int) -> list[str]:
    """What process `pid`'s file descriptors point at (paths, or e.g. ``anon_inode:[pidfd]``); [] once it is gone."""
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def _pidfds_work() -> bool:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return False
    try:
        os.close(opener(os.getpid()))
    except OSError:
        return False
    return True


# Whether this kernel and Python have pidfds (Linux 5.3+, Python 3.9+): the CLI waits on a job through one then.
PIDFDS = _pidfds_work()


def wait_until_waiting_on_a_job(pid: int, timeout: float = 30.0, what: str = "the caller") -> None:
    """Wait until CLI process `pid` (`start --sync`, `wait`, `logs --follow`) has found its running job and waits
    on it: it then holds a pidfd of the job's supervisor. Without pidfds here there is nothing to see, and it gets
    a second instead (enough on an idle machine)."""
    if not PIDFDS:
        time.sleep(1.0)  # no pidfd to look for on this kernel: a fixed pause is all there is
        return
    wait_until(
        lambda: "anon_inode:[pidfd]" in open_files(pid),
        timeout,
        step=0.01,
        what="%s (pid %d) to wait on its job" % (what, pid),
    )


def wait_pids_gone(pids, timeout: float = 30.0) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, what="pids %s to be gone" % list(pids))


def read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return []


def snapshot(home: Path) -> dict[str, Any]:
    """Every file under the state directory with its mode, mtime and content hash."""
    out: dict[str, Any] = {}
    if not home.exists():
        return out
    if home.is_file():
        st = home.stat()
        return {".": (st.st_mode, st.st_mtime_ns, hashlib.sha256(home.read_bytes()).hexdigest())}
    for p in sorted(home.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(home))] = (st.st_mode, st.st_mtime_ns, st.st_size, digest)
    st = home.stat()
    out["."] = (st.st_mode, st.st_mtime_ns)
    return out


def _kill_leftovers(home: Path) -> None:
    """SIGKILL every process whose environment says it belongs to this test's state directory."""
    needle = ("ORCHESJOB_HOME=%s" % home).encode()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass


# -- a real terminal ------------------------------------------------------------------------------------------------
def read_until(fd: int, needle: bytes, timeout: float = 30, buf: bytes = b"") -> bytes:
    """Read from fd until `needle` has arrived; everything read so far."""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for %r; got %r" % (needle, buf))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if not chunk:
                raise AssertionError("end of output before %r; got %r" % (needle, buf))
            buf += chunk
    return buf


def read_to_end(fd: int, timeout: float = 30, buf: bytes = b"") -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("output did not end within %ss; got %r" % (timeout, buf))
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return buf
        if not chunk:
            return buf
        buf += chunk


class Pty:
    """The CLI on a real pseudo-terminal (its controlling terminal: Ctrl-C there is SIGINT), `cols` wide."""

    def __init__(self, home: Path, *args: str, env: Optional[dict[str, Optional[str]]] = None, cols: int = 200) -> None:
        base: dict[str, Optional[str]] = {"COLUMNS": None, "LINES": None, "NO_COLOR": None, "TERM": "xterm"}
        environ = cli_env(home, dict(base, **(env or {})))
        argv = cli_argv(*args)
        pid, fd = pty.fork()
        if pid == 0:  # the child: set the window size, then become the CLI
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
                os.chdir(REPO_ROOT)
                os.execve(argv[0], argv, environ)
            finally:
                os._exit(127)
        self.pid, self.fd, self.out = pid, fd, b""

    def read_until(self, needle: bytes, timeout: float = 30) -> bytes:
        self.out = read_until(self.fd, needle, timeout, self.out)
        return self.out

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """(exit status, everything it printed, with the terminal's CR LF turned back into LF)."""
        self.out = read_to_end(self.fd, timeout, self.out)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status), self.out.decode("utf-8", "replace").replace("\r\n", "\n")


def with_stderr_on_a_terminal(home: Path, *args: str) -> tuple[int, bytes, str]:
    """Run the CLI with stdout a pipe and stderr a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(
        cli_argv(*args),
        env=cli_env(home, {"TERM": "xterm"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=REPO_ROOT,
    )
    os.close(slave)
    out, _ = p.communicate(timeout=300)
    shown = read_to_end(master, 30).decode("utf-8", "replace")
    os.close(master)
    return p.returncode, out, shown
