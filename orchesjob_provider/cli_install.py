"""Putting this worker's CLI on a host that has none: a per-user cache, one small remote script, one SFTP upload.

Why it is built this way:

- Everything the host must check (a Python 3.9+, the cache directory's owner and mode, the cached file's sha256,
  that an upload arrived whole, whether an ``orchesjob`` exists at all) is done by ONE small script, run with the
  host's own Python, so the answer does not depend on which shell or coreutils the host has. The command line is
  only the interpreter and ``-`` (``python3 -``): the script, with its arguments written into it, is the call's
  standard input, so no login shell (sh, bash, zsh, fish, tcsh, csh) parses any of it.
- The cache is ``~/.cache/orchesjob/orchesjob-<version>-<sha256 prefix>.pyz`` (``cli_pack.PackedCli.filename``):
  the name changes with the bytes, so hosts keep one file per CLI build and a worker never runs another build's file.
- A file is used only after its sha256 matched on the host; a mismatch (tampering, a torn copy) is replaced. Every
  directory from ``/`` down to the cache must be root's or the user's and writable by no one else (the rule of
  ``orchesjob_provider.launcher``, which checks it again, with the sha256, on every call that runs the file), and
  the file the user's: whoever else could write there could make our jobs run their code.
- Many tasks on a fresh host at once: the first takes a lock file next to the cache entry and uploads; the others
  wait (on the host, inside the script) until the file is there and verified. A lock older than ``STALE_LOCK``
  seconds (its uploader died) is taken over; a waiter that waited its whole budget uploads under its own temporary
  name instead. Uploads go to a temporary name, are flushed and checked on the host, then renamed into place, so no
  one ever runs a half-written file and everyone ends up with the same path.
- Whether the host already has a CLI is decided from evidence, not from an exit status: the script looks for the
  file (the named path, or ``orchesjob`` on the PATH). A CLI that exists is never shadowed by an upload.

The I/O goes through a transport with ``run(line, timeout, stdin=...)`` and ``upload(data, path, timeout)``: only
the sync hook's paramiko transport has SFTP, and only a worker installs; a triggerer runs the CLI the worker chose.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from typing import Any, Literal, Protocol, cast

from orchesjob_provider import command as cmd
from orchesjob_provider.cli_pack import PackedCli
from orchesjob_provider.launcher import CHAIN_CHECK

InstallCli = Literal["auto", "never", "always"]
INSTALL_MODES: tuple[InstallCli, ...] = ("auto", "never", "always")

#: Interpreters tried in this order when the connection names none (``orchesjob_python``): the PATH's python3, the
#: usual absolute paths (a non-login SSH command's PATH is short), then versioned names (RHEL 8's python3 is 3.6,
#: its python3.9 / python3.11 are separate packages).
PYTHON_CANDIDATES: tuple[str, ...] = (
    "python3",
    "/usr/bin/python3",
    "/usr/local/bin/python3",
    "/opt/homebrew/bin/python3",
    "/opt/local/bin/python3",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
)
MIN_PYTHON = (3, 9)
STALE_LOCK = 120  # seconds after which an upload lock is taken over (its uploader is gone)
EXIT_TOO_OLD = 3
EXIT_UNSAFE = 4
EXIT_CORRUPT = 5
EXIT_UNUSABLE = 6

# The host side. It must PARSE on any Python 3 (and 2.7), so that an old interpreter can say it is too old: no
# f-strings, no annotations. Exit 3: this Python is too old (the next candidate is tried).
REMOTE_SCRIPT = r"""
import errno, hashlib, json, os, stat, sys, time
def say(obj, code=0):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    sys.exit(code)
PYV = "%d.%d.%d" % tuple(sys.version_info[:3])
if tuple(sys.version_info[:2]) < (@MAJOR@, @MINOR@):
    say({"too_old": CANDIDATE, "executable": sys.executable, "python_version": PYV}, @TOO_OLD@)
op, name, sha, token = ARGS[:4]
uid = os.getuid()
parent = os.path.join(os.path.expanduser("~"), ".cache")
cache = os.path.join(parent, "orchesjob")
final = os.path.join(cache, name)
lock = final + ".lock"
tmp = os.path.join(cache, ".%s.%s.part" % (name, token))
base = {"python": sys.executable, "candidate": CANDIDATE, "python_version": PYV, "path": final}
def unsafe(path, problem):
    say(dict(base, error="unsafe_cache", at=path, problem=problem), @UNSAFE@)
