"""The triggerer at scale: N deferred jobs on one host, watched by one real triggerer, three ways in one run.

A live Airflow 3 deployment (tests/support/live_airflow.py: api-server, scheduler, dag-processor and one triggerer
as separate processes) and a private sshd with OpenSSH's stock ``MaxStartups``/``MaxSessions``. For each way of
watching (bench/scale_dags: the shared watcher, ``shared_watcher=False``, the SSH provider's
``SSHRemoteJobOperator``) one DAG run maps a task over N jobs. Every job prints a line every few seconds and waits
for a "go" file; once all N task instances are deferred, the file appears and each job runs on for its own random
time (the same times for the three ways) and writes the moment it ends. Sampled every second from "go" until the
triggerer has noticed every end:

- ``triggerer_ssh_connections_max``: the triggerer's established connections to sshd;
- ``host_wait_processes_max``: commands running on the host under those connections' sshd sessions;
- ``host_watch_rss_mb_max``: resident memory of those sessions and commands together;
- ``triggerer_cpu_s``: the triggerer's CPU time (all its processes) over the same span;
- ``end_notice_p95_s``: from a job's end to its task instance leaving "deferred" in Airflow's metadata database
  (the triggerer has handed Airflow the trigger's event), read every 0.2 s, so a figure may be up to that late;
- ``triggerer_failures``: jobs whose end was not noticed, or whose task did not end in success.

Keys carry no suffix for the shared watcher, ``_per_trigger`` and ``_sshremotejob`` for the others.
"""

from __future__ import annotations

import json
import random
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import hostwatch  # noqa: E402

from tests.support.cli import write_cli_launcher  # noqa: E402
from tests.support.host_users import HostUser, can_make_users, multiuser_sshd, stop_multiuser_sshd  # noqa: E402
from tests.support.live_airflow import LiveAirflow  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

MODES = (("", "scale_shared"), ("_per_trigger", "scale_per_trigger"), ("_sshremotejob", "scale_sshremotejob"))
LINE_SECONDS = 5
POLL_SECONDS = 0.2  # how often the metadata database is read for task instances that left "deferred"

JOB = """#!/bin/sh
# job.sh GO_FILE ENDS_DIR INDEX SECONDS: a line every few seconds; after GO_FILE appears, SECONDS more, then the end
go=$1 ends=$2 i=$3 s=$4 n=0
while [ ! -e "$go" ]; do n=$((n+1)); echo "job $i waiting, line $n"; sleep %(line)d; done
end=$(( $(date +%%s) + s ))
while [ "$(date +%%s)" -lt "$end" ]; do n=$((n+1)); echo "job $i line $n"; sleep %(line)d; done
date +%%s.%%N > "$ends/$i"
""" % {"line": LINE_SECONDS}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


class Sampler(threading.Thread):
    """Samples the triggerer's connections to sshd and the host side of them every second."""

    def __init__(self, pgid: int, sshd_port: int) -> None:
        super().__init__(daemon=True)
        self.pgid, self.sshd_port = pgid, sshd_port
        self.stop_event = threading.Event()
        self.samples: list[hostwatch.Sample] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append(hostwatch.sample(self.pgid, self.sshd_port))
            self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


def states(live: LiveAirflow, dag_id: str, run_id: str) -> dict[int, str | None]:
    rows = live.query(
        "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'job'",
        (dag_id, run_id),
    )
    return {int(i): s for i, s in rows}


