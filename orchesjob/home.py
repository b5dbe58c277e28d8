"""Where state lives, and making sure nobody else can read it.

The state directory holds commands, environments and logs of jobs, which often carry secrets, so it is 0700 and
its files 0600 whatever the caller's umask is.
"""

from __future__ import annotations

import os
import stat
import sys

from .errors import OrchesjobError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Optional

DB_NAME = "orchesjob.db"
LOGS = "logs"


def state_dir() -> str:
    """ORCHESJOB_HOME, else /var/lib/orchesjob for root, else $XDG_STATE_HOME/orchesjob (~/.local/state/orchesjob)."""
    home = os.environ.get("ORCHESJOB_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    if os.geteuid() == 0:
        return "/var/lib/orchesjob"
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(xdg, "orchesjob")


def _state_error(message: str) -> OrchesjobError:
    return OrchesjobError(message, error_type="state_dir")


def _private_dir(path: str, create: bool) -> bool:
    """Make sure `path` is a directory only we can enter; False when it does not exist and create is False."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        except OSError as e:
            raise _state_error("cannot create state directory %s: %s" % (path, e.strerror or e)) from None
        return True
    except OSError as e:
        raise _state_error("cannot use state directory %s: %s" % (path, e.strerror or e)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _state_error("state directory %s exists but is not a directory (check ORCHESJOB_HOME)" % path)
    if st.st_uid != os.geteuid() and not st.st_mode & 0o077:
        warn("%s belongs to another user (uid %d); its jobs and logs are theirs, not yours" % (path, st.st_uid))
    elif st.st_mode & 0o077:
        if st.st_uid == os.geteuid():
            try:
                os.chmod(path, 0o700)
                warn("tightened permissions of %s from %o to 700" % (path, st.st_mode & 0o777))
            except OSError:
                warn("%s is readable by other users (mode %o); it holds job commands and logs" % (path, st.st_mode & 0o777))
        else:
            warn("%s belongs to another user and has mode %o; its jobs and logs are not private"
                 % (path, st.st_mode & 0o777))
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise _state_error("state directory %s is not writable by this user" % path)
    return True


def prepare(create: bool) -> Optional[str]:
    """Return the database path, creating the state directory (and logs/) when `create` is set.

    Read-only commands pass create=False: they answer "not found" on a host that never ran a job rather than
    creating files as a side effect.
    """
    root = state_dir()
    if not _private_dir(root, create):
        return None
    _private_dir(os.path.join(root, LOGS), create)
    return os.path.join(root, DB_NAME)


def logs_dir() -> str:
    return os.path.join(state_dir(), LOGS)


def create_private_file(path: str) -> None:
    """Create `path` as 0600 if it does not exist yet (SQLite copies the mode to its -wal and -shm files)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as e:
        raise _state_error("cannot create %s: %s" % (path, e.strerror or e)) from None
    os.close(fd)


def warn(message: str) -> None:
    """A warning for people; never on stdout, which belongs to the JSON."""
    try:
        sys.stderr.write("orchesjob: warning: %s\n" % message)
    except (OSError, ValueError):
        pass
