"""Hooks that run the orchesjob CLI on a remote host over SSH and return its parsed JSON.

Two flavours, same settings, same verbs:

- ``OrchesjobHook`` (synchronous, paramiko through the SSH provider's ``SSHHook``) for workers;
- ``OrchesjobAsyncHook`` (asyncio, asyncssh) for the triggerer.

Both offer ``start``, ``status``, ``wait``, ``logs``, ``abort``, ``rerun``, ``unlock``, ``clean``, ``version`` and
``run_cli`` (the async hook as coroutines). Every verb is defined once, in ``orchesjob_provider.command.Verbs``: its
arguments, how long its SSH call may take and how far a repeat of it is safe. Each hook has one ``call()`` that runs
such a definition over its transport (``orchesjob_provider.transport_paramiko`` / ``transport_asyncssh``) through
``orchesjob_provider.call_run``: it checks the remote CLI's JSON contract once before the first real call, quotes
every value, turns CLI errors into the typed exceptions of ``orchesjob_provider.exceptions``, and repeats a failed
attempt as ``orchesjob_provider.retry`` allows, logging every retry with its attempt number, error and pause.

The hooks are thin on purpose; what they share lives beside them:

- which CLI a host uses: ``orchesjob_provider.cli_choice`` (``CliChoice``, what a task asks for, and
  ``ResolvedCli``, the frozen value of the CLI that runs, which the trigger and the kill path are given);
- the first ``version`` of the sync hook, which settles that CLI and uploads this worker's copy where
  ``install_cli`` allows: ``orchesjob_provider.handshake``. The async hook never uploads: it runs the CLI the
  worker settled on, which the trigger carries;
- the connection form Airflow 2's UI asks the hook class for: ``orchesjob_provider.connection_form``.

Nothing of the user's is on any command line: the line is the CLI's path (checked words), the verb and ``--request
-``, and the call's arguments and state directory are its standard input (``command.Call.request``).

Retries, in short: reads and ``start`` are retried after any transient transport failure (``start`` carries a
request id, made per call unless given, that the host answers with the job it answered the first time, so a repeat
never launches a second execution, whatever the mode and whatever happened to the job meanwhile); ``abort``,
``rerun``, ``unlock`` and ``clean`` only when the failure happened before the command reached the host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any

from orchesjob.contract import DEFAULT_WAIT_TIMEOUT as DEFAULT_CLI_WAIT_TIMEOUT
from orchesjob_provider import CONN_TYPE, HOOK_NAME, connection_form
from orchesjob_provider import command as cmd
from orchesjob_provider.call_run import CallRun, CliSettings, run_blocking
from orchesjob_provider.cli_choice import DEFAULT_BIN, CliChoice, cli_settings_from_connection
from orchesjob_provider.cli_install import InstallCli
from orchesjob_provider.compat import BaseHook
from orchesjob_provider.exceptions import OrchesjobError
from orchesjob_provider.handshake import handshake
from orchesjob_provider.retry import ALWAYS, BEFORE_SEND, NEVER, RetryPolicy
from orchesjob_provider.transport_asyncssh import AsyncsshTransport
from orchesjob_provider.transport_asyncssh import connect_kwargs as asyncssh_connect_kwargs
from orchesjob_provider.transport_paramiko import ParamikoTransport

__all__ = [
    "DEFAULT_BIN",
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "RETRY_ALWAYS",
    "RETRY_BEFORE_SEND",
    "RETRY_NEVER",
    "CallRun",
    "CliChoice",
    "CliSettings",
    "OrchesjobAsyncHook",
    "OrchesjobHook",
    "asyncssh_connect_kwargs",
    "cli_settings_from_connection",
]

Binary = cmd.Binary

RETRY_NEVER = NEVER
RETRY_BEFORE_SEND = BEFORE_SEND
RETRY_ALWAYS = ALWAYS

DEFAULT_COMMAND_TIMEOUT = cmd.DEFAULT_COMMAND_TIMEOUT
DEFAULT_WAIT_TIMEOUT = DEFAULT_CLI_WAIT_TIMEOUT


class _OrchesjobHookBase(BaseHook):
    """The settings both hooks take (see ``OrchesjobHook`` for what they mean)."""

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    # The provider's own connection type (an SSH connection plus orchesjob_bin / orchesjob_home), so that the UI's
    # "Test" button reaches ``OrchesjobHook.test_connection``. Plain ``ssh`` connections work as well: nothing here
    # or in the SSH provider's ``SSHHook`` looks at the type, only at the fields and extras.
    conn_type = CONN_TYPE

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        orchesjob_bin: Binary | None = None,
        orchesjob_home: str | None = None,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        retries: int = 3,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
        check_version: bool = True,
        install_cli: InstallCli | None = None,
        orchesjob_python: str | None = None,
        cli_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.cli_given = (orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
        policy = RetryPolicy(retries, retry_backoff, max_backoff)
        self.settings = CliSettings(
            orchesjob_bin,
            orchesjob_home,
            command_timeout,
            policy,
            check_version,
            install_cli,
            orchesjob_python,
            cli_sha256,
        )


class OrchesjobHook(_OrchesjobHookBase, cmd.Verbs[Any]):
    """Synchronous access to a remote orchesjob CLI through an Airflow SSH connection.

    :param ssh_conn_id: an Airflow connection of the SSH provider's type (host, port, login, password, extras
        ``key_file`` / ``private_key`` ...). Its host key is checked by ``orchesjob_provider.host_keys`` (extras
        ``no_host_key_check`` / ``host_key`` / ``known_hosts``, else ``~/.ssh/known_hosts``): unknown hosts are refused.
    :param orchesjob_bin: the remote CLI: a path (``~/`` allowed) or an argv prefix such as
        ``["/opt/venv/bin/python", "-m", "orchesjob"]``. Non-login SSH commands have a short PATH, so an absolute
        path is the safe choice. None (default): no CLI named; ``orchesjob`` on the PATH, or the uploaded copy.
    :param install_cli: ``"auto"`` (default; None means it): when no CLI is named and the host has none on the PATH,
        upload this worker's CLI to ``~/.cache/orchesjob`` over SFTP and run it there (``orchesjob_provider.
        cli_install``); ``"never"``: never upload; ``"always"``: run the uploaded copy whatever the host has (then
        ``orchesjob_bin`` must be unset). A CLI that is found but speaks another contract is an error, never
        shadowed by an upload.
    :param orchesjob_python: the host's interpreter for the uploaded CLI (3.9+); None: ``python3`` and the usual
        absolute paths are tried.
    :param orchesjob_home: the remote state directory (an absolute path or ``~/...``; it travels in each call's
        request, in place of ``ORCHESJOB_HOME``); None leaves the host's default. (The hooks take these four as
        given; the operator and sensor fall back on the connection's extras of the same names, see
        ``cli_settings_from_connection``.)
    :param cli_sha256: with ``orchesjob_bin=[PYTHON, PYZ]`` of a CLI a worker uploaded: its sha256, which every call
        verifies before it runs the file (``orchesjob_provider.launcher``; a trigger gets it from the worker).
    :param command_timeout: seconds one CLI call may take over SSH (``wait`` gets its own timeout on top).
    :param retries: how many times a call is repeated after a failure that its verb allows repeating (3).
    :param retry_backoff: first pause between retries in seconds; doubles each time up to ``max_backoff``.
    :param check_version: check the remote CLI's contract before the first call (recommended).
    :param ssh_hook_kwargs: extra keyword arguments for the SSH provider's ``SSHHook`` (``conn_timeout``,
        ``keepalive_interval``, ``banner_timeout`` ...).

    The verbs (``start``, ``status``, ``wait``, ``logs``, ``abort``, ``rerun``, ``unlock``, ``clean``, ``version``,
    ``run_cli``) are documented on ``orchesjob_provider.command.Verbs``; here they return the parsed JSON, each
    job's ``env`` with its values replaced by ``"***"`` (names only: no value reaches XCom, a trigger event or a log).
    """

    hook_name = HOOK_NAME

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's standard fields (Airflow 2; Airflow 3.2+ reads the provider info instead)."""
        return connection_form.ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields (Airflow 2's Flask UI; Airflow 3.2+ reads the provider info's
        ``conn-fields`` instead and never calls this)."""
        return connection_form.form_widgets()

    def __init__(self, *args: Any, ssh_hook_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = ParamikoTransport(self.ssh_conn_id, ssh_hook_kwargs, self.settings.command_timeout)

    def call(self, call: cmd.Call) -> Any:
        """Run one verb's definition over SSH and return the CLI's parsed JSON (see the module docstring). The first
        ``version`` is the handshake, which settles the CLI (``orchesjob_provider.handshake``)."""
        if self.settings.version_first(call):
            self.version()
        if call.verb == "version" and self.settings.cli_version is None:
            return handshake(self.settings, self.transport, call, self.log)
        return run_blocking(self.settings, self.transport, call, self.log)

    @property
    def ssh_hook(self) -> Any:
        """The SSH provider's ``SSHHook`` this hook connects through."""
        return self.transport.ssh_hook

    def get_conn(self) -> Any:
        """A connected paramiko ``SSHClient``, reused across calls while its transport is alive."""
        return self.transport.connect()

    def close(self) -> None:
        """Close the SSH connection (the next call reconnects)."""
        self.transport.close()

    def __enter__(self) -> OrchesjobHook:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """For the Airflow UI's "Test" button (and ``POST /api/v2/connections/test``) on an ``orchesjob_ssh``
        connection: log in, run ``orchesjob version`` and check its contract, once, without retries.

        Answers ``(True, "orchesjob 0.1.0 (contract 2) at HOST:PORT")`` or ``(False, why)``. The CLI path and state
        directory are this hook's when it was given them, else the connection's ``orchesjob_bin`` /
        ``orchesjob_home`` extras (Airflow makes the hook with the connection id only).
        """
        where = "?"
        try:
            settings = self.settings
            choice = cli_settings_from_connection(self.ssh_conn_id, *self.cli_given)
            conn = BaseHook.get_connection(self.ssh_conn_id)
            where = f"{conn.host}:{conn.port or 22}"
            probe = OrchesjobHook(
                self.ssh_conn_id,
                **choice.hook_kwargs(),
                command_timeout=settings.command_timeout,
                retries=0,
                ssh_hook_kwargs=self.transport.ssh_hook_kwargs,
            )
            try:
                info = probe.version()
            finally:
                probe.close()
        except Exception as exc:  # noqa: BLE001 - the UI wants a message, not a traceback
            message = getattr(exc, "message", None) or str(exc) or repr(exc)
            return False, f"orchesjob at {where}: {type(exc).__name__}: {message}"
        cli = probe.settings.cli_info() or {}
        return True, (
            f"orchesjob {info.get('version')} (contract {info.get('contract')}) at {where}: "
            f"{cli.get('path')} ({cli.get('origin')})"
        )


