"""The sync hook's first ``version`` call: settle which CLI this host uses, uploading this worker's copy if allowed.

Why only the sync hook has it: uploading needs SFTP (paramiko's) and happens in a worker; the triggerer runs the CLI
the worker settled on, which travels to it as a ``cli_choice.ResolvedCli`` record.

The rule, from evidence only: a CLI the host has (named by ``orchesjob_bin``, or ``orchesjob`` on the PATH) is used
when it speaks our contract and refused when it does not (an upload beside it would share its state directory with
another CLI). When it does not answer at all, the host is asked whether such a file exists (``cli_install.probe``):
only a host with none, no CLI named (``install_cli="auto"``), or ``install_cli="always"``, leads to the upload
(``cli_install.install``); a file that exists is ``OrchesjobCliBroken``.
"""

from __future__ import annotations

import time
from typing import Any

from orchesjob_provider import cli_install
from orchesjob_provider import command as cmd
from orchesjob_provider.call_run import CliSettings, run_blocking
from orchesjob_provider.cli_pack import packed_cli
from orchesjob_provider.exceptions import OrchesjobCliBroken, OrchesjobCliMissing, OrchesjobError
from orchesjob_provider.retry import ALWAYS, Attempts

__all__ = ["handshake"]

# how the task log names each origin when it says which CLI runs
_HOW = {
    "host": "found on the host",
    "uploaded": "uploaded by this task",
    "cached": "uploaded earlier, sha256 verified",
}


def handshake(settings: CliSettings, transport: cli_install.Transport, call: cmd.Call, log: Any) -> Any:
    """Run the first ``version`` call, finding the CLI to use (see the module docstring); its checked answer, and
    the CLI that gave it, are kept in ``settings``."""
    if settings.install_cli != "always":
        try:
            return _announce(settings, log, run_blocking(settings, transport, call, log))
        except (OrchesjobCliMissing, OrchesjobCliBroken) as exc:
            bin_ = settings.orchesjob_bin
            spec = bin_ if isinstance(bin_, str) else None
            found = _probe(settings, transport, log, spec) if spec is not None else "(an argv prefix)"
            if found is not None:
                raise settings.not_replaced(found, exc) from exc
            if not settings.may_install():
                raise OrchesjobCliMissing(
                    f"the host has no {spec} ({exc.message}); install orchesjob there and name it with "
                    "orchesjob_bin, or let the provider upload its own (install_cli 'auto', no orchesjob_bin)",
                    exit_code=exc.exit_code,
                    stderr=exc.stderr,
                    command=exc.command,
                ) from exc
            log.info(
                "The host has no orchesjob CLI (no %s there); using this worker's copy from the host's cache, "
                "uploading it first if it is not there (install_cli='auto').",
                spec,
            )
    settings.use_installed(_install(settings, transport, log))
    return _announce(settings, log, run_blocking(settings, transport, call, log))


def _probe(settings: CliSettings, transport: cli_install.Transport, log: Any, spec: str) -> str | None:
    """Where the host has ``spec`` (a path, or a name on the PATH), or None: evidence, asked of the host."""
    attempts = Attempts(settings.retry, ALWAYS, "probe")
    while True:
        try:
            return cli_install.probe(transport, spec, settings.orchesjob_python, settings.command_timeout)
        except OrchesjobError as exc:
            delay = attempts.failed(exc)
            if delay is None:
                raise
            log.warning("%s", attempts.describe(exc, delay))
            time.sleep(delay)


def _install(settings: CliSettings, transport: cli_install.Transport, log: Any) -> cli_install.InstalledCli:
    """Put the packed CLI into the host's cache (repeated after transient SSH failures, with one token, so a
    repeat finds its own lock)."""
    packed = packed_cli()
    token = cli_install.new_token()
    attempts = Attempts(settings.retry, ALWAYS, "install")
    timeout = settings.command_timeout
    while True:
        try:
            return cli_install.install(
                transport, packed, settings.orchesjob_python, token=token, timeout=timeout, wait=min(30.0, timeout)
            )
        except OrchesjobError as exc:
            delay = attempts.failed(exc)
            if delay is None:
                raise
            log.warning("%s", attempts.describe(exc, delay))
            time.sleep(delay)


def _announce(settings: CliSettings, log: Any, info: Any) -> Any:
    """Say in the task log which CLI runs; hand ``info`` (the ``version`` answer) back."""
    cli = settings.cli_info() or {}
    how = _HOW[cli.get("origin", "host")]
    log.info("Using orchesjob %s at %s (%s; python %s).", cli.get("version"), cli.get("path"), how, cli.get("python"))
    return info
