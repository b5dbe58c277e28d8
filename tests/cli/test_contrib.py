"""What contrib/ ships for the monitoring stack, checked with the real tools: the Prometheus rules with `promtool check
rules` and `promtool test rules`, the Grafana dashboard against the series the CLI really emits, and the systemd
units with `systemd-analyze verify`, their commands run as systemd would run them. Each tool is required: a
missing one fails the test (CI installs them)."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import REPO_ROOT, check_ok, cli_env, write_cli_launcher

CONTRIB = Path(REPO_ROOT) / "contrib"
# labels Prometheus adds to every scraped series
SCRAPE_LABELS = {"instance", "job"}


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert path, "%s is not installed (.ci/run installs it)" % name
    return path


# -- Prometheus -----------------------------------------------------------------------------------------------------
def test_the_alerting_rules_pass_promtool_and_their_own_unit_tests():
    rules = CONTRIB / "prometheus"
    r = subprocess.run([tool("promtool"), "check", "rules", "orchesjob.rules.yml"], cwd=rules, capture_output=True)
    assert r.returncode == 0, r
    r = subprocess.run([tool("promtool"), "test", "rules", "orchesjob.rules.test.yml"], cwd=rules, capture_output=True)
    assert r.returncode == 0 and b"SUCCESS" in r.stdout, r


def emitted(run, start_job, ok) -> dict[str, set[str]]:
    """Each metric `orchesjob metrics` writes, with the labels its samples carry (every kind of sample present:
    a provider key and another key, finished and running)."""
    start_job("airflow/etl/load/scheduled__2026-05-01", "true", opts=("--sync",))
    start_job("billing/2026-05-01", "sh", "-c", "exit 1", opts=("--sync",))
    start_job("airflow/etl/load/manual__2026-05-02", "sleep", "60")
    start_job("nightly", "sleep", "60")
    r = run("metrics")
    assert r.code == 0, r
    metrics: dict[str, set[str]] = {}
    for line in r.out.splitlines():
        if line.startswith("# TYPE "):
            metrics[line.split()[2]] = set()
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = set(re.findall(r'([a-z_]+)="', rest.rsplit("}", 1)[0])) if rest else set()
            metrics[name.split()[0]] |= labels
    return metrics


def queries(node) -> list[str]:
    """Every PromQL text of a dashboard: panel targets' expr and the templating queries."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, str) and "(" in value:
                found.append(value)
            else:
                found += queries(value)
    elif isinstance(node, list):
        for item in node:
            found += queries(item)
    return found


def test_every_query_of_the_dashboard_names_series_and_labels_the_cli_emits(run, start_job, ok):
    metrics = emitted(run, start_job, ok)
    dashboard = json.loads((CONTRIB / "grafana" / "orchesjob-dashboard.json").read_text())
    found = queries(dashboard)
    assert len(found) >= 10
    used = set()
    for q in found:
        names = set(re.findall(r"\borchesjob_[a-z_]+", q))
        assert names, "a query that names no orchesjob metric: %s" % q
        unknown = names - set(metrics)
        assert not unknown, "%s names %s, which orchesjob metrics does not write" % (q, unknown)
        labels = set(re.findall(r"\b([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", q))
        labels |= {w for group in re.findall(r"\bby\s*\(([^)]*)\)", q) for w in re.split(r"\s*,\s*", group) if w}
        labels |= set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", q))
        label_values = re.findall(r"label_values\(\s*[a-z_]+\s*,\s*([a-z_]+)\s*\)", q)
        labels |= set(label_values)
        have = set().union(*(metrics[n] for n in names)) | SCRAPE_LABELS
        assert labels <= have, "%s uses labels %s that its series do not have" % (q, labels - have)
        used |= names
    for legend in re.findall(r'"legendFormat": "([^"]*)"', json.dumps(dashboard, indent=1)):
        assert set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", legend)) <= set().union(*metrics.values()) | SCRAPE_LABELS
    # the per-task series and the one series that names runs are on it
    assert {"orchesjob_family_last_success", "orchesjob_running_job_info", "orchesjob_jobs_finished_recently"} <= used


