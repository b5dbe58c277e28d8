"""Running the provider's uploaded CLI so that only what was just verified runs: a launcher sent with every call.

The uploaded CLI is a file in the SSH user's cache (``~/.cache/orchesjob/orchesjob-VERSION-SHA.pyz``). It was
checked when it was put there, but a trigger runs it for hours afterwards; whoever could replace it meanwhile (a
member of a group that may write the home directory, say) would run their code as the SSH user. So no call runs the
file on the strength of an earlier check. Each call's command line is the host's interpreter with a fixed bootstrap,

    python3 -I -c 'import sys;exec(sys.stdin.buffer.raw.readline())'

(single quotes mean the same in sh, bash, zsh, fish, tcsh and csh, and the text inside holds none of the characters
any of them treats specially there), and the first line of stdin is this launcher, with the file's path and sha256
written into it. The launcher checks, right then, every directory from ``/`` down to the file (root's or the
user's, writable by nobody else: no group or other write bit, except a sticky world-writable one, or the user's own
private group), the file itself (a regular file of the user's, not writable by others) and its sha256, then runs the
CLI from it; the CLI reads the call's request from the next line of stdin. A check that fails answers one JSON error
(``unsafe_cli``, exit 1) and runs nothing. ``-I``: nothing from the working directory, the environment's PYTHON*
variables or the user's site-packages is imported before or instead of it.

The CLI then runs from code compiled from the file and kept beside it (orchesjob/codeload.py, whose text is sent
with the launcher): the digest of the bytes just verified is what that code must have been compiled from, so the
check covers it too.
"""

from __future__ import annotations

import functools

from . import cli_pack

BOOTSTRAP = "import sys;exec(sys.stdin.buffer.raw.readline())"

# Checks a directory chain and a file the way described above. Shared, as text, with the install script
# (cli_install.REMOTE_SCRIPT), so both judge the cache by one rule. It must parse on any Python 3.
CHAIN_CHECK = r'''
def oj_private_group(gid, uid):
    """Whether gid is the user's own group: their primary group, with no other member."""
    import grp, pwd
    try:
        me = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if me.pw_gid != gid or any(m != me.pw_name for m in group.gr_mem):
        return False
    return not any(p.pw_gid == gid and p.pw_uid != uid for p in pwd.getpwall())
def oj_chain_problem(path, uid, leaf="file"):
    """None when no one but root and the user can change what `path` (a "file" or a "dir") is; else where and why."""
    import os, stat
    real = os.path.realpath(path)
    parts = real.split("/")
    for i in range(1, len(parts) + 1):
        here = "/".join(parts[:i]) or "/"
        try:
            st = os.lstat(here)
        except OSError as e:
            return here, "cannot be looked at: %s" % e.strerror
        last = i == len(parts)
        if last and leaf == "file" and not stat.S_ISREG(st.st_mode):
            return here, "is not a regular file"
        if (not last or leaf == "dir") and not stat.S_ISDIR(st.st_mode):
            return here, "is not a directory"
        if st.st_uid not in ((uid,) if last and leaf == "file" else (0, uid)):
            return here, "belongs to uid %d, not to this user (uid %d)%s" % (st.st_uid, uid, "" if last else " or root")
        if st.st_mode & 0o002 and not (st.st_mode & stat.S_ISVTX and not last):
            return here, "is writable by others (mode %o)" % stat.S_IMODE(st.st_mode)
        if st.st_mode & 0o020 and not oj_private_group(st.st_gid, uid):
            return here, "is writable by its group gid %d (mode %o), which has other members" % (
                st.st_gid, stat.S_IMODE(st.st_mode))
    return None
'''

# The call itself. oj_archive_digest and oj_use_codes come from orchesjob/codeload.py, whose text is sent too: the
# bytes are hashed once, and their digest binds the compiled code beside the file to what was just verified.
_LAUNCH = r"""
def oj_launch(path, sha, verb):
    import os, sys
    def refuse(problem):
        import json
        message = "refusing to run the uploaded orchesjob CLI %s: %s" % (path, problem)
        sys.stdout.write(json.dumps({"error": "unsafe_cli", "message": message, "exit_code": 1}) + "\n")
        sys.stderr.write("orchesjob: " + message + "\n")
        sys.stdout.flush()
        os._exit(1)
    found = oj_chain_problem(path, os.getuid())
    if found:
        refuse("%s %s; whoever else can write there could make this call run their code" % found)
    data, digest = oj_archive_digest(path)
    got = digest.hex()
    if got != sha:
        refuse("its sha256 is %s, not the %s that was uploaded" % (got, sha))
    sys.argv = [path, verb, "--request", "-"]
    sys.path.insert(0, path)
    try:
        oj_use_codes(path, data, digest)
    except BaseException:
        pass
    from orchesjob.cli import main
    main()
oj_launch(@PATH@, @SHA@, @VERB@)
"""


@functools.lru_cache(maxsize=1)
def _launcher() -> str:
    return CHAIN_CHECK + cli_pack.package_text("codeload.py") + _LAUNCH


def launcher_line(path: str, sha256: str, verb: str) -> bytes:
    """The first line of stdin for one call of the uploaded CLI (see the module docstring)."""
    source = _launcher().replace("@PATH@", repr(path)).replace("@SHA@", repr(sha256)).replace("@VERB@", repr(verb))
    return ("exec(compile(%r, '<orchesjob launcher>', 'exec'))\n" % source).encode("utf-8")
