"""File modes of the state directory, and commands run as argv lists, never through a shell."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import (
    Result,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    parse_json,
    run_cli,
    wait_pids_gone,
)

pytestmark = pytest.mark.timeout(120)


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_state_dir_0700_and_files_0600_whatever_the_umask(home, open_umask, start_job):
    j = start_job("modes", "sh", "-c", "echo out; echo err >&2; sleep 300")
    # while the job runs the database's -wal/-shm files exist too
    assert _mode(home) == 0o700
    assert _mode(home / "logs") == 0o700
    for name in ("orchesjob.db", "orchesjob.db-wal", "orchesjob.db-shm"):
        p = home / name
        if p.exists():
            assert _mode(p) == 0o600, name
    assert _mode(j["stdout_file"]) == 0o600
    assert _mode(j["stderr_file"]) == 0o600
    for p in (home / "logs").iterdir():
        assert _mode(p) == 0o600, p


def test_finished_job_files_are_0600(home, open_umask, start_job):
    j = start_job("modes2", "sh", "-c", "echo out; exit 4", opts=("--sync",))
    wait_pids_gone([j["worker_pid"]])
    assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
    assert _mode(home / "orchesjob.db") == 0o600
    for p in list((home / "logs").iterdir()):
        assert _mode(p) == 0o600, p


@pytest.mark.parametrize("which", ["home", "logs"])
def test_existing_wide_state_dir_is_tightened_or_warned(home, run, which):
    (home / "logs").mkdir(parents=True)
    target = home if which == "home" else home / "logs"
    os.chmod(str(home), 0o700)
    os.chmod(str(target), 0o755)
    r = run("start", "--run-key", "wide", "--sync", "--", "true")
    assert r.code == 0, r
    assert "Traceback" not in r.err
    tightened = _mode(target) == 0o700
    warned = "warning" in r.err.lower() and str(target) in r.err
    assert tightened or warned, "mode %o and stderr %r" % (_mode(target), r.err)
    assert r.json is not None and r.json["status"] == "SUCCEEDED"  # a warning never goes to stdout


def test_created_state_dir_parents(tmp_path):
    h = tmp_path / "a" / "b" / "ojhome"
    j = check_ok(run_cli(h, "start", "--run-key", "deep", "--sync", "--", "true"))
    assert j["status"] == "SUCCEEDED" and _mode(h) == 0o700


# -- the state directory and everything in it belong to the caller; links in it are never followed ------------------
NOBODY = 65534


def _who(uid):
    import pwd

    return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)


def _as_nobody(argv):
    python = shutil.which("python3", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not python or not setpriv:
        pytest.skip("setpriv and /usr/bin/python3 are needed to act as another user")
    return [setpriv, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", python] + argv[1:]


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to act as two users")


@pytest.fixture
def reachable(tmp_path, as_root):
    """A directory other users can traverse (pytest's temporary directories are private to root)."""
    base = Path(os.path.realpath(str(tmp_path)))
    for parent in [base] + list(base.parents):
        if parent == Path("/"):
            break
        os.chmod(str(parent), os.stat(str(parent)).st_mode | 0o111)
    return base


def _tree(path):
    """Every entry under `path` (links not followed) with its type, owner, mode and content."""
    out = {}
    for p in [path] + sorted(path.rglob("*")):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode):
            content = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(str(p))
        else:
            content = None
        out[str(p.relative_to(path))] = (stat.S_IFMT(st.st_mode), st.st_uid, stat.S_IMODE(st.st_mode), content)
    return out


def _settled_state_dir(home, key="first"):
    """A real state directory with one finished job whose supervisor is gone (so nothing changes in it after)."""
    j = check_ok(run_cli(home, "start", "--run-key", key, "--sync", "--", "true"))
    wait_pids_gone([j["worker_pid"]])


def _refused(r, path, uid):
    err = check_error(r, 1, "state_dir")
    assert str(path) in err["message"], err
    assert _who(uid) in err["message"], err
    return err["message"]


READ = ("status", "--running")
WRITE = ("start", "--run-key", "k", "--sync", "--", "true")


@pytest.mark.parametrize("args", [WRITE, READ], ids=["start", "status"])
@pytest.mark.parametrize("mode", [0o777, 0o755, 0o700], ids=["0777", "0755", "0700"])
def test_state_dir_of_another_user_is_refused_and_left_alone(as_root, home, run, args, mode):
    """root with an ORCHESJOB_HOME that belongs to nobody (a pre-created /tmp path): its owner could plant links
    or a database there, so nothing is created, chmodded or read in it."""
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "theirs.stdout").write_text("theirs")
    for p in (home, home / "logs", home / "logs" / "theirs.stdout"):
        os.chown(str(p), NOBODY, NOBODY)
    os.chmod(str(home / "logs"), 0o777)
    os.chmod(str(home), mode)
    before = _tree(home)
    r = run(*args)
    assert _tree(home) == before
    message = _refused(r, home, NOBODY)
    assert "ORCHESJOB_HOME" in message


