"""The async hook's transport: one command line over an asyncssh connection, and the connection settings it uses.

The async hook reads the Airflow connection itself and talks to asyncssh directly rather than through the SSH
provider's async hook, because Airflow 2.10 (still on MWAA) only gets an SSH provider without one. Like the paramiko
transport it knows SSH, not the CLI: ``run(line, timeout)`` returns (exit status or None, stdout, stderr) and raises
only ``OrchesjobTransportError`` with ``sent`` and ``transient`` filled in.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Mapping
from typing import Any

from orchesjob_provider.compat import aget_connection, aget_extra_dejson
from orchesjob_provider.exceptions import OrchesjobInvalidArgument, OrchesjobTransportError


def _truthy(value: Any) -> bool:
    """Connection extras arrive as JSON booleans or as strings ("true", "True") depending on how they were made."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def connect_kwargs(conn: Any, extras: Mapping[str, Any]) -> dict[str, Any]:
    """``asyncssh.connect`` keyword arguments from an Airflow SSH connection's fields and extras.

    Mirrors the SSH provider's sync hook so one connection works for both: ``key_file``, ``private_key`` (+
    ``private_key_passphrase``), password, ``no_host_key_check``, ``host_key`` (with or without its type prefix; a bare
    key is RSA, as in the provider), ``known_hosts`` (a path), ``conn_timeout``. Without host key settings asyncssh
    checks ``~/.ssh/known_hosts`` and refuses unknown hosts, like OpenSSH.
    """
    import asyncssh

    host = conn.host
    if not host:
        raise OrchesjobInvalidArgument(f"SSH connection {getattr(conn, 'conn_id', '?')!r} has no host")
    kwargs: dict[str, Any] = {
        "host": host,
        "port": int(conn.port) if conn.port else 22,
        "username": conn.login or getpass.getuser(),
        "keepalive_interval": 30,
    }
    if conn.password:
        kwargs["password"] = conn.password
    passphrase = extras.get("private_key_passphrase") or extras.get("passphrase")
    if extras.get("private_key"):
        kwargs["client_keys"] = [asyncssh.import_private_key(extras["private_key"], passphrase)]
    elif extras.get("key_file"):
        kwargs["client_keys"] = [os.path.expanduser(str(extras["key_file"]))]
        if passphrase:
            kwargs["passphrase"] = passphrase
    no_host_key_check = _truthy(extras.get("no_host_key_check", False))
    host_key = extras.get("host_key")
    if no_host_key_check and host_key:
        raise OrchesjobInvalidArgument("the SSH connection sets both no_host_key_check and host_key")
    if no_host_key_check:
        kwargs["known_hosts"] = None
    elif host_key:
        parts = str(host_key).split()
        text = " ".join(parts[:2]) if len(parts) >= 2 else f"ssh-rsa {parts[0]}"
        kwargs["known_hosts"] = ([asyncssh.import_public_key(text)], [], [])
    elif extras.get("known_hosts"):
        kwargs["known_hosts"] = os.path.expanduser(str(extras["known_hosts"]))
    if extras.get("conn_timeout"):
        kwargs["connect_timeout"] = float(extras["conn_timeout"])
    return kwargs


class AsyncsshTransport:
    """One reused asyncssh connection of an Airflow SSH connection id.

    :param ssh_conn_id: the Airflow connection (read without blocking the event loop, once).
    :param connect_timeout: seconds to connect and log in, unless the connection's ``conn_timeout`` says otherwise.
    """

    def __init__(self, ssh_conn_id: str, connect_timeout: float) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.connect_timeout = float(connect_timeout)
        self._conn: Any = None
        self._connect_kwargs: dict[str, Any] | None = None

    async def connect(self) -> Any:
        """A connected asyncssh ``SSHClientConnection``, reused while it is open."""
        import asyncssh

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        await self.close()
        if self._connect_kwargs is None:
            conn = await aget_connection(self.ssh_conn_id)
            extras = await aget_extra_dejson(conn)
            self._connect_kwargs = connect_kwargs(conn, extras)
            self._connect_kwargs.setdefault("connect_timeout", self.connect_timeout)
        self._conn = await asyncssh.connect(**self._connect_kwargs)
        return self._conn

    async def close(self) -> None:
        """Close the connection (the next call reconnects). Never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), timeout=5)
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
            pass

    async def run(self, line: str, timeout: float | None) -> tuple[int | None, bytes, bytes]:
        """Run one command line; return (exit status or None, stdout, stderr). Raises transport errors only."""
        import asyncssh

        try:
            conn = await asyncio.wait_for(self.connect(), timeout=self.connect_timeout + 5)
        except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable) as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"SSH login to connection {self.ssh_conn_id!r} refused: {exc}", command=line, sent=False,
                transient=False,
            ) from exc
        except (asyncssh.Error, OSError, asyncio.TimeoutError, EOFError) as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"could not connect over SSH ({self.ssh_conn_id!r}): {exc!r}", command=line, sent=False
            ) from exc
        try:
            result = await asyncio.wait_for(
                conn.run(line, check=False, encoding=None, stdin=asyncssh.DEVNULL), timeout=timeout
            )
        except asyncio.TimeoutError as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"orchesjob did not answer within {timeout:g}s", command=line, sent=True
            ) from exc
        except (asyncssh.Error, OSError, EOFError) as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"SSH failure while running orchesjob: {exc!r}", command=line, sent=True
            ) from exc
        # None: the channel closed without an exit status; -1: killed by a signal. Both are transport failures.
        return result.exit_status, result.stdout or b"", result.stderr or b""
