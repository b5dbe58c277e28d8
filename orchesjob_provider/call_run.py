"""One CLI call's run, shared by both hooks: its command line, its attempts, its answer (no I/O here).

Why it is apart from the hooks: the sync hook (paramiko, in a worker) and the async hook (asyncssh, in the
triggerer) differ only in how they send a line and how they sleep between attempts. What a call sends, how long it
may take, when it is tried again, how its reply becomes JSON or a typed error, and what the first ``version`` (the
handshake) checks and keeps are the same for both, so they are written once: ``CliSettings`` is what a hook holds
across calls, ``CallRun`` one call in progress, and ``run_blocking`` the sync hook's loop around it (the async hook's
loop is its own: it can be woken).
"""

from __future__ import annotations

import time
from typing import Any

from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider import command as cmd
from orchesjob_provider import launcher
from orchesjob_provider.cli_choice import CliChoice, ResolvedCli, choose_cli
from orchesjob_provider.cli_install import InstallCli, InstalledCli, Transport
from orchesjob_provider.exceptions import (
    OrchesjobCliBroken,
    OrchesjobError,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobTransportError,
)
from orchesjob_provider.retry import Attempts, RetryPolicy

__all__ = ["CallRun", "CliSettings", "run_blocking"]


class CliSettings:
    """What a hook holds across its calls: the CLI asked for (``choice``), the CLI that runs (``cli``, replaced by
    the handshake, never changed in place), the time bound, the retry policy and whether to check the contract.

    The attributes the hooks always had (``orchesjob_bin``, ``orchesjob_home``, ``cli_sha256``, ``install_cli``,
    ``orchesjob_python``, ``cli_version``) read these two values. ``orchesjob_bin`` is the argv that runs, which is
    what a trigger is given: before the handshake the named CLI (or ``orchesjob`` on the PATH), after an upload
    ``[PYTHON, PYZ]`` of the copy in the host's cache, with ``cli_sha256`` its sha256 (every call verifies it first).
    """

    def __init__(
        self,
        orchesjob_bin: cmd.Binary | None,
        orchesjob_home: str | None,
        command_timeout: float,
        retry: RetryPolicy,
        check_version: bool,
        install_cli: InstallCli | None = None,
        orchesjob_python: str | None = None,
        cli_sha256: str | None = None,
    ) -> None:
        # Validate once, at construction, so a bad setting fails the DAG parse / task start instead of a retry.
        self.choice: CliChoice = choose_cli(orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
        self.cli: ResolvedCli = self.choice.first_try(cli_sha256)
        self.command_timeout = float(command_timeout)
        self.retry = retry
        self.check_version = check_version

    @property
    def orchesjob_bin(self) -> str | list[str]:
        return self.cli.orchesjob_bin

    @property
    def orchesjob_home(self) -> str | None:
        return self.cli.orchesjob_home

    @property
    def cli_sha256(self) -> str | None:
        return self.cli.sha256

    @property
    def install_cli(self) -> InstallCli:
        return self.choice.install_cli

    @property
    def orchesjob_python(self) -> str | None:
        return self.choice.orchesjob_python

    @property
    def named(self) -> bool:
        return self.choice.named

    @property
    def cli_version(self) -> Any:
        """The remote CLI's checked ``version`` answer, once there is one (None before the handshake)."""
        return self.cli.answer

    def may_install(self) -> bool:
        return self.choice.may_install()

    def use_installed(self, installed: InstalledCli) -> None:
        """Run the copy ``cli_install`` put in the host's cache from now on (a new ``cli``, not an edited one)."""
        self.cli = ResolvedCli.uploaded(installed, self.choice.orchesjob_home)

    def origin(self) -> str:
        """``host`` (a CLI the host had), ``uploaded`` (this hook uploaded it) or ``cached`` (an earlier upload)."""
        return self.cli.origin

    def cli_info(self) -> dict[str, Any] | None:
        """Which CLI answered, for the task log and XCom: path, version, interpreter, origin and argv."""
        return self.cli.info()

    def command(self, call: cmd.Call) -> tuple[str, bytes]:
        """The command line and standard input of one call: the line is the CLI's path (checked words), the verb and
        ``--request -``; the call's arguments and state directory are its standard input (``command.Call.request``).

        ``version`` goes as it is (no request: a CLI of another contract must still be able to say what it is);
        the uploaded CLI is run through the launcher, which verifies it first (``orchesjob_provider.launcher``)."""
        cli = self.cli
        if cli.sha256:
            python, pyz = list(cli.argv)
            words = [cmd.check_word(python, "orchesjob_python"), "-I", "-c", f"'{launcher.BOOTSTRAP}'"]
            stdin = launcher.launcher_line(str(pyz), cli.sha256, call.verb)
            if call.verb == "version":
                return " ".join(words), stdin + b"{}\n"
            return " ".join(words), stdin + call.request(cli.orchesjob_home)
        words = cmd.cli_words(cli.orchesjob_bin)
        if call.verb == "version":
            return " ".join([*words, "version"]), b""
        return " ".join([*words, call.verb, "--request", "-"]), call.request(cli.orchesjob_home)

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

    def not_replaced(self, found: str, exc: OrchesjobError) -> OrchesjobCliBroken:
        """The handshake's refusal when the host has a CLI at ``found`` that failed ``version``: never shadowed by an
        upload, which would share its state directory with another CLI."""
        return OrchesjobCliBroken(
            f"the host has an orchesjob at {found}, but `{exc.command}` did not answer as an orchesjob "
            f"CLI of JSON contract {CONTRACT_VERSION} does ({exc.message}); it is not replaced by an "
            "upload: repair or remove it (orchesjob 1.1.0 and wrappers whose target is gone answer like "
            "this), or name a working CLI with orchesjob_bin",
            exit_code=exc.exit_code,
            stderr=exc.stderr,
            command=exc.command,
        )


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
            self.settings.cli = self.settings.cli.checked(cmd.check_version(payload))
            payload = self.settings.cli_version
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


def run_blocking(settings: CliSettings, transport: Transport, call: cmd.Call, log: Any) -> Any:
    """Run one call to its answer over a blocking transport, sleeping between attempts (the sync hook's loop)."""
    run = settings.begin(call, log)
    while not run.done:
        try:
            run.answer(transport.run(run.line, run.timeout, run.stdin))
        except OrchesjobError as exc:
            time.sleep(run.pause(exc))
    return run.result
