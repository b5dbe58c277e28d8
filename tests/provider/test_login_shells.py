"""Nothing of the user's on the SSH command line, whatever the login shell; no CLI shadowed; the uploaded CLI run only
as verified. Real sshd, real accounts whose login shell is sh, bash, zsh, fish or tcsh.

sshd runs a command through the account's login shell (`SHELL -c LINE`), so a value on that line is parsed by it:
each shell quotes differently (fish reads `\\` inside single quotes, tcsh expands `!` there), and `ps` shows the line
to every user of the host. Here every call is the CLI's path, the verb and `--request -`, with the values on stdin:
the tests send values each shell would mangle and check that the job got them byte for byte, and that no process
on the host shows any of them on its command line, but the job's own command.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider.cli_pack import packed_cli
from orchesjob_provider.exceptions import OrchesjobCliBroken, OrchesjobUnsafeCache
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook
from tests.support.cli import REPO_ROOT
from tests.support.host_users import HostUser, can_make_users, multiuser_sshd, stop_multiuser_sshd
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs
from tests.support.sshd import SshServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd, pytest.mark.airflow]

CONN_ID = "orchesjob_login_shell"
SHELLS = ["/bin/sh", "/bin/bash", "/usr/bin/zsh", "/usr/bin/fish", "/usr/bin/tcsh"]
# What each shell would read differently on a command line; fish: a trailing backslash inside single quotes, tcsh:
# history (`!#:$`, `!!`) and `$` even in quotes, all: quotes, command substitution, globs, newlines.
HOSTILE = [
    "ends-with-backslash\\",
    "next",
    "!#:$",
    "!!",
    "$(touch /tmp/oj-shell-pwned)",
    "`touch /tmp/oj-shell-pwned`",
    "a'b\"c",
    "* ? [x]",
    "line\nbreak",
    "~root",
    "%self",
    "ünï ✓",
]
ENV_SECRET = "s3cr3t-env-value\\!#:$"


def _need(shell: str) -> None:
    if not os.path.exists(shell):
        if os.environ.get("CI"):
            pytest.fail(f"{shell} is not installed (.ci/run installs zsh, fish and tcsh)")
        pytest.skip(f"{shell} is not installed")


@pytest.fixture(scope="module")
def hosts_sshd() -> Iterator[SshServer]:
    why = can_make_users()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the login-shell tests need host accounts: {why}", pytrace=False)
        pytest.skip(f"the login-shell tests need host accounts: {why}")
    server = multiuser_sshd()
    try:
        yield server
    finally:
        stop_multiuser_sshd(server)


def _account(server: SshServer, shell: str, monkeypatch: pytest.MonkeyPatch) -> HostUser:
    _need(shell)
    user = HostUser(shell=shell)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(user.connection(server)))
    return user


def _hook(**kwargs: Any) -> OrchesjobHook:
    return OrchesjobHook(CONN_ID, ssh_hook_kwargs=fast_ssh_hook_kwargs(), retry_backoff=0.1, **kwargs)


def _cmdlines_of(user: HostUser) -> dict[int, bytes]:
    out = {}
    for pid in user.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[pid] = f.read()
        except OSError:
            pass
    return out


def _installed_cli(user: HostUser) -> str:
    """This checkout's CLI as a zipapp the account owns, at ~/bin/orchesjob (an admin's pipx-like install)."""
    bin_dir = user.home / "bin"
    bin_dir.mkdir()
    (bin_dir / "orchesjob").write_bytes(packed_cli().data)
    user.give(bin_dir)
    (bin_dir / "orchesjob").chmod(0o755)
    return "~/bin/orchesjob"


@pytest.mark.parametrize("cli", ["uploaded", "installed"])
@pytest.mark.parametrize("shell", SHELLS)
def test_values_arrive_exactly_and_show_on_no_command_line(
    hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shell: str, cli: str
) -> None:
    user = _account(hosts_sshd, shell, monkeypatch)
    canary = Path("/tmp/oj-shell-pwned")
    canary.unlink(missing_ok=True)
    try:
        workdir = user.home / "work dir $x !!"
        workdir.mkdir()
        user.give(workdir)
        gate = user.home / "gate"
        named = _installed_cli(user) if cli == "installed" else None
        report = (
            "import json, os, sys, time\n"
            "print(json.dumps([sys.argv[1:], os.environ['TOKEN'], os.getcwd()]), flush=True)\n"
            "while not os.path.exists(os.path.expanduser('~/gate')): time.sleep(0.05)\n"
        )
        state = "~/state dir $HOME !!"
        with _hook(orchesjob_bin=named, orchesjob_home=state) as hook:
            info = hook.version()
            assert info["origin"] == ("host" if named else "uploaded"), info
            job = hook.start(
                "key $(x) !! \\",
                ["/usr/bin/python3", "-c", report, *HOSTILE],
                env={"TOKEN": ENV_SECRET},
                cwd=str(workdir),
                mode="default",
            )
            assert job["status"] == "RUNNING", job
            deadline = time.monotonic() + 30
            while not hook.logs(job_id=job["job_id"])["data"] and time.monotonic() < deadline:
                time.sleep(0.05)
            argv, token, cwd = json.loads(hook.logs(job_id=job["job_id"])["data"])
            assert argv == HOSTILE and token == ENV_SECRET and cwd == str(workdir)
            shown = _cmdlines_of(user)
            for pid, line in shown.items():
                assert ENV_SECRET.encode() not in line, (pid, line)
                assert b"work dir" not in line and b"state dir" not in line, (pid, line)
                if pid != job["target_pid"]:
                    assert b"ends-with-backslash" not in line and b"key $(x)" not in line, (pid, line)
            assert (user.home / "state dir $HOME !!" / "orchesjob.db").exists()
            gate.write_text("")
            done = hook.wait(job_id=job["job_id"], timeout=30)
            assert done["status"] == "SUCCEEDED" and done["run_key"] == "key $(x) !! \\", done
            assert done["env"] == {"TOKEN": "***"}  # the value never leaves the hook

            async def from_the_triggerer() -> Any:
                ahook = OrchesjobAsyncHook(
                    CONN_ID,
                    orchesjob_bin=hook.settings.orchesjob_bin,
                    orchesjob_home=state,
                    cli_sha256=hook.settings.cli_sha256,
                )
                try:
                    return await ahook.status(run_key="key $(x) !! \\")
                finally:
                    await ahook.close()

            import asyncio

            assert asyncio.run(from_the_triggerer())["job_id"] == job["job_id"]
        assert not canary.exists()
    finally:
        user.remove()


def test_a_broken_cli_on_the_path_is_never_shadowed(hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapper whose target venv was rebuilt exits 127, like a missing program: the host is asked whether the file
    exists, and since it does, the task fails saying so; nothing is uploaded, nothing started."""
    user = _account(hosts_sshd, "/bin/sh", monkeypatch)
    try:
        bin_dir = user.home / "bin"
        bin_dir.mkdir()
        (bin_dir / "orchesjob").write_text('#!/bin/sh\nexec /opt/rebuilt-venv/bin/python -m orchesjob "$@"\n')
        user.give(bin_dir)
        (bin_dir / "orchesjob").chmod(0o755)
        user.set_path(str(bin_dir))
        with _hook() as hook:
            with pytest.raises(OrchesjobCliBroken, match=f"has an orchesjob at {bin_dir}/orchesjob"):
                hook.start("k", ["true"])
        assert not user.cache_dir.exists()  # no upload beside it
    finally:
        user.remove()


