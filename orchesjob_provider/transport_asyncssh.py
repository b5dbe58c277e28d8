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
from orchesjob_provider.host_keys import HostKeyRule, KnownHostsError, Trust, host_key_rule


def connect_kwargs(conn: Any, extras: Mapping[str, Any]) -> dict[str, Any]:
    """``asyncssh.connect`` keyword arguments from an Airflow SSH connection's fields and extras.

    Mirrors the SSH provider's sync hook so one connection works for both: ``key_file``, ``private_key`` (+
    ``private_key_passphrase``), password, ``conn_timeout``; the host key is judged by the one rule of
    ``orchesjob_provider.host_keys`` (``no_host_key_check``, ``host_key``, ``known_hosts``, ``~/.ssh/known_hosts``),
    whose known_hosts file is read here. Raises ``KnownHostsError`` for a known_hosts file that cannot be used.
    """
    return _connect_kwargs(conn, extras)[0]


def _connect_kwargs(conn: Any, extras: Mapping[str, Any]) -> tuple[dict[str, Any], Trust]:
    """``connect_kwargs``, and the ``Trust`` that judges the host (its ``refused`` says why it refused)."""
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
    trust = host_key_rule(getattr(conn, "conn_id", None) or "?", host, kwargs["port"], extras).trust()
    kwargs.update(trust.asyncssh_connect_kwargs())
    if extras.get("conn_timeout"):
        kwargs["connect_timeout"] = float(extras["conn_timeout"])
    return kwargs, trust


class AsyncsshTransport:
    """One reused asyncssh connection of an Airflow SSH connection id.

    :param ssh_conn_id: the Airflow connection (read without blocking the event loop, once).
    :param connect_timeout: seconds to connect and log in, unless the connection's ``conn_timeout`` says otherwise.
    """

    def __init__(self, ssh_conn_id: str, connect_timeout: float) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.connect_timeout = float(connect_timeout)
        self._conn: Any = None
        self._connection: tuple[Any, Mapping[str, Any]] | None = None  # the Airflow connection and its extras
        self._rule: HostKeyRule | None = None

    async def connect(self) -> Any:
        """A connected asyncssh ``SSHClientConnection``, reused while it is open."""
        import asyncssh

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        await self.close()
        if self._connection is None:
            conn = await aget_connection(self.ssh_conn_id)
            extras = await aget_extra_dejson(conn)
            self._rule = host_key_rule(self.ssh_conn_id, conn.host, int(conn.port) if conn.port else 22, extras)
            self._connection = (conn, extras)
        try:
            kwargs, trust = _connect_kwargs(*self._connection)  # the known_hosts file is read at every connection
        except KnownHostsError as exc:
            raise asyncssh.HostKeyNotVerifiable(str(exc)) from None
        kwargs.setdefault("connect_timeout", self.connect_timeout)
        try:
            self._conn = await asyncssh.connect(**kwargs)
        except asyncssh.HostKeyNotVerifiable as exc:
            if trust.refused:  # the rule's own reason, not asyncssh's wording of it
                raise asyncssh.HostKeyNotVerifiable(trust.refused) from exc
            raise
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

    async def run(
        self, line: str, timeout: float | None, wake: asyncio.Event | None = None, stdin: bytes = b""
    ) -> tuple[int | None, bytes, bytes]:
        """Run one command line with ``stdin`` as its standard input; return (exit status or None, stdout, stderr).
        Raises transport errors only.

        Without ``wake`` the input ends after ``stdin``. With ``wake``, it stays open after ``stdin`` and is closed
        when the event is set, so a command that answers on the end of its input (``wait --watch --wake-on-eof``)
        returns early."""
        import asyncssh

        try:
            conn = await asyncio.wait_for(self.connect(), timeout=self.connect_timeout + 5)
        except OrchesjobInvalidArgument as exc:  # the connection's settings, not the CLI: no use retrying
            raise OrchesjobTransportError(
                f"SSH connection {self.ssh_conn_id!r}: {exc}", command=line, sent=False, transient=False
            ) from exc
        except asyncssh.HostKeyNotVerifiable as exc:
            await self.close()
            message = self._rule.refusal(str(exc)) if self._rule else f"host key refused: {exc}"
            raise OrchesjobTransportError(message, command=line, sent=False, transient=False) from exc
        except asyncssh.PermissionDenied as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"SSH login to connection {self.ssh_conn_id!r} refused: {exc}",
                command=line,
                sent=False,
                transient=False,
            ) from exc
        except (asyncssh.Error, OSError, asyncio.TimeoutError, EOFError) as exc:
            await self.close()
            raise OrchesjobTransportError(
                f"could not connect over SSH ({self.ssh_conn_id!r}): {exc!r}", command=line, sent=False
            ) from exc
        try:
            if wake is None:
                if stdin:
                    running = conn.run(line, check=False, encoding=None, input=stdin)
                else:
                    running = conn.run(line, check=False, encoding=None, stdin=asyncssh.DEVNULL)
                result = await asyncio.wait_for(running, timeout=timeout)
            else:
                result = await asyncio.wait_for(_run_wakeable(conn, line, wake, stdin), timeout=timeout)
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


async def _run_wakeable(conn: Any, line: str, wake: asyncio.Event, stdin: bytes) -> Any:
    """Run ``line`` with ``stdin`` written and its input then held open; close it (end of file) when ``wake`` is
    set, then collect the result."""
    process = await conn.create_process(line, encoding=None)
    if stdin:
        process.stdin.write(stdin)
    finished = asyncio.ensure_future(process.wait(check=False))
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({finished, woken}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            process.stdin.write_eof()
        return await finished
    finally:
        woken.cancel()
        if not finished.done():
            finished.cancel()
            process.close()
