"""Where state lives, and making sure nobody else can read it.

The state directory holds commands, environments and logs of jobs, which often carry secrets, so it is 0700 and
its files 0600 whatever the caller's umask is. It and everything in it must belong to the user running orchesjob
(root included), and links in it are never followed: lstat, O_NOFOLLOW, O_EXCL, fchmod on what was opened.
"""

from __future__ import annotations

import os
import stat
import sys

from .errors import OrchesjobError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Callable

DB_NAME = "orchesjob.db"
LOGS = "logs"


SYSTEM_HOME = "/var/lib/orchesjob"  # root's default; orchesjob 1.1.0's default for every user
_chosen: str | None = None


def state_dir() -> str:
    """ORCHESJOB_HOME, else /var/lib/orchesjob for root, else for another user /var/lib/orchesjob when it holds a
    database of that user's (orchesjob 1.1.0 kept everyone's state there), else $XDG_STATE_HOME/orchesjob
    (~/.local/state/orchesjob)."""
    home = os.environ.get("ORCHESJOB_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    if os.geteuid() == 0:
        return SYSTEM_HOME
    global _chosen
    if _chosen is None:
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        _chosen = _user_default(os.path.join(xdg, "orchesjob"))
    return _chosen


def _user_default(xdg: str) -> str:
    """/var/lib/orchesjob when the directory and its database exist and are the caller's own (anything else there
    would be refused anyway), else the XDG directory. Decided once per process; when both hold a database, the
    other one is named in a warning, since its jobs are not seen from here."""
    if not (_owned(SYSTEM_HOME, stat.S_ISDIR) and _owned(os.path.join(SYSTEM_HOME, DB_NAME), stat.S_ISREG)):
        return xdg
    try:
        os.lstat(os.path.join(xdg, DB_NAME))
    except OSError:
        pass
    else:
        warn(
            "using the state directory %s (it holds your orchesjob database, as orchesjob 1.1.0 left it); %s also "
            "holds one, whose jobs this command does not see: set ORCHESJOB_HOME to choose" % (SYSTEM_HOME, xdg)
        )
    return SYSTEM_HOME


def _owned(path: str, kind: Callable[[int], bool]) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return kind(st.st_mode) and st.st_uid == os.geteuid()


def _state_error(message: str) -> OrchesjobError:
    return OrchesjobError(message, error_type="state_dir")


def _who(uid: int) -> str:
    try:
        import pwd

        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except (ImportError, KeyError):
        return "uid %d" % uid


def _check(path: str, st: os.stat_result, is_dir: bool, top: bool = False) -> None:
    """Refuse a link, a wrong file type, or anything the caller does not own (root included), by its lstat.

    Whoever owns the state directory or a file in it can replace the database root would read (and `rerun` runs
    commands from it) or plant a link that makes us chmod or write somewhere else: a warning is not enough.
    """
    owner = _who(st.st_uid)
    if stat.S_ISLNK(st.st_mode):
        try:
            to = " to %s" % os.readlink(path)
        except OSError:
            to = ""
        if top:
            raise _state_error(
                "state directory %s is a symbolic link%s (owned by %s); orchesjob never follows links "
                "in its state directory: point ORCHESJOB_HOME at the real directory" % (path, to, owner)
            )
        raise _state_error(
            "%s is a symbolic link%s (owned by %s); orchesjob never follows links in its state "
            "directory: remove the link (the state directory holds only what orchesjob created)" % (path, to, owner)
        )
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise _state_error(
            "%s exists but is not a directory (owned by %s); %s"
            % (path, owner, "check ORCHESJOB_HOME" if top else "remove it")
        )
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise _state_error("%s exists but is not a regular file (owned by %s); remove it" % (path, owner))
    me = os.geteuid()
    if st.st_uid != me:
        raise _state_error(
            "%s%s belongs to %s, not to %s who runs orchesjob; the state directory and everything in "
            "it must belong to the user who runs orchesjob (root too): set ORCHESJOB_HOME to a "
            "directory of your own, or run orchesjob as its owner"
            % ("state directory " if top else "", path, owner, _who(me))
        )
    if not is_dir and st.st_nlink > 1:
        raise _state_error(
            "%s has %d hard links (owned by %s); orchesjob only uses files it created in its state "
            "directory: remove the other links or the file" % (path, st.st_nlink, owner)
        )


def _tighten(path: str, st: os.stat_result, mode: int) -> bool:
    """chmod what lstat saw to `mode`, through a descriptor opened without following links (fchmod, never a path)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    if stat.S_ISDIR(st.st_mode):
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino, now.st_uid) != (st.st_dev, st.st_ino, os.geteuid()):
            return False  # replaced since the lstat
        os.fchmod(fd, mode)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _private_dir(path: str, create: bool, top: bool = False) -> bool:
    """Make sure `path` is a directory of ours only we can enter; False when it does not exist and create is False.

    lstat, never stat: a link at `path` is refused, not followed. Its parent directories may be links (/var/run).
    """
    made = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            os.mkdir(path, 0o700)
            made = True
        except FileExistsError:
            pass  # made by a concurrent caller at the same moment: checked like any existing directory
        except OSError as e:
            raise _state_error("cannot create state directory %s: %s" % (path, e.strerror or e)) from None
        try:
            st = os.lstat(path)
        except OSError as e:
            raise _state_error("cannot use state directory %s: %s" % (path, e.strerror or e)) from None
    except OSError as e:
        raise _state_error("cannot use state directory %s: %s" % (path, e.strerror or e)) from None
    _check(path, st, True, top)
    mode = stat.S_IMODE(st.st_mode)
    if made and mode != 0o700:
        _tighten(path, st, 0o700)  # the umask may have taken bits we need
    elif mode & 0o077:
        if _tighten(path, st, 0o700):
            warn("tightened permissions of %s from %o to 700" % (path, mode))
        else:
            warn("%s is readable by other users (mode %o); it holds job commands and logs" % (path, mode))
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise _state_error("state directory %s is not writable by this user" % path)
    return True


def _private_file(path: str, st: os.stat_result) -> None:
    _check(path, st, False)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        if _tighten(path, st, 0o600):
            warn("tightened permissions of %s from %o to 600" % (path, mode))
        else:
            warn("%s is readable by other users (mode %o); it holds job commands" % (path, mode))


def prepare(create: bool) -> str | None:
    """Return the database path, creating the state directory (and logs/) when `create` is set.

    Read-only commands pass create=False: they answer "not found" on a host that never ran a job rather than
    creating files as a side effect.
    """
    root = state_dir()
    if not _private_dir(root, create, top=True):
        return None
    _private_dir(os.path.join(root, LOGS), create)
    return os.path.join(root, DB_NAME)


def logs_dir() -> str:
    return os.path.join(state_dir(), LOGS)


def open_new_private(path: str, flags: int) -> int:
    """Create `path`, which must not exist yet, as a 0600 file and return it opened with `flags` (os.O_WRONLY, ...).

    O_EXCL and O_NOFOLLOW: a file or a link already at `path` is never opened or followed (FileExistsError, or
    another OSError, which the caller handles).
    """
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def create_private_file(path: str) -> None:
    """Create `path` as 0600 if it does not exist yet (SQLite copies the mode to its -wal and -shm files); a file
    already there must be a plain file of ours (see database_file)."""
    try:
        os.close(open_new_private(path, os.O_WRONLY))
        return
    except FileExistsError:
        pass  # created by a concurrent caller, or planted: checked below
    except OSError as e:
        raise _state_error("cannot create %s: %s" % (path, e.strerror or e)) from None
    try:
        st = os.lstat(path)
    except OSError as e:
        raise _state_error("cannot use %s: %s" % (path, e.strerror or e)) from None
    _private_file(path, st)


def database_file(path: str, create: bool) -> bool:
    """Check the database at `path` (and its -wal and -shm files when they exist) before SQLite opens it: plain
    files of ours, not links. Creates it when `create` is set; False when it does not exist and create is False."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        create_private_file(path)
    except OSError as e:
        raise _state_error("cannot use %s: %s" % (path, e.strerror or e)) from None
    else:
        _private_file(path, st)
    for side in (path + "-wal", path + "-shm"):
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _state_error("cannot use %s: %s" % (side, e.strerror or e)) from None
        _private_file(side, st)
    return True


def warn(message: str) -> None:
    """A warning for people; never on stdout, which belongs to the JSON."""
    try:
        sys.stderr.write("orchesjob: warning: %s\n" % message)
    except (OSError, ValueError):
        pass
