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
    """ORCHESJOB_HOME (with ~ expanded, made absolute; an empty value counts as unset), else the user's default
    (default_dir)."""
    home = os.environ.get("ORCHESJOB_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    return default_dir()


def default_dir() -> str:
    """/var/lib/orchesjob for root. For another user: the XDG directory ($XDG_STATE_HOME/orchesjob,
    ~/.local/state/orchesjob), unless /var/lib/orchesjob holds a database of that user's (orchesjob 1.1.0 kept
    everyone's state there) and the XDG directory none.

    Decided once: the first command that writes under /var/lib/orchesjob records that choice in the XDG directory
    (a file `state-dir`), and while /var/lib/orchesjob is the user's it stays the choice; while it is not recorded,
    a database in the XDG directory keeps the XDG directory. Neither a 1.1.0 run that later creates
    /var/lib/orchesjob nor a database made later under the XDG directory moves a user's jobs to another place.
    (And `start` looks for the run key's active job in the other places too: places.py.)"""
    if os.geteuid() == 0:
        return SYSTEM_HOME
    global _chosen
    if _chosen is None:
        _chosen = _user_default(xdg_dir())
    return _chosen


def xdg_dir() -> str:
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(xdg, "orchesjob")


REDIRECT = "state-dir"  # in the XDG directory: the recorded choice of /var/lib/orchesjob


def _system_is_users() -> bool:
    return _owned(SYSTEM_HOME, stat.S_ISDIR) and _owned(os.path.join(SYSTEM_HOME, DB_NAME), stat.S_ISREG)


def _user_default(xdg: str) -> str:
    has_xdg = _owned(os.path.join(xdg, DB_NAME), stat.S_ISREG)
    if _recorded(xdg) == SYSTEM_HOME and _system_is_users():
        if has_xdg:
            warn(
                "using the state directory %s (recorded in %s as this user's); %s also holds a database, whose "
                "jobs this command does not look at: set ORCHESJOB_HOME to choose"
                % (SYSTEM_HOME, os.path.join(xdg, REDIRECT), xdg)
            )
        return SYSTEM_HOME
    if has_xdg or not _system_is_users():
        return xdg
    return SYSTEM_HOME


def _recorded(xdg: str) -> str | None:
    path = os.path.join(xdg, REDIRECT)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        return os.read(fd, 4096).decode("utf-8", "replace").strip() or None
    finally:
        os.close(fd)


def record_default() -> None:
    """Called by the first command that writes under the default directory: when that is /var/lib/orchesjob (for a
    user other than root), write the choice into the XDG directory, so it stays (default_dir)."""
    if os.environ.get("ORCHESJOB_HOME") or os.geteuid() == 0 or default_dir() != SYSTEM_HOME:
        return
    xdg = xdg_dir()
    if _recorded(xdg) == SYSTEM_HOME:
        return
    try:
        _private_dir(xdg, True, top=True)
        tmp = os.path.join(xdg, "%s.tmp.%d" % (REDIRECT, os.getpid()))
        fd = open_new_private(tmp, os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(SYSTEM_HOME + "\n")
        os.replace(tmp, os.path.join(xdg, REDIRECT))
    except (OSError, OrchesjobError) as e:
        warn("could not record %s as this user's state directory in %s: %s" % (SYSTEM_HOME, xdg, e))


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
    usual = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    if usual and st.st_uid == os.geteuid():
        return  # the owner's name is looked up only for a refusal: a lookup reads the user database (NSS)
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


# What orchesjob keeps in its state directory (by name; a backup of an upgraded 1.1.0 database starts with the
# database's name). A directory holding anything else is not orchesjob's alone, and orchesjob does not chmod it.
_OWN_NAMES = (DB_NAME, LOGS)


def dedicated(path: str) -> bool:
    """Whether the directory holds nothing but orchesjob's files, and is no shared directory (sticky, like /tmp)."""
    try:
        if os.lstat(path).st_mode & stat.S_ISVTX:
            return False
        names = os.listdir(path)
    except OSError:
        return False
    return all(n in (LOGS, REDIRECT) or n.startswith(DB_NAME) for n in names)


def _private_dir(path: str, create: bool, top: bool = False) -> bool:
    """Make sure `path` is a directory of ours only we can enter; False when it does not exist and create is False.

    lstat, never stat: a link at `path` is refused, not followed. Its parent directories may be links (/var/run).
    Permissions are tightened only by a command that writes (create=True), and for the top directory only when it
    is orchesjob's alone (`dedicated`): ORCHESJOB_HOME=/tmp or a home directory is used as it is, with a warning.
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
        if create and (not top or dedicated(path)) and _tighten(path, st, 0o700):
            warn("tightened permissions of %s from %o to 700" % (path, mode))
        elif top and not dedicated(path):
            warn(
                "the state directory %s is open to other users (mode %o) and holds more than orchesjob's files, so "
                "it is left as it is; its jobs' files are still 0600: set ORCHESJOB_HOME to a directory of its own"
                % (path, mode)
            )
        else:
            warn("%s is readable by other users (mode %o); it holds job commands and logs" % (path, mode))
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise _state_error("state directory %s is not writable by this user" % path)
    return True


def tighten_file(path: str, mode: int) -> bool:
    """chmod a plain file of the caller's to `mode` if it is looser (never through a link); False if not done."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or not stat.S_IMODE(st.st_mode) & ~mode:
        return False
    return _tighten(path, st, mode)


def _private_file(path: str, st: os.stat_result, create: bool = True) -> None:
    _check(path, st, False)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        if create and _tighten(path, st, 0o600):
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
    if create and root == SYSTEM_HOME and os.geteuid() != 0:
        record_default()
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
        _private_file(path, st, create)
    for side in (path + "-wal", path + "-shm"):
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _state_error("cannot use %s: %s" % (side, e.strerror or e)) from None
        _private_file(side, st, create)
    return True


def warn(message: str) -> None:
    """A warning for people; never on stdout, which belongs to the JSON."""
    try:
        sys.stderr.write("orchesjob: warning: %s\n" % message)
    except (OSError, ValueError):
        pass
