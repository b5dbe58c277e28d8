"""Which orchesjob CLI a host uses: what a task asks for (``CliChoice``) and the CLI settled on (``ResolvedCli``).

Why two values, both frozen:

- ``CliChoice`` is the question: a named CLI or none, the state directory, whether the provider may upload its own
  and with which interpreter. ``choose_cli`` is the one function that builds it, with every rule about how those
  four may combine (a task's value over its connection's extra, ``install_cli="always"`` against a named path), so
  that an operator at DAG parse time, a hook and the connection's extras all refuse the same things the same way.
- ``ResolvedCli`` is the answer: the argv that runs (a named path, ``orchesjob`` on the PATH, or ``[PYTHON, PYZ]``
  of the uploaded copy with its sha256), the state directory, where it came from and, once it answered, its checked
  ``version``. A hook's handshake replaces it with a new value (the upload, the answer); no field ever changes what
  it means. Its ``record()`` is what travels (XCom, a trigger's kwargs, a resumed task), and ``from_record`` turns
  that back into the same CLI, so the trigger and the kill path run exactly what the worker settled on, never a
  second search or upload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from orchesjob_provider import command as cmd
from orchesjob_provider.cli_install import InstallCli, InstalledCli, check_install_cli
from orchesjob_provider.compat import BaseHook

__all__ = ["DEFAULT_BIN", "CliChoice", "Origin", "ResolvedCli", "choose_cli", "cli_settings_from_connection"]

DEFAULT_BIN = "orchesjob"  # what runs when no CLI is named: the one on the SSH command's PATH

Origin = Literal["host", "uploaded", "cached"]


@dataclasses.dataclass(frozen=True)
class CliChoice:
    """Which CLI a task asks for: a named one (``orchesjob_bin``; None: none named), its state directory, whether
    the provider may upload its own (``install_cli``) and with which interpreter (``orchesjob_python``).

    Built by ``choose_cli``; constructing it checks the values, so a bad one fails before anything connects."""

    orchesjob_bin: cmd.Binary | None = None
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

    @property
    def named(self) -> bool:
        return self.orchesjob_bin is not None

    def may_install(self) -> bool:
        """Whether a missing CLI may be replaced by an upload: only when none was named and ``install_cli`` allows."""
        return self.install_cli == "always" or (self.install_cli == "auto" and not self.named)

    def first_try(self, cli_sha256: str | None = None) -> ResolvedCli:
        """The CLI to ask first: the named one, else ``orchesjob`` on the PATH; with ``cli_sha256``, the uploaded
        copy a worker resolved (``orchesjob_bin=[PYTHON, PYZ]``), which every call verifies before running it."""
        named = DEFAULT_BIN if self.orchesjob_bin is None else self.orchesjob_bin
        return ResolvedCli(
            named if isinstance(named, str) else tuple(named),
            self.orchesjob_home,
            cli_sha256,
            "cached" if cli_sha256 else "host",
        )

    def hook_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of a hook that asks for this CLI."""
        return dataclasses.asdict(self)


def choose_cli(
    orchesjob_bin: cmd.Binary | None,
    orchesjob_home: str | None,
    install_cli: InstallCli | None = None,
    orchesjob_python: str | None = None,
    *,
    extras: Mapping[str, Any] | None = None,
    ssh_conn_id: str | None = None,
) -> CliChoice:
    """The one place a ``CliChoice`` is built: the values given, each else the connection's extra of the same name
    (``extras``, read by ``cli_settings_from_connection``; None: no connection to fall back on), else no CLI named,
    the host's default state directory, ``install_cli="auto"``, the interpreter found on the host.

    With ``install_cli="always"`` the uploaded copy is what runs, so a named ``orchesjob_bin`` contradicts it: that
    is an error (naming where each came from), except that a task's ``always`` overrides a connection's CLI path.
    """
    if extras is None:
        return CliChoice(
            orchesjob_bin, orchesjob_home, "auto" if install_cli is None else install_cli, orchesjob_python
        )
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


