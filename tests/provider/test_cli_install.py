"""Hosts that need nothing installed: the provider uploads its own CLI, against a real sshd and real accounts.

Every test logs in as a fresh account (``tests.support.host_users``): no CLI on its PATH, no ``~/.cache``, the
machine's ``/usr/bin/python3``. The account's PATH is its own (``HOST_PATH``, set in ``~/.ssh/environment``), not
sshd's default with /usr/local/bin, so an ``orchesjob`` this machine has there does not count (a test proves it).
What is checked is what the host ends up with (files, owners, modes, hashes) and what the hook reports, never our own
bookkeeping alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider.cli_pack import packed_cli
from orchesjob_provider.exceptions import (
    OrchesjobCliInstallError,
    OrchesjobCliMissing,
    OrchesjobIncompatibleCli,
    OrchesjobNoPython,
    OrchesjobTransportError,
    OrchesjobUnsafeCache,
)
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook, cli_settings_from_connection
from tests.support.airflow_sandbox import REPO_ROOT
from tests.support.host_users import HOST_PATH, HostUser, can_make_users, multiuser_sshd, stop_multiuser_sshd
from tests.support.operator_unit import context, drive
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs
from tests.support.sshd import SshServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd, pytest.mark.airflow]

CONN_ID = "orchesjob_fresh_host"
# the file of compiled code's tag for the hosts' /usr/bin/python3 (sys.implementation.cache_tag)
HOST_CACHE_TAG = subprocess.run(
    ["/usr/bin/python3", "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True, text=True
).stdout.strip()


@pytest.fixture(scope="module")
def hosts_sshd() -> Iterator[SshServer]:
    """One sshd for every account of this module. Not starting it fails the tests: they are about it."""
    why = can_make_users()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the zero-install tests need host accounts: {why}", pytrace=False)
        pytest.skip(f"the zero-install tests need host accounts: {why}")
    server = multiuser_sshd()
    try:
        yield server
    finally:
        stop_multiuser_sshd(server)


@pytest.fixture
def user(hosts_sshd: SshServer) -> Iterator[HostUser]:
    account = HostUser()
    try:
        yield account
    finally:
        account.remove()


@pytest.fixture
def conn(hosts_sshd: SshServer, user: HostUser, monkeypatch: pytest.MonkeyPatch):
    """``conn(**extras)`` makes the Airflow connection CONN_ID log in as the fresh account (extras as given)."""

    def make(**extra: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(user.connection(hosts_sshd, **extra)))
        return CONN_ID

    make()
    return make


def new_hook(**kwargs: Any) -> OrchesjobHook:
    kwargs.setdefault("retry_backoff", 0.1)
    return OrchesjobHook(CONN_ID, ssh_hook_kwargs=fast_ssh_hook_kwargs(), **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_files() -> list[str]:
    """What a cache holds once the CLI was uploaded and run: the file, and the code compiled from it beside it."""
    return sorted([packed_cli().filename, f"{packed_cli().filename}.{HOST_CACHE_TAG}.codes"])


def leftovers(user: HostUser) -> list[str]:
    """Temporary uploads and locks left in the cache (there must be none once the installs returned)."""
    return sorted(p.name for p in user.cache_dir.iterdir() if p.name.endswith((".part", ".lock")))


def test_a_fresh_account_gets_the_cli_uploaded_then_reuses_it(conn, user: HostUser) -> None:
    packed = packed_cli()
    cached = user.cache_dir / packed.filename
    with new_hook() as hook:
        info = hook.version()
        assert info["origin"] == "uploaded" and info["contract"] == CONTRACT_VERSION
        assert info["path"] == str(cached)  # the CLI itself says it runs from the cache
        assert hook.settings.orchesjob_bin == ["/usr/bin/python3", str(cached)]
        job = hook.start("fresh", ["sh", "-c", "id -un"], sync=True)
        assert job["status"] == "SUCCEEDED"
        assert hook.logs(job_id=job["job_id"])["data"] == f"{user.name}\n"
    assert sha256(cached) == packed.sha256
    st, dir_st = cached.stat(), user.cache_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o500)
    assert (dir_st.st_uid, stat.S_IMODE(dir_st.st_mode)) == (user.uid, 0o700)
    assert leftovers(user) == []
    # beside it, the host's interpreter keeps the CLI compiled (orchesjob/codeload.py): the account's, private, and
    # made from the very bytes the launcher verified
    codes = user.cache_dir / f"{packed.filename}.{HOST_CACHE_TAG}.codes"
    codes_st = codes.stat()
    assert (codes_st.st_uid, stat.S_IMODE(codes_st.st_mode)) == (user.uid, 0o600)
    assert codes.read_bytes()[4:36] == bytes.fromhex(packed.sha256)
    assert sorted(p.name for p in user.cache_dir.iterdir()) == cached_files()
    inode = st.st_ino

    with new_hook() as again:
        assert again.version()["origin"] == "cached"
        assert again.settings.cli_info() == {
            "path": str(cached),
            "version": packed.version,
            "python": "/usr/bin/python3",
            "origin": "cached",
            "argv": ["/usr/bin/python3", str(cached)],
            "sha256": packed.sha256,  # what every call verifies before it runs the file
        }
    assert cached.stat().st_ino == inode  # used as it was, not uploaded again


SYSTEM_CLI = Path("/usr/local/bin/orchesjob")


@pytest.fixture
def unusable_system_cli() -> Iterator[bool]:
    """An ``orchesjob`` in /usr/local/bin that a plain account cannot use: it exits 126 as a link into a root-only
    venv does for such an account (when the shell finds it by PATH, dash says 127 for that, bash 126; this one
    answers 126 under any shell). Yields whether this test made it.

    The file is seen by the whole machine while it exists, so it lives for this one test only and is removed
    afterwards whatever happened (only the file made here: one that was there before is neither made nor touched).
    """
    if os.path.lexists(SYSTEM_CLI):
        yield False  # this machine has one already: the case is there as it is
        return
    if not SYSTEM_CLI.parent.is_dir():
        pytest.skip(f"{SYSTEM_CLI.parent} does not exist here")
    script = b'#!/bin/sh\necho "orchesjob: /root/venv/bin/orchesjob: Permission denied" >&2\nexit 126\n'
    try:
        fd = os.open(SYSTEM_CLI, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    except FileExistsError:  # one appeared meanwhile: the case is there, and nothing here is ours to remove
        yield False
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(script)
            made = os.fstat(f.fileno())
        os.chmod(SYSTEM_CLI, 0o755)  # whatever the umask took away
        yield True
    finally:
        try:
            now = os.lstat(SYSTEM_CLI)
        except FileNotFoundError:
            pass
        else:
            if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
                SYSTEM_CLI.unlink()


def test_an_orchesjob_in_usr_local_bin_does_not_stop_the_upload(
    conn, user: HostUser, monkeypatch: pytest.MonkeyPatch, unusable_system_cli: bool
) -> None:
    """The zero-install tests and bench do not depend on this machine having no ``orchesjob``: with one in
    /usr/local/bin that the account cannot run, the account's own PATH (``HOST_PATH``, without /usr/local/bin) finds
    none, so the provider uploads its CLI and runs a job with it; so does the bench's first contact."""
    assert user.path.split(":") == list(HOST_PATH) and "/usr/local/bin" not in HOST_PATH
    if unusable_system_cli:  # with sshd's default PATH the account would meet it (exit 126: never shadowed)
        met = user.run("/bin/sh", "-c", "PATH=/usr/local/bin:/usr/bin:/bin; orchesjob version")
        assert met.returncode == 126, (met.returncode, met.stderr)
    packed = packed_cli()
    cached = user.cache_dir / packed.filename
    with new_hook() as hook:
        info = hook.version()
        assert (info["origin"], info["path"]) == ("uploaded", str(cached))
        job = hook.start("despite-usr-local-bin", ["sh", "-c", "id -un"], sync=True)
        assert job["status"] == "SUCCEEDED"
        assert hook.logs(job_id=job["job_id"])["data"] == f"{user.name}\n"
    assert sha256(cached) == packed.sha256

    # The zero-install bench's host (a private sshd, this user, PATH set by SetEnv) has no CLI either: its first
    # contact uploads (it asserts that itself) and the figures come out.
    # bench/ is a folder of scripts, not a package: load the script from its file.
    spec = importlib.util.spec_from_file_location("cli_install_bench", REPO_ROOT / "bench" / "cli_install_bench.py")
    assert spec is not None and spec.loader is not None
    cli_install_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_install_bench)
    monkeypatch.setenv(f"AIRFLOW_CONN_{cli_install_bench.CONN_ID.upper()}", "")  # the bench sets it: put back after
    figures = cli_install_bench.measure(runs=1, calls=1)
    assert figures["cli_install_first_contact_s"] > 0 and figures["cli_install_upload_bytes"] == len(packed.data)


