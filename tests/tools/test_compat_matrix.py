"""docs/compatibility.md cannot go stale silently: it must be what its committed records render to, and the records
must name the Airflow versions, Pythons and constraints files the Makefile tests today, with the SSH provider those
constraints pin (tools/compat_matrix.py). And the tool itself: only a green run renders, and pytest's result line is
read as pytest writes it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("compat_matrix", REPO_ROOT / "tools" / "compat_matrix.py")
assert _SPEC is not None and _SPEC.loader is not None
compat_matrix = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(compat_matrix)


def test_the_committed_matrix_matches_the_makefile_and_the_constraints() -> None:
    assert compat_matrix.problems(REPO_ROOT) == []


def test_the_makefile_names_every_version_with_its_python_and_constraints() -> None:
    suites = compat_matrix.makefile_suites(REPO_ROOT / "Makefile")
    assert len(suites) >= 4
    for name, suite in suites.items():
        assert suite["version"] and suite["python"], (name, suite)
        assert (REPO_ROOT / suite["constraints"]).is_file(), (name, suite)


def _copy_checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "docs").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "Makefile", root / "Makefile")
    shutil.copytree(REPO_ROOT / "constraints", root / "constraints")
    for name in ("compatibility.json", "compatibility.md"):
        shutil.copy(REPO_ROOT / "docs" / name, root / "docs" / name)
    return root


def test_a_version_changed_in_the_makefile_without_a_green_run_is_reported(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    makefile = root / "Makefile"
    text = makefile.read_text()
    version = compat_matrix.makefile_suites(makefile)["2103"]["version"]
    makefile.write_text(text.replace(f"AIRFLOW_2103_VERSION := {version}", "AIRFLOW_2103_VERSION := 2.10.5"))
    found = compat_matrix.problems(root)
    assert any("2.10.5" in line and "no green run" in line for line in found), found
    assert any(f"lists Airflow {version}" in line for line in found), found


def test_a_hand_edited_page_or_another_ssh_provider_pin_is_reported(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    page = root / "docs" / "compatibility.md"
    page.write_text(page.read_text().replace("Last green run", "Last run"))
    constraints = root / compat_matrix.makefile_suites(root / "Makefile")["211"]["constraints"]
    lines = [
        "apache-airflow-providers-ssh==0.0.1" if line.startswith("apache-airflow-providers-ssh==") else line
        for line in constraints.read_text().splitlines()
    ]
    constraints.write_text("\n".join(lines) + "\n")
    found = compat_matrix.problems(root)
    assert any("is not what docs/compatibility.json renders to" in line for line in found), found
    assert any("pins the SSH provider 0.0.1" in line for line in found), found


def _record(stage: str, exit_code: int, airflow: str = "3.3.2") -> dict[str, Any]:
    return {
        "stage": stage,
        "airflow": airflow,
        "ssh_provider": "4.1.0",
        "python": "3.11.7",
        "executor": "LocalExecutor",
        "tests": "provider: all",
        "constraints": "constraints/airflow-3.txt",
        "result": "3 passed",
        "exit": exit_code,
        "finished": "2026-01-02T03:04:05Z",
    }


def test_only_a_run_whose_stages_all_passed_is_rendered(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    (records / "a.json").write_text(json.dumps(_record("a", 0)))
    (records / "b.json").write_text(json.dumps(_record("b", 1, airflow="2.11.2")))
    with pytest.raises(ValueError, match="did not pass"):
        compat_matrix.render(records, tmp_path / "doc.json", tmp_path / "doc.md")
    assert not (tmp_path / "doc.md").exists()
    (records / "b.json").write_text(json.dumps(_record("b", 0, airflow="2.11.2")))
    doc = compat_matrix.render(records, tmp_path / "doc.json", tmp_path / "doc.md")
    assert doc["date"] == "2026-01-02"
    assert [row["airflow"] for row in doc["rows"]] == ["3.3.2", "2.11.2"]
    assert (tmp_path / "doc.md").read_text() == compat_matrix.render_markdown(doc)


def test_pytests_closing_line_is_read() -> None:
    log = "....\n===== 12 passed, 1 skipped, 3 deselected in 81.20s (0:01:21) =====\n"
    assert compat_matrix.pytest_result(log) == "12 passed, 1 skipped"  # tests it did not run are not results
    assert compat_matrix.pytest_result("18 passed in 3.01s\n") == "18 passed"
    assert compat_matrix.pytest_result("1 failed, 5 passed, 9 deselected, 2 warnings in 9.0s\n") == "1 failed, 5 passed"
    assert compat_matrix.pytest_result("no pytest here\n") is None
