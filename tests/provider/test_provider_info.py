"""Provider metadata: Airflow's own schema and its own ``airflow providers`` commands accept it.

The package is made visible to Airflow through a throwaway ``orchesjob-<version>.dist-info`` with the
``apache_airflow_provider`` entry point, exactly what ``pip install`` would write, so the test does not depend on
how (or whether) the checkout is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import orchesjob
from orchesjob_provider import get_provider_info

pytestmark = [pytest.mark.timeout(180), pytest.mark.airflow, pytest.mark.versions]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_provider_info_matches_airflows_schema() -> None:
    from importlib.resources import files

    import jsonschema

    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "orchesjob"
    assert info["versions"] == [orchesjob.__version__]
    # Our own connection type (see test_connection_type.py); the deprecated hook-class-names list is not used.
    assert [c["connection-type"] for c in info["connection-types"]] == ["orchesjob_ssh"]
    assert "hook-class-names" not in info
    names = {i["integration-name"] for i in info["integrations"]}
    for key in ("hooks", "operators", "sensors", "triggers"):
        assert {e["integration-name"] for e in info[key]} <= names


def test_hook_and_trigger_modules_listed_exist() -> None:
    import importlib

    info = get_provider_info()
    for key in ("hooks", "triggers"):
        for entry in info[key]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


@pytest.fixture
def fake_install(tmp_path: Path) -> Path:
    dist = tmp_path / f"orchesjob-{orchesjob.__version__}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: orchesjob\nVersion: {orchesjob.__version__}\n")
    (dist / "entry_points.txt").write_text(
        "[apache_airflow_provider]\nprovider_info = orchesjob_provider:get_provider_info\n"
    )
    return tmp_path


def _airflow(args: list, site: Path, tmp_path: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _json_rows(out: str) -> list:
    return json.loads(out[out.index("[") :])


def test_airflow_providers_list_shows_orchesjob(fake_install: Path, tmp_path: Path) -> None:
    rows = _json_rows(_airflow(["providers", "list", "-o", "json"], fake_install, tmp_path))
    ours = [r for r in rows if r["package_name"] == "orchesjob"]
    assert ours and ours[0]["version"] == orchesjob.__version__


def test_airflow_providers_triggers_lists_our_trigger(fake_install: Path, tmp_path: Path) -> None:
    rows = _json_rows(_airflow(["providers", "triggers", "-o", "json"], fake_install, tmp_path))
    assert any(r.get("package_name") == "orchesjob" for r in rows), rows


def test_a_missing_module_of_the_airflow_extra_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unit test of the check itself; the real thing (the wheel installed without the extra, into Airflow) is
    `make dist-check`."""
    from orchesjob_provider import extra

    assert extra.missing() == []  # this venv has the extra
    monkeypatch.setitem(extra.NEEDED, "no_such_module_for_orchesjob", "no-such-dist")
    monkeypatch.setitem(extra.NEEDED, "airflow.providers.no_such_provider", "apache-airflow-providers-nothing")
    assert extra.missing() == ["no-such-dist", "apache-airflow-providers-nothing"]
    with pytest.raises(
        extra.MissingAirflowExtra,
        match=r"needs no-such-dist, apache-airflow-providers-nothing, "
        r"which are not installed here: pip install 'orchesjob\[airflow\]'",
    ):
        extra.require()
