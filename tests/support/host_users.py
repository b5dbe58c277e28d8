"""Fresh accounts on this machine, reached over a real sshd: the "host that has nothing installed" of the tests and
the demo.

Why accounts and not a fresh HOME: what the provider must get right on a host it has never seen (no CLI on the
PATH, no ``~/.cache``, its own uid owning what it creates, another uid's files refused) is about users and
permissions, which only a real account shows. Making one needs root (``useradd``); the sshd below serves every
account (its key list is readable by all), and lets a user's ``~/.ssh/environment`` set the PATH, which is how a
test puts a CLI "on the host's PATH" for one user without touching the machine's ``/usr/local/bin``.

An account's SSH commands get a PATH of its own from the start, ``HOST_PATH`` (the system's /usr/bin and /bin):
sshd's default PATH also holds /usr/local/bin, where this machine may have an ``orchesjob`` of its own (an admin's
install, perhaps into a root-only venv, which a plain account cannot even run), and "a host with nothing installed"
must be one whatever this machine has.

Accounts are made with ``/bin/sh`` as shell (unless told otherwise) and a home in ``/home``; the machine's
``/usr/bin/python3`` is what they find (a venv built from a pyenv Python under /root is unreadable for them).

This module is imported by pytest fixtures and by plain scripts, so it must not import pytest.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.sshd import SshServer

USER_PREFIX = "ojhost"
#: The PATH of an account's SSH commands (``~/.ssh/environment``), after what ``HostUser.set_path`` puts in front.
HOST_PATH = ("/usr/bin", "/bin")


def can_make_users() -> str | None:
    """None when accounts can be made here, else why not."""
    if os.geteuid() != 0:
        return "making host accounts needs root (useradd)"
    missing = [tool for tool in ("useradd", "userdel", "usermod") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else None


def multiuser_sshd(**kwargs: Any) -> SshServer:
    """A started sshd (run as root) that lets in any account with the server's client key.

    Its directory is readable by everyone (sshd reads a user's authorized keys as that user); the private keys in it
    stay 0600, root's.
    """
    directory = Path(tempfile.mkdtemp(prefix="orchesjob-hosts-sshd-"))
    directory.chmod(0o755)
    extra = list(kwargs.pop("extra_config", ())) + ["PermitUserEnvironment yes"]
    server = SshServer(directory, extra_config=extra, **kwargs).start()
    server.authorized_keys_path.chmod(0o644)
    return server


def stop_multiuser_sshd(server: SshServer) -> None:
    """Stop it and remove its directory (keys, config, log)."""
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


class HostUser:
    """One account made for a test or the demo; ``remove()`` deletes it with its home and processes."""

    def __init__(self, name: str | None = None, shell: str = "/bin/sh") -> None:
        self.name = name or f"{USER_PREFIX}{secrets.token_hex(3)}"
        subprocess.run(["useradd", "--create-home", "--shell", shell, self.name], check=True, capture_output=True)
        # useradd leaves the password locked ("!"), which sshd refuses even for keys when PAM is off
        subprocess.run(["usermod", "-p", "*", self.name], check=True, capture_output=True)
        entry = pwd.getpwnam(self.name)
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid
        self.home = Path(entry.pw_dir)
        self.set_path()  # HOST_PATH: nothing of this machine's /usr/local/bin

    @property
    def cache_dir(self) -> Path:
        return self.home / ".cache" / "orchesjob"

    def connection(self, server: SshServer, **extra: Any) -> dict[str, Any]:
        """An Airflow SSH connection (dict) logging in as this account."""
        conn = server.airflow_connection(**extra)
        conn["login"] = self.name
        return conn

    def give(self, path: Path, mode: int | None = None) -> Path:
        """Make ``path`` (and what is below it) this account's."""
        for directory, _, files in os.walk(path):
            os.chown(directory, self.uid, self.gid)
            for name in files:
                os.chown(os.path.join(directory, name), self.uid, self.gid)
        if mode is not None:
            path.chmod(mode)
        return path

    @property
    def path(self) -> str:
        """The PATH the account's SSH commands get (what ``~/.ssh/environment`` says)."""
        text = (self.home / ".ssh" / "environment").read_text()
        return next(line[len("PATH=") :] for line in text.splitlines() if line.startswith("PATH="))

    def set_path(self, *directories: str) -> None:
        """The account's PATH for SSH commands (``~/.ssh/environment``): ``directories``, then ``HOST_PATH``. Only an
        sshd with ``PermitUserEnvironment yes`` (``multiuser_sshd``) reads it, and only if the account can."""
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "environment").write_text("PATH=%s\n" % ":".join([*directories, *HOST_PATH]))
        self.give(ssh)

    def run(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command as this account (``setpriv``, no login, HOME set), e.g. to read what it owns."""
        env = {"HOME": str(self.home), "PATH": ":".join(HOST_PATH)}
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *argv],
            env=env,
            capture_output=True,
            text=True,
            **kwargs,
        )

    def pids(self) -> list[int]:
        """The processes running as this account (its jobs, a lingering sshd session)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}").st_uid == self.uid:
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    def remove(self) -> None:
        for pid in self.pids():  # only this account's processes, each by its id
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        subprocess.run(["userdel", "--remove", "--force", self.name], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