def test_a_tampered_cache_file_is_replaced(conn, user: HostUser) -> None:
    packed = packed_cli()
    cached = user.cache_dir / packed.filename
    with new_hook() as hook:
        hook.version()
    cached.chmod(0o700)
    with open(cached, "ab") as f:
        f.write(b"\n# tampered\n")
    cached.chmod(0o500)
    assert sha256(cached) != packed.sha256
    with new_hook() as hook:
        assert hook.version()["origin"] == "uploaded"
        assert hook.start("after-tamper", ["true"], sync=True)["status"] == "SUCCEEDED"
    assert sha256(cached) == packed.sha256 and cached.stat().st_uid == user.uid
    assert leftovers(user) == []


@pytest.mark.parametrize("problem", ["other owner", "group-writable", "symbolic link"])
def test_an_unsafe_cache_directory_is_refused(conn, user: HostUser, problem: str, tmp_path: Path) -> None:
    cache_parent = user.cache_dir.parent
    cache_parent.mkdir(mode=0o700)
    user.give(cache_parent)
    if problem == "other owner":
        user.cache_dir.mkdir(mode=0o755)  # root's, as root makes it here
        expected = "belongs to uid 0"
    elif problem == "group-writable":
        user.cache_dir.mkdir()
        user.give(user.cache_dir, 0o775)
        expected = "is writable by group or others (mode 775)"
    else:
        target = tmp_path / "elsewhere"
        target.mkdir()
        user.give(target, 0o700)
        user.cache_dir.symlink_to(target)
        os.lchown(user.cache_dir, user.uid, user.gid)
        expected = "is a symbolic link"
    with new_hook() as hook:
        with pytest.raises(OrchesjobUnsafeCache) as refused:
            hook.version()
    assert f"{user.cache_dir} {expected}" in str(refused.value)
    assert "Fix its owner and mode" in str(refused.value)
    assert not list(user.cache_dir.glob("*.pyz"))  # nothing was written into it