def check(path, st, kind, owners):
    if stat.S_ISLNK(st.st_mode):
        unsafe(path, "is a symbolic link")
    if not (stat.S_ISDIR(st.st_mode) if kind == "dir" else stat.S_ISREG(st.st_mode)):
        unsafe(path, "is not a " + ("directory" if kind == "dir" else "regular file"))
    if st.st_uid not in owners:
        unsafe(path, "belongs to uid %d, not to this user (uid %d)" % (st.st_uid, uid))
    if st.st_mode & 0o022:
        unsafe(path, "is writable by group or others (mode %o)" % stat.S_IMODE(st.st_mode))
def ensure_dir(path, owners):
    try:
        os.mkdir(path, 0o700)
    except OSError as e:
        if e.errno != errno.EEXIST:
            say(dict(base, error="cache_unusable", at=path, problem="cannot be created: " + e.strerror), @UNUSABLE@)
    check(path, os.lstat(path), "dir", owners)
    found = oj_chain_problem(path, uid, "dir")  # and every directory above it, up to /
    if found:
        unsafe(found[0], found[1])
if op == "probe":
    # Is there an orchesjob at all? The named path, or `orchesjob` in a directory of the PATH (a file there, even
    # one that cannot run, is someone's CLI: never shadowed by an upload).
    spec = name
    if "/" in spec:
        where = os.path.expanduser(spec)
        say(dict(base, state="probed", found=where if os.path.lexists(where) else None))
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        where = os.path.join(d or ".", spec)
        if os.path.lexists(where):
            say(dict(base, state="probed", found=where))
    say(dict(base, state="probed", found=None))
def sweep():
    # temporary uploads of installs that died (an abandoned one is removed at once), and the compiled code a first
    # run was writing beside a file when it died (orchesjob/codebuild.py)
    for entry in os.listdir(cache):
        if (entry.startswith(".") and entry.endswith(".part")) or ".codes.new-" in entry:
            try:
                if time.time() - os.lstat(os.path.join(cache, entry)).st_mtime > @STALE@:
                    os.unlink(os.path.join(cache, entry))
            except OSError:
                pass
def digest(fd):
    h = hashlib.sha256()
    while True:
        block = os.read(fd, 1 << 16)
        if not block:
            return h.hexdigest()
        h.update(block)
