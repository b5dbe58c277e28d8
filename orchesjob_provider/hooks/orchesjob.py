"""Hooks that run the orchesjob CLI on a remote host over SSH and return its parsed JSON.

Two flavours, same settings, same verbs:

- ``OrchesjobHook`` (synchronous, paramiko through the SSH provider's ``SSHHook``) for workers;
- ``OrchesjobAsyncHook`` (asyncio, asyncssh) for the triggerer.

Both offer ``start``, ``status``, ``wait``, ``logs``, ``abort``, ``rerun``, ``unlock``, ``clean``, ``version`` and
``run_cli`` (the async hook as coroutines). Every verb is defined once, in ``orchesjob_provider.command.Verbs``: its
arguments, how long its SSH call may take and how far a repeat of it is safe. Each hook has one ``call()`` that runs
such a definition over its transport (``orchesjob_provider.transport_paramiko`` / ``transport_asyncssh``): it checks
the remote CLI's JSON contract once before the first real call, quotes every value, turns CLI errors into the typed
exceptions of ``orchesjob_provider.exceptions``, and repeats a failed attempt as ``orchesjob_provider.retry`` allows,
logging every retry with its attempt number, error and pause.

Which CLI runs is settled by that first ``version`` (the handshake) in the sync hook: a CLI the host has (named by
``orchesjob_bin``, or ``orchesjob`` on the PATH) if it speaks our contract, and an error if it exists but does not
(never shadowed); only when the host has no such file at all (asked of the host: ``cli_install.probe``) and none was
named, this worker's own CLI, uploaded to the host's cache by ``orchesjob_provider.cli_install``, and then run
through ``orchesjob_provider.launcher``, which verifies it on every call. The async hook never uploads: it runs the
CLI the worker settled on, which the trigger carries.

Nothing of the user's is on any command line: the line is the CLI's path (checked words), the verb and ``--request
-``, and the call's arguments and state directory are its standard input (``command.Call.request``).

Retries, in short: reads and ``start`` are retried after any transient transport failure (``start`` carries a
request id, made per call unless given, that the host answers with the job it answered the first time, so a repeat
never launches a second execution, whatever the mode and whatever happened to the job meanwhile); ``abort``,
``rerun``, ``unlock`` and ``clean`` only when the failure happened before the command reached the host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Union

from orchesjob.contract import CONTRACT_VERSION
from orchesjob.contract import DEFAULT_WAIT_TIMEOUT as DEFAULT_CLI_WAIT_TIMEOUT
from orchesjob_provider import CONN_FIELDS, CONN_TYPE, HOOK_NAME, UI_FIELD_BEHAVIOUR, cli_install, launcher
from orchesjob_provider import command as cmd
from orchesjob_provider.cli_install import InstallCli, check_install_cli
from orchesjob_provider.cli_pack import packed_cli
from orchesjob_provider.compat import BaseHook
from orchesjob_provider.exceptions import (
    OrchesjobCliBroken,
    OrchesjobCliMissing,
    OrchesjobError,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobTransportError,
)
from orchesjob_provider.retry import ALWAYS, BEFORE_SEND, NEVER, Attempts, RetryPolicy
from orchesjob_provider.transport_asyncssh import AsyncsshTransport
from orchesjob_provider.transport_asyncssh import connect_kwargs as asyncssh_connect_kwargs
from orchesjob_provider.transport_paramiko import ParamikoTransport

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "RETRY_ALWAYS",
    "RETRY_BEFORE_SEND",
    "RETRY_NEVER",
    "CliChoice",
    "CliSettings",
    "OrchesjobAsyncHook",
    "OrchesjobHook",
    "asyncssh_connect_kwargs",
    "cli_settings_from_connection",
]

Binary = Union[str, Sequence[str]]

RETRY_NEVER = NEVER
RETRY_BEFORE_SEND = BEFORE_SEND
RETRY_ALWAYS = ALWAYS

DEFAULT_COMMAND_TIMEOUT = cmd.DEFAULT_COMMAND_TIMEOUT
DEFAULT_WAIT_TIMEOUT = DEFAULT_CLI_WAIT_TIMEOUT


DEFAULT_BIN = "orchesjob"  # what runs when no CLI is named: the one on the SSH command's PATH


@dataclasses.dataclass(frozen=True)
class CliChoice:
    """Which CLI a task asks for: a named one (``orchesjob_bin``; None: none named), its state directory, whether
    the provider may upload its own (``install_cli``) and with which interpreter (``orchesjob_python``)."""

    orchesjob_bin: Binary | None = None
    orchesjob_home: str | None = None
    install_cli: InstallCli = "auto"
    orchesjob_python: str | None = None

    def __post_init__(self) -> None:
        """Refuse what cannot work before anything connects (at DAG parse time for an operator or sensor)."""
        check_install_cli(self.install_cli)
        if self.install_cli == "always" and self.orchesjob_bin is not None:
            raise ValueError(
                f"install_cli='always' runs the provider's uploaded CLI; orchesjob_bin="
                f"{self.orchesjob_bin!r} contradicts it: unset one of them"
            )
        cmd.cli_words(DEFAULT_BIN if self.orchesjob_bin is None else self.orchesjob_bin)
        if self.orchesjob_home is not None and str(self.orchesjob_home):
            home = str(self.orchesjob_home)
            if not home.startswith(("/", "~/")) or "\x00" in home:
                raise ValueError(f"orchesjob_home must be an absolute path or start with ~/, got {home!r}")
        if self.orchesjob_python is not None:
            cmd.check_word(self.orchesjob_python, "orchesjob_python")

    def hook_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cli_settings_from_connection(
    ssh_conn_id: str,
    orchesjob_bin: Binary | None,
    orchesjob_home: str | None,
    install_cli: InstallCli | None = None,
    orchesjob_python: str | None = None,
) -> CliChoice:
    """The CLI settings a task uses, each its own value or else the SSH connection's extra of the same name
    (``orchesjob_bin``, ``orchesjob_home``, ``install_cli``, ``orchesjob_python``), or else: no CLI named,
    the host's default state directory, ``install_cli="auto"``, the interpreter found on the host. The task's value
    always wins; the connection is read only when the task leaves one unset.

    With ``install_cli="always"`` the uploaded copy is what runs, so a named ``orchesjob_bin`` contradicts it: that
    is an error (naming where each came from), except that a task's ``always`` overrides a connection's CLI path.
    """
    given = (orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
    extras: Mapping[str, Any] = {}
    if any(value is None for value in given):
        extras = BaseHook.get_connection(ssh_conn_id).extra_dejson
    task_always = install_cli == "always"
    bin_from = "the task"
    if orchesjob_bin is None and not task_always:
        orchesjob_bin = extras.get("orchesjob_bin") or None
        bin_from = f"connection {ssh_conn_id!r}"
    if orchesjob_home is None:
        orchesjob_home = extras.get("orchesjob_home") or None
    mode_from = "the task"
    if install_cli is None:
        install_cli = check_install_cli(
            extras.get("install_cli") or "auto", f"connection {ssh_conn_id!r}'s install_cli"
        )
        mode_from = f"connection {ssh_conn_id!r}"
    if orchesjob_python is None:
        orchesjob_python = extras.get("orchesjob_python") or None
    if install_cli == "always" and orchesjob_bin is not None:
        raise ValueError(
            f"install_cli='always' (from {mode_from}) runs the provider's uploaded CLI, but {bin_from} names "
            f"orchesjob_bin={orchesjob_bin!r}: unset one of them"
        )
    return CliChoice(orchesjob_bin, orchesjob_home, check_install_cli(install_cli), orchesjob_python)


class CliSettings:
    """What both hooks share: where the CLI is, which state directory, the time bound, the retry policy, whether
    the provider may upload its own CLI, and the remote CLI's checked ``version`` answer once there is one.

    ``orchesjob_bin`` None means no CLI was named: ``orchesjob`` on the PATH is tried, and with ``install_cli``
    ``"auto"`` the provider's own copy is uploaded when the host has none (``"always"``: uploaded without looking).
    After the handshake ``orchesjob_bin`` is the argv that answered, which is what a trigger is given, and
    ``cli_sha256`` the sha256 of the uploaded CLI when that is what runs (every call then verifies it first).
    """

    def __init__(
        self,
        orchesjob_bin: Binary | None,
        orchesjob_home: str | None,
        command_timeout: float,
        retry: RetryPolicy,
        check_version: bool,
        install_cli: InstallCli | None = None,
        orchesjob_python: str | None = None,
        cli_sha256: str | None = None,
    ) -> None:
        install_cli = "auto" if install_cli is None else install_cli
        # Validate once, at construction, so a bad setting fails the DAG parse / task start instead of a retry.
        CliChoice(orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
        if cli_sha256 is not None and (
            isinstance(orchesjob_bin, str) or orchesjob_bin is None or len(list(orchesjob_bin)) != 2
        ):
            raise ValueError("cli_sha256 goes with orchesjob_bin=[PYTHON, PYZ], the uploaded CLI a worker resolved")
        self.cli_sha256 = cli_sha256
        self.named = orchesjob_bin is not None
        given = DEFAULT_BIN if orchesjob_bin is None else orchesjob_bin
        self.orchesjob_bin: Binary = given if isinstance(given, str) else list(given)
        self.orchesjob_home = orchesjob_home
        self.command_timeout = float(command_timeout)
        self.retry = retry
        self.check_version = check_version
        self.install_cli: InstallCli = install_cli
        self.orchesjob_python = orchesjob_python
        self.installed: cli_install.InstalledCli | None = None
        self.cli_version: dict[str, Any] | None = None

    def may_install(self) -> bool:
        """Whether a missing CLI may be replaced by an upload: only when none was named and ``install_cli`` allows."""
        return self.install_cli == "always" or (self.install_cli == "auto" and not self.named)

    def use_installed(self, installed: cli_install.InstalledCli) -> None:
        self.installed = installed
        self.orchesjob_bin = installed.argv
        self.cli_sha256 = installed.sha256

    def origin(self) -> str:
        """``host`` (a CLI the host had), ``uploaded`` (this hook uploaded it) or ``cached`` (an earlier upload)."""
        if self.installed is None:
            return "cached" if self.cli_sha256 else "host"
        return "uploaded" if self.installed.uploaded else "cached"

    def cli_info(self) -> dict[str, Any] | None:
        """Which CLI answered, for the task log and XCom: path, version, interpreter, origin and argv."""
        info = self.cli_version
        if info is None:
            return None
        argv = self.orchesjob_bin if isinstance(self.orchesjob_bin, str) else list(self.orchesjob_bin)
        out = {
            "path": info.get("path") or (argv if isinstance(argv, str) else argv[-1]),
            "version": info.get("version"),
            "python": info.get("executable"),
            "origin": self.origin(),
            "argv": argv,
        }
        if self.cli_sha256:
            out["sha256"] = self.cli_sha256
        return out

    def command(self, call: cmd.Call) -> tuple[str, bytes]:
        """The command line and standard input of one call (see the module docstring).

        ``version`` goes as it is (no request: a CLI of another contract must still be able to say what it is);
        the uploaded CLI is run through the launcher, which verifies it first (``orchesjob_provider.launcher``)."""
        if self.cli_sha256:
            python, pyz = list(self.orchesjob_bin)
            words = [cmd.check_word(python, "orchesjob_python"), "-I", "-c", f"'{launcher.BOOTSTRAP}'"]
            stdin = launcher.launcher_line(str(pyz), self.cli_sha256, call.verb)
            if call.verb == "version":
                return " ".join(words), stdin + b"{}\n"
            return " ".join(words), stdin + call.request(self.orchesjob_home)
        words = cmd.cli_words(self.orchesjob_bin)
        if call.verb == "version":
            return " ".join([*words, "version"]), b""
        return " ".join([*words, call.verb, "--request", "-"]), call.request(self.orchesjob_home)

    def version_first(self, call: cmd.Call) -> bool:
        """Whether the contract must be checked before ``call`` (once per hook, before the first other verb). An
        ``install_cli="always"`` hook always does it: that handshake is where the upload happens."""
        handshake = self.check_version or self.install_cli == "always"
        return call.verb != "version" and handshake and self.cli_version is None

    def begin(self, call: cmd.Call, log: Any) -> CallRun:
        return CallRun(self, call, log)

    def version_error(self, exc: OrchesjobError) -> OrchesjobError:
        """Explain a failed ``version`` call: a CLI without it predates the JSON contract."""
        if isinstance(exc, OrchesjobInvalidArgument):
            return OrchesjobIncompatibleCli(
                "the remote orchesjob has no `version` command, so it predates the JSON contract this provider "
                f"needs (contract {CONTRACT_VERSION}); upgrade orchesjob on the host. CLI said: {exc.message}",
                exit_code=exc.exit_code,
                payload=exc.payload,
                stderr=exc.stderr,
                command=exc.command,
            )
        return exc


class CallRun:
    """One call in progress, transport-free: its command line and time bound, its attempts, its answer.

    A hook's ``call()`` loops ``while not run.done``: it runs ``run.line`` within ``run.timeout`` and hands the reply
    to ``answer``; on a failure it sleeps ``pause(exc)`` seconds, which logs the retry, or raises when there is none.
    """

    def __init__(self, settings: CliSettings, call: cmd.Call, log: Any) -> None:
        self.settings = settings
        self.call = call
        self.log = log
        self.line, self.stdin = settings.command(call)
        self.timeout = call.exec_timeout(settings.command_timeout)
        self.attempts = Attempts(settings.retry, call.retry, call.verb)
        self.result: Any = settings.cli_version if call.verb == "version" else None
        self.done = self.result is not None

    def answer(self, reply: tuple[int | None, bytes, bytes]) -> None:
        """Parse one attempt's reply (raising the typed error it carries); a ``version`` answer is checked and kept."""
        exit_code, out, err = reply
        try:
            payload = cmd.parse_output(out, exit_code, err, command=self.line)
        except OrchesjobTransportError as exc:
            if self.call.verb != "version" or exit_code is None or exit_code < 0:
                raise
            # A program ran and answered `version` with an exit status but no JSON: no use asking it again.
            raise OrchesjobCliBroken(
                f"`{self.line}` answered with exit {exit_code} and no JSON: {exc.message}",
                exit_code=exit_code,
                stderr=err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err),
                command=self.line,
            ) from exc
        if self.call.verb == "version":
            payload = dict(cmd.check_version(payload))
            payload["origin"] = self.settings.origin()
            self.settings.cli_version = payload
        else:
            payload = cmd.redact_env(payload)  # env values never leave the hook (XCom, trigger events, logs)
        self.result, self.done = payload, True

    def pause(self, exc: OrchesjobError) -> float:
        """Seconds to wait before the next attempt after ``exc`` (the retry is logged); raises when there is none."""
        delay = self.attempts.failed(exc)
        if delay is None:
            final = self.settings.version_error(exc) if self.call.verb == "version" else exc
            if final is exc:
                raise exc
            raise final from exc
        self.log.warning("%s", self.attempts.describe(exc, delay))
        return delay


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
        return {
            key: (list(value) if isinstance(value, list) else dict(value)) for key, value in UI_FIELD_BEHAVIOUR.items()
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields (Airflow 2's Flask UI; Airflow 3.2+ reads the provider info's
        ``conn-fields`` instead and never calls this). Imported lazily: only the webserver has these packages."""
        import importlib

        fab = importlib.import_module("flask_appbuilder.fieldwidgets")
        lazy_gettext = importlib.import_module("flask_babel").lazy_gettext
        wtforms = importlib.import_module("wtforms")
        optional = importlib.import_module("wtforms.validators").Optional
        widgets: dict[str, Any] = {}
        for name, (label, description, schema) in CONN_FIELDS.items():
            kinds = schema.get("type")
            kinds = set(kinds) if isinstance(kinds, list) else {kinds}
            if "boolean" in kinds:
                field = wtforms.BooleanField(lazy_gettext(label), description=description, default=False)
            elif "integer" in kinds:
                field = wtforms.IntegerField(
                    lazy_gettext(label),
                    description=description,
                    widget=fab.BS3TextFieldWidget(),
                    validators=[optional(strip_whitespace=True)],
                )
            elif schema.get("format") == "password":
                field = wtforms.PasswordField(
                    lazy_gettext(label), description=description, widget=fab.BS3PasswordFieldWidget()
                )
            else:
                field = wtforms.StringField(
                    lazy_gettext(label), description=description, widget=fab.BS3TextFieldWidget()
                )
            widgets[name] = field
        return widgets

    def __init__(self, *args: Any, ssh_hook_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = ParamikoTransport(self.ssh_conn_id, ssh_hook_kwargs, self.settings.command_timeout)

    def call(self, call: cmd.Call) -> Any:
        """Run one verb's definition over SSH and return the CLI's parsed JSON (see the module docstring)."""
        if self.settings.version_first(call):
            self.version()
        if call.verb == "version" and self.settings.cli_version is None:
            return self._handshake(call)
        return self._run(call)

    def _run(self, call: cmd.Call) -> Any:
        run = self.settings.begin(call, self.log)
        while not run.done:
            try:
                run.answer(self.transport.run(run.line, run.timeout, run.stdin))
            except OrchesjobError as exc:
                time.sleep(run.pause(exc))
        return run.result

    def _handshake(self, call: cmd.Call) -> Any:
        """The first ``version``: find the CLI to use, uploading this worker's copy where ``install_cli`` says so.

        A CLI the host has (named, or ``orchesjob`` on the PATH) is used when it speaks our contract and refused when
        it does not: an upload beside it would share its state directory with another CLI. When it does not answer
        at all, the host is asked whether such a file exists (``cli_install.probe``): only a host with none, no CLI
        named (``auto``), or ``always``, leads to the upload; one that exists is ``OrchesjobCliBroken``.
        """
        settings = self.settings
        if settings.install_cli != "always":
            try:
                return self._announce(self._run(call))
            except (OrchesjobCliMissing, OrchesjobCliBroken) as exc:
                spec = settings.orchesjob_bin if isinstance(settings.orchesjob_bin, str) else None
                found = self._probe(spec) if spec is not None else "(an argv prefix)"
                if found is not None:
                    raise OrchesjobCliBroken(
                        f"the host has an orchesjob at {found}, but `{exc.command}` did not answer as an orchesjob "
                        f"CLI of JSON contract {CONTRACT_VERSION} does ({exc.message}); it is not replaced by an "
                        "upload: repair or remove it (orchesjob 1.1.0 and wrappers whose target is gone answer like "
                        "this), or name a working CLI with orchesjob_bin",
                        exit_code=exc.exit_code,
                        stderr=exc.stderr,
                        command=exc.command,
                    ) from exc
                if not settings.may_install():
                    raise OrchesjobCliMissing(
                        f"the host has no {spec} ({exc.message}); install orchesjob there and name it with "
                        "orchesjob_bin, or let the provider upload its own (install_cli 'auto', no orchesjob_bin)",
                        exit_code=exc.exit_code,
                        stderr=exc.stderr,
                        command=exc.command,
                    ) from exc
                self.log.info(
                    "The host has no orchesjob CLI (no %s there); using this worker's copy from the host's cache, "
                    "uploading it first if it is not there (install_cli='auto').",
                    spec,
                )
        settings.use_installed(self._install())
        return self._announce(self._run(call))

    def _probe(self, spec: str) -> str | None:
        """Where the host has ``spec`` (a path, or a name on the PATH), or None: evidence, asked of the host."""
        attempts = Attempts(self.settings.retry, ALWAYS, "probe")
        while True:
            try:
                return cli_install.probe(
                    self.transport, spec, self.settings.orchesjob_python, self.settings.command_timeout
                )
            except OrchesjobError as exc:
                delay = attempts.failed(exc)
                if delay is None:
                    raise
                self.log.warning("%s", attempts.describe(exc, delay))
                time.sleep(delay)

    def _install(self) -> cli_install.InstalledCli:
        """Put the packed CLI into the host's cache (repeated after transient SSH failures, with one token, so a
        repeat finds its own lock)."""
        packed = packed_cli()
        token = cli_install.new_token()
        attempts = Attempts(self.settings.retry, ALWAYS, "install")
        timeout = self.settings.command_timeout
        while True:
            try:
                return cli_install.install(
                    self.transport,
                    packed,
                    self.settings.orchesjob_python,
                    token=token,
                    timeout=timeout,
                    wait=min(30.0, timeout),
                )
            except OrchesjobError as exc:
                delay = attempts.failed(exc)
                if delay is None:
                    raise
                self.log.warning("%s", attempts.describe(exc, delay))
                time.sleep(delay)

    def _announce(self, info: Any) -> Any:
        cli = self.settings.cli_info() or {}
        how = {
            "host": "found on the host",
            "uploaded": "uploaded by this task",
            "cached": "uploaded earlier, sha256 verified",
        }[cli.get("origin", "host")]
        self.log.info(
            "Using orchesjob %s at %s (%s; python %s).", cli.get("version"), cli.get("path"), how, cli.get("python")
        )
        return info

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