def test_a_foreign_file_in_the_cache_is_refused(conn, user: HostUser) -> None:
    with new_hook() as hook:
        hook.version()
    cached = user.cache_dir / packed_cli().filename
    os.chown(cached, 65534, 65534)  # nobody's now: its content may still be right, but nobody else's file runs
    with new_hook() as hook:
        with pytest.raises(OrchesjobUnsafeCache, match=f"{cached} belongs to uid 65534"):
            hook.version()


def test_a_home_without_room_for_a_cache_is_an_error_and_stale_uploads_are_swept(conn, user: HostUser) -> None:
    os.chown(user.home, 0, 0)  # the account can no longer create ~/.cache
    user.home.chmod(0o755)  # but still reads its ~/.ssh/environment (its PATH), whatever mode useradd gave the home
    with new_hook() as hook:
        with pytest.raises(OrchesjobCliInstallError) as failed:
            hook.version()
    assert f"{user.home / '.cache'} cannot be created: Permission denied" in str(failed.value)
    assert "writable home" in str(failed.value)

    user.give(user.home)
    user.cache_dir.mkdir(parents=True)
    stale, fresh = user.cache_dir / ".orchesjob-0.0.0-dead.pyz.abc.part", user.cache_dir / ".other.pyz.def.part"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in progress")
    # and the same for the compiled code a first run writes beside the file (orchesjob/codebuild.py)
    stale_codes = user.cache_dir / "orchesjob-0.0.0-dead.pyz.cpython-311.codes.new-4242-0a1b2c3d"
    fresh_codes = user.cache_dir / "orchesjob-0.0.0-dead.pyz.cpython-311.codes.new-4343-0a1b2c3d"
    stale_codes.write_bytes(b"half the code")
    fresh_codes.write_bytes(b"code being written")
    for old in (stale, stale_codes):
        os.utime(old, (time.time() - 600, time.time() - 600))
    user.give(user.home / ".cache")
    user.cache_dir.chmod(0o700)
    with new_hook() as hook:
        assert hook.version()["origin"] == "uploaded"
    assert not stale.exists() and fresh.exists()  # a dead install's leftover goes, a running one's stays
    assert not stale_codes.exists() and fresh_codes.exists()