class OrchesjobAsyncHook(_OrchesjobHookBase, cmd.Verbs[Awaitable[Any]]):
    """The asyncio counterpart of ``OrchesjobHook`` for triggers: the same settings and verbs (as coroutines), over
    one reused asyncssh connection. It never uploads a CLI (``install_cli`` is ``"never"``) nor guesses one: a
    trigger runs the argv its worker resolved, which travels in the trigger's kwargs.

    :param connect_timeout: seconds to connect and log in (unless the connection's ``conn_timeout`` extra says).
    :param retries: as on ``OrchesjobHook``, but 0 by default: the trigger does its own, longer, retrying.
    """

    hook_name = "Orchesjob (async)"

    def __init__(self, *args: Any, connect_timeout: float = 30.0, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        if kwargs.get("install_cli") not in (None, "never"):
            raise ValueError(
                "the async hook never uploads a CLI: give it the argv a worker's hook resolved "
                "(OrchesjobHook.settings.orchesjob_bin), as the trigger does"
            )
        kwargs["install_cli"] = "never"
        super().__init__(*args, **kwargs)
        self.transport = AsyncsshTransport(self.ssh_conn_id, connect_timeout)
        self._wake: asyncio.Event | None = None
        self._wake_pending = False

    async def call(self, call: cmd.Call) -> Any:
        """Run one verb's definition over asyncssh and return the CLI's parsed JSON (see the module docstring)."""
        if self.settings.version_first(call):
            await self.version()
        run = self.settings.begin(call, self.log)
        while not run.done:
            wake = None
            if call.wakeable:
                wake = self._wake = asyncio.Event()
                if self._wake_pending:  # asked for while no wakeable call was out (e.g. during the version check)
                    self._wake_pending = False
                    wake.set()
            try:
                run.answer(await self.transport.run(run.line, run.timeout, wake, run.stdin))
            except OrchesjobError as exc:
                await asyncio.sleep(run.pause(exc))
            finally:
                if wake is not None and self._wake is wake:
                    self._wake = None
        return run.result

    def wake(self) -> None:
        """Cut short the wakeable call in flight (``watch(..., wake_on_eof=True)``): its stdin is closed and the CLI
        answers at once with what it has. Asked while no such call is out, it cuts the next one short instead, so a
        caller that changed what it wants to watch never waits a whole poll for it."""
        if self._wake is None:
            self._wake_pending = True
        else:
            self._wake.set()

    async def get_conn(self) -> Any:
        """A connected asyncssh ``SSHClientConnection``, reused while it is open."""
        return await self.transport.connect()

    async def close(self) -> None:
        """Close the connection (the next call reconnects). Never raises."""
        await self.transport.close()
