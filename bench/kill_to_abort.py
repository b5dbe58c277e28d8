"""Kill → abort: how long after a deferred task is marked failed or success its job's processes are gone.

A live Airflow 3 deployment (tests/support/live_airflow.py: api-server, scheduler, dag-processor, one triggerer,
LocalExecutor), a private sshd and this checkout's CLI. Each round triggers a run of the live DAG whose job is a
shell and its ``sleep`` child, waits until the task is deferred and its trigger relays the job's first line, then
marks the task instance failed or success through the REST API and watches the two pids until both are gone
(checked every 10 ms). ``kill_to_abort_s`` is the time from the REST call to the last pid gone; its parts come from
the trigger's log (each line's own time stamp): Airflow's cancel reaching the trigger, Airflow's answer about the
task instance, the abort's answer from the host.

Rounds also run under load (``_loaded``): as many busy processes as the machine has cores, plus ``--chatty``
other deferred jobs printing a line every 0.2 s, so that the triggerer and its supervisor are busy too.

Keys: ``kill_to_abort_s_p50``, ``kill_to_abort_s_p95``, ``kill_to_abort_s_max`` (quiet) and the same with
``_loaded``; ``kill_to_abort_rounds``; the parts' medians as ``kill_cancel_s``, ``kill_ask_s``, ``kill_abort_s``
(each with ``_loaded``); ``kill_to_abort_failures`` (a round whose job was not aborted or whose processes outlived
60 s).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support.cli import write_cli_launcher  # noqa: E402
from tests.support.live_airflow import LiveAirflow  # noqa: E402
from tests.support.live_host import Host  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

DAG = "orchesjob_live"
TASK = "job"
CHATTY = "while true; do echo chatter; sleep 0.2; done"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")  # a zombie has ended; only its parent has not reaped it yet


def log_times(text: str) -> list[tuple[float, str]]:
    """(unix time, message) of every JSON line of an Airflow 3 task or trigger log."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        stamp = record.get("timestamp")
        if not isinstance(stamp, str):
            continue
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        found.append((when, str(record.get("event", ""))))
    return found


def first(records: list[tuple[float, str]], *needles: str) -> float | None:
    for when, message in records:
        if any(n in message for n in needles):
            return when
    return None


def one_round(live: LiveAirflow, host: Host, name: str, state: str) -> dict[str, Any]:
    run_id = live.trigger(DAG, {"script": host.script(name, 600)})
    live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=180)
    live.wait_log(DAG, run_id, TASK, 1, "[stdout] started", timeout=120)
    pids = host.pids(name)
    time.sleep(1.0)  # the trigger is past its start: its job is watched
    t0 = time.time()
    live.mark(DAG, run_id, TASK, state)
    gone_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            gone_at = time.time()
            break
        time.sleep(0.01)
    result: dict[str, Any] = {"state": state, "run_id": run_id, "seconds": None if gone_at is None else gone_at - t0}
    time.sleep(1.0)  # the trigger's last lines reach its log file
    records = log_times(live.task_log(DAG, run_id, TASK, 1))
    cancel = first(records, "invoking on_kill", "The trigger was cancelled")
    verdict = first(records, "; aborting job", "Not aborting job")
    aborted = first(records, "aborted job", "was not aborted", "could not abort")
    result["cancel_s"] = None if cancel is None else cancel - t0
    result["ask_s"] = None if cancel is None or verdict is None else verdict - cancel
    result["abort_s"] = None if verdict is None or aborted is None else aborted - verdict
    result["aborted"] = host.jobs(f"airflow/{DAG}/{TASK}/{run_id}")[-1]["status"] == "ABORTED"
    return result


def measure(rounds: int, chatty: int, loaded: bool, live: LiveAirflow, host: Host, tag: str) -> list[dict[str, Any]]:
    burners: list[subprocess.Popen[bytes]] = []
    chatter_runs: list[str] = []
    try:
        if loaded:
            for i in range(chatty):
                chatter_runs.append(live.trigger(DAG, {"script": CHATTY}, run_id=f"chatter_{tag}_{i}"))
            for run_id in chatter_runs:
                live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=300)
            burn = "import time\nwhile True: pass"
            for _ in range(os.cpu_count() or 2):
                burners.append(subprocess.Popen([sys.executable, "-c", burn]))
        out = []
        for i in range(rounds):
            state = "failed" if i % 2 == 0 else "success"
            result = one_round(live, host, f"{tag}-{i}", state)
            print(f"  {tag} round {i + 1}/{rounds} ({state}): {result}", flush=True)
            out.append(result)
        return out
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
        for run_id in chatter_runs:
            try:
                live.mark(DAG, run_id, TASK, "failed")
            except Exception:  # noqa: BLE001 - best effort: the deployment is stopped next anyway
                pass


def leave_nothing_running(host: Host) -> None:
    """Abort every job still active on the bench's host (a run cut short leaves its chatter jobs behind)."""
    try:
        running = host.cli("status", "--running") or []
    except Exception:  # noqa: BLE001 - best effort on the way out
        return
    for job in running if isinstance(running, list) else [running]:
        try:
            host.cli("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
        except Exception:  # noqa: BLE001
            pass


def figures(results: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    times = [r["seconds"] for r in results if r["seconds"] is not None and r["aborted"]]
    failures = sum(1 for r in results if r["seconds"] is None or not r["aborted"])
    out: dict[str, Any] = {f"kill_to_abort_failures{suffix}": failures}
    if times:
        out[f"kill_to_abort_s_p50{suffix}"] = round(percentile(times, 0.5), 3)
        out[f"kill_to_abort_s_p95{suffix}"] = round(percentile(times, 0.95), 3)
        out[f"kill_to_abort_s_max{suffix}"] = round(max(times), 3)
    for part in ("cancel_s", "ask_s", "abort_s"):
        values = [r[part] for r in results if r.get(part) is not None]
        if values:
            out[f"kill_{part}{suffix}"] = round(percentile(values, 0.5), 3)
    return out


def run(rounds: int = 10, chatty: int = 10, quiet: bool = True, loaded: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orchesjob-kill-bench-") as tmp:
        base = Path(tmp)
        host = Host(
            write_cli_launcher(base / "bin" / "orchesjob", python=sys.executable), base / "state", base / "work"
        )
        sshd = SshServer(base / "sshd")
        sshd.start()
        live = None
        try:
            connection = sshd.airflow_connection(orchesjob_bin=host.launcher, orchesjob_home=str(host.state))
            live = LiveAirflow(base / "airflow", connection, triggerers=1, wait_for_dag=DAG)
            live.start()
            out: dict[str, Any] = {"kill_to_abort_rounds": rounds}
            if quiet:
                out.update(figures(measure(rounds, chatty, False, live, host, "quiet"), ""))
            if loaded:
                out.update(figures(measure(rounds, chatty, True, live, host, "loaded"), "_loaded"))
            return out
        finally:
            if live is not None:
                live.stop()
            sshd.stop()
            leave_nothing_running(host)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    # at most 16 runs of one DAG are active at once (Airflow's max_active_runs_per_dag): more chatty runs than 16,
    # with the rounds' own runs besides, would wait for ever to be scheduled
    parser.add_argument("--chatty", type=int, default=10)
    parser.add_argument("--quiet-only", action="store_true")
    parser.add_argument("--loaded-only", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures_out = run(args.rounds, args.chatty, quiet=not args.loaded_only, loaded=not args.quiet_only)
    print(json.dumps(figures_out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures_out, indent=2) + "\n")
