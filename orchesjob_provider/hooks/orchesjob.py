"""Hooks that run the orchesjob CLI on a remote host over SSH and return its parsed JSON.

Two flavours, same settings:

- ``OrchesjobHook`` (synchronous, paramiko through the SSH provider's ``SSHHook``) for workers: ``start``, ``status``,
  ``wait``, ``logs``, ``abort``, ``rerun``, ``unlock``, ``clean``, ``version``.
- ``OrchesjobAsyncHook`` (asyncio, asyncssh) for the triggerer. It reads the Airflow connection itself and talks to
  asyncssh directly rather than through the SSH provider's async hook, because Airflow 2.10 (still on MWAA) only
  gets an SSH provider without one.

Both quote every value (see ``orchesjob_provider.command``), check the remote CLI's JSON contract once before the
first real call, and turn CLI errors into the typed exceptions of ``orchesjob_provider.exceptions``.

Retries: a call whose answer was lost in transit is repeated only when repeating it cannot do anything twice.
Read-only verbs (status/wait/logs/version) and ``start`` in ``reuse_success``/``strict`` mode are idempotent by run
key, so they are retried after any transport failure. ``start`` in ``default`` mode would start a second job if the
first one already finished, and abort/rerun/unlock/clean change state, so those are retried only when the failure
happened before the command reached the host.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import select
import time
from collections.abc import Mapping, Sequence
from typing import Any, Union

from orchesjob_provider import command as cmd
from orchesjob_provider.compat import BaseHook, aget_connection, aget_extra_dejson
from orchesjob_provider.exceptions import (
    OrchesjobError,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobLockTimeout,
    OrchesjobTransportError,
)

Binary = Union[str, Sequence[str]]

RETRY_NEVER = "never"
RETRY_BEFORE_SEND = "before_send"
RETRY_ALWAYS = "always"

DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_WAIT_TIMEOUT = 30.0


def _truthy(value: Any) -> bool:
    """Connection extras arrive as JSON booleans or as strings ("true", "True") depending on how they were made."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _start_retry_policy(mode: str) -> str:
    """A start may be repeated blindly only where the CLI returns the same job for the same run key."""
    return RETRY_ALWAYS if mode in ("reuse_success", "strict") else RETRY_BEFORE_SEND


def _may_retry(exc: OrchesjobError, policy: str) -> bool:
    if policy == RETRY_NEVER:
        return False
    if isinstance(exc, OrchesjobLockTimeout):
        # The CLI gave up before writing anything; only idempotent calls retry it though, to be safe.
        return policy == RETRY_ALWAYS
    if isinstance(exc, OrchesjobTransportError) and getattr(exc, "transient", True):
        return policy == RETRY_ALWAYS or not getattr(exc, "command_sent", True)
    return False


def _remember_sent(exc: OrchesjobError, sent_before: bool) -> bool:
    """Once any attempt reached the host, the caller must hear "sent" even if a later attempt failed earlier."""
    sent = sent_before or bool(getattr(exc, "command_sent", False))
    if sent and isinstance(exc, OrchesjobTransportError):
        exc.command_sent = True  # type: ignore[attr-defined]
    return sent


def _transport_error(message: str, *, command: str, sent: bool, transient: bool = True) -> OrchesjobTransportError:
    exc = OrchesjobTransportError(message, command=command)
    exc.command_sent = sent  # type: ignore[attr-defined]
    exc.transient = transient  # type: ignore[attr-defined]
    return exc


def _parse_sent(out: bytes, exit_code: int | None, err: bytes, line: str) -> Any:
    """Parse an answer; a transport failure found here happened after the command reached the host."""
    try:
        return cmd.parse_output(out, exit_code, err, command=line)
    except OrchesjobTransportError as exc:
        exc.command_sent = True  # type: ignore[attr-defined]
        raise


