"""`make demo`: an Airflow DAG starts a job on a host over real SSH; Airflow dies mid-job; the retry reattaches.

What it does, all on this machine and as the current user (no root, nothing installed system-wide):

1. starts a private OpenSSH server on a free loopback port, with its own host and client keys, in .demo/;
2. makes its sessions a host user with NOTHING installed: a fresh home (.demo/host-home) and the bare PATH of a
   non-login SSH command, so no orchesjob is found there and the provider uploads its own copy on first contact;
3. makes an Airflow home with a SQLite database and the SSH connection (no orchesjob_bin anywhere), with
   dags_examples/ as its dags folder;
4. runs the example DAG `example_orchesjob_retry` with `airflow dags test`, and once the job is running on the host,
   kills that Airflow process with SIGKILL, as when a worker dies or the SSH call hangs and the task is retried;
5. runs the same DAG run again: the task's run key is the same, so it reattaches to the running job and waits;
6. runs it a third time, after the job SUCCEEDED: it adopts the result instead of running the job again;
7. shows that the job ran exactly once, and exits non-zero if it did not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.airflow_sandbox import AirflowRun, AirflowSandbox, BackgroundAirflow  # noqa: E402
from tests.support.cli import write_cli_launcher  # noqa: E402
from tests.support.sshd import SSHD_PATH, SshServer  # noqa: E402

DAG_ID = "example_orchesjob_retry"
LOGICAL_DATE = "2026-01-01"
CONN_ID = "orchesjob_ssh"


def say(text: str) -> None:
    print("\n\033[1m==> %s\033[0m" % text if sys.stdout.isatty() else "\n==> %s" % text, flush=True)


# The system directories of a non-login SSH command's PATH, without /usr/local/bin: an orchesjob this machine may
# have installed there is not the "host with nothing installed" the demo shows (it would be used, or refused).
HOST_PATH = "/usr/bin:/bin"


def cli(launcher: str, home: Path, *args: str) -> Any:
    """Look at the host's state from here (this checkout's CLI reading the same state directory)."""
    out = subprocess.run(
        [launcher, *args], env=dict(os.environ, ORCHESJOB_HOME=str(home)), capture_output=True, text=True
    )
    return json.loads(out.stdout)


def dag_run_argv() -> list:
    """The DAG run, with a run id pinned to its logical date, so a second run is a second try of the same task."""
    return [sys.executable, str(ROOT / "tools" / "dag_run.py"), DAG_ID, LOGICAL_DATE]


def run_dag(sandbox: AirflowSandbox, timeout: float = 300) -> AirflowRun:
    started = time.monotonic()
    proc = subprocess.run(
        dag_run_argv(),
        env=sandbox.env(),
        cwd=str(sandbox.directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    return AirflowRun(dag_run_argv(), proc.returncode, proc.stdout.decode(errors="replace"), time.monotonic() - started)


def show_task_log(output: str, needles: tuple) -> None:
    """Print the task log lines that tell the story, without Airflow's timestamps and logger names."""
    import re

    for line in output.splitlines():
        if not any(n in line for n in needles):
            continue
        m = re.search(r"\[(?:info|warning|error)\s*\]\s(.*?)\s+\[[\w.]+\](?:\s+loc=\S+)?", line)  # Airflow 3
        m = m or re.search(r"\b(?:INFO|WARNING|ERROR) - (.*)$", line)  # Airflow 2
        print("   | " + (m.group(1) if m else line.strip()))  # whole: the story is in these lines


