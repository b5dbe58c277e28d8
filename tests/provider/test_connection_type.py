"""The ``orchesjob_ssh`` connection type and the UI's "Test" button, against a real Airflow UI server and sshd.

A real ``airflow api-server`` (Airflow 3: SQLite home, simple auth manager, ``[core] test_connection = Enabled``;
on Airflow 2 the ``airflow webserver`` with basic auth) on a loopback port answers ``POST /api/v2/connections/test``
(``/api/v1/...``) exactly as the UI's Test button asks it: Airflow finds the hook of the
connection type through our provider info, makes it with the connection id and calls its ``test_connection``, which
logs in to the test sshd and runs the real CLI's ``version``.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import orchesjob
from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider import CONN_FIELDS, CONN_TYPE, get_provider_info
from tests.support.guards import unavailable
from tests.support.sshd import SshServer, free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.airflow]

STORED_CONN_ID = "orchesjob_ui_test"
AIRFLOW_2 = importlib.metadata.version("apache-airflow").startswith("2.")


@pytest.mark.versions
def test_provider_info_registers_the_connection_type() -> None:
    (entry,) = get_provider_info()["connection-types"]
    assert entry["connection-type"] == CONN_TYPE == "orchesjob_ssh"
    assert entry["hook-class-name"] == "orchesjob_provider.hooks.orchesjob.OrchesjobHook"
    assert entry["hook-name"]
    assert set(entry["conn-fields"]) >= {
        "key_file",
        "private_key",
        "host_key",
        "known_hosts",
        "no_host_key_check",
        "orchesjob_bin",
        "orchesjob_home",
        "install_cli",
        "orchesjob_python",
    }
    assert entry["conn-fields"]["install_cli"]["schema"]["enum"] == ["auto", "never", "always", None]
    assert entry["conn-fields"]["private_key"]["schema"]["format"] == "password"  # masked in the UI
    assert entry["ui-field-behaviour"]["hidden-fields"] == ["schema"]

    from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook

    assert OrchesjobHook.conn_type == OrchesjobAsyncHook.conn_type == CONN_TYPE
    assert OrchesjobHook.conn_name_attr == "ssh_conn_id"
    assert OrchesjobHook.hook_name == entry["hook-name"]
    assert OrchesjobHook.get_ui_field_behaviour()["relabeling"] == entry["ui-field-behaviour"]["relabeling"]
    assert set(CONN_FIELDS) == set(entry["conn-fields"])


@pytest.mark.versions
def test_airflows_providers_manager_knows_the_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    try:
        importlib.metadata.distribution("orchesjob")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("orchesjob is not installed, so Airflow cannot discover its provider in this process")
    manager = ProvidersManager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3.3 points task code at the task SDK's manager; the UI still uses this one
        hook = manager.hooks.get(CONN_TYPE)
    assert hook is not None and hook.hook_class_name == "orchesjob_provider.hooks.orchesjob.OrchesjobHook"
    assert hook.connection_id_attribute_name == "ssh_conn_id"
    assert f"extra__{CONN_TYPE}__orchesjob_bin" in manager.connection_form_widgets
    assert f"extra__{CONN_TYPE}__install_cli" in manager.connection_form_widgets
    assert manager.field_behaviours[CONN_TYPE]["hidden_fields"] == ["schema"]


@pytest.mark.versions
def test_hook_works_through_an_orchesjob_ssh_connection(
    sshd: SshServer, orchesjob_launcher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hook reads the same fields and extras whatever the type: the sync and async hook on our type."""
    import asyncio

    from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook

    conn = sshd.airflow_connection(orchesjob_bin=orchesjob_launcher, orchesjob_home=str(tmp_path / "home"))
    conn["conn_type"] = CONN_TYPE
    monkeypatch.setenv("AIRFLOW_CONN_OJ_TYPED", json.dumps(conn))
    ok, message = OrchesjobHook("oj_typed").test_connection()
    assert ok, message
    # ... and which CLI answered: the launcher runs this checkout's package, found on the host (not uploaded)
    assert (
        f"orchesjob {orchesjob.__version__} (contract {CONTRACT_VERSION}) at 127.0.0.1:{sshd.port}: "
        f"{Path(orchesjob.__file__).parent} (host)"
    ) == message

    async def version() -> Any:
        hook = OrchesjobAsyncHook("oj_typed", orchesjob_bin=orchesjob_launcher)
        try:
            return await hook.version()
        finally:
            await hook.close()

    assert asyncio.run(version())["version"] == orchesjob.__version__


# ---------------------------------------------------------------------- a real api-server


class ApiServer:
    """The UI's back end: Airflow 3's api-server (``/api/v2``, a bearer token) or Airflow 2's webserver
    (``/api/v1``, basic auth). The Test button posts the connection form to ``test_path`` on either."""

    def __init__(self, base: str, authorization: str, test_path: str) -> None:
        self.base = base
        self.authorization = authorization
        self.test_path = test_path

    def test(self, body: dict[str, Any]) -> tuple[int, Any]:
        return self.post(self.test_path, body)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": self.authorization},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def _wait_for_token(base: str, proc: Any, deadline: float) -> str:
    last = ""
    while time.monotonic() < deadline:
        if not proc.running():
            break
        request = urllib.request.Request(
            base + "/auth/token",
            data=json.dumps({"username": "admin", "password": "admin"}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.loads(response.read())["access_token"])
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"the api-server did not answer /auth/token ({last}):\n{proc.output()[-4000:]}")