def ready():
    try:
        check(final, os.lstat(final), "file", (uid,))
        fd = os.open(final, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        return digest(fd) == sha
    finally:
        os.close(fd)
def release():
    try:
        with open(lock) as f:
            mine = f.read() == token
        if mine:
            os.unlink(lock)
    except (IOError, OSError):
        pass
if op == "prepare":
    ensure_dir(parent, (uid, 0))
    ensure_dir(cache, (uid,))
    sweep()
    found = ready()
    if found:
        say(dict(base, state="ready"))
    deadline = time.time() + float(ARGS[4])
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            try:
                with open(lock) as f:
                    holder = f.read()
                age = time.time() - os.lstat(lock).st_mtime
            except (IOError, OSError):
                continue
            if holder == token or age > @STALE@:
                try:
                    os.unlink(lock)
                except OSError:
                    pass
                continue
            if ready():
                say(dict(base, state="ready", waited=True))
            if time.time() >= deadline:
                say(dict(base, state="upload", tmp=tmp, locked=False, replace=found is False))
            time.sleep(0.2)
            continue
        os.write(fd, token.encode())
        os.close(fd)
        if ready():
            release()
            say(dict(base, state="ready", waited=True))
        say(dict(base, state="upload", tmp=tmp, locked=True, replace=found is False))
elif op == "commit":
    fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            unsafe(tmp, "is not a regular file of this user")
        os.fchmod(fd, 0o500)
        os.fsync(fd)
        got = digest(fd)
    finally:
        os.close(fd)
    if got != sha:
        os.unlink(tmp)
        release()
        say(dict(base, error="upload_corrupt", at=tmp, problem="has sha256 %s, expected %s" % (got, sha)), @CORRUPT@)
    os.rename(tmp, final)
    dfd = os.open(cache, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    release()
    say(dict(base, state="ready", uploaded=True))
elif op == "abandon":
    try:
        os.unlink(tmp)
    except OSError:
        pass
    release()
    say(dict(base, state="abandoned"))
"""
REMOTE_SCRIPT = CHAIN_CHECK + REMOTE_SCRIPT
for _name, _value in (
    ("@MAJOR@", MIN_PYTHON[0]),
    ("@MINOR@", MIN_PYTHON[1]),
    ("@TOO_OLD@", EXIT_TOO_OLD),
    ("@UNSAFE@", EXIT_UNSAFE),
    ("@CORRUPT@", EXIT_CORRUPT),
    ("@STALE@", STALE_LOCK),
    ("@UNUSABLE@", EXIT_UNUSABLE),
):
    REMOTE_SCRIPT = REMOTE_SCRIPT.replace(_name, str(_value))


class Transport(Protocol):
    """What installing needs from an SSH connection (``transport_paramiko.ParamikoTransport`` has both)."""

    def run(self, line: str, timeout: float | None, stdin: bytes = b"") -> tuple[int | None, bytes, bytes]: ...

    def upload(self, data: bytes, path: str, timeout: float | None) -> None: ...


@dataclasses.dataclass(frozen=True)
class InstalledCli:
    """The CLI in a host's cache, ready to run: ``argv`` is what the hooks put before the CLI's arguments."""

    python: str  # as ``orchesjob_python`` named it, else the absolute path of the one found
    python_version: str
    path: str
    uploaded: bool  # this call uploaded it (False: a verified copy was already there)
    sha256: str  # what every call verifies before it runs the file (orchesjob_provider.launcher)

    @property
    def argv(self) -> list[str]:
        return [self.python, self.path]


def check_install_cli(value: Any, what: str = "install_cli") -> InstallCli:
    """``value`` as an install mode, refused at DAG parse time when it is not one."""
    if value not in INSTALL_MODES:
        raise ValueError(f"{what} must be one of {', '.join(INSTALL_MODES)}; got {value!r}")
    return cast(InstallCli, value)


def script(op: str, args: Sequence[str], candidate: str) -> bytes:
    """The host script for one step, its arguments written into it: the standard input of ``CANDIDATE -``."""
    head = "ARGS = %r\nCANDIDATE = %r\n" % ([op, *args], candidate)
    return (head + REMOTE_SCRIPT).encode("utf-8")


def interpreter_line(python: str) -> str:
    """``PYTHON -``: the interpreter (a checked word: ``command.check_word``) reading its program from stdin."""
    return f"{cmd.check_word(python, 'orchesjob_python')} -"


def _answers(out: bytes) -> list[dict[str, Any]]:
    """Every JSON object line of the script's output (a login banner around them is ignored)."""
    found: list[dict[str, Any]] = []
    for line in out.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def parse_answer(reply: tuple[int | None, bytes, bytes], python: str | None, line: str) -> dict[str, Any]:
    """The script's answer, or the typed error of what it found wrong."""
    from orchesjob_provider.exceptions import (
        OrchesjobCliInstallError,
        OrchesjobNoPython,
        OrchesjobTransportError,
        OrchesjobUnsafeCache,
        OrchesjobUploadFailed,
    )

    exit_code, out, err = reply
    answers = _answers(out)
    detail = err.decode("utf-8", errors="replace").strip()[-1000:]
    if exit_code is None:
        raise OrchesjobTransportError(
            "the SSH channel closed before the CLI install step reported an exit status", command=line, sent=True
        )
    last = answers[-1] if answers else {}
    if exit_code == 0 and last.get("state"):
        return last
    if exit_code == EXIT_TOO_OLD:
        old = [f"{a['too_old']} ({a.get('python_version')})" for a in answers if "too_old" in a]
        tried = python if python else ", ".join(PYTHON_CANDIDATES)
        raise OrchesjobNoPython(
            f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer on the host to run the uploaded orchesjob CLI: "
            + (f"found only {', '.join(old)}" if old else f"none of {tried} exists there")
            + ". Install one, or point the connection's `orchesjob_python` extra (or the task's orchesjob_python) at "
            "an interpreter 3.9+ on the host, or install orchesjob there and set `orchesjob_bin`",
            command=line,
        )
    if exit_code == EXIT_UNSAFE:
        raise OrchesjobUnsafeCache(
            f"refusing the CLI cache on the host: {last.get('at')} {last.get('problem')}. Whoever else can write "
            "there could make our jobs run their code. Fix its owner and mode (it must be the SSH user's, not "
            "writable by group or others, not a symbolic link), or remove it so it is made afresh",
            command=line,
            payload=last,
        )
    if exit_code == EXIT_UNUSABLE:
        raise OrchesjobCliInstallError(
            f"no CLI cache on the host: {last.get('at')} {last.get('problem')}. Give the SSH user a writable home, "
            "or install orchesjob on the host and set `orchesjob_bin` (with install_cli 'never' to make sure)",
            command=line,
            payload=last,
        )
    if exit_code == EXIT_CORRUPT:
        raise OrchesjobUploadFailed(
            f"the uploaded CLI did not arrive intact: {last.get('at')} {last.get('problem')} (removed; the next "
            "try uploads it again)",
            command=line,
            payload=last,
        )
    raise OrchesjobUploadFailed(
        f"the CLI install step failed on the host (exit {exit_code}): {detail or last or 'no output'}",
        command=line,
        exit_code=exit_code,
        stderr=detail,
    )


def _step(transport: Transport, op: str, args: Sequence[str], python: str | None, timeout: float) -> dict[str, Any]:
    """Run one step of the host script with ``python``, or with the first candidate that is there and new enough.

    A candidate the host has no program for (exit 127) or that is too old (exit 3) makes way for the next one."""
    candidates = [python] if python else list(PYTHON_CANDIDATES)
    answers: list[dict[str, Any]] = []
    line = ""
    for candidate in candidates:
        line = interpreter_line(candidate)
        reply = transport.run(line, timeout, script(op, args, candidate))
        if reply[0] == 127 or (reply[0] == EXIT_TOO_OLD and not python):
            answers.extend(_answers(reply[1]))
            continue
        return parse_answer(reply, python, line)
    return parse_answer((EXIT_TOO_OLD, b"\n".join(json.dumps(a).encode() for a in answers), b""), python, line)


def _runnable(executable: str, candidate: str) -> str:
    try:
        return cmd.check_word(executable, "the host's python")
    except ValueError:
        return candidate


def probe(transport: Transport, spec: str, python: str | None, timeout: float) -> str | None:
    """Where the host has the CLI ``spec`` names (a path, or a name looked up on the PATH), or None when it has no
    such file. Evidence for the handshake: a CLI that exists but failed is never replaced by an upload."""
    answer = _step(transport, "probe", [spec, "-", "-"], python, timeout)
    found = answer.get("found")
    return str(found) if found else None


def new_token() -> str:
    """Names one install (its lock and temporary file); repeated attempts of one install reuse it."""
    return uuid.uuid4().hex


def install(
    transport: Transport,
    packed: PackedCli,
    python: str | None,
    *,
    token: str,
    timeout: float,
    wait: float = 30.0,
) -> InstalledCli:
    """Make sure ``packed`` is in the host's cache, verified, and return how to run it.

    ``python``: the interpreter to use (the ``orchesjob_python`` setting), None to look for one. ``wait``: seconds
    to wait on the host for another task's upload of the same file before uploading our own. ``timeout`` bounds
    each SSH step (the waiting step gets ``wait`` on top).
    """
    common = [packed.filename, packed.sha256, token]
    prepared = _step(transport, "prepare", [*common, f"{wait:g}"], python, timeout + wait)
    # A named interpreter is kept as named (a wrapper may set up its environment); a found one by its real path,
    # when that path can stand on a command line as it is (cmd.check_word), else by the name it was found under.
    found_python = python or _runnable(str(prepared.get("python") or ""), str(prepared.get("candidate") or "python3"))
    if prepared["state"] == "ready":
        return InstalledCli(
            found_python, str(prepared.get("python_version")), str(prepared["path"]), False, packed.sha256
        )
    from orchesjob_provider.exceptions import OrchesjobError, OrchesjobUploadFailed

    try:
        transport.upload(packed.data, str(prepared["tmp"]), timeout)
    except (OrchesjobError, OSError) as exc:
        try:  # give the lock back at once, so that other tasks need not wait for it to go stale
            _step(transport, "abandon", common, found_python, timeout)
        except OrchesjobError:
            pass  # the upload's own error is the one to report; a stale lock is taken over later
        if isinstance(exc, OrchesjobError):
            raise
        # an SFTP status about the file (permission, no space), not about the connection
        raise OrchesjobUploadFailed(f"could not upload the CLI to {prepared['tmp']} over SFTP: {exc}") from exc
    committed = _step(transport, "commit", common, found_python, timeout)
    return InstalledCli(found_python, str(committed.get("python_version")), str(committed["path"]), True, packed.sha256)