def run_mode(
    live: LiveAirflow, server: SshServer, work: Path, suffix: str, dag_id: str, durations: list[float]
) -> dict[str, Any]:
    n = len(durations)
    ends = work / dag_id / "ends"
    go = work / dag_id / "go"
    script = work / "job.sh"
    commands = [
        " ".join(shlex.quote(str(a)) for a in ("sh", script, go, ends, i, int(d))) for i, d in enumerate(durations)
    ]
    triggerer = live.triggerers()[0]
    started = time.monotonic()
    run_id = live.trigger(dag_id, {"commands": commands})
    ramp_deadline = time.monotonic() + 120 + 3.0 * n
    deferred_max = 0
    while True:
        # every task instance deferred, or failed before it could (today's design, overloaded, loses some starts
        # to sshd's MaxStartups: they count as failures)
        now = states(live, dag_id, run_id)
        deferred = sum(1 for state in now.values() if state == "deferred")
        deferred_max = max(deferred_max, deferred)
        failed = sorted(i for i, state in now.items() if state in ("failed", "upstream_failed"))
        if len(now) == n and deferred + len(failed) == n and deferred > 0:
            break
        if time.monotonic() > ramp_deadline or (len(failed) == n):
            log = live.task_log(dag_id, run_id, f"job/map_index={failed[0] if failed else 0}", 1)
            raise RuntimeError(
                f"{dag_id}: {deferred_max} of {n} task instances deferred, states {now}; log of one:\n{log[-3000:]}"
            )
        time.sleep(1)
    ramp = time.monotonic() - started
    if failed:
        log = live.task_log(dag_id, run_id, f"job/map_index={failed[0]}", 1)
        reason = [line for line in log.splitlines() if "exc_value" in line or "rror" in line][-1:]
        print(f"bench: {dag_id}: {len(failed)} task(s) failed before deferring, e.g. {reason}", file=sys.stderr)
    print(f"bench: {dag_id}: {deferred} deferred after {ramp:.0f} s; go", file=sys.stderr, flush=True)

    cpu_before = hostwatch.group_cpu_seconds(hostwatch.processes(), triggerer.process.pid)
    sampler = Sampler(triggerer.process.pid, server.port)
    go.touch()
    sampler.start()
    notice_deadline = time.monotonic() + max(durations) + 300
    noticed: dict[int, float] = {}
    ended: dict[int, float] = {}
    while len(noticed) < n and time.monotonic() < notice_deadline:
        now = states(live, dag_id, run_id)
        seen_at = time.time()
        for i, state in now.items():
            if i not in noticed and state != "deferred":
                noticed[i] = seen_at
        for i in range(n):
            if i not in ended and (ends / str(i)).exists():
                text = (ends / str(i)).read_text().strip()
                if text:
                    ended[i] = float(text)
        time.sleep(POLL_SECONDS)
    sampler.stop()
    cpu = hostwatch.group_cpu_seconds(hostwatch.processes(), triggerer.process.pid) - cpu_before

    final_deadline = time.monotonic() + 300 + n
    while time.monotonic() < final_deadline:
        final = states(live, dag_id, run_id)
        if len(final) == n and all(s in ("success", "failed", "skipped", "upstream_failed") for s in final.values()):
            break
        time.sleep(2)
    final = states(live, dag_id, run_id)
    # a task that left "deferred" before its job ended was not woken by the end: a failure, like a task that did not
    # succeed or an end nobody noticed
    failures = sum(
        1 for i in range(n) if i not in noticed or i not in ended or noticed[i] < ended[i] or final.get(i) != "success"
    )
    notices = [noticed[i] - ended[i] for i in noticed if i in ended and noticed[i] >= ended[i]]
    samples = sampler.samples or [hostwatch.Sample(0, 0, 0.0)]
    figures: dict[str, Any] = {
        f"triggerer_jobs{suffix}": deferred_max,
        f"triggerer_ssh_connections_max{suffix}": max(s.connections for s in samples),
        f"host_wait_processes_max{suffix}": max(s.host_processes for s in samples),
        f"host_watch_rss_mb_max{suffix}": max(s.host_rss_mb for s in samples),
        f"end_notice_p95_s{suffix}": percentile(notices, 0.95) if notices else float("nan"),
        f"end_notice_max_s{suffix}": max(notices) if notices else float("nan"),
        f"triggerer_cpu_s{suffix}": cpu,
        f"triggerer_failures{suffix}": failures,
        f"triggerer_start_failures{suffix}": len(failed),  # of those, tasks that failed before they deferred
        f"triggerer_ramp_s{suffix}": ramp,  # from the DAG run's trigger to all N task instances deferred
    }
    busiest = max(samples, key=lambda s: s.host_processes)
    print(f"bench: {dag_id}: {json.dumps(figures)}; busiest host sample: {busiest}", file=sys.stderr, flush=True)
    return figures


def measure(n: int, min_seconds: float, max_seconds: float, seed: int = 20261203) -> dict[str, Any]:
    """All three ways over the same N job durations; one deployment, one sshd, one triggerer.

    As root the "host" is a fresh account with bash as its shell (the SSH provider's job wrapper needs bash), the
    stock start-up files and nothing installed (the provider uploads its CLI, which runs on the machine's
    ``/usr/bin/python3``): what an SSH command costs is then the tools' cost, not this machine's start-up files.
    Otherwise it is this user, with this checkout's CLI.
    """
    rng = random.Random(seed)
    durations = [rng.uniform(min_seconds, max_seconds) for _ in range(n)]
    figures: dict[str, Any] = {"triggerer_scale_n": n}
    account: HostUser | None = None
    server: SshServer | None = None
    live: LiveAirflow | None = None
    with tempfile.TemporaryDirectory(prefix="orchesjob-scale-bench-") as tmp:
        base = Path(tmp)
        try:
            if can_make_users() is None:
                server = multiuser_sshd(stock_limits=True)
                account = HostUser(shell="/bin/bash")  # SSHRemoteJobOperator's wrapper needs bash
                work = account.home / "scale-bench"
                connection = account.connection(server)
                figures["triggerer_scale_host"] = "fresh account, bash, CLI uploaded by the provider"
            else:
                server = SshServer(base / "sshd", stock_limits=True).start()
                work = base / "work"
                launcher = write_cli_launcher(base / "bin" / "orchesjob", python=sys.executable)
                connection = server.airflow_connection(
                    orchesjob_bin=launcher, orchesjob_home=str(base / "orchesjob-home")
                )
                figures["triggerer_scale_host"] = "this account, this checkout's CLI"
            for _, dag_id in MODES:
                (work / dag_id / "ends").mkdir(parents=True)
            (work / "sshremotejob").mkdir()
            (work / "job.sh").write_text(JOB)
            if account is not None:
                account.give(work)
            live = LiveAirflow(
                base / "airflow",
                connection,
                dag_files=[BENCH / "scale_dags" / "triggerer_scale_dags.py"],
                wait_for_dag="scale_sshremotejob",
                triggerers=1,
                settings={"AIRFLOW__CORE__PARALLELISM": "8"},
                env={"BENCH_SCALE_REMOTE_DIR": str(work / "sshremotejob")},
            )
            live.start()
            for suffix, dag_id in MODES:
                figures.update(run_mode(live, server, work, suffix, dag_id, durations))
        finally:
            if live is not None:
                live.stop()
            if account is not None:
                account.remove()
            if server is not None:
                stop_multiuser_sshd(server) if account is not None else server.stop()
    return figures


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=20)
    ap.add_argument("--max-seconds", type=float, default=90)
    args = ap.parse_args()
    print(json.dumps(measure(args.n, args.min_seconds, args.max_seconds), indent=2))