@pytest.fixture(scope="module")
def api_server(
    sshd: SshServer, orchesjob_launcher: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    try:
        import airflow  # noqa: F401
    except ImportError as exc:
        unavailable(f"Airflow is not installed in {sys.executable}: {exc}")
    from tests.support.airflow_sandbox import AirflowSandbox

    directory = tmp_path_factory.mktemp("api-server")
    (directory / "dags").mkdir()
    stored = sshd.airflow_connection(orchesjob_bin=orchesjob_launcher, orchesjob_home=str(directory / "orchesjob-home"))
    stored["conn_type"] = CONN_TYPE
    port = free_port()
    sandbox = AirflowSandbox(
        directory,
        python=sys.executable,
        dags_folder=directory / "dags",
        connections={STORED_CONN_ID: stored},
        extra_env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"},
    )
    if AIRFLOW_2:  # no api-server: the UI and its REST API are the Flask webserver's
        sandbox.extra_env.update(
            {
                "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.basic_auth",
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
            }
        )
    else:
        sandbox.extra_env.update(
            {
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            }
        )
    started = time.monotonic()
    try:
        sandbox.setup()
        if AIRFLOW_2:
            made = sandbox.airflow(
                "users",
                "create",
                "--username",
                "admin",
                "--password",
                "admin",
                "--role",
                "Admin",
                "--firstname",
                "Ada",
                "--lastname",
                "Admin",
                "--email",
                "admin@example.invalid",
            )
            if made.returncode != 0:
                raise RuntimeError(made.describe())
        else:
            (sandbox.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "admin"}))
    except Exception as exc:  # noqa: BLE001 - any reason is reported the same way
        unavailable(f"cannot prepare an Airflow home for the UI's server: {exc}")
    if AIRFLOW_2:
        proc = sandbox.start("webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1")
    else:
        proc = sandbox.start("api-server", "--host", "127.0.0.1", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            if AIRFLOW_2:
                _wait_for_health(base + "/api/v1/health", proc, time.monotonic() + 180)
                server = ApiServer(
                    base, "Basic " + base64.b64encode(b"admin:admin").decode(), "/api/v1/connections/test"
                )
            else:
                token = _wait_for_token(base, proc, time.monotonic() + 120)
                server = ApiServer(base, f"Bearer {token}", "/api/v2/connections/test")
        except RuntimeError as exc:
            unavailable(f"cannot start a real airflow {'webserver' if AIRFLOW_2 else 'api-server'}: {exc}")
        sys.stderr.write(f"[UI server up in {time.monotonic() - started:.1f}s]\n")
        yield server
    finally:
        proc.stop()


def _wait_for_health(url: str, proc: Any, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if not proc.running():
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"the webserver did not answer {url} ({last}):\n{proc.output()[-4000:]}")


def _body(sshd: SshServer, orchesjob_launcher: str, **changes: Any) -> dict[str, Any]:
    """A connection as the UI's form sends it to the test endpoint (extra as a JSON string)."""
    extra = {"key_file": str(sshd.client_key_path), "no_host_key_check": True, "orchesjob_bin": orchesjob_launcher}
    extra.update(changes.pop("extra", {}))
    body = {
        "connection_id": "orchesjob_new_conn",
        "conn_type": CONN_TYPE,
        "host": sshd.host,
        "port": sshd.port,
        "login": sshd.user,
        "extra": json.dumps(extra),
    }
    body.update(changes)
    return body


def test_ui_test_button_runs_orchesjob_version(api_server: ApiServer, sshd: SshServer, orchesjob_launcher: str) -> None:
    status, answer = api_server.test(_body(sshd, orchesjob_launcher))
    assert status == 200, answer
    assert answer["status"] is True, answer
    assert f"orchesjob {orchesjob.__version__} (contract {CONTRACT_VERSION})" in answer["message"]
    assert f"at {sshd.host}:{sshd.port}" in answer["message"]


def test_ui_test_button_on_a_stored_connection(api_server: ApiServer) -> None:
    """The Test button on a saved connection (here from AIRFLOW_CONN_...): Airflow 3 reuses its stored credentials.
    (Airflow 2's endpoint tests exactly the fields the form sends, stored or not, so there is nothing to add.)"""
    if AIRFLOW_2:
        pytest.skip("Airflow 2's test endpoint never reads a stored connection: the other tests cover its form")
    status, answer = api_server.test({"connection_id": STORED_CONN_ID, "conn_type": CONN_TYPE})
    assert status == 200, answer
    assert answer["status"] is True, answer
    assert f"(contract {CONTRACT_VERSION})" in answer["message"]


def test_ui_test_button_wrong_port(api_server: ApiServer, sshd: SshServer, orchesjob_launcher: str) -> None:
    port = free_port()
    status, answer = api_server.test(_body(sshd, orchesjob_launcher, port=port))
    assert status == 200, answer
    assert answer["status"] is False, answer
    assert answer["message"].startswith(f"orchesjob at 127.0.0.1:{port}: "), answer
    assert "could not connect over SSH" in answer["message"], answer
    assert f"Unable to connect to port {port}" in answer["message"], answer


def test_ui_test_button_unknown_host_key(
    api_server: ApiServer, sshd: SshServer, orchesjob_launcher: str, tmp_path: Path
) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    body = _body(sshd, orchesjob_launcher, extra={"no_host_key_check": False, "known_hosts": str(empty_known_hosts)})
    status, answer = api_server.test(body)
    assert status == 200, answer
    assert answer["status"] is False, answer
    assert "host key of 127.0.0.1" in answer["message"] and "Nothing was sent to the host" in answer["message"]


def test_ui_test_button_wrong_cli_path(api_server: ApiServer, sshd: SshServer, orchesjob_launcher: str) -> None:
    body = _body(sshd, orchesjob_launcher, extra={"orchesjob_bin": "/nonexistent/orchesjob"})
    status, answer = api_server.test(body)
    assert status == 200, answer
    assert answer["status"] is False and answer["message"], answer