def test_a_host_without_sftp_is_told_so_without_retries(user: HostUser, monkeypatch: pytest.MonkeyPatch) -> None:
    server = multiuser_sshd(sftp=False)
    try:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(user.connection(server)))
        with new_hook(retry_backoff=5.0) as hook:
            started = time.monotonic()
            with pytest.raises(OrchesjobTransportError, match="offers no SFTP") as refused:
                hook.version()
        assert refused.value.transient is False and time.monotonic() - started < 5  # not retried
        assert leftovers(user) == []  # the lock was given back
    finally:
        stop_multiuser_sshd(server)


def test_a_host_without_python_39_gets_a_clear_error(conn, user: HostUser) -> None:
    """An interpreter that reports 3.8 (a real /usr/bin/python3 whose ``sys.version_info`` is set by a
    sitecustomize, so the host script really runs on it and really refuses it)."""
    fake = user.home / "py38"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 8, 10, 'final', 0)\n")
    (fake / "python").write_text(f'#!/bin/sh\nPYTHONPATH={fake} exec /usr/bin/python3 "$@"\n')
    user.give(fake)
    (fake / "python").chmod(0o755)
    with new_hook(orchesjob_python=str(fake / "python")) as hook:
        with pytest.raises(OrchesjobNoPython) as old:
            hook.version()
    message = str(old.value)
    assert f"found only {fake / 'python'} (3.8.10)" in message and "orchesjob_python" in message

    marker = Path("/tmp") / f"orchesjob-pwned-{user.name}"
    hostile = f"/nowhere/$(touch {marker})"
    conn(orchesjob_python=hostile)  # from the connection's extra, as a deployment would set it
    with pytest.raises(ValueError, match="cannot go on the SSH command line"):
        cli_settings_from_connection(CONN_ID, None, None)  # refused before anything connects
    with new_hook(orchesjob_python="/nowhere/python3") as hook:
        with pytest.raises(OrchesjobNoPython, match="none of /nowhere/python3"):
            hook.version()
    assert not marker.exists()


def test_an_incompatible_cli_on_the_path_is_refused_not_shadowed(conn, user: HostUser) -> None:
    bin_dir = user.home / "bin"
    bin_dir.mkdir()
    (bin_dir / "orchesjob").write_text('#!/bin/sh\necho \'{"version": "9.0.0", "contract": 99}\'\n')
    user.give(bin_dir)
    (bin_dir / "orchesjob").chmod(0o755)
    user.set_path(str(bin_dir))
    with new_hook() as hook:
        with pytest.raises(OrchesjobIncompatibleCli, match="contract 99"):
            hook.version()
    assert not user.cache_dir.exists()  # no upload beside it


def test_a_compatible_cli_on_the_path_is_used_unless_always(conn, user: HostUser) -> None:
    bin_dir = user.home / "bin"
    bin_dir.mkdir()
    (bin_dir / "orchesjob").write_bytes(packed_cli().data)  # the zipapp as a pipx-like CLI on the PATH
    user.give(bin_dir)
    (bin_dir / "orchesjob").chmod(0o755)
    user.set_path(str(bin_dir))
    with new_hook() as hook:
        info = hook.version()
        assert (info["origin"], info["path"], hook.settings.orchesjob_bin) == (
            "host",
            str(bin_dir / "orchesjob"),
            "orchesjob",
        )
    assert not user.cache_dir.exists()
    with new_hook(install_cli="always") as hook:
        info = hook.version()
        assert info["origin"] == "uploaded" and info["path"] == str(user.cache_dir / packed_cli().filename)