def cli_settings_from_connection(
    ssh_conn_id: str,
    orchesjob_bin: cmd.Binary | None,
    orchesjob_home: str | None,
    install_cli: InstallCli | None = None,
    orchesjob_python: str | None = None,
) -> CliChoice:
    """The CLI settings a task uses, each its own value or else the SSH connection's extra of the same name
    (``orchesjob_bin``, ``orchesjob_home``, ``install_cli``, ``orchesjob_python``): see ``choose_cli``. The task's
    value always wins; the connection is read only when the task leaves one unset."""
    given = (orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
    extras: Mapping[str, Any] = {}
    if any(value is None for value in given):
        extras = BaseHook.get_connection(ssh_conn_id).extra_dejson
    return choose_cli(
        orchesjob_bin, orchesjob_home, install_cli, orchesjob_python, extras=extras, ssh_conn_id=ssh_conn_id
    )


@dataclasses.dataclass(frozen=True)
class ResolvedCli:
    """The CLI that runs on a host: ``argv`` (a path, or an argv prefix; ``[PYTHON, PYZ]`` for the uploaded copy,
    then with its ``sha256``), the state directory, its ``origin`` (``host``: the host had it; ``uploaded``: this
    hook uploaded it; ``cached``: an earlier upload) and ``answer``, its checked ``version`` JSON once it gave one.

    A new value replaces an old one (``uploaded``, ``checked``); nothing in one changes."""

    argv: str | tuple[str, ...]
    orchesjob_home: str | None = None
    sha256: str | None = None
    origin: Origin = "host"
    answer: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.argv, str):
            object.__setattr__(self, "argv", tuple(self.argv))
        if self.sha256 is not None and (isinstance(self.argv, str) or len(self.argv) != 2):
            raise ValueError("cli_sha256 goes with orchesjob_bin=[PYTHON, PYZ], the uploaded CLI a worker resolved")

    @property
    def orchesjob_bin(self) -> str | list[str]:
        """``argv`` as the hooks' and the trigger's ``orchesjob_bin`` take it (a list travels through JSON as one)."""
        return self.argv if isinstance(self.argv, str) else list(self.argv)

    @classmethod
    def uploaded(cls, installed: InstalledCli, orchesjob_home: str | None) -> ResolvedCli:
        """The copy in the host's cache that ``cli_install.install`` answered with."""
        return cls(
            tuple(installed.argv), orchesjob_home, installed.sha256, "uploaded" if installed.uploaded else "cached"
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ResolvedCli:
        """The CLI a ``record()`` names (carried by a trigger's kwargs or its event), not yet checked by whoever
        rebuilds it: an uploaded copy is still verified by its sha256 on every call."""
        sha256 = record.get("sha256") or None
        return cls(record["argv"], record.get("orchesjob_home"), sha256, "cached" if sha256 else "host")

    def checked(self, answer: Mapping[str, Any]) -> ResolvedCli:
        """This CLI with its checked ``version`` answer, marked with where the CLI came from."""
        return dataclasses.replace(self, answer={**answer, "origin": self.origin})

    def info(self) -> dict[str, Any] | None:
        """Which CLI answered, for the task log and XCom: path, version, interpreter, origin and argv (and the
        sha256 of an uploaded one); None before it answered."""
        if self.answer is None:
            return None
        argv = self.orchesjob_bin
        out = {
            "path": self.answer.get("path") or (argv if isinstance(argv, str) else argv[-1]),
            "version": self.answer.get("version"),
            "python": self.answer.get("executable"),
            "origin": self.origin,
            "argv": argv,
        }
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    def record(self) -> dict[str, Any]:
        """``info()`` with the state directory: what a trigger and a resumed task need to run exactly this CLI."""
        return {**(self.info() or {}), "orchesjob_home": self.orchesjob_home}

    def hook_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of a hook that runs exactly this CLI: never a search, never an upload."""
        return {
            "orchesjob_bin": self.orchesjob_bin,
            "orchesjob_home": self.orchesjob_home,
            "install_cli": "never",
            "cli_sha256": self.sha256,
        }
