"""What the live scenarios check after each fault: the job ran once on its host, and its output reached the task's
log once.

One Airflow behaviour is allowed for (Airflow 3.3's triggerer): a line a trigger logs just before it fires its event
can reach the triggerer's supervisor after the trigger's completion, when the supervisor has already let the
trigger's log file go; it then writes the line to the triggerer's own log, with the task instance's fields, instead
of the task's. Such a line was relayed once by the provider and is counted as delivered (:func:`misfiled`), never
as missing; a line twice, in either place, is still a repeat.

A job of these tests numbers its output (``line 1``, ``line 2``, ...) and appends one line to a marker file per
execution, so "ran once" is read on the host, not taken from Airflow or from the CLI's own records. No pytest here.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

TASK = "job"


def run_key(dag_id: str, run_id: str, map_index: int = -1) -> str:
    """The operator's default run key of the task ``job`` in that run."""
    key = f"airflow/{dag_id}/{TASK}/{run_id}"
    return key if map_index < 0 else f"{key}/{map_index}"


def numbered_job(work: Path, name: str, before: int, release: Path | None = None, after: int = 1) -> str:
    """A job that records its execution in ``<name>.runs``, prints ``line 1`` .. ``line <before>`` a second apart,
    waits for ``release`` to exist (when given), then prints ``after`` more lines and ends."""
    runs = shlex.quote(str(work / f"{name}.runs"))
    parts = [f"echo run >> {runs}", f"for i in $(seq 1 {before}); do echo line $i; sleep 1; done"]
    if release is not None:
        parts.append(f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 1; done")
    parts.append(f"for i in $(seq {before + 1} {before + after}); do echo line $i; done")
    return "; ".join(parts)


def stdout_lines(log: str) -> list[str]:
    """The job's numbered lines as a task log shows them (``[stdout] line N``), in the order of the log."""
    return re.findall(r"\[stdout\] (line \d+)", log)


def misfiled(live: Any, run_id: str, map_index: int = -1) -> str:
    """The job's lines that a triggerer wrote to its own log for the task instance of ``run_id`` (and
    ``map_index``) instead of the task's (see the module docstring)."""
    found = []
    for component in live.triggerers():
        for line in component.process.output().splitlines():
            if "[stdout] line" in line and f"run_id={run_id}" in line:
                if map_index < 0 or f"map_index={map_index} " in line + " ":
                    found.append(line)
    return "\n".join(found)


def repeated_or_missing(log: str, count: int, also: str = "") -> str:
    """'' when ``line 1`` .. ``line <count>`` each appear exactly once in ``log`` (or in ``also``: the lines
    :func:`misfiled` found); otherwise what is wrong."""
    seen = Counter(stdout_lines(log)) + Counter(stdout_lines(also))
    expected = [f"line {i}" for i in range(1, count + 1)]
    missing = [line for line in expected if seen[line] == 0]
    twice = {line: n for line, n in seen.items() if n > 1}
    extra = sorted(set(seen) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if twice:
        problems.append(f"shown more than once {twice}")
    if extra:
        problems.append(f"unexpected {extra}")
    return "; ".join(problems)