def test_a_named_cli_that_is_missing_is_an_error_not_an_upload(conn, user: HostUser) -> None:
    with new_hook(orchesjob_bin="~/nowhere/orchesjob") as hook:
        with pytest.raises(OrchesjobCliMissing, match="could not be run"):
            hook.version()
    conn(install_cli="never")
    with new_hook(**cli_settings_from_connection(CONN_ID, None, None).hook_kwargs()) as hook:
        with pytest.raises(OrchesjobCliMissing, match="install_cli 'auto'"):
            hook.status(run_key="k")
    assert not user.cache_dir.exists()
    with pytest.raises(ValueError, match="install_cli='always'"):
        cli_settings_from_connection(CONN_ID, "/opt/orchesjob", None, "always")
    with pytest.raises(ValueError, match="never uploads"):
        OrchesjobAsyncHook(CONN_ID, install_cli="always")


def test_fifty_concurrent_first_contacts_upload_at_most_a_few_copies(conn, user: HostUser) -> None:
    hooks = [new_hook(retries=5) for _ in range(50)]
    barrier = threading.Barrier(len(hooks))
    results: list[Any] = [None] * len(hooks)

    def contact(i: int) -> None:
        barrier.wait()
        try:
            results[i] = (hooks[i].version()["origin"], hooks[i].settings.orchesjob_bin)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=contact, args=(i,)) for i in range(len(hooks))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    elapsed = time.monotonic() - started
    for h in hooks:
        h.close()
    failures = [r for r in results if not isinstance(r, tuple)]
    assert not failures, failures[:3]
    origins = [r[0] for r in results]
    uploads = origins.count("uploaded")
    assert 1 <= uploads <= 3, origins
    assert {json.dumps(r[1]) for r in results} == {
        json.dumps(["/usr/bin/python3", str(user.cache_dir / packed_cli().filename)])
    }
    # one file and one compiled copy, however many first calls compiled it at once, and no half-written one
    assert leftovers(user) == [] and sorted(p.name for p in user.cache_dir.iterdir()) == cached_files()
    print(f"50 first contacts: {uploads} upload(s), {elapsed:.1f}s")


def test_operator_and_sensor_hand_the_resolved_cli_to_the_trigger(conn, user: HostUser) -> None:
    from orchesjob_provider.compat import TaskDeferred
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

    cached = str(user.cache_dir / packed_cli().filename)
    gate = user.home / "gate"  # the job goes on once the task has deferred (a job already ended is not deferred)
    op = OrchesjobOperator(
        task_id="t",
        command=["sh", "-c", f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; echo ok"],
        ssh_conn_id=CONN_ID,
        run_key="zero-install",
        poll_interval=5,
    )
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["orchesjob_bin"] == ["/usr/bin/python3", cached]  # the triggerer runs exactly this
    assert kwargs["cli"]["origin"] == "uploaded" and kwargs["cli"]["argv"] == kwargs["orchesjob_bin"]
    gate.touch()
    result = drive(op, ctx, deferred.value)
    assert result["status"] == "SUCCEEDED"
    assert result["cli"] == {
        "path": cached,
        "version": packed_cli().version,
        "python": "/usr/bin/python3",
        "origin": "uploaded",
        "argv": ["/usr/bin/python3", cached],
        "sha256": packed_cli().sha256,
    }

    sensor = OrchesjobSensor(task_id="s", run_key="not-yet", ssh_conn_id=CONN_ID, timeout=60, poke_interval=1)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context())
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["orchesjob_bin"] == ["/usr/bin/python3", cached] and kwargs["cli"]["origin"] == "cached"

    done = OrchesjobSensor(task_id="s2", run_key="zero-install", ssh_conn_id=CONN_ID, timeout=60, poke_interval=1)
    job = done.execute(context())  # that job already SUCCEEDED: no deferral, and the XCom says which CLI answered
    assert job["job_id"] == result["job_id"] and job["cli"]["path"] == cached and job["cli"]["origin"] == "cached"


