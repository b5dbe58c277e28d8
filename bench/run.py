"""Benchmarks of the orchesjob CLI: speed as ratios to bare interpreter start-up, measured in one run.

Run with `make bench` or `python bench/run.py [--quick] [--json FILE]`. Never part of the test suite: these
machines are noisy, so every speed figure is also divided by a baseline (`python -I -c pass`) measured in the
same run, and timings are medians of repeated whole-process runs.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def install_cli(into: str) -> "tuple[list[str], str]":
    """A plain (non-editable) install of the working tree's CLI, as pip or pipx would leave it on a host: a venv
    with the package in site-packages and a console script. Returns (argv of the CLI, that venv's python)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", into], check=True)
    python = os.path.join(into, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shutil.copytree(
        os.path.join(ROOT, "orchesjob"), os.path.join(site, "orchesjob"), ignore=shutil.ignore_patterns("__pycache__")
    )
    # the command as pip installs it: scripts/orchesjob with this interpreter on its first line (pip's rewrite of
    # `#!python`); beside it, the console-script wrapper pip wrote before, for the start-up figure it is compared to
    script = os.path.join(into, "bin", "orchesjob")
    with open(os.path.join(ROOT, "scripts", "orchesjob")) as f:
        body = f.read().split("\n", 1)[1]
    with open(script, "w") as f:
        f.write("#!%s\n%s" % (python, body))
    os.chmod(script, 0o755)
    with open(os.path.join(into, "bin", "orchesjob-console-script"), "w") as f:
        f.write(
            "#!%s\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom orchesjob.cli import main\n"
            "if __name__ == '__main__':\n"
            "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            "    sys.exit(main())\n" % python
        )
    os.chmod(os.path.join(into, "bin", "orchesjob-console-script"), 0o755)
    # pip compiles the .py files at install time; do the same (PYTHONDONTWRITEBYTECODE would otherwise make every
    # run compile them again)
    subprocess.run([python, "-m", "compileall", "-q", os.path.join(site, "orchesjob")], check=True)
    subprocess.run([script, "version"], capture_output=True, check=True)
    return [script], python


CLI: list[str] = []
PYTHON = sys.executable


def env_for(home: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ORCHESJOB_HOME"] = home
    env.pop("PYTHONPATH", None)
    return env


def timed(
    argv: Sequence[str],
    env: Optional[dict[str, str]] = None,
    ok_codes: Sequence[int] = (0,),
    stdin: Optional[str] = None,
) -> "tuple[float, int, bytes]":
    """Wall time of one whole process (its standard input the file `stdin`, if given), its peak RSS in KiB, and its
    stdout."""
    source = open(stdin, "rb") if stdin is not None else None
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(argv, env=env, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    finally:
        if source is not None:
            source.close()
    assert p.stdout is not None  # stdout=PIPE
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    dt = time.perf_counter() - t0
    if p.returncode not in ok_codes:
        raise RuntimeError("%s exited %s: %s" % (" ".join(argv), p.returncode, out[:500].decode(errors="replace")))
    return dt, usage.ru_maxrss, out


def median_time(
    make_argv: Callable[[int], Sequence[str]],
    env: Optional[dict[str, str]],
    runs: int,
    ok_codes: Sequence[int] = (0,),
    stdin: Optional[str] = None,
) -> float:
    times = [timed(make_argv(i), env, ok_codes, stdin)[0] for i in range(runs)]
    return statistics.median(times)


def pyz_figures(pyz: str, env: dict[str, str], base: float, runs: int) -> dict[str, float]:
    """The .pyz the two ways it runs, over the bare start-up `base`: as a file (`python -I orchesjob.pyz`) and as
    the provider runs it on a host (its bootstrap on the command line, the launcher and the request on stdin: the
    file's directories and sha256 checked, then the CLI from the code compiled beside it). Beside them, what no CLI
    could avoid there: an empty zipapp's start (Python's runpy), and hashing the file (the launcher's check)."""
    sys.path.insert(0, ROOT)
    from orchesjob_provider.launcher import BOOTSTRAP, launcher_line

    with open(pyz, "rb") as f:
        data = f.read()
    request = os.path.join(os.path.dirname(pyz), "status-request")
    with open(request, "wb") as f:
        f.write(launcher_line(pyz, hashlib.sha256(data).hexdigest(), "status"))
        f.write(json.dumps({"argv": ["--run-key", "history-0"], "state_dir": env["ORCHESJOB_HOME"]}).encode() + b"\n")
    empty = os.path.join(os.path.dirname(pyz), "empty.pyz")
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("__main__.py", "")
    fig = {}
    by_file = [PYTHON, "-I", pyz, "status", "--run-key", "history-0"]
    timed(by_file, env)  # the first run compiles the code it keeps beside the file
    fig["status_ratio_100k_pyz"] = median_time(_always(by_file), env, runs) / base
    by_launcher = [PYTHON, "-I", "-c", BOOTSTRAP]
    timed(by_launcher, env, stdin=request)
    fig["status_ratio_100k_pyz_launcher"] = median_time(_always(by_launcher), env, runs, stdin=request) / base
    fig["empty_zipapp_ratio"] = median_time(_always([PYTHON, "-I", empty]), env, runs) / base
    hashing = subprocess.run(
        [PYTHON, "-I", "-c", PYZ_HASH_TIMING, pyz], capture_output=True, text=True, check=True
    ).stdout
    fig["pyz_sha256_over_base"] = float(hashing) / base
    return fig


# The launcher's hashing of the file, timed in the interpreter that runs it (its builtin hash module): seconds.
PYZ_HASH_TIMING = """
import sys, time
try:
    from _sha256 import sha256
except ImportError:
    from _sha2 import sha256
data = open(sys.argv[1], "rb").read()
t0 = time.perf_counter()
for _ in range(20):
    sha256(data).digest()
print((time.perf_counter() - t0) / 20)
"""


def _always(argv: list[str]) -> Callable[[int], Sequence[str]]:
    """The same argv for every run (median_time's argument)."""
    return lambda i: argv


def seed(home: str, jobs: int, keys: int) -> None:
    """Fill a history through the project's own store code, so the schema and indexes are the real ones."""
    os.environ["ORCHESJOB_HOME"] = home
    from orchesjob import store as store_mod

    st = store_mod.open_store(create=True)
    if st is None:
        raise RuntimeError("open_store(create=True) made no store in %s" % home)
    logs = os.path.join(home, "logs")
    t = int(time.time()) - 86400 * 365
    batch = 50000
    done = 0
    while done < jobs:
        with st.write():
            for i in range(done, min(jobs, done + batch)):
                key = "history-%d" % (i % keys)
                jid = "%08x-0000-4000-8000-%012x" % (i, i)
                st.insert(
                    {
                        "job_id": jid,
                        "run_key": key,
                        "attempt_no": st.next_attempt(key),
                        "status": "SUCCEEDED",
                        "command": ["true"],
                        "cwd": None,
                        "env": {},
                        "timeout": None,
                        "strict": False,
                        "exit_code": 0,
                        "end_reason": "exited with code 0",
                        "stdout_file": os.path.join(logs, jid + ".stdout"),
                        "stderr_file": os.path.join(logs, jid + ".stderr"),
                        "started_at": t + i,
                        "finished_at": t + i + 1,
                        "updated_at": t + i + 1,
                        "life_lock": True,  # a job of this CLI: its lock files are gone, so nothing of it lives
                    }
                )
        done = min(jobs, done + batch)
    st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    del os.environ["ORCHESJOB_HOME"]


def start_job(env: dict[str, str], key: str, *cmd: str) -> dict[str, Any]:
    out = subprocess.run(CLI + ["start", "--run-key", key, "--"] + list(cmd), env=env, capture_output=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100,000 jobs of history instead of 1,000,000; fewer runs")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as one JSON object")
    ap.add_argument("--no-airflow", action="store_true", help="skip the provider figures (they need Airflow and sshd)")
    ap.add_argument(
        "--cli-install-only",
        action="store_true",
        help="only the zero-install figures (first contact with a host without a CLI, upload included)",
    )
    ap.add_argument(
        "--long-work-only",
        action="store_true",
        help="only clean and the 1.1.0 upgrade at 1,000,000 jobs (100,000 with --quick): bench/long_work.py",
    )
    ap.add_argument(
        "--triggerer-scale-only",
        action="store_true",
        help="only the triggerer-at-scale figures (N deferred jobs on one host, one live triggerer, three ways)",
    )
    a = ap.parse_args()
    if a.cli_install_only:
        return finish(dict(cli_install_figures(3 if a.quick else 7), quick=a.quick), a.json)
    if a.triggerer_scale_only:
        return finish(dict(triggerer_scale_figures(a.quick), quick=a.quick), a.json)
    runs = 9 if a.quick else 21
    tmp = tempfile.mkdtemp(prefix="orchesjob-bench-")
    fig: dict[str, Any] = {}
    global CLI, PYTHON
    CLI, PYTHON = install_cli(os.path.join(tmp, "venv"))
    if a.long_work_only:
        try:
            from long_work import measure as long_work

            return finish(dict(long_work(CLI, seed, a.quick), quick=a.quick), a.json)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        base = median_time(lambda i: [PYTHON, "-I", "-c", "pass"], None, runs)
        fig["baseline_startup_ms"] = base * 1000

        sizes = [("empty", 0), ("100k", 100_000)] + ([] if a.quick else [("1m", 1_000_000)])
        for label, n in sizes:
            home = os.path.join(tmp, label)
            t0 = time.perf_counter()
            seed(home, max(n, 1), max(1, n // 10))
            if label != "empty":
                fig["seed_%s_s" % label] = time.perf_counter() - t0
            env = env_for(home)
            start_job(env, "probe", "sleep", "600")  # one active job, so --running has something to list
            st = median_time(lambda i: CLI + ["status", "--run-key", "history-0"], env, runs)
            fig["status_ms_%s" % label] = st * 1000
            fig["status_ratio_%s" % label] = st / base
            if label == "100k":
                # the same call through pip's console-script wrapper (it imports re first) and through the .pyz
                by_wrapper = [os.path.join(os.path.dirname(CLI[0]), "orchesjob-console-script")]
                by_wrapper += ["status", "--run-key", "history-0"]
                fig["status_ratio_100k_console_script"] = median_time(_always(by_wrapper), env, runs) / base
                pyz = os.path.join(tmp, "zipapp", "orchesjob.pyz")
                os.makedirs(os.path.dirname(pyz), mode=0o700, exist_ok=True)
                if not os.path.exists(pyz):
                    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_pyz.py"), pyz], check=True)
                fig.update(pyz_figures(pyz, env, base, runs))
            sr = median_time(lambda i: CLI + ["status", "--running"], env, runs)
            fig["status_running_ratio_%s" % label] = sr / base
            # the host tools: ls of the latest jobs, metrics with its default window (the seeded history is a year
            # old, so it holds the probe alone) and with one that holds the whole history, doctor in seconds (it
            # reads the whole database on purpose: quick_check; exit 1 would be a finding, still a timing)
            fig["ls_ratio_%s" % label] = median_time(lambda i: CLI + ["ls", "--last", "20"], env, runs) / base
            fig["metrics_ratio_%s" % label] = median_time(lambda i: CLI + ["metrics"], env, runs) / base
            fig["metrics_whole_history_ratio_%s" % label] = (
                median_time(lambda i: CLI + ["metrics", "--recent-hours", str(24 * 400)], env, max(3, runs // 3)) / base
            )
            fig["doctor_s_%s" % label] = median_time(
                lambda i: CLI + ["doctor", "--format", "json"], env, 3, ok_codes=(0, 1)
            )
            subprocess.run(CLI + ["abort", "--run-key", "probe", "--grace-seconds", "1"], env=env, capture_output=True)
        big = sizes[-1][0]
        fig["status_large_over_empty"] = fig["status_ratio_%s" % big] / fig["status_ratio_empty"]

        env = env_for(os.path.join(tmp, "starts"))
        subprocess.run(CLI + ["version"], env=env, capture_output=True)
        fig["start_async_ratio"] = (
            median_time(lambda i: CLI + ["start", "--run-key", "a%d" % i, "--", "true"], env, runs) / base
        )
        fig["start_sync_ratio"] = (
            median_time(lambda i: CLI + ["start", "--sync", "--run-key", "s%d" % i, "--", "true"], env, runs) / base
        )
        fig["rerun_sync_ratio"] = median_time(lambda i: CLI + ["rerun", "--sync", "--run-key", "s0"], env, runs) / base

        fig["wait_reaction_ms"] = wait_reaction(env, 5 if a.quick else 9)

        fig.update(concurrency(os.path.join(tmp, "conc")))
        fig.update(memory(env))
        if not a.no_airflow:
            fig.update(provider_figures())
            fig.update(cli_install_figures(3 if a.quick else 7))
            fig.update(triggerer_scale_figures(a.quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fig["machine"] = "%s, %d cores, %s" % (
        platform.platform(),
        os.cpu_count() or 0,
        platform.processor() or platform.machine(),
    )
    fig["python"] = platform.python_version()
    fig["cli"] = " ".join(CLI)
    fig["quick"] = a.quick
    return finish(fig, a.json)


def finish(fig: dict[str, Any], json_path: Optional[str]) -> int:
    """Print the figures against their goals, and write them as JSON when asked."""
    report(fig)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(fig, f, indent=2)
        import charts  # bench/ is this script's directory

        for chart in charts.redraw_for(json_path):
            print("bench: redrew %s" % chart, file=sys.stderr)
    return 0


def wait_reaction(env: dict[str, str], runs: int) -> float:
    """Milliseconds from the job's last instruction to `wait` returning, median of `runs` jobs."""
    samples: list[float] = []
    script = "import time; time.sleep(1.0); print(repr(time.time()), flush=True)"
    for i in range(runs):
        job = start_job(env, "w%d" % i, PYTHON, "-c", script)
        out = subprocess.run(
            CLI + ["wait", "--job-id", job["job_id"], "--timeout", "30"], env=env, capture_output=True, check=True
        )
        returned = time.time()
        done = json.loads(out.stdout)
        with open(done["stdout_file"]) as f:
            ended = float(f.read().strip())
        samples.append((returned - ended) * 1000)
    return statistics.median(samples)


def concurrency(home: str) -> dict[str, Any]:
    env = env_for(home)
    marker = os.path.join(home + "-marker")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    out: dict[str, Any] = {}
    for label, n, distinct in (("same_key", 50, False), ("distinct", 200, True)):
        if os.path.exists(marker):
            os.unlink(marker)
        cmd = ["sh", "-c", 'echo "$ORCHESJOB_RUN_KEY" >> %s; sleep 2' % marker]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                CLI + ["start", "--run-key", ("k%d" % i) if distinct else "one", "--"] + cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for i in range(n)
        ]
        results = [(p.communicate()[0], p.returncode) for p in procs]
        out["concurrent_%s_wall_s" % label] = time.perf_counter() - t0
        failures = sum(1 for _, rc in results if rc != 0)
        ids = {json.loads(o)["job_id"] for o, rc in results if rc == 0}
        time.sleep(0.5)
        with open(marker) as f:
            lines = f.read().split()
        keys = n if distinct else 1
        out["concurrent_%s_failures" % label] = failures
        out["concurrent_%s_executions" % label] = len(lines) / keys
        out["concurrent_%s_job_ids" % label] = len(ids)
        subprocess.run(CLI + ["status", "--running"], env=env, capture_output=True)
        time.sleep(2.5)
    return out


def memory(env: dict[str, str]) -> dict[str, float]:
    job = start_job(env, "rss", "sleep", "3")
    time.sleep(0.3)
    with open("/proc/%d/status" % job["worker_pid"]) as f:
        rss = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
    _, status_rss, _ = timed(CLI + ["status", "--run-key", "rss"], env)
    subprocess.run(CLI + ["abort", "--run-key", "rss", "--grace-seconds", "1"], env=env, capture_output=True)
    return {"supervisor_rss_mb": rss / 1024, "status_rss_mb": status_rss / 1024}


def provider_figures() -> dict[str, Any]:
    """From the job's end to the Airflow task's end (deferrable and polling), and SSH calls per minute."""
    try:
        import airflow  # noqa: F401
    except ImportError:
        print("bench: Airflow is not installed here; provider figures skipped (use `make bench`)", file=sys.stderr)
        return {}
    from airflow_bench import measure

    return measure()


def cli_install_figures(runs: int) -> dict[str, Any]:
    """First contact with a host that has no CLI (upload included), a later contact, and calls after either."""
    try:
        import airflow  # noqa: F401
    except ImportError:
        print("bench: Airflow is not installed here; zero-install figures skipped (use `make bench`)", file=sys.stderr)
        return {}
    from cli_install_bench import measure

    return measure(runs)


def triggerer_scale_figures(quick: bool) -> dict[str, Any]:
    """N deferred jobs on one host watched by one live triggerer: shared watcher, per-trigger, SSH provider."""
    try:
        import airflow
    except ImportError:
        print(
            "bench: Airflow is not installed here; triggerer-scale figures skipped (use `make bench`)", file=sys.stderr
        )
        return {}
    if not airflow.__version__.startswith("3."):
        print("bench: the triggerer-scale figures need Airflow 3 (a live deployment); skipped", file=sys.stderr)
        return {}
    from triggerer_scale import measure

    fig = measure(50, 20, 90) if quick else measure(300, 30, 180)
    if fig.get("triggerer_cpu_s_per_trigger"):
        fig["triggerer_cpu_over_per_trigger"] = fig["triggerer_cpu_s"] / fig["triggerer_cpu_s_per_trigger"]
    return fig


GOALS = {
    "status_ratio_1m": ("<= 2", lambda v: v <= 2),
    "status_ratio_100k": ("<= 1.5", lambda v: v <= 1.5),
    "status_ratio_100k_pyz": ("<= 1.5", lambda v: v <= 1.5),
    "status_ratio_100k_pyz_launcher": ("<= 1.5", lambda v: v <= 1.5),
    "start_sync_ratio": ("<= 4", lambda v: v <= 4),
    "ls_ratio_1m": ("<= 3", lambda v: v <= 3),
    "ls_ratio_100k": ("<= 3", lambda v: v <= 3),
    "metrics_ratio_1m": ("<= 3", lambda v: v <= 3),
    "metrics_ratio_100k": ("<= 3", lambda v: v <= 3),
    "doctor_s_1m": ("< 5", lambda v: v < 5),
    "wait_reaction_ms": ("< 100", lambda v: v < 100),
    "concurrent_same_key_failures": ("0", lambda v: v == 0),
    "concurrent_distinct_failures": ("0", lambda v: v == 0),
    "concurrent_same_key_executions": ("1", lambda v: v == 1),
    "concurrent_distinct_executions": ("1 per key", lambda v: v == 1),
    "cli_install_first_contact_s": ("< 2", lambda v: v < 2),
    "cli_install_later_over_named": ("<= 1.2", lambda v: v <= 1.2),
    "triggerer_ssh_connections_max": ("<= 2", lambda v: v <= 2),
    "host_wait_processes_max": ("<= 2", lambda v: v <= 2),
    "end_notice_p95_s": ("< 2", lambda v: v < 2),
    "triggerer_failures": ("0", lambda v: v == 0),
    "triggerer_cpu_over_per_trigger": ("<= 1", lambda v: v <= 1),
}


def report(fig: dict[str, Any]) -> None:
    width = max([34] + [len(k) for k in fig])
    print("%-*s %12s  %s" % (width, "figure", "value", "goal"))
    for k, v in fig.items():
        goal = GOALS.get(k)
        mark = ""
        if goal and isinstance(v, (int, float)):
            mark = "%s %s" % (goal[0], "ok" if goal[1](v) else "MISSED")
        shown = ("%.3f" % v) if isinstance(v, float) else str(v)
        print("%-*s %12s  %s" % (width, k, shown, mark))


if __name__ == "__main__":
    sys.exit(main())
