"""Screenshot of the Airflow UI's "Test Connection" button answering on an ``orchesjob_ssh`` connection.

    .venv/bin/python tools/screenshot_connection_test.py docs/img/connection-test.png \
        --form docs/img/connection-form.png

Why a tool and not a test: the API behind the button is already tested for real (tests/provider/
test_connection_type.py); what a reader of the docs also wants is to see the button work in the real UI, and that
needs a browser, which neither ``make test`` nor CI should depend on. This script is run by hand when the UI or the
message changes, and the PNGs it writes are committed. It takes about 20 seconds, most of them the api-server
starting.

What it does, all on loopback and in one temporary directory that is removed at the end (also on failure):

1. starts a private sshd (tests/support/sshd.py) and writes a launcher of this checkout's CLI, the "host";
2. starts a private Airflow 3 ``api-server`` (SQLite home, simple auth manager with admin/admin,
   ``[core] test_connection = Enabled``), as the API test does;
3. stores an ``orchesjob_ssh`` connection to that sshd, with ``orchesjob_bin`` = the launcher, through the REST API
   (the UI lists only connections of the database, not those of ``AIRFLOW_CONN_*``);
4. in headless Chromium (Selenium + chromedriver): signs in on the login page, opens the connection's edit form
   (with ``--form``, a second screenshot of it, the type's own fields unfolded), closes it, clicks the row's
   "Test Connection" button (Airflow 3.3 has it among the row's actions, beside "Edit"), waits for the success
   message ``orchesjob X (contract N) at 127.0.0.1:PORT`` and saves the screenshot.

It exits non-zero with the reason when a step fails (and then saves what the browser showed next to the output, as
``NAME.failed.png``). Needs: Airflow 3 in the interpreter running it (``make venv``), ``/usr/sbin/sshd``, Chromium
with its chromedriver (Debian: ``apt-get install chromium chromium-driver``) and Selenium
(``.venv/bin/pip install selenium``); none of these is a dependency of the project.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.airflow_sandbox import AirflowSandbox, BackgroundAirflow  # noqa: E402
from tests.support.cli import write_cli_launcher  # noqa: E402
from tests.support.sshd import SshServer, free_port  # noqa: E402

CONN_ID = "orchesjob_etl_host"
USER = PASSWORD = "admin"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = f"install them with: apt-get install chromium chromium-driver; {sys.executable} -m pip install selenium"
WINDOW = (1440, 1000)

T = TypeVar("T")


class Failed(RuntimeError):
    """A step did not do what it should; the message says which and why (printed without a traceback)."""


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def check_requirements() -> None:
    """Fail early with the install command rather than after a minute of starting servers."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append(f"the selenium package (in {sys.executable})")
    try:
        import airflow
    except ImportError:
        missing.append(f"Airflow (in {sys.executable}; `make venv` installs it)")
    else:
        if not airflow.__version__.startswith("3."):
            missing.append(f"Airflow 3 (found {airflow.__version__}; the UI drives differ on 2.x)")
    if missing:
        raise Failed("missing: " + "; ".join(missing) + f"\n{INSTALL_HINT}")


# ---------------------------------------------------------------------- the api-server