def main() -> int:
    if not os.path.exists(SSHD_PATH):
        print(
            "The demo needs OpenSSH's server binary at %s (it starts a private one on a loopback port; nothing "
            "is configured system-wide).\nInstall it with:  sudo apt-get install openssh-server openssh-client"
            % SSHD_PATH
        )
        return 2
    base = ROOT / ".demo"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    remote_home = base / "host-state"
    workdir = base / "work"
    host_home = base / "host-home"
    host_home.mkdir(mode=0o700)

    say("Starting a private sshd on 127.0.0.1 (its own keys, in .demo/sshd)")
    # Its sessions get a fresh HOME and a bare PATH: the host user as a newcomer's host would have it, no CLI.
    server = SshServer(base / "sshd", extra_config=[f"SetEnv HOME={host_home} PATH={HOST_PATH}"]).start()
    try:
        print(
            "    sshd is listening on 127.0.0.1:%d for user %s, HOME=%s, PATH=%s: no orchesjob installed"
            % (server.port, server.user, host_home.relative_to(ROOT), HOST_PATH)
        )
        # only for this script to look at the host's state; the tasks never use it
        launcher = write_cli_launcher(base / "inspect-bin" / "orchesjob", python=sys.executable)
        sandbox = AirflowSandbox(
            base,
            python=sys.executable,
            connections={CONN_ID: server.airflow_connection()},
            remote_home=str(remote_home),
            example_workdir=str(workdir),
            # 25 one-second steps: long enough that the retry finds the job still running after Airflow restarts
            extra_env={"ORCHESJOB_SSH_CONN_ID": CONN_ID, "ORCHESJOB_EXAMPLE_STEPS": "25"},
        )
        say("Creating an Airflow home with a SQLite database (airflow db migrate)")
        sandbox.setup()

        say(
            "Try 1: a run of %s for %s (tools/dag_run.py: like `airflow dags test`, with a fixed run id)"
            % (DAG_ID, LOGICAL_DATE)
        )
        first = BackgroundAirflow(dag_run_argv(), sandbox.env(), base / "try1.log", str(sandbox.directory))
        job = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.running():
            running = cli(launcher, remote_home, "status", "--running") if remote_home.exists() else []
            if running and running[0].get("status") == "RUNNING":
                job = running[0]
                break
            time.sleep(0.5)
        if job is None:
            first.stop()
            print(first.output()[-4000:])
            print("The job did not start on the host; the Airflow output is above.")
            return 1
        print("    job %s is RUNNING on the host under run key %r" % (job["job_id"], job["run_key"]))
        show_task_log(first.output(), ("Using orchesjob",))
        time.sleep(2)
        say("Killing the Airflow process with SIGKILL while the job runs (a dead worker, a hung SSH call...)")
        first.kill_group()
        first.wait(30)
        after_kill = cli(launcher, remote_home, "status", "--job-id", job["job_id"])
        print("    Airflow is gone; on the host the job is still %s" % after_kill["status"])

        say("Try 2: the same DAG run again (a retry of the same task instance)")
        second = run_dag(sandbox)
        show_task_log(second.output, ("Using orchesjob", "Reattached", "Started job", "imported batch", "SUCCEEDED"))

        say("Try 3: once more, now that the job has SUCCEEDED")
        third = run_dag(sandbox)
        show_task_log(third.output, ("Using orchesjob", "Adopted", "Started job", "SUCCEEDED."))

        history = cli(launcher, remote_home, "status", "--run-key", job["run_key"], "--all")
        runs_file = workdir / "retry.runs"
        executions = runs_file.read_text().splitlines() if runs_file.exists() else []
        say("Result")
        print(
            "    attempts recorded for the run key: %d (%s)"
            % (len(history), ", ".join("%s %s" % (h["job_id"][:8], h["status"]) for h in history))
        )
        print(
            "    physical executions (lines the job wrote to %s): %d" % (runs_file.relative_to(ROOT), len(executions))
        )
        cache = host_home / ".cache" / "orchesjob"
        uploaded = sorted(p.name for p in cache.iterdir() if p.name.endswith(".pyz")) if cache.is_dir() else []
        compiled = cache.is_dir() and any(p.name.endswith(".codes") for p in cache.iterdir())
        print(
            "    the CLI the host ran: %s%s"
            % (
                ", ".join(str((cache / n).relative_to(ROOT)) for n in uploaded)
                or "none uploaded (an orchesjob on the host's PATH answered)",
                ", run from the code compiled beside it" if compiled else "",
            )
        )
        ok = (
            second.returncode == 0
            and third.returncode == 0
            and len(executions) == 1
            and len(history) == 1
            and history[0]["status"] == "SUCCEEDED"
            and "Reattached" in second.output
            and "Adopted" in third.output
        )
        if ok:
            print(
                "\n    The job ran exactly once: Airflow died mid-job, the retry reattached to the running job, and a"
                "\n    later retry adopted its result. The host had no CLI: the first task uploaded one, the others"
                "\n    reused it. Everything is under .demo/ (Airflow home, sshd, host home and state)."
            )
            return 0
        print(
            "\n    UNEXPECTED: see the output above (try 2 exit %s, try 3 exit %s)."
            % (second.returncode, third.returncode)
        )
        print(second.output[-3000:])
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