def test_the_rules_name_only_series_the_cli_emits(run, start_job, ok):
    metrics = emitted(run, start_job, ok)
    text = (CONTRIB / "prometheus" / "orchesjob.rules.yml").read_text()
    exprs = re.findall(r"^\s+expr: (.+)$", text, re.M)
    assert len(exprs) >= 5
    for expr in exprs:
        names = set(re.findall(r"\borchesjob_[a-z_]+", expr))
        assert names and names <= set(metrics), expr
    for label in re.findall(r"\$labels\.([a-z_]+)", text):
        assert label in set().union(*metrics.values()) | SCRAPE_LABELS, label


# -- systemd --------------------------------------------------------------------------------------------------------
UNITS = ("orchesjob-clean@.service", "orchesjob-clean@.timer", "orchesjob-metrics@.service", "orchesjob-metrics@.timer")


def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """Each template is verified as an instance (for the user `root`, who exists everywhere)."""
    paths = []
    for name in UNITS:
        instance = tmp_path / name.replace("@.", "@root.")
        shutil.copy(CONTRIB / "systemd" / name, instance)
        paths.append(str(instance))
    r = subprocess.run([tool("systemd-analyze"), "verify", "--man=no"] + paths, capture_output=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == b"" and r.stdout == b"", r


def unit_command(name: str) -> tuple[list[str], dict[str, str]]:
    """A service's ExecStart as systemd runs it ($$ is a $; %% specifiers are not used there) and its Environment."""
    env: dict[str, str] = {}
    command = None
    for line in (CONTRIB / "systemd" / name).read_text().splitlines():
        key, eq, value = line.partition("=")
        if not eq or line.startswith("#"):
            continue
        if key == "Environment":
            for assignment in shlex.split(value):
                k, _, v = assignment.partition("=")
                env[k] = v
        elif key == "ExecStart":
            assert "%" not in value
            command = shlex.split(value.replace("$$", "$"))
    assert command is not None
    return command, env


@pytest.fixture
def bin_orchesjob(tmp_path: Path) -> str:
    """This checkout's CLI as an executable file, where the units expect /usr/local/bin/orchesjob."""
    return write_cli_launcher(tmp_path / "bin" / "orchesjob")


def test_the_metrics_service_writes_the_textfile_whole(home, start_job, tmp_path, bin_orchesjob):
    from prometheus_client.parser import text_string_to_metric_families

    start_job("airflow/etl/load/scheduled__2026-05-01", "true", opts=("--sync",))
    command, env = unit_command("orchesjob-metrics@.service")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    env.update(ORCHESJOB_BIN=bin_orchesjob, TEXTFILE_DIR=str(textfiles))
    r = subprocess.run(command, env=cli_env(home, env), capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r
    assert [p.name for p in textfiles.iterdir()] == ["orchesjob.prom"]  # renamed into place, nothing left beside
    families = {f.name: f for f in text_string_to_metric_families((textfiles / "orchesjob.prom").read_text())}
    (sample,) = families["orchesjob_family_last_success"].samples
    assert sample.labels == {"family": "airflow/etl/load", "dag_id": "etl", "task_id": "load"} and sample.value == 1
    # a failing CLI leaves the previous file as it was, and no partial file
    env["ORCHESJOB_METRICS_ARGS"] = "--family-depth=0"
    r = subprocess.run(command, env=cli_env(home, env), capture_output=True)
    assert r.returncode == 2
    assert [p.name for p in textfiles.iterdir()] == ["orchesjob.prom"]


def test_the_clean_service_deletes_what_finished_before_the_retention(home, run, start_job, tmp_path, bin_orchesjob):
    old = start_job("old", "true", opts=("--sync",))
    new = start_job("new", "true", opts=("--sync",))
    db = str(home / "orchesjob.db")
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE jobs SET finished_at = finished_at - 40 * 86400 WHERE job_id = ?", (old["job_id"],))
    conn.close()
    command, env = unit_command("orchesjob-clean@.service")
    assert env["ORCHESJOB_RETENTION"] == "30 days"
    env["ORCHESJOB_BIN"] = bin_orchesjob
    r = subprocess.run(command, env=cli_env(home, env), capture_output=True)
    assert r.returncode == 0, r
    answer = json.loads(r.stdout)
    assert answer["deleted"] == 1 and "items" not in answer  # --summary: counts in the journal, not a list
    assert check_ok(run("status", "--job-id", new["job_id"]))["status"] == "SUCCEEDED"
    assert run("status", "--job-id", old["job_id"]).code == 3