def test_orchesjob_1_1_0_on_the_path_is_refused_at_once_as_incompatible(
    hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """1.1.0 has no `version` command (its parser exits 2 with usage, no JSON): not a transport error retried for
    seconds, but a typed refusal at the first answer."""
    user = _account(hosts_sshd, "/bin/sh", monkeypatch)
    try:
        bin_dir = user.home / "bin"
        bin_dir.mkdir()
        (bin_dir / "orchesjob").write_text(
            "#!/bin/sh\necho 'usage: orchesjob [-h] [--version] {start,status,logs,abort,rerun,unlock,clean} ...' >&2\n"
            "echo 'orchesjob: error: argument command: invalid choice: '\"'\"'version'\"'\"'' >&2\nexit 2\n"
        )
        user.give(bin_dir)
        (bin_dir / "orchesjob").chmod(0o755)
        user.set_path(str(bin_dir))
        started = time.monotonic()
        with _hook(retries=3) as hook:
            with pytest.raises(OrchesjobCliBroken, match="did not answer as an orchesjob CLI") as refused:
                hook.version()
        assert time.monotonic() - started < 5, "the refusal was retried as a transport error"
        assert "invalid choice" in str(refused.value) and not user.cache_dir.exists()
    finally:
        user.remove()


def test_a_cache_behind_a_group_writable_home_is_refused(
    hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home another group member may write: the cache under it could be swapped, so it is not used."""
    user = _account(hosts_sshd, "/bin/sh", monkeypatch)
    shared_gid = None
    try:
        import grp
        import subprocess

        group = f"ojg{user.name[-6:]}"
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        shared_gid = grp.getgrnam(group).gr_gid
        subprocess.run(["usermod", "-a", "-G", group, "nobody"], check=True, capture_output=True)  # another member
        os.chown(user.home, user.uid, shared_gid)
        user.home.chmod(0o770)
        with _hook() as hook:
            with pytest.raises(OrchesjobUnsafeCache, match=f"{user.home} is writable by its group"):
                hook.version()
    finally:
        user.remove()
        if shared_gid is not None:
            import subprocess

            subprocess.run(["groupdel", group], capture_output=True)


def test_a_cached_cli_swapped_after_its_check_never_runs(
    hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trigger runs the cached file for hours after the worker checked it: every call verifies it again. Here
    it is replaced (as by someone who could write there) after the worker's check: the next call refuses to run it,
    and the code put there never runs."""
    user = _account(hosts_sshd, "/bin/sh", monkeypatch)
    try:
        with _hook() as hook:
            hook.version()
            cached = Path(hook.settings.orchesjob_bin[1])
            assert cached.exists() and hook.settings.cli_sha256 == packed_cli().sha256
            evil = user.home / "evil-ran"
            cached.chmod(0o700)
            cached.write_text(f"import os\nopen({str(evil)!r}, 'w').close()\n")
            with pytest.raises(OrchesjobUnsafeCache, match="its sha256 is"):
                hook.status(running=True)
            assert not evil.exists()
        st = cached.stat()
        assert stat.S_ISREG(st.st_mode)
    finally:
        user.remove()


# Compiles the cached CLI as the host's interpreter does (orchesjob/codebuild.py), except that its orchesjob.errors,
# which every call imports, also creates the file named by argv[4]; the header binds it to the sha256 in argv[3].
PLANT_CODES = r"""
import marshal, sys
sys.path.insert(0, sys.argv[1])
from orchesjob.codebuild import compile_archive, save
from orchesjob.codeload import oj_codes_header, oj_codes_path
archive = sys.argv[2]
with open(archive, "rb") as f:
    codes = compile_archive(archive, f.read())
with open(sys.argv[1] + "/orchesjob/errors.py") as f:
    source = f.read() + "\nopen(%r, 'w').close()\n" % sys.argv[4]
codes["orchesjob.errors"] = (False, marshal.dumps(compile(source, "errors.py", "exec")))
save(oj_codes_path(archive), oj_codes_header(bytes.fromhex(sys.argv[3])), codes)
"""


def test_compiled_code_beside_the_cached_cli_runs_only_if_made_from_the_verified_bytes(
    hosts_sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher verifies the cached file, then runs code compiled from it, kept beside it. Code in that place
    that was made from other bytes (left by an older file of that name, or put there) never runs; code made from the
    verified bytes does."""
    import subprocess

    user = _account(hosts_sshd, "/bin/sh", monkeypatch)
    try:
        with _hook() as hook:
            hook.version()
            cached = Path(hook.settings.orchesjob_bin[1])
            for made_from, should_run in (("0" * 64, False), (packed_cli().sha256, True)):
                ran = user.home / ("ran-" + made_from[:8])
                subprocess.run(
                    ["/usr/bin/python3", "-c", PLANT_CODES, REPO_ROOT, str(cached), made_from, str(ran)], check=True
                )
                for name in os.listdir(cached.parent):
                    if name.endswith(".codes"):  # the account's, as if it had written it
                        os.chown(cached.parent / name, user.uid, user.gid)
                assert hook.status(running=True) == []
                assert ran.exists() == should_run, made_from
    finally:
        user.remove()


def test_the_python_found_for_the_upload_stands_on_the_line_only_as_a_checked_word() -> None:
    from orchesjob_provider import cli_install

    assert cli_install._runnable("/usr/bin/python3.11", "python3") == "/usr/bin/python3.11"
    assert cli_install._runnable("/opt/my python/bin/python3", "python3") == "python3"
    assert shutil.which("python3")
