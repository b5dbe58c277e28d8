"""A triggerer lost under load: N deferred jobs on three hosts, two triggerers, one of them SIGKILLed.

The production-shaped live deployment (tests/support/prod_airflow.py: PostgreSQL, Redis, CeleryExecutor with two
workers, two triggerers, scheduler, dag-processor, api-server, all processes on this machine) and three private
sshd servers, each a host with a state directory of its own and this checkout's CLI. One DAG run maps a deferrable
task over N jobs spread evenly over the three hosts (the live DAG ``orchesjob_live_hosts``), so each triggerer
watches its share with one shared watcher per host. Every job prints a numbered line every few seconds and waits
for a "go" file. Once all N are deferred and every job has shown a line, the triggerer holding the most triggers is
SIGKILLed; the other takes them over once the dead one's heartbeat is older than Airflow's health threshold (10 s
here). Then "go" appears: each job runs on for its own random time and ends.

Figures (keys of the JSON):

- ``failover_jobs``, ``failover_hosts``: N and the number of hosts; ``failover_killed_held``: triggers the killed
  triggerer held;
- ``failover_ssh_connections_before``: SSH connections of the two triggerers together before the kill;
  ``failover_ssh_connections_max_after``: the surviving triggerer's, most at once, sampled every second from the
  kill until every end was noticed (one shared watcher per host: at most 3 expected);
- ``failover_takeover_s``: from the kill until the metadata database shows every trigger on the survivor;
- ``failover_first_line_s``: from the kill until every job taken over has shown a line through the survivor;
- ``failover_repeated_lines``: lines shown twice in a task's log, all jobs together (what the dead triggerer wrote
  after its last call to a host, at most); ``failover_missing_lines``: lines never shown;
  ``failover_missing_detail``: for each job with such lines, which (of how many), whether its trigger was taken
  over, the last line the killed triggerer wrote to its log, and the lines a triggerer wrote to its own log instead;
- ``failover_extra_executions``: executions beyond one per job, read from the hosts' marker files (must be 0);
- ``failover_end_notice_p95_s``, ``failover_end_notice_max_s``: from a job's end to its task instance leaving
  ``deferred``, read every 0.2 s;
- ``failover_failures``: tasks that did not succeed in their first try.

Run: ``python bench/triggerer_failover.py [-n 100] [--json FILE]`` (about ten minutes for 100 jobs on 2 cores).
"""

from __future__ import annotations

import json
import random
import re
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import hostwatch  # noqa: E402

from tests.support.cli import write_cli_launcher  # noqa: E402
from tests.support.live_host import Host  # noqa: E402
from tests.support.prod_airflow import ProdAirflow  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

DAG = "orchesjob_live_hosts"
CONNECTIONS = ("orchesjob_live", "orchesjob_live_2", "orchesjob_live_3")
LINE_SECONDS = 3
POLL_SECONDS = 0.2

JOB = """#!/bin/sh
# job.sh GO_FILE ENDS_DIR RUNS_FILE INDEX SECONDS: a numbered line every few seconds; after GO_FILE, SECONDS more
go=$1 ends=$2 runs=$3 i=$4 s=$5 n=0
echo run >> "$runs"
while [ ! -e "$go" ]; do n=$((n+1)); echo "line $n"; sleep %(line)d; done
end=$(( $(date +%%s) + s ))
while [ "$(date +%%s)" -lt "$end" ]; do n=$((n+1)); echo "line $n"; sleep %(line)d; done
n=$((n+1)); echo "line $n"; echo "$n" > "$ends/$i.lines"
date +%%s.%%N > "$ends/$i"
""" % {"line": LINE_SECONDS}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