class _CliSettings:
    """What both hooks share: where the CLI is, which state directory, retry and version-check policy."""

    def __init__(
        self,
        orchesjob_bin: Binary,
        orchesjob_home: str | None,
        command_timeout: float,
        retries: int,
        retry_backoff: float,
        max_backoff: float,
        check_version: bool,
    ) -> None:
        # Validate once, at construction, so a bad setting fails the DAG parse / task start instead of a retry.
        cmd.cli_prefix(orchesjob_bin, orchesjob_home)
        self.orchesjob_bin = orchesjob_bin if isinstance(orchesjob_bin, str) else list(orchesjob_bin)
        self.orchesjob_home = orchesjob_home
        self.command_timeout = float(command_timeout)
        self.retries = max(0, int(retries))
        self.retry_backoff = max(0.0, float(retry_backoff))
        self.max_backoff = max(0.0, float(max_backoff))
        self.check_version = check_version
        self.cli_version: dict[str, Any] | None = None

    def command_line(self, args: Sequence[Any]) -> str:
        return cmd.build_command_line(args, orchesjob_bin=self.orchesjob_bin, orchesjob_home=self.orchesjob_home)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based): exponential, capped."""
        return min(self.retry_backoff * (2 ** (attempt - 1)), self.max_backoff)

    @staticmethod
    def wait_exec_timeout(timeout: float | None, command_timeout: float) -> float:
        """A ``wait`` legitimately runs for its own timeout; give the SSH call that long plus the usual budget."""
        return (DEFAULT_WAIT_TIMEOUT if timeout is None else float(timeout)) + command_timeout

    def version_error(self, exc: OrchesjobError) -> OrchesjobError:
        """Explain a failed ``version`` call: a CLI without it predates the JSON contract."""
        if isinstance(exc, OrchesjobInvalidArgument):
            return OrchesjobIncompatibleCli(
                "the remote orchesjob has no `version` command, so it predates the JSON contract this provider "
                f"needs (contract {cmd.CONTRACT_VERSION}); upgrade orchesjob on the host. CLI said: {exc.message}",
                exit_code=exc.exit_code,
                payload=exc.payload,
                stderr=exc.stderr,
                command=exc.command,
            )
        return exc


class OrchesjobHook(BaseHook):
    """Synchronous access to a remote orchesjob CLI through an Airflow SSH connection.

    :param ssh_conn_id: an Airflow connection of the SSH provider's type (host, port, login, password, extras
        ``key_file`` / ``private_key`` / ``no_host_key_check`` / ``host_key`` ...).
    :param orchesjob_bin: the remote CLI: a path (``~/`` allowed) or an argv prefix such as
        ``["/opt/venv/bin/python", "-m", "orchesjob"]``. Non-login SSH commands have a short PATH, so an absolute
        path is the safe choice.
    :param orchesjob_home: the remote ``ORCHESJOB_HOME`` (state directory); None leaves the host's default.
    :param command_timeout: seconds one CLI call may take over SSH (``wait`` gets its own timeout on top).
    :param retries: how many times an idempotent call is repeated after a transient SSH failure.
    :param retry_backoff: first pause between retries in seconds; doubles each time up to ``max_backoff``.
    :param check_version: check the remote CLI's contract before the first call (recommended).
    :param ssh_hook_kwargs: extra keyword arguments for the SSH provider's ``SSHHook`` (``conn_timeout``,
        ``keepalive_interval``, ``banner_timeout`` ...).
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "Orchesjob"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        orchesjob_bin: Binary = "orchesjob",
        orchesjob_home: str | None = None,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        retries: int = 3,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
        check_version: bool = True,
        ssh_hook_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.settings = _CliSettings(
            orchesjob_bin, orchesjob_home, command_timeout, retries, retry_backoff, max_backoff, check_version
        )
        self.ssh_hook_kwargs = dict(ssh_hook_kwargs or {})
        self._ssh_hook: Any = None
        self._client: Any = None

    # ------------------------------------------------------------------ connection

    @property
    def ssh_hook(self) -> Any:
        """The SSH provider's hook, made on first use (it reads the connection when constructed)."""
        if self._ssh_hook is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            self._ssh_hook = SSHHook(ssh_conn_id=self.ssh_conn_id, **self.ssh_hook_kwargs)
        return self._ssh_hook

    def get_conn(self) -> Any:
        """A connected paramiko ``SSHClient``, reused across calls while its transport is alive."""
        client = self._client
        if client is not None:
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client
            self.close()
        hook = self.ssh_hook
        hook.client = None  # never hand back a client we closed
        self._client = hook.get_conn()
        return self._client

    def close(self) -> None:
        """Close the SSH connection (the next call reconnects)."""
        client, self._client = self._client, None
        if self._ssh_hook is not None:
            self._ssh_hook.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
                pass

    def __enter__(self) -> OrchesjobHook:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """For the Airflow UI's "Test" button: can we log in and does the remote CLI speak our contract?"""
        try:
            info = self.version()
        except Exception as exc:  # noqa: BLE001 - the UI wants a message, not a traceback
            return False, str(exc)
        return True, f"orchesjob {info.get('version')} (contract {info.get('contract')})"

    # ------------------------------------------------------------------ low level

    def _exec(self, command_line: str, timeout: float | None) -> tuple[int | None, bytes, bytes]:
        """Run one command line; return (exit status or None, stdout, stderr). Raises transport errors only."""
        import paramiko

        try:
            client = self.get_conn()
        except (paramiko.AuthenticationException, paramiko.BadHostKeyException) as exc:
            raise _transport_error(
                f"SSH login to connection {self.ssh_conn_id!r} refused: {exc}",
                command=command_line,
                sent=False,
                transient=False,
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise _transport_error(
                f"could not connect over SSH ({self.ssh_conn_id!r}): {exc!r}", command=command_line, sent=False
            ) from exc
        sent = False
        channel = None
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("SSH transport is not active")
            channel = transport.open_session(timeout=self.settings.command_timeout)
            # From here on the host may have the command even if we never hear back: a lost acknowledgement of the
            # exec request must not look like "never sent", or a non-idempotent call would be repeated.
            sent = True
            self._exec_with_deadline(transport, channel, command_line)
            channel.shutdown_write()  # the CLI reads no stdin; an EOF makes sure nothing ever waits on it
            return self._collect(channel, command_line, timeout)
        except OrchesjobTransportError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise _transport_error(
                f"SSH failure while running orchesjob: {exc!r}", command=command_line, sent=sent
            ) from exc
        finally:
            if channel is not None:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - a link lost while closing must not hide the answer we have
                    self.close()

    def _exec_with_deadline(self, transport: Any, channel: Any, command_line: str) -> None:
        """paramiko waits for the exec request's reply without a time limit; on a link that went silent that is
        forever. A watchdog closes the transport after ``command_timeout``, which makes the wait fail."""
        import threading

        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            transport.close()

        watchdog = threading.Timer(self.settings.command_timeout, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            channel.exec_command(command_line)
        except Exception as exc:
            if fired.is_set():
                raise _transport_error(
                    f"no answer to the exec request within {self.settings.command_timeout:g}s",
                    command=command_line, sent=True,
                ) from exc
            raise
        finally:
            watchdog.cancel()

    @staticmethod
    def _collect(channel: Any, command_line: str, timeout: float | None) -> tuple[int | None, bytes, bytes]:
        """Read stdout and stderr together until EOF (so neither fills its window and blocks the remote CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []

        def remaining() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        while True:
            while channel.recv_ready():
                out.append(channel.recv(65536))
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
            if channel.eof_received or channel.closed:
                # Data that raced the EOF is buffered by now.
                while channel.recv_ready():
                    out.append(channel.recv(65536))
                while channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(65536))
                break
            left = remaining()
            if left is not None and left <= 0:
                raise _transport_error(
                    f"orchesjob did not answer within {timeout:g}s", command=command_line, sent=True
                )
            select.select([channel], [], [], 1.0 if left is None else max(0.0, min(1.0, left)))
        left = remaining()
        if not channel.status_event.wait(5.0 if left is None else max(0.1, min(left, 5.0))):
            return None, b"".join(out), b"".join(err)
        status = channel.exit_status
        return (None if status == -1 else status), b"".join(out), b"".join(err)

    def _run_once(self, args: Sequence[Any], timeout: float | None) -> Any:
        line = self.settings.command_line(args)
        exit_code, out, err = self._exec(line, timeout)
        return _parse_sent(out, exit_code, err, line)

    def _ensure_compatible(self) -> None:
        if self.settings.check_version and self.settings.cli_version is None:
            self.version()

    def run_cli(self, args: Sequence[Any], *, timeout: float | None = None, retry: str = RETRY_NEVER) -> Any:
        """Run ``orchesjob ARGS...`` (every element quoted) and return its parsed JSON; the escape hatch for verbs
        or flags this hook does not wrap. ``retry`` is ``"never"``, ``"before_send"`` or ``"always"``."""
        self._ensure_compatible()
        return self._with_retries(args, timeout, retry)

    def _with_retries(self, args: Sequence[Any], timeout: float | None, policy: str) -> Any:
        attempt = 0
        sent_before = False
        while True:
            try:
                return self._run_once(args, self.settings.command_timeout if timeout is None else timeout)
            except OrchesjobError as exc:
                sent_before = _remember_sent(exc, sent_before)
                if attempt >= self.settings.retries or not _may_retry(exc, policy):
                    raise
                attempt += 1
                pause = self.settings.backoff(attempt)
                self.log.warning(
                    "orchesjob %s failed (%s); retry %d of %d in %.1fs",
                    args[0] if args else "", exc, attempt, self.settings.retries, pause,
                )
                time.sleep(pause)

    # ------------------------------------------------------------------ verbs

    def version(self) -> dict[str, Any]:
        """The remote CLI's ``version`` JSON, checked against our contract (cached after the first success)."""
        if self.settings.cli_version is not None:
            return self.settings.cli_version
        try:
            payload = self._with_retries(cmd.version_args(), None, RETRY_ALWAYS)
        except OrchesjobError as exc:
            raise self.settings.version_error(exc) from exc
        self.settings.cli_version = cmd.check_version(payload)
        return self.settings.cli_version

    def start(
        self,
        run_key: str,
        command: str | Sequence[Any],
        *,
        mode: str = "reuse_success",
        cwd: str | None = None,
        env: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        start_timeout: float | None = None,
        sync: bool = False,
        exec_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Start (or, by run key, reattach to / adopt) a job; returns the job plus ``existing``,
        ``parameters_match`` and friends. A string ``command`` runs through ``/bin/sh -c`` on the host.

        ``exec_timeout`` bounds the SSH call; it defaults to ``command_timeout`` plus ``start_timeout`` (and is
        unbounded for ``sync=True``, which waits for the job itself).
        """
        args = cmd.start_args(
            run_key, command, mode=mode, cwd=cwd, env=env, timeout=timeout, start_timeout=start_timeout, sync=sync
        )
        if exec_timeout is None and not sync:
            exec_timeout = self.settings.command_timeout + float(start_timeout or 10)
        self._ensure_compatible()
        return self._with_retries(args, exec_timeout, _start_retry_policy(mode))

    def status(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        running: bool = False,
        all_attempts: bool = False,
    ) -> Any:
        """The latest job of a run key, or one job by id (a dict); every attempt (``all_attempts``) or every
        active job (``running``) as a list."""
        args = cmd.status_args(run_key=run_key, job_id=job_id, running=running, all_attempts=all_attempts)
        return self.run_cli(args, retry=RETRY_ALWAYS)

    def wait(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        stdout_offset: int | None = None,
        stderr_offset: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Long-poll until the job is terminal, ``timeout`` passes, or (given offsets) a log grows; returns the job
        plus ``timed_out`` and, with offsets, ``logs`` chunks."""
        args = cmd.wait_args(
            run_key=run_key,
            job_id=job_id,
            timeout=timeout,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            max_bytes=max_bytes,
        )
        exec_timeout = self.settings.wait_exec_timeout(timeout, self.settings.command_timeout)
        return self.run_cli(args, timeout=exec_timeout, retry=RETRY_ALWAYS)

    def logs(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        stream: str = "stdout",
        offset: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> dict[str, Any]:
        """One CHUNK of a job's log (``data``, ``offset``, ``next_offset``, ``size``); read on from ``next_offset``."""
        args = cmd.logs_args(run_key=run_key, job_id=job_id, stream=stream, offset=offset, limit=limit, tail=tail)
        return self.run_cli(args, retry=RETRY_ALWAYS)

    def abort(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        reason: str | None = None,
        grace_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Abort an active job (SIGTERM, then SIGKILL after ``grace_seconds``). Raises ``OrchesjobConflict`` when
        the job already finished."""
        args = cmd.abort_args(run_key=run_key, job_id=job_id, reason=reason, grace_seconds=grace_seconds)
        timeout = self.settings.command_timeout + float(grace_seconds if grace_seconds is not None else 5)
        return self.run_cli(args, timeout=timeout, retry=RETRY_BEFORE_SEND)

    def rerun(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        reason: str | None = None,
        start_timeout: float | None = None,
        sync: bool = False,
        exec_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Start a new execution of a finished job's command (never retried once sent: it is not idempotent)."""
        args = cmd.rerun_args(run_key=run_key, job_id=job_id, reason=reason, start_timeout=start_timeout, sync=sync)
        if exec_timeout is None and not sync:
            exec_timeout = self.settings.command_timeout + float(start_timeout or 10)
        self._ensure_compatible()
        return self._with_retries(args, exec_timeout, RETRY_BEFORE_SEND)

    def unlock(
        self, run_key: str, *, reason: str | None = None, ttl: int | str | None = None
    ) -> dict[str, Any]:
        """Allow one more ``strict`` execution of a finished run key (optionally expiring after ``ttl``)."""
        return self.run_cli(cmd.unlock_args(run_key, reason=reason, ttl=ttl), retry=RETRY_BEFORE_SEND)

    def clean(
        self,
        *,
        before: Any | None = None,
        after: Any | None = None,
        all_jobs: bool = False,
        job_id: str | None = None,
        run_key: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete finished jobs and their logs on the host (active jobs are never touched)."""
        args = cmd.clean_args(
            before=before, after=after, all_jobs=all_jobs, job_id=job_id, run_key=run_key, dry_run=dry_run
        )
        return self.run_cli(args, retry=RETRY_BEFORE_SEND)


# ====================================================================== async


def asyncssh_connect_kwargs(conn: Any, extras: Mapping[str, Any]) -> dict[str, Any]:
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


class OrchesjobAsyncHook(BaseHook):
    """The asyncio counterpart of ``OrchesjobHook`` for triggers: the same settings, one reused asyncssh connection.

    Only what a trigger needs is here: the read-only verbs (``version``, ``status``, ``wait``, ``logs``), which
    ``retries`` repeats after transport failures, and ``abort`` for a trigger's ``on_kill``, which is repeated only
    when the failure happened before the command reached the host.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "Orchesjob (async)"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        orchesjob_bin: Binary = "orchesjob",
        orchesjob_home: str | None = None,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        connect_timeout: float = 30.0,
        retries: int = 0,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
        check_version: bool = True,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.settings = _CliSettings(
            orchesjob_bin, orchesjob_home, command_timeout, retries, retry_backoff, max_backoff, check_version
        )
        self.connect_timeout = float(connect_timeout)
        self._conn: Any = None
        self._connect_kwargs: dict[str, Any] | None = None

    async def get_conn(self) -> Any:
        """A connected asyncssh ``SSHClientConnection``, reused while it is open."""
        import asyncssh

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        await self.close()
        if self._connect_kwargs is None:
            conn = await aget_connection(self.ssh_conn_id)
            extras = await aget_extra_dejson(conn)
            self._connect_kwargs = asyncssh_connect_kwargs(conn, extras)
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

    async def _exec(self, command_line: str, timeout: float | None) -> tuple[int | None, bytes, bytes]:
        import asyncssh

        try:
            conn = await asyncio.wait_for(self.get_conn(), timeout=self.connect_timeout + 5)
        except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable) as exc:
            await self.close()
            raise _transport_error(
                f"SSH login to connection {self.ssh_conn_id!r} refused: {exc}",
                command=command_line,
                sent=False,
                transient=False,
            ) from exc
        except (asyncssh.Error, OSError, asyncio.TimeoutError, EOFError) as exc:
            await self.close()
            raise _transport_error(
                f"could not connect over SSH ({self.ssh_conn_id!r}): {exc!r}", command=command_line, sent=False
            ) from exc
        try:
            result = await asyncio.wait_for(
                conn.run(command_line, check=False, encoding=None, stdin=asyncssh.DEVNULL), timeout=timeout
            )
        except asyncio.TimeoutError as exc:
            await self.close()
            raise _transport_error(
                f"orchesjob did not answer within {timeout:g}s", command=command_line, sent=True
            ) from exc
        except (asyncssh.Error, OSError, EOFError) as exc:
            await self.close()
            raise _transport_error(
                f"SSH failure while running orchesjob: {exc!r}", command=command_line, sent=True
            ) from exc
        out = result.stdout or b""
        err = result.stderr or b""
        # None: the channel closed without an exit status; -1: killed by a signal. Both are transport failures.
        return result.exit_status, out, err

    async def _run_once(self, args: Sequence[Any], timeout: float | None) -> Any:
        line = self.settings.command_line(args)
        exit_code, out, err = await self._exec(line, timeout)
        return _parse_sent(out, exit_code, err, line)

    async def _with_retries(self, args: Sequence[Any], timeout: float | None, policy: str) -> Any:
        attempt = 0
        sent_before = False
        while True:
            try:
                return await self._run_once(args, self.settings.command_timeout if timeout is None else timeout)
            except OrchesjobError as exc:
                sent_before = _remember_sent(exc, sent_before)
                if attempt >= self.settings.retries or not _may_retry(exc, policy):
                    raise
                attempt += 1
                await asyncio.sleep(self.settings.backoff(attempt))

    async def run_cli(self, args: Sequence[Any], *, timeout: float | None = None, retry: str = RETRY_NEVER) -> Any:
        """Run ``orchesjob ARGS...`` over asyncssh and return the parsed JSON (see ``OrchesjobHook.run_cli``)."""
        if self.settings.check_version and self.settings.cli_version is None:
            await self.version()
        return await self._with_retries(args, timeout, retry)

    async def version(self) -> dict[str, Any]:
        """The remote CLI's ``version`` JSON, checked against our contract (cached after the first success)."""
        if self.settings.cli_version is not None:
            return self.settings.cli_version
        try:
            payload = await self._with_retries(cmd.version_args(), None, RETRY_ALWAYS)
        except OrchesjobError as exc:
            raise self.settings.version_error(exc) from exc
        self.settings.cli_version = cmd.check_version(payload)
        return self.settings.cli_version

    async def status(self, *, run_key: str | None = None, job_id: str | None = None) -> dict[str, Any]:
        """The latest job of a run key, or one job by id."""
        return await self.run_cli(cmd.status_args(run_key=run_key, job_id=job_id), retry=RETRY_ALWAYS)

    async def wait(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        stdout_offset: int | None = None,
        stderr_offset: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Long-poll ``wait`` (see ``OrchesjobHook.wait``)."""
        args = cmd.wait_args(
            run_key=run_key,
            job_id=job_id,
            timeout=timeout,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            max_bytes=max_bytes,
        )
        exec_timeout = self.settings.wait_exec_timeout(timeout, self.settings.command_timeout)
        return await self.run_cli(args, timeout=exec_timeout, retry=RETRY_ALWAYS)

    async def logs(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        stream: str = "stdout",
        offset: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> dict[str, Any]:
        """One CHUNK of a job's log (see ``OrchesjobHook.logs``)."""
        args = cmd.logs_args(run_key=run_key, job_id=job_id, stream=stream, offset=offset, limit=limit, tail=tail)
        return await self.run_cli(args, retry=RETRY_ALWAYS)

    async def abort(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        reason: str | None = None,
        grace_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Abort an active job (see ``OrchesjobHook.abort``)."""
        args = cmd.abort_args(run_key=run_key, job_id=job_id, reason=reason, grace_seconds=grace_seconds)
        timeout = self.settings.command_timeout + float(grace_seconds if grace_seconds is not None else 5)
        return await self.run_cli(args, timeout=timeout, retry=RETRY_BEFORE_SEND)