@pytest.mark.parametrize("args", [WRITE, READ], ids=["start", "status"])
def test_state_dir_of_root_is_refused_to_another_user(reachable, args):
    """The same from the other side: nobody running orchesjob with root's state directory."""
    home = reachable / "roots"
    _settled_state_dir(home)
    os.chmod(str(home), 0o755)  # so that nobody gets as far as reading it
    os.chmod(str(home / "logs"), 0o755)
    before = _tree(home)
    p = subprocess.run(
        _as_nobody(cli_argv(*args)),
        env=cli_env(home),
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    out, err = p.stdout.decode(), p.stderr.decode()
    assert _tree(home) == before
    _refused(Result(p.returncode, parse_json(out), out, err), home, 0)


@pytest.mark.parametrize("args", [WRITE, READ], ids=["start", "status"])
def test_logs_planted_as_a_link_is_refused_and_its_target_untouched(as_root, home, run, tmp_path, args):
    """A state directory of our own whose logs/ is a link to a directory elsewhere: the target is neither
    tightened (chmod) nor written into."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file").write_text("precious")
    os.chmod(str(elsewhere), 0o755)
    home.mkdir(mode=0o700)
    os.symlink(str(elsewhere), str(home / "logs"))
    os.lchown(str(home / "logs"), NOBODY, NOBODY)
    before = _tree(elsewhere)
    r = run(*args)
    assert _mode(elsewhere) == 0o755
    assert _tree(elsewhere) == before
    assert sorted(os.listdir(str(home))) == ["logs"]
    message = _refused(r, home / "logs", NOBODY)
    assert "link" in message


@pytest.mark.parametrize("args", [WRITE, READ], ids=["start", "status"])
@pytest.mark.parametrize("plant", ["link", "dangling-link", "wal-link", "theirs"])
def test_database_planted_as_a_link_or_by_another_user_is_refused(as_root, home, run, tmp_path, args, plant):
    """orchesjob.db (or its -wal) as a link to a file elsewhere, or a database file owned by another user: refused
    before SQLite opens, creates or writes anything through it."""
    _settled_state_dir(home)
    db = home / "orchesjob.db"
    target = tmp_path / "target"
    if plant == "theirs":
        os.chown(str(db), NOBODY, NOBODY)
        owner, culprit = NOBODY, db
    else:
        culprit = home / ("orchesjob.db-wal" if plant == "wal-link" else "orchesjob.db")
        if plant != "wal-link":
            db.unlink()
        if plant != "dangling-link":
            target.write_bytes(b"")  # SQLite would happily turn an empty file into a database
            os.chmod(str(target), 0o644)
        os.symlink(str(target), str(culprit))
        owner = 0
    before_target = _tree(tmp_path / "target") if target.exists() else None
    before = _tree(home)
    r = run(*args)
    if plant == "dangling-link":
        assert not os.path.lexists(str(target))
    elif plant != "theirs":
        assert _mode(target) == 0o644 and target.read_bytes() == b"" and _tree(target) == before_target
    assert _tree(home) == before
    _refused(r, culprit, owner)


@pytest.mark.parametrize("args", [WRITE, READ], ids=["start", "status"])
def test_orchesjob_home_as_a_link_is_refused(home, tmp_path, args):
    _settled_state_dir(home)
    link = tmp_path / "link-to-home"
    os.symlink(str(home), str(link))
    before = _tree(home)
    r = run_cli(link, *args)
    assert _tree(home) == before
    message = _refused(r, link, os.geteuid())
    assert "point ORCHESJOB_HOME at the real directory" in message


def test_links_among_the_parents_of_the_state_dir_are_fine(tmp_path):
    """Only the state directory itself and what is inside it must not be links; its parents may be (/var/run)."""
    (tmp_path / "real").mkdir()
    os.symlink(str(tmp_path / "real"), str(tmp_path / "parent-link"))
    h = tmp_path / "parent-link" / "ojhome"
    j = check_ok(run_cli(h, "start", "--run-key", "p", "--sync", "--", "true"))
    assert j["status"] == "SUCCEEDED"
    assert check_ok(run_cli(h, "status", "--run-key", "p"))["job_id"] == j["job_id"]
    assert (tmp_path / "real" / "ojhome" / "orchesjob.db").is_file()


def test_a_wide_database_of_our_own_is_tightened_by_a_command_that_writes(home, run):
    """A reading command changes nothing, permissions included (it warns); the next writing command tightens."""
    check_ok(run("start", "--run-key", "w", "--sync", "--", "true"))
    os.chmod(str(home / "orchesjob.db"), 0o644)
    r = run("status", "--run-key", "w")
    assert check_ok(r)["status"] == "SUCCEEDED"
    assert _mode(home / "orchesjob.db") == 0o644
    assert "readable by other users" in r.err and str(home / "orchesjob.db") in r.err
    w = run("start", "--run-key", "w2", "--sync", "--", "true")
    assert check_ok(w)["status"] == "SUCCEEDED"
    assert _mode(home / "orchesjob.db") == 0o600
    assert "tightened" in w.err and str(home / "orchesjob.db") in w.err


# Files created per job (logs/<job-id>.stdout/.stderr, the result's tmp file) have random names a test cannot plant
# in advance, so home.open_new_private, which creates all of them, is tested on its own.
@pytest.fixture
def home_module():
    from orchesjob import home as home_module
    from orchesjob import jobs

    return home_module, jobs


@pytest.mark.parametrize("plant", ["link", "dangling-link", "file"])
@pytest.mark.parametrize("flags", ["append", "write"])
def test_open_new_private_never_opens_or_follows_what_is_there(home_module, tmp_path, plant, flags):
    home_mod, _ = home_module
    target = tmp_path / "target"
    path = tmp_path / "new"
    if plant == "file":
        path.write_text("precious")
        os.chmod(str(path), 0o644)
        target = path
    else:
        if plant == "link":
            target.write_text("precious")
            os.chmod(str(target), 0o644)
        os.symlink(str(target), str(path))
    with pytest.raises(OSError):
        home_mod.open_new_private(str(path), os.O_WRONLY | (os.O_APPEND if flags == "append" else 0))
    if plant == "dangling-link":
        assert not os.path.lexists(str(target))
    else:
        assert target.read_text() == "precious" and _mode(target) == 0o644


def test_open_new_private_creates_a_0600_file(home_module, tmp_path, open_umask):
    home_mod, _ = home_module
    path = tmp_path / "new"
    fd = home_mod.open_new_private(str(path), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" and _mode(path) == 0o600


def test_result_tmp_file_planted_as_a_link_is_not_followed(home_module, tmp_path):
    _, jobs = home_module
    logs = tmp_path / "logs"
    logs.mkdir()
    job = {"job_id": "j", "stdout_file": str(logs / "j.stdout"), "stderr_file": str(logs / "j.stderr")}
    target = tmp_path / "target"
    target.write_text("precious")
    os.chmod(str(target), 0o644)
    tmp = "%s.tmp.%d" % (jobs.result_path(job), os.getpid())
    os.symlink(str(target), tmp)
    try:
        jobs.write_result_file(job, {"exit_code": 0})
        raised = False
    except OSError:
        raised = True
    assert target.read_text() == "precious" and _mode(target) == 0o644
    assert raised and not os.path.lexists(jobs.result_path(job))
    os.unlink(tmp)
    jobs.write_result_file(job, {"exit_code": 0})  # and without the link it works
    assert jobs.read_result_file(job) == {"exit_code": 0}
    assert _mode(jobs.result_path(job)) == 0o600


# -- argv, never a shell ----------------------------------------------------------------------------------------------
def _stdout(job):
    with open(job["stdout_file"]) as f:
        return f.read()


def test_command_substitution_is_not_expanded(start_job):
    j = start_job("shell1", "echo", "$(id)", opts=("--sync",))
    assert j["command"] == ["echo", "$(id)"]
    assert _stdout(j) == "$(id)\n"


def test_shell_metacharacters_are_passed_literally(start_job, tmp_path):
    canary = tmp_path / "canary"
    args = ["a; touch %s" % canary, "|", "cat", "&&", "`id`", "$HOME", "*", ">", str(canary), "'\"", "\\n"]
    j = start_job("shell2", "echo", *args, opts=("--sync",))
    assert j["command"] == ["echo"] + args
    assert _stdout(j) == " ".join(args) + "\n"
    assert not canary.exists()


def test_arguments_with_newlines_and_unicode(start_job):
    args = ["line1\nline2", "ümlaut ジョブ", "", "  spaced  "]
    j = start_job("shell3", "printf", "[%s]", *args, opts=("--sync",))
    assert j["command"] == ["printf", "[%s]"] + args
    assert _stdout(j) == "".join("[%s]" % a for a in args)


def test_run_key_with_shell_metacharacters_is_just_a_key(start_job, ok):
    key = "k'; touch /tmp/x $(id) | cat"
    j = start_job(key, "true", opts=("--sync",))
    assert j["run_key"] == key
    assert ok("status", "--run-key", key)["job_id"] == j["job_id"]
    assert ok("status", "--run-key", key, "--all")[0]["run_key"] == key