class Sampler(threading.Thread):
    """The surviving triggerer's connections to the three sshd servers, every second."""

    def __init__(self, pgid: int, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.pgid, self.ports = pgid, ports
        self.stop_event = threading.Event()
        self.connections: list[int] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            procs = hostwatch.processes()
            self.connections.append(sum(hostwatch.sample(self.pgid, p, procs).connections for p in self.ports))
            self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


def holders(live: ProdAirflow, run_id: str) -> dict[int, int | None]:
    rows = live.query(
        "SELECT ti.map_index, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
        "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = 'job'",
        (DAG, run_id),
    )
    return {int(i): (int(h) if h is not None else None) for i, h in rows}


def connections_of(pgid: int, ports: list[int]) -> int:
    procs = hostwatch.processes()
    return sum(hostwatch.sample(pgid, p, procs).connections for p in ports)


def measure(n: int, min_seconds: float, max_seconds: float, seed: int = 20261206) -> dict[str, Any]:
    rng = random.Random(seed)
    durations = [rng.uniform(min_seconds, max_seconds) for _ in range(n)]
    figures: dict[str, Any] = {"failover_jobs": n, "failover_hosts": len(CONNECTIONS)}
    servers: list[SshServer] = []
    live: ProdAirflow | None = None
    with tempfile.TemporaryDirectory(prefix="orchesjob-failover-bench-") as tmp:
        base = Path(tmp)
        hosts: list[Host] = []
        try:
            conns = {}
            for k, conn_id in enumerate(CONNECTIONS):
                server = SshServer(base / f"sshd-{k}").start()
                servers.append(server)
                launcher = write_cli_launcher(base / f"host-{k}" / "bin" / "orchesjob", python=sys.executable)
                host = Host(launcher, base / f"host-{k}" / "state", base / f"host-{k}" / "work")
                hosts.append(host)
                conns[conn_id] = server.airflow_connection(orchesjob_bin=launcher, orchesjob_home=str(host.state))
            go, ends, script = base / "go", base / "ends", base / "job.sh"
            ends.mkdir()
            script.write_text(JOB)
            first = conns.pop(CONNECTIONS[0])
            live = ProdAirflow(base / "airflow", first, connections=conns, wait_for_dag=DAG)
            live.start()
            jobs = []
            for i, seconds in enumerate(durations):
                host = hosts[i % len(hosts)]
                argv = ("sh", script, go, ends, host.work / f"{i}.runs", i, int(seconds))
                jobs.append(
                    {"ssh_conn_id": CONNECTIONS[i % len(hosts)], "command": " ".join(map(shlex.quote, map(str, argv)))}
                )
            started = time.monotonic()
            run_id = live.trigger(DAG, {"jobs": jobs})
            deadline = time.monotonic() + 120 + 4.0 * n
            while True:
                states = live.task_states(DAG, run_id)
                if len(states) == n and all(s == "deferred" for s in states.values()):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all deferred: {Counter(states.values())}")
                time.sleep(1)
            figures["failover_ramp_s"] = time.monotonic() - started
            for i in range(n):
                live.wait_log(DAG, run_id, f"job/map_index={i}", 1, "[stdout] line 1", timeout=300)
            print(f"bench: {n} deferred after {figures['failover_ramp_s']:.0f} s", file=sys.stderr, flush=True)
            ports = [s.port for s in servers]
            alive = [c for c in live.triggerers() if c.process.running()]
            figures["failover_ssh_connections_before"] = sum(connections_of(c.process.pid, ports) for c in alive)
            held = Counter(holders(live, run_id).values())
            victim = next(c for c in alive if c.job_id == held.most_common(1)[0][0])
            survivor = next(c for c in alive if c is not victim)
            figures["failover_killed_held"] = held[victim.job_id]
            moved = [i for i, h in holders(live, run_id).items() if h == victim.job_id]
            # how many lines each moved job's log had through the victim: a line after that came from the survivor
            sampler = Sampler(survivor.process.pid, ports)
            sampler.start()
            killed_at = time.monotonic()
            live.kill(victim)
            while True:
                now = holders(live, run_id)
                if len(now) == n and all(h == survivor.job_id for h in now.values()):
                    break
                if time.monotonic() > killed_at + 600:
                    raise RuntimeError(f"not taken over: {Counter(now.values())}")
                time.sleep(POLL_SECONDS)
            figures["failover_takeover_s"] = time.monotonic() - killed_at
            pending = set(moved)
            while pending and time.monotonic() < killed_at + 600:
                for i in list(pending):
                    if "[stdout] line" in live.task_log(DAG, run_id, f"job/map_index={i}", 1, triggerer=survivor):
                        pending.discard(i)
                time.sleep(POLL_SECONDS)
            figures["failover_first_line_s"] = time.monotonic() - killed_at if not pending else float("nan")
            go.touch()
            noticed: dict[int, float] = {}
            ended: dict[int, float] = {}
            notice_deadline = time.monotonic() + max(durations) + 300
            while len(noticed) < n and time.monotonic() < notice_deadline:
                now_states = live.task_states(DAG, run_id)
                seen_at = time.time()
                for i, state in now_states.items():
                    if i not in noticed and state != "deferred":
                        noticed[i] = seen_at
                for i in range(n):
                    path = ends / str(i)
                    if i not in ended and path.exists() and path.read_text().strip():
                        ended[i] = float(path.read_text().strip())
                time.sleep(POLL_SECONDS)
            sampler.stop()
            final_deadline = time.monotonic() + 300
            while time.monotonic() < final_deadline:
                final = live.task_states(DAG, run_id)
                if all(s in ("success", "failed", "upstream_failed") for s in final.values()):
                    break
                time.sleep(2)
            final = live.task_states(DAG, run_id)
            repeated = missing = extra = 0
            gaps: list[dict[str, Any]] = []
            for i in range(n):
                host = hosts[i % len(hosts)]
                runs = host.work / f"{i}.runs"
                extra += abs(len(runs.read_text().splitlines()) - 1) if runs.exists() else 1
                total_path = ends / f"{i}.lines"
                total = int(total_path.read_text()) if total_path.exists() else 0
                seen = Counter(
                    re.findall(r"\[stdout\] (line \d+)", live.task_log(DAG, run_id, f"job/map_index={i}", 1))
                )
                repeated += sum(c - 1 for c in seen.values() if c > 1)
                lost = [k for k in range(1, total + 1) if seen[f"line {k}"] == 0]
                missing += len(lost)
                if lost:
                    # where the gap is: right after the last line the killed triggerer wrote to the task's log?
                    by_victim = re.findall(
                        r"\[stdout\] line (\d+)",
                        live.task_log(DAG, run_id, f"job/map_index={i}", 1, triggerer=victim),
                    )
                    # and whether a triggerer wrote the line to its own log instead of the task's
                    elsewhere = [
                        f"{c.name}: {text.strip()[:300]}"
                        for c in live.triggerers()
                        for text in c.process.output().splitlines()
                        if f"map_index={i}" in text and any(f"[stdout] line {k}" in text for k in lost)
                    ]
                    gaps.append(
                        {
                            "job": i,
                            "moved": i in moved,
                            "missing": lost,
                            "of": total,
                            "last_by_killed": int(by_victim[-1]) if by_victim else None,
                            "in_a_triggerers_own_log": elsewhere,
                        }
                    )
            notices = [noticed[i] - ended[i] for i in noticed if i in ended and noticed[i] >= ended[i]]
            figures.update(
                {
                    "failover_ssh_connections_max_after": max(sampler.connections or [0]),
                    "failover_repeated_lines": repeated,
                    "failover_missing_lines": missing,
                    "failover_missing_detail": gaps,
                    "failover_extra_executions": extra,
                    "failover_end_notice_p95_s": percentile(notices, 0.95) if notices else float("nan"),
                    "failover_end_notice_max_s": max(notices) if notices else float("nan"),
                    "failover_failures": sum(1 for i in range(n) if final.get(i) != "success"),
                }
            )
        finally:
            if live is not None:
                live.stop()
            for server in servers:
                server.stop()
            for host in hosts:  # jobs of a run cut short wait for a "go" that no one will write
                host.abort_running()
    return figures


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through measure()'s clean-up, as Ctrl-C does


if __name__ == "__main__":
    import argparse
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=20)
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    result = measure(args.n, args.min_seconds, args.max_seconds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
