"""A private, real OpenSSH server on 127.0.0.1 for tests and the demo.

Why a real ``sshd`` and not a mock: the provider's whole job is to get a command line through a remote login
shell intact and to read back stdout, stderr and the exit status. Only the real server (and the real shell it
starts) shows quoting bugs, channel/exit-status races and connection cuts the way production will.

The server runs as whoever starts it. As root it serves root; as an ordinary user it serves only that user on a
high port with its own host key, which is all ``make demo`` needs. Everything it uses (keys, config, pid file,
log) lives in one directory given by the caller, so several servers can run side by side and nothing outside that
directory is touched (except ``/run/sshd``, which sshd insists on when started as root).

This module is imported by pytest fixtures and by plain scripts, so it must not import pytest.
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SSHD_PATH = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
SSH_CLIENT = "ssh"
INSTALL_HINT = "apt-get install openssh-server openssh-client"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago.

    There is an unavoidable race between closing the probe socket and sshd binding the port; ``SshServer.start``
    retries with a fresh port when sshd reports the address in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _current_user() -> str:
    """Name of the effective user, which is the only user a non-root sshd can log in."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return getpass.getuser()


class SshServerError(RuntimeError):
    """sshd could not be started or did not become usable in time; the message carries sshd's own stderr."""


class SshServer:
    """One private ``sshd`` process listening on 127.0.0.1, with its own host key and authorized client key.

    Usage::

        server = SshServer("/tmp/somedir").start()
        try:
            subprocess.run(server.ssh_argv("echo hi"), check=True)
        finally:
            server.stop()

    or as a context manager. ``start()`` returns only once a real ``ssh`` login has succeeded, so a caller never
    races a half-started daemon.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        sshd_path: str = SSHD_PATH,
        start_timeout: float = 20.0,
        extra_config: Sequence[str] = (),
        sftp: bool = True,
        stock_limits: bool = False,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.host = host
        self.port: int = port or 0
        self._fixed_port = port is not None
        self.user = user or _current_user()
        self.sshd_path = sshd_path
        self.start_timeout = start_timeout
        self.extra_config = list(extra_config)
        self.sftp = sftp
        self.stock_limits = stock_limits
        self.host_key_path = self.directory / "ssh_host_ed25519_key"
        self.client_key_path = self.directory / "id_ed25519"
        self.authorized_keys_path = self.directory / "authorized_keys"
        self.config_path = self.directory / "sshd_config"
        self.pid_path = self.directory / "sshd.pid"
        self.log_path = self.directory / "sshd.log"
        self.process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ public API

    @property
    def key_path(self) -> str:
        """Path of the client's private key (the one listed in authorized_keys)."""
        return str(self.client_key_path)

    @property
    def host_public_key(self) -> str:
        """``"ssh-ed25519 AAAA..."`` of the server, for clients that want real host key checking."""
        parts = (self.directory / "ssh_host_ed25519_key.pub").read_text().split()
        return " ".join(parts[:2])

    def start(self) -> SshServer:
        """Create keys and config, start sshd, and wait until a real ``ssh`` login works.

        Raises RuntimeError (with the install command) when sshd is missing, and SshServerError with sshd's stderr
        when it exits or does not become usable within ``start_timeout`` seconds.
        """
        if self.process is not None:
            raise SshServerError("sshd is already started")
        if not os.path.isfile(self.sshd_path) or not os.access(self.sshd_path, os.X_OK):
            raise RuntimeError(f"OpenSSH server not found at {self.sshd_path}; install it with: {INSTALL_HINT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._make_keys()
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

        attempts = 1 if self._fixed_port else 5
        last_error: Exception | None = None
        for _ in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            self._write_config()
            try:
                self._launch_and_wait()
                return self
            except SshServerError as exc:
                last_error = exc
                self.stop()
                if "Address already in use" not in str(exc):
                    break
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Terminate sshd and reap it (PID 1 in containers may not reap orphans, leaving zombies)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        else:
            proc.wait()

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def ssh_options(self) -> list[str]:
        """Client options that make ``ssh`` non-interactive and independent of the user's ~/.ssh config."""
        return [
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key_path),
            "-p",
            str(self.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]

    def ssh_argv(self, remote_cmd: str | Sequence[str]) -> list[str]:
        """argv for the ``ssh`` client running ``remote_cmd`` through the server.

        A string is passed as is (the remote shell parses it); a sequence is quoted element by element so each
        element arrives as one literal word.
        """
        if not isinstance(remote_cmd, str):
            remote_cmd = " ".join(shlex.quote(str(part)) for part in remote_cmd)
        return [SSH_CLIENT, *self.ssh_options(), f"{self.user}@{self.host}", remote_cmd]

    def airflow_connection(self, **extra: Any) -> dict[str, Any]:
        """The server as an Airflow SSH connection dict (conn_type ssh, key_file, no host key check).

        Plain data, no Airflow import: a test or the demo serialises it into ``AIRFLOW_CONN_<ID>``.
        """
        extras: dict[str, Any] = {"key_file": str(self.client_key_path), "no_host_key_check": True}
        extras.update(extra)
        return {
            "conn_type": "ssh",
            "host": self.host,
            "port": self.port,
            "login": self.user,
            "extra": extras,
        }

    def airflow_connection_json(self, **extra: Any) -> str:
        """``airflow_connection()`` as the JSON string Airflow reads from ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(self.airflow_connection(**extra))

    def read_log(self) -> str:
        """sshd's stderr so far (LogLevel ERROR keeps it small)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ internals

    def _make_keys(self) -> None:
        """Generate host and client ed25519 keys once per directory (paramiko >= 4 has no DSA)."""
        keys = ((self.host_key_path, "orchesjob-test-host"), (self.client_key_path, "orchesjob-test-client"))
        for path, comment in keys:
            if not path.exists():
                subprocess.run(
                    [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            os.chmod(path, 0o600)
        public = Path(str(self.client_key_path) + ".pub").read_text()
        self.authorized_keys_path.write_text(public)
        os.chmod(self.authorized_keys_path, 0o600)

    def _write_config(self) -> None:
        """Write a config that depends on nothing in /etc/ssh and lets in only our key."""
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            # Test directories usually live below /tmp (world-writable), which StrictModes rejects.
            "StrictModes no",
            # Concurrency tests open many connections and sessions at once; stock_limits keeps OpenSSH's defaults
            # (MaxStartups 10:30:100, MaxSessions 10) for a benchmark that must meet them as a real host would.
            *([] if self.stock_limits else ["MaxStartups 200:30:400", "MaxSessions 200"]),
            "LogLevel ERROR",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            # SFTP as a host's stock sshd has it (sftp=False: a hardened one without): the provider uploads its CLI
            # over it to hosts without one.
            *(["Subsystem sftp internal-sftp"] if self.sftp else []),
            # No AcceptEnv and no SetEnv: the client's environment never leaks into the remote command, so tests
            # see what a real remote host would give them.
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        os.chmod(self.config_path, 0o600)

    def _launch_and_wait(self) -> None:
        """Start sshd in the foreground (-D) with its log on stderr (-e) and wait for a working login."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.sshd_path, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        last_ssh_error = ""
        while True:
            if self.process.poll() is not None:
                raise SshServerError(
                    f"sshd exited with code {self.process.returncode} before accepting logins; its stderr:\n"
                    f"{self.read_log()}"
                )
            if self._port_accepts():
                try:
                    result = subprocess.run(
                        self.ssh_argv("true"),
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=max(1.0, deadline - time.monotonic()) + 5,
                    )
                except subprocess.TimeoutExpired:
                    last_ssh_error = "ssh login timed out"
                else:
                    if result.returncode == 0:
                        return
                    last_ssh_error = result.stderr.decode(errors="replace").strip()
            if time.monotonic() > deadline:
                raise SshServerError(
                    f"sshd on {self.host}:{self.port} did not accept an ssh login as {self.user!r} within "
                    f"{self.start_timeout:g}s; last ssh error: {last_ssh_error or '(none)'}. (With UsePAM no, sshd "
                    f"refuses accounts whose password is locked ('!' in /etc/shadow) even for keys: "
                    f"usermod -p '*' {self.user}.) sshd stderr:\n{self.read_log()}"
                )
            time.sleep(0.05)

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False
