"""The sync hook's transport: one command line over a paramiko channel of the SSH provider's ``SSHHook``.

It knows SSH, not the CLI: ``run(line, timeout)`` returns the exit status (None when the channel closed without
one), stdout and stderr, and raises only ``OrchesjobTransportError``, saying whether the command may have reached
the host (``sent``) and whether trying again can help (``transient``). What to do about it is the hook's business.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Mapping
from typing import Any

from orchesjob_provider.exceptions import OrchesjobInvalidArgument, OrchesjobTransportError
from orchesjob_provider.host_keys import HostKeyRefused, HostKeyRule, host_key_rule

_CHUNK = 65536


class ParamikoTransport:
    """One reused SSH connection of an Airflow SSH connection id, made through the SSH provider's ``SSHHook``.

    :param ssh_conn_id: the Airflow connection.
    :param ssh_hook_kwargs: extra keyword arguments for ``SSHHook`` (``conn_timeout``, ``keepalive_interval`` ...).
    :param command_timeout: bounds opening a channel and the host's acknowledgement of the exec request.
    """

    def __init__(self, ssh_conn_id: str, ssh_hook_kwargs: Mapping[str, Any] | None, command_timeout: float) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.ssh_hook_kwargs = dict(ssh_hook_kwargs or {})
        self.command_timeout = float(command_timeout)
        self._ssh_hook: Any = None
        self._client: Any = None
        self._rule: HostKeyRule | None = None

    @property
    def ssh_hook(self) -> Any:
        """The SSH provider's hook, made on first use (it reads the connection when constructed)."""
        if self._ssh_hook is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            self._ssh_hook = SSHHook(ssh_conn_id=self.ssh_conn_id, **self.ssh_hook_kwargs)
        return self._ssh_hook

    def connect(self) -> Any:
        """A connected paramiko ``SSHClient``, reused across calls while its transport is alive.

        The login settings (host, port, user, password, ``key_file``, ``private_key``, timeouts, proxy command ...)
        are the SSH provider's reading of the connection, but the client is made here, so that its host-key check is
        ``orchesjob_provider.host_keys``' rule on every SSH provider version (4.x accepts unknown hosts by default).
        """
        import paramiko

        client = self._client
        if client is not None:
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client
            self.close()
        rule = self.host_key_rule()  # first: its errors are clearer than the SSH provider's
        hook = self.ssh_hook
        client = paramiko.SSHClient()
        host_key_kwargs = rule.apply_to_paramiko(client)  # the host is judged by the rule, not by paramiko
        kwargs: dict[str, Any] = {
            "hostname": hook.remote_host,
            "port": rule.port,
            "username": hook.username,
            "timeout": getattr(hook, "conn_timeout", None),
            "compress": getattr(hook, "compress", True),
            "sock": getattr(hook, "host_proxy", None),
            "look_for_keys": getattr(hook, "look_for_keys", True),
            "banner_timeout": getattr(hook, "banner_timeout", 30.0),
        }
        for name in ("auth_timeout", "disabled_algorithms"):
            if getattr(hook, name, None):
                kwargs[name] = getattr(hook, name)
        if hook.password:
            kwargs["password"] = hook.password.strip()
        if getattr(hook, "pkey", None):
            kwargs["pkey"] = hook.pkey
        if getattr(hook, "key_file", None):
            kwargs["key_filename"] = hook.key_file
        kwargs.update(host_key_kwargs)
        try:
            client.connect(**kwargs)
        except Exception:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            if getattr(hook, "keepalive_interval", None):
                transport.set_keepalive(hook.keepalive_interval)
            if getattr(hook, "ciphers", None):
                transport.get_security_options().ciphers = hook.ciphers
        self._client = client
        return client

    def host_key_rule(self) -> HostKeyRule:
        """The connection's host-key rule (read once per transport)."""
        if self._rule is None:
            from orchesjob_provider.compat import BaseHook

            conn = BaseHook.get_connection(self.ssh_conn_id)
            host = self.ssh_hook_kwargs.get("remote_host") or conn.host
            port = self.ssh_hook_kwargs.get("port") or conn.port
            self._rule = host_key_rule(self.ssh_conn_id, host, port, conn.extra_dejson)
        return self._rule

    def close(self) -> None:
        """Close the SSH connection (the next call reconnects). Never raises."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
                pass

    def run(self, line: str, timeout: float | None, stdin: bytes = b"") -> tuple[int | None, bytes, bytes]:
        """Run one command line with ``stdin`` as its standard input (then its end); return (exit status or None,
        stdout, stderr). Raises transport errors only."""
        import paramiko

        try:
            client = self.connect()
        except OrchesjobInvalidArgument as exc:  # the connection's settings, not the CLI: no use retrying
            raise OrchesjobTransportError(
                f"SSH connection {self.ssh_conn_id!r}: {exc}", command=line, sent=False, transient=False
            ) from exc
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise OrchesjobTransportError(
                self.host_key_rule().refusal(f"the host offered a different key than the trusted one ({exc})"),
                command=line,
                sent=False,
                transient=False,
            ) from exc
        except HostKeyRefused as exc:
            self.close()
            raise OrchesjobTransportError(str(exc), command=line, sent=False, transient=False) from exc
        except paramiko.AuthenticationException as exc:
            raise OrchesjobTransportError(
                f"SSH login to connection {self.ssh_conn_id!r} refused: {exc}",
                command=line,
                sent=False,
                transient=False,
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise OrchesjobTransportError(
                f"could not connect over SSH ({self.ssh_conn_id!r}): {exc!r}", command=line, sent=False
            ) from exc
        sent = False
        channel = None
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("SSH transport is not active")
            channel = transport.open_session(timeout=self.command_timeout)
            # From here on the host may have the command even if we never hear back: a lost acknowledgement of the
            # exec request must not look like "never sent", or a call that is unsafe to repeat would be repeated.
            sent = True
            self._exec_with_deadline(transport, channel, line)
            if stdin:
                channel.sendall(stdin)  # the request (command.Call.request); a small write, into an open window
            channel.shutdown_write()  # then its end: nothing ever waits for more
            return _collect(channel, line, timeout)
        except OrchesjobTransportError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise OrchesjobTransportError(
                f"SSH failure while running orchesjob: {exc!r}", command=line, sent=sent
            ) from exc
        finally:
            if channel is not None:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - a link lost while closing must not hide the answer we have
                    self.close()

    def upload(self, data: bytes, path: str, timeout: float | None) -> None:
        """Write ``data`` to a NEW file ``path`` on the host over SFTP on this same connection, flushed before it
        returns (``orchesjob_provider.cli_install`` checks it on the host and renames it into place).

        The file is opened exclusively: an upload never writes into a file someone else made. Raises
        ``OrchesjobTransportError`` when the connection fails (repeatable: the next attempt uses a fresh temporary
        name), ``OSError`` for an SFTP status about the file itself (permission, no space).
        """
        import paramiko

        try:
            client = self.connect()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise OrchesjobTransportError(
                f"could not connect over SSH ({self.ssh_conn_id!r}) to upload the CLI: {exc!r}", sent=False
            ) from exc
        sftp = None
        try:
            try:
                sftp = client.open_sftp()
            except paramiko.SSHException as exc:
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    raise
                raise OrchesjobTransportError(  # the connection is fine: the host refused the subsystem itself
                    f"the host's sshd offers no SFTP ({exc}), so the CLI cannot be uploaded there: enable its sftp "
                    "subsystem (`Subsystem sftp ...` in sshd_config), or install orchesjob on the host and set "
                    "orchesjob_bin",
                    sent=True,
                    transient=False,
                ) from exc
            channel = sftp.get_channel()
            if channel is not None and timeout is not None:
                channel.settimeout(timeout)
            with sftp.open(path, "wx") as remote:  # write, create, exclusive
                remote.set_pipelined(True)
                remote.write(data)
                remote.flush()
        except OSError as exc:
            if exc.errno is not None and not isinstance(exc, ConnectionError):
                raise  # an SFTP status for the file (paramiko maps them to OSError with an errno)
            self.close()
            raise OrchesjobTransportError(f"SFTP upload of the CLI to {path} failed: {exc!r}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            self.close()
            raise OrchesjobTransportError(f"SFTP upload of the CLI to {path} failed: {exc!r}") from exc
        finally:
            if sftp is not None:
                try:
                    sftp.close()
                except Exception:  # noqa: BLE001 - the upload's outcome is decided; a failing close must not hide it
                    self.close()

    def _exec_with_deadline(self, transport: Any, channel: Any, line: str) -> None:
        """paramiko waits for the exec request's reply without a time limit; on a link that went silent that is
        forever. A watchdog closes the transport after ``command_timeout``, which makes the wait fail."""
        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            transport.close()

        watchdog = threading.Timer(self.command_timeout, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            channel.exec_command(line)
        except Exception as exc:
            if fired.is_set():
                raise OrchesjobTransportError(
                    f"no answer to the exec request within {self.command_timeout:g}s", command=line, sent=True
                ) from exc
            raise
        finally:
            watchdog.cancel()


def _drain(channel: Any, out: list[bytes], err: list[bytes]) -> None:
    while channel.recv_ready():
        out.append(channel.recv(_CHUNK))
    while channel.recv_stderr_ready():
        err.append(channel.recv_stderr(_CHUNK))


def _collect(channel: Any, line: str, timeout: float | None) -> tuple[int | None, bytes, bytes]:
    """Read stdout and stderr together until EOF (so neither fills its window and blocks the remote CLI)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[bytes] = []
    err: list[bytes] = []

    def remaining() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    while True:
        _drain(channel, out, err)
        if channel.eof_received or channel.closed:
            _drain(channel, out, err)  # data that raced the EOF is buffered by now
            break
        left = remaining()
        if left is not None and left <= 0:
            raise OrchesjobTransportError(f"orchesjob did not answer within {timeout:g}s", command=line, sent=True)
        select.select([channel], [], [], 1.0 if left is None else max(0.0, min(1.0, left)))
    left = remaining()
    if not channel.status_event.wait(5.0 if left is None else max(0.1, min(left, 5.0))):
        return None, b"".join(out), b"".join(err)
    status = channel.exit_status
    return (None if status == -1 else status), b"".join(out), b"".join(err)