def test_an_example_dag_runs_on_a_host_with_nothing_installed(
    hosts_sshd: SshServer, user: HostUser, tmp_path: Path
) -> None:
    """``airflow dags test`` of a shipped example, with no orchesjob_bin in the DAG, its settings or the connection:
    the host account has no CLI, the task uploads one, and the log and XCom say which CLI ran the job."""
    from tests.support.airflow_sandbox import AirflowSandbox

    workdir = user.home / "work"
    sandbox = AirflowSandbox(
        tmp_path / "airflow",
        python=sys.executable,
        connections={"orchesjob_ssh": user.connection(hosts_sshd)},
        example_workdir=str(workdir),
    )
    sandbox.setup()
    run = sandbox.dags_test("example_orchesjob_basic", "2026-01-01")
    assert run.returncode == 0, run.describe()
    assert sandbox.task_states("example_orchesjob_basic") == {"backup": "success"}, run.describe()
    cached = str(user.cache_dir / packed_cli().filename)
    assert f"Using orchesjob {packed_cli().version} at {cached} (uploaded by this task" in run.output
    assert "copying part 3" in run.output  # the job's output, streamed by the trigger running the uploaded CLI
    xcom = sandbox.xcom("example_orchesjob_basic", "backup")
    assert xcom["status"] == "SUCCEEDED" and xcom["cli"]["origin"] == "uploaded" and xcom["cli"]["path"] == cached
    assert (workdir / "basic.runs").read_text() == "backup ran for 2026-01-01\n"
    assert (workdir / "basic.runs").stat().st_uid == user.uid


def test_a_killed_worker_s_retry_reattaches_through_the_uploaded_cli(
    hosts_sshd: SshServer, user: HostUser, tmp_path: Path
) -> None:
    """The demo's scenario on a host account with nothing installed: try 1 uploads the CLI and starts the job, Airflow
    is killed mid-job, try 2 (the same task instance) finds the cached CLI and reattaches: one execution."""
    import airflow

    from tests.support.airflow_sandbox import AirflowSandbox

    dag, date = "example_orchesjob_retry", "2026-01-01"
    workdir = user.home / "work"
    runs = workdir / "retry.runs"
    sandbox = AirflowSandbox(
        tmp_path / "airflow",
        python=sys.executable,
        connections={"orchesjob_ssh": user.connection(hosts_sshd)},
        example_workdir=str(workdir),
        extra_env={"ORCHESJOB_EXAMPLE_STEPS": "15"},
    )
    sandbox.setup()
    first = sandbox.start_dags_test(dag, date)
    try:
        assert first.wait_for_output("[stdout] imported batch 1", timeout=120), first.output()[-4000:]
        assert "(uploaded by this task" in first.output()
    finally:
        first.kill_group()  # kill -9 of the whole worker, mid-job
    # the same task instance again (as tests.support.airflow_case.AirflowCase.run_task_again does per version)
    if int(airflow.__version__.split(".")[0]) >= 3:
        second = sandbox.tasks_test(dag, "import", sandbox.run_id(dag) or "")
    else:
        second = sandbox.dags_test(dag, date)
    assert second.returncode == 0, second.describe()
    assert "(uploaded earlier, sha256 verified" in second.output
    # The retry finds the job running (reattaches and shows the rest of its output) or, on a machine slow enough
    # that the retry's own start-up outlasts the job, already SUCCEEDED (adopts its result): never a new run.
    if "Reattached to job" in second.output:
        assert "imported batch 15" in second.output
    else:
        assert "Adopted the result of job" in second.output and "already ended as SUCCEEDED" in second.output
    assert len(runs.read_text().splitlines()) == 1  # one execution, through the uploaded CLI
    assert sorted(p.name for p in user.cache_dir.iterdir()) == cached_files()


def test_bad_install_settings_fail_the_dag_parse() -> None:
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

    with pytest.raises(ValueError, match="install_cli must be one of auto, never, always; got 'sometimes'"):
        OrchesjobOperator(task_id="t", command=["true"], install_cli="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="contradicts it"):
        OrchesjobSensor(task_id="s", run_key="k", install_cli="always", orchesjob_bin="/opt/orchesjob")
    with pytest.raises(ValueError, match="cannot go on the SSH command line"):
        OrchesjobHook(CONN_ID, orchesjob_python="/usr/bin/python3\x00")