def http_json(url: str, body: Any, token: str | None = None, timeout: float = 30) -> Any:
    """POST JSON, return the decoded answer; an HTTP error carries its body, which is where Airflow says why."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise Failed(f"POST {url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc


def wait_for_token(base: str, proc: BackgroundAirflow, timeout: float = 180) -> str:
    """The api-server is up once it hands out a token (its port opens a little before it can)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline and proc.running():
        try:
            answer = http_json(base + "/auth/token", {"username": USER, "password": PASSWORD}, timeout=5)
            return str(answer["access_token"])
        except (OSError, Failed, KeyError, TypeError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise Failed(f"the api-server did not answer /auth/token ({last or 'it exited'}):\n{proc.output()[-4000:]}")


@contextlib.contextmanager
def api_server(directory: Path) -> Iterator[tuple[str, BackgroundAirflow]]:
    """A private api-server as tests/provider/test_connection_type.py starts it; stopped (process group) on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (directory / "dags").mkdir()
    sandbox = AirflowSandbox(
        directory,
        python=sys.executable,
        dags_folder=directory / "dags",
        extra_env={
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",  # user:role
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__API__BASE_URL": base,
        },
    )
    sandbox.setup()
    (sandbox.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))
    proc = sandbox.start("api-server", "--host", "127.0.0.1", "--port", str(port))
    try:
        yield base, proc
    finally:
        proc.stop()


# ---------------------------------------------------------------------- the browser


def wait_until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns something truthy; a timeout names what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Failed:  # the check saw the step fail (e.g. the UI's error message): no point in waiting on
            raise
        except Exception:  # noqa: BLE001 - the page is still rendering: stale or missing elements are retried
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.25)


def drive_ui(base: str, expected: str, output: Path, form_output: Path | None) -> float:
    """Sign in, show the edit form, press Test, wait for ``expected`` and save the screenshot; returns seconds taken
    from the click to the message."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from orchesjob_provider import CONN_FIELDS

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        say("signing in on the UI's login page")
        driver.get(base + "/")
        wait_until("the login form", lambda: driver.find_element(By.NAME, "username"), 60).send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until("the signed-in UI", lambda: "/auth/login" not in driver.current_url, 60)

        say(f"opening the Connections page and the edit form of {CONN_ID}")
        driver.get(base + "/connections")

        def row_button(label: str) -> Any:
            rows = [r for r in driver.find_elements(By.CSS_SELECTOR, "tr") if CONN_ID in r.text]
            return rows[0].find_element(By.CSS_SELECTOR, f"button[aria-label='{label}']") if rows else None

        wait_until(f"the row of {CONN_ID} with its Edit button", lambda: row_button("Edit Connection"), 60).click()
        dialog = wait_until(
            "the edit form of the Orchesjob (SSH) type",
            lambda: next(
                (d for d in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]") if "Orchesjob (SSH)" in d.text), None
            ),
            60,
        )
        if form_output is not None:
            # The type's own fields (orchesjob_bin, the host-key choices...) are in the folded "Extra Fields" part.
            dialog.find_element(By.XPATH, ".//button[contains(., 'Extra Fields')]").click()
            bin_label = CONN_FIELDS["orchesjob_bin"][0]
            wait_until(f"the extra field {bin_label!r}", lambda: bin_label in dialog.text, 30)
            time.sleep(1)  # the accordion's animation
            driver.save_screenshot(str(form_output))
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait_until("the edit form to close", lambda: not driver.find_elements(By.CSS_SELECTOR, "[role=dialog]"), 30)

        say("clicking Test Connection")
        wait_until("the row's Test Connection button", lambda: row_button("Test Connection"), 30).click()
        clicked = time.monotonic()

        def message() -> str | None:
            body = driver.find_element(By.TAG_NAME, "body").text
            if "Test Connection Failed" in body:
                raise Failed("the UI reported: " + body[body.index("Test Connection Failed") :][:600])
            return body if expected in body and "Test Connection Successful" in body else None

        wait_until(f"the success message {expected!r}", message, 120)
        took = time.monotonic() - clicked
        time.sleep(0.5)  # the toast's slide-in
        driver.save_screenshot(str(output))
        return took
    except Failed:
        failed = output.with_suffix(".failed.png")
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(failed))
            print(f"(what the browser showed is in {failed})", file=sys.stderr)
        raise
    finally:
        driver.quit()


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("output", type=Path, help="where to write the PNG, e.g. docs/img/connection-test.png")
    parser.add_argument("--form", type=Path, default=None, help="also save the edit form as this PNG")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for debugging)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        check_requirements()
        import orchesjob
        from orchesjob.contract import CONTRACT_VERSION
        from orchesjob_provider import CONN_TYPE

        with contextlib.ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="orchesjob-screenshot-"))
            if not args.keep:
                stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            say("starting a private sshd and the CLI launcher (the host)")
            sshd = stack.enter_context(SshServer(tmp / "sshd"))
            launcher = write_cli_launcher(tmp / "bin" / "orchesjob", python=sys.executable)

            say("starting a private airflow api-server (about half a minute)")
            (tmp / "airflow").mkdir()
            base, proc = stack.enter_context(api_server(tmp / "airflow"))
            token = wait_for_token(base, proc)

            say(f"storing the {CONN_TYPE} connection {CONN_ID} -> 127.0.0.1:{sshd.port}")
            extra = {
                "key_file": sshd.key_path,
                "no_host_key_check": True,
                "orchesjob_bin": launcher,
                "orchesjob_home": str(tmp / "orchesjob-home"),
            }
            http_json(
                base + "/api/v2/connections",
                {
                    "connection_id": CONN_ID,
                    "conn_type": CONN_TYPE,
                    "host": sshd.host,
                    "port": sshd.port,
                    "login": sshd.user,
                    "description": "the CLI over SSH, for the docs' screenshot",
                    "extra": json.dumps(extra),
                },
                token=token,
            )

            expected = f"orchesjob {orchesjob.__version__} (contract {CONTRACT_VERSION}) at {sshd.host}:{sshd.port}"
            args.output.parent.mkdir(parents=True, exist_ok=True)
            took = drive_ui(base, expected, args.output, args.form)
    except RuntimeError as exc:  # ours (Failed), and sshd's or Airflow's setup saying why they could not start
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    say(
        f"the UI showed {expected!r} {took:.1f}s after the click; screenshot in {args.output} "
        f"({time.monotonic() - started:.0f}s in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
