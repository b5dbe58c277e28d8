"""The compatibility matrix (docs/compatibility.md), made from what `make test` really ran.

Three steps, so the page can neither claim a version that was never tested nor go stale silently:

- ``record``: after a stage of `make test` (tools/stage.sh), ask that stage's own interpreter which Airflow, SSH
  provider and Python it has, read the stage's result line and exit status, and write build/compat/STAGE.json;
- ``render``: once every recorded stage of a run passed, merge the records into docs/compatibility.json (with the
  run's date) and write docs/compatibility.md from it (`make compat-docs`); a failed stage renders nothing;
- ``check`` (tests/tools/test_compat_matrix.py): the committed page is exactly what the committed records
  render to, and the records name the Airflow versions, Pythons and constraints files that the Makefile tests
  today, with the SSH provider those constraints pin. Changing a version in the Makefile without a green run that
  records it fails the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORDS_DIR = ROOT / "build" / "compat"
STAGES_DIR = ROOT / "build" / "stages"
DOC_JSON = ROOT / "docs" / "compatibility.json"
DOC_MD = ROOT / "docs" / "compatibility.md"
MAKEFILE = ROOT / "Makefile"

# What a stage's interpreter reports about itself: run in that interpreter, so the versions are the ones its tests
# imported, not the ones a file says should be there.
_PROBE = """
import json, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
print(json.dumps({
    "python": "%d.%d.%d" % sys.version_info[:3],
    "airflow": version("apache-airflow"),
    "ssh_provider": version("apache-airflow-providers-ssh"),
}))
"""

# pytest's closing line, e.g. "236 passed, 1 skipped in 1234.56s (0:20:34)"
_RESULT = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s")


# What a test's outcome can be; pytest's line also counts tests it did not run (deselected) and warnings.
_OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed", "error", "errors")


def pytest_result(log: str) -> str | None:
    """The outcomes of pytest's last closing line in a stage's output ("236 passed, 1 skipped"), if any."""
    found = None
    for line in log.splitlines():
        match = _RESULT.match(line.strip())
        if match:
            parts = [part.strip() for part in match.group(1).split(",")]
            found = ", ".join(part for part in parts if part.split(" ")[-1] in _OUTCOMES)
    return found


def record(
    stage: str, python: str, constraints: str, tests: str, executor: str, stages_dir: Path = STAGES_DIR
) -> dict[str, Any]:
    """The record of one stage that ran (see the module docstring)."""
    probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise RuntimeError(f"{python} could not say its versions: {probe.stderr.strip()[-500:]}")
    found = json.loads(probe.stdout)
    try:
        ran = json.loads((stages_dir / f"{stage}.json").read_text())
    except (OSError, ValueError):
        ran = {}
    try:
        log = (stages_dir / f"{stage}.log").read_text(errors="replace")
    except OSError:
        log = ""
    return {
        "stage": stage,
        "airflow": found["airflow"],
        "ssh_provider": found["ssh_provider"],
        "python": found["python"],
        "executor": executor,
        "tests": tests,
        "constraints": constraints,
        "result": pytest_result(log),
        "exit": ran.get("exit"),
        "finished": ran.get("finished"),
    }


# ---------------------------------------------------------------------------------------------------- rendering


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def rows_from_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per Airflow version (its stages' tests, executors and results together), newest Airflow first.

    Raises ValueError when a record did not pass: only a green run is rendered.
    """
    by_version: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for rec in records:
        if rec.get("exit") != 0:
            raise ValueError(f"stage {rec.get('stage')} did not pass (exit {rec.get('exit')}): nothing is rendered")
        python_minor = ".".join(str(rec["python"]).split(".")[:2])
        key = (str(rec["airflow"]), str(rec["ssh_provider"]), python_minor, str(rec["constraints"]))
        row = by_version.setdefault(
            key,
            {
                "airflow": key[0],
                "ssh_provider": key[1],
                "python": python_minor,
                "constraints": key[3],
                "suites": [],
            },
        )
        row["suites"].append(
            {"tests": rec["tests"], "executor": rec["executor"], "result": rec.get("result"), "stage": rec["stage"]}
        )
    rows = sorted(by_version.values(), key=lambda r: _version_key(r["airflow"]), reverse=True)
    for row in rows:
        row["suites"].sort(key=lambda s: s["stage"])
    return rows


