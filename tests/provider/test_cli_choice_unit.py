"""Unit tests (no SSH) of which CLI a host uses: the one builder of a ``CliChoice``, and the frozen ``ResolvedCli``
that the handshake replaces (never edits) and that a trigger or a kill path rebuilds from its record.

The same CLI resolved over a real sshd (found, uploaded, cached, handed to the trigger) is in test_cli_install.py and
test_login_shells.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from typing import Any

import pytest

from orchesjob_provider import command as cmd
from orchesjob_provider.call_run import CliSettings
from orchesjob_provider.cli_choice import CliChoice, ResolvedCli, choose_cli
from orchesjob_provider.cli_install import InstalledCli
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook
from orchesjob_provider.retry import RetryPolicy

pytestmark = pytest.mark.timeout(30)

SHA = "ab" * 32
UPLOADED = InstalledCli("/usr/bin/python3", "3.11.2", "/home/u/.cache/orchesjob/orchesjob-x.pyz", True, SHA)


def settings(**given: object) -> CliSettings:
    return CliSettings(
        given.get("orchesjob_bin"),  # type: ignore[arg-type]
        given.get("orchesjob_home"),  # type: ignore[arg-type]
        60.0,
        RetryPolicy(0, 0.0, 0.0),
        True,
        given.get("install_cli"),  # type: ignore[arg-type]
    )


@functools.cache
def real_version_answer() -> bytes:
    """What this checkout's CLI answers to ``version`` (as a process, so the contract is the CLI's own)."""
    return subprocess.run([sys.executable, "-m", "orchesjob", "version"], capture_output=True, check=True).stdout


def answer_version(s: CliSettings) -> dict[str, Any]:
    """What the handshake's ``version`` call does with a CLI's answer; the answer, parsed."""
    run = s.begin(cmd.define.version(), None)
    run.answer((0, real_version_answer(), b""))
    return dict(json.loads(real_version_answer()))


def test_an_upload_replaces_the_cli_value_and_leaves_the_old_one_as_it_was() -> None:
    s = settings(orchesjob_home="/state")
    before = s.cli
    s.use_installed(UPLOADED)
    assert (before.argv, before.sha256, before.origin) == ("orchesjob", None, "host")
    assert (s.cli.argv, s.cli.sha256, s.cli.origin) == (("/usr/bin/python3", UPLOADED.path), SHA, "uploaded")
    assert (s.orchesjob_bin, s.orchesjob_home, s.cli_sha256) == (["/usr/bin/python3", UPLOADED.path], "/state", SHA)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cli.sha256 = None  # type: ignore[misc]


def test_the_version_answer_is_a_new_value_that_says_where_the_cli_came_from() -> None:
    s = settings()
    s.use_installed(dataclasses.replace(UPLOADED, uploaded=False))
    unchecked = s.cli
    reply = answer_version(s)
    assert unchecked.answer is None and unchecked.info() is None
    assert s.cli_version == {**reply, "origin": "cached"}
    assert s.cli_info() == {
        "path": reply["path"],
        "version": reply["version"],
        "python": reply["executable"],
        "origin": "cached",
        "argv": ["/usr/bin/python3", UPLOADED.path],
        "sha256": SHA,
    }


@pytest.mark.parametrize("upload", [True, False])
def test_a_record_rebuilds_exactly_the_cli_a_worker_ran(upload: bool) -> None:
    """The trigger and the kill path get the record; their hooks must send the very same command line and stdin."""
    worker = OrchesjobHook("c", orchesjob_bin=None if upload else "/opt/oj", orchesjob_home="~/state")
    if upload:
        worker.settings.use_installed(UPLOADED)
    answer_version(worker.settings)
    record = worker.settings.cli.record()
    again = ResolvedCli.from_record(json.loads(json.dumps(record)))  # as a trigger's kwargs carry it
    assert again.hook_kwargs()["install_cli"] == "never"  # the rebuilt CLI is run, never searched for or uploaded
    call = cmd.define.status(job_id="j1")
    for hook in (OrchesjobAsyncHook("c", **again.hook_kwargs()), OrchesjobHook("c", **again.hook_kwargs())):
        assert hook.settings.command(call) == worker.settings.command(call)
        assert hook.settings.cli_version is None  # not checked by the rebuilt hook itself
    if upload:
        assert b"orchesjob-x.pyz" in worker.settings.command(call)[1]  # through the launcher, sha256 verified
        assert SHA.encode() in worker.settings.command(call)[1]


def test_one_builder_refuses_always_with_a_named_cli_and_says_where_each_came_from() -> None:
    with pytest.raises(ValueError, match="contradicts it"):
        choose_cli("/opt/oj", None, "always")  # an operator's values at DAG parse time
    with pytest.raises(ValueError, match=r"from connection 'c'.*the task names"):
        choose_cli("/opt/oj", None, None, extras={"install_cli": "always"}, ssh_conn_id="c")
    # a task's `always` overrides the connection's CLI path; the connection fills what the task left unset
    assert choose_cli(None, None, "always", extras={"orchesjob_bin": "/c/oj", "orchesjob_home": "/h"}) == CliChoice(
        None, "/h", "always"
    )
    assert choose_cli(None, None) == CliChoice(None, None, "auto")