def render_markdown(doc: Mapping[str, Any]) -> str:
    """docs/compatibility.md from docs/compatibility.json."""
    lines = [
        "# Compatibility",
        "",
        "What `make test` (and so CI's `.ci/run`) ran and passed, one row per Airflow version, each installed with its",
        "own constraints file. Generated by `make compat-docs` (tools/compat_matrix.py) from the records the Airflow",
        "stages of `make test` wrote, each of them passed; do not edit by hand. A test checks that this page names",
        "exactly the Airflow versions, Pythons and constraints files the Makefile tests, with the SSH provider those",
        "constraints pin.",
        "",
        f"Last green run: **{doc['date']}** (the day the last of these stages finished).",
        "",
        "| Airflow | SSH provider | Python | executor | tests | result | constraints |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        for suite in row["suites"]:
            lines.append(
                f"| {row['airflow']} | {row['ssh_provider']} | {row['python']} | {suite['executor']} | "
                f"{suite['tests']} | {suite['result'] or 'passed'} | `{row['constraints']}` |"
            )
    lines += [
        "",
        "Tests: `provider: all` is the whole provider suite (`tests/provider`); `provider: versions` its subset marked",
        "`versions` (every example DAG, deferral and resumption, the kill decision, the connection type, provider",
        "discovery); `live: ...` the tests on a live deployment (`tests/live`: api-server, scheduler, dag-processor,",
        "triggerers and workers as separate processes). `airflow dags test / tasks test` runs a DAG's tasks and",
        "triggers in one process, as those commands do.",
        "",
    ]
    return "\n".join(lines)


def render(records_dir: Path = RECORDS_DIR, doc_json: Path = DOC_JSON, doc_md: Path = DOC_MD) -> dict[str, Any]:
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    if not records:
        raise ValueError(f"no records in {records_dir}: run `make test` first")
    finished = max(str(r.get("finished") or "") for r in records)
    date = finished[:10] if finished else dt.date.today().isoformat()
    doc = {"date": date, "rows": rows_from_records(records)}
    doc_json.write_text(json.dumps(doc, indent=2) + "\n")
    doc_md.write_text(render_markdown(doc))
    return doc


# ---------------------------------------------------------------------------------------------------- checking


def makefile_suites(makefile: Path = MAKEFILE) -> dict[str, dict[str, str]]:
    """The Airflow versions the Makefile tests: {suite: {"version", "python", "constraints"}} from its
    ``AIRFLOW_<SUITE>_VERSION/_PYTHON/_CONSTRAINTS := ...`` lines."""
    text = makefile.read_text()
    values = dict(re.findall(r"^(\w+)\s*\??:?=\s*(\S+)\s*$", text, re.M))
    suites: dict[str, dict[str, str]] = {}
    for name, version in re.findall(r"^AIRFLOW_(\w+)_VERSION\s*:=\s*(\S+)\s*$", text, re.M):
        constraints = values.get(f"AIRFLOW_{name}_CONSTRAINTS", "")
        ref = re.fullmatch(r"\$\((\w+)\)", constraints)
        if ref:
            constraints = values.get(ref.group(1), "")
        suites[name] = {
            "version": version,
            "python": values.get(f"AIRFLOW_{name}_PYTHON", ""),
            "constraints": constraints,
        }
    return suites


def pinned(constraints: Path, package: str) -> str | None:
    """The version a constraints file pins for ``package`` (names compared the way pip normalises them)."""
    want = re.sub(r"[-_.]+", "-", package).lower()
    for line in constraints.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match and re.sub(r"[-_.]+", "-", match.group(1)).lower() == want:
            return match.group(2)
    return None


def problems(root: Path = ROOT) -> list[str]:
    """Why the committed matrix does not match the Makefile and constraints of this checkout (empty: it does)."""
    found: list[str] = []
    doc = json.loads((root / "docs" / "compatibility.json").read_text())
    if (root / "docs" / "compatibility.md").read_text() != render_markdown(doc):
        found.append("docs/compatibility.md is not what docs/compatibility.json renders to (run `make compat-docs`)")
    rows = {row["airflow"]: row for row in doc["rows"]}
    suites = makefile_suites(root / "Makefile")
    if not suites:
        found.append("the Makefile names no AIRFLOW_<SUITE>_VERSION")
    for name, suite in sorted(suites.items()):
        row = rows.get(suite["version"])
        if row is None:
            found.append(f"the Makefile tests Airflow {suite['version']} ({name}), the matrix has no green run of it")
            continue
        if row["python"] != suite["python"]:
            found.append(
                f"Airflow {suite['version']}: the Makefile says Python {suite['python']}, run on {row['python']}"
            )
        if row["constraints"] != suite["constraints"]:
            found.append(
                f"Airflow {suite['version']}: the Makefile installs it with {suite['constraints']}, "
                f"the matrix ran it with {row['constraints']}"
            )
        constraints = root / suite["constraints"]
        if not constraints.exists():
            found.append(f"Airflow {suite['version']}: {suite['constraints']} does not exist")
            continue
        ssh = pinned(constraints, "apache-airflow-providers-ssh")
        if ssh != row["ssh_provider"]:
            found.append(
                f"Airflow {suite['version']}: {suite['constraints']} pins the SSH provider {ssh}, "
                f"the matrix ran {row['ssh_provider']}"
            )
        airflow = pinned(constraints, "apache-airflow")
        if airflow is not None and airflow != suite["version"]:
            found.append(f"{suite['constraints']} pins Airflow {airflow}, the Makefile says {suite['version']}")
    tested = {s["version"] for s in suites.values()}
    for version in sorted(set(rows) - tested):
        found.append(f"the matrix lists Airflow {version}, which the Makefile no longer tests")
    return found


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write build/compat/STAGE.json for a stage that ran")
    rec.add_argument("--stage", required=True)
    rec.add_argument("--python", required=True, help="the interpreter the stage's tests ran with")
    rec.add_argument("--constraints", required=True)
    rec.add_argument("--tests", required=True)
    rec.add_argument("--executor", required=True)
    sub.add_parser("render", help="docs/compatibility.json and .md from build/compat/ (a green run only)")
    sub.add_parser("check", help="say whether the committed matrix matches the Makefile and constraints")
    args = parser.parse_args(argv)
    if args.command == "record":
        RECORDS_DIR.mkdir(parents=True, exist_ok=True)
        data = record(args.stage, args.python, args.constraints, args.tests, args.executor)
        (RECORDS_DIR / f"{args.stage}.json").write_text(json.dumps(data, indent=2) + "\n")
        print(
            f"compat record {args.stage}: Airflow {data['airflow']}, SSH provider {data['ssh_provider']}, "
            f"Python {data['python']}: {data['result'] or 'no pytest result'} (exit {data['exit']})"
        )
        return 0
    if args.command == "render":
        try:
            doc = render()
        except ValueError as exc:
            print(f"compat-docs: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {DOC_MD.relative_to(ROOT)} ({len(doc['rows'])} Airflow versions, run of {doc['date']})")
        return 0
    issues = problems()
    for line in issues:
        print(line)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
