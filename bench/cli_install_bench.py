"""Zero-install figures for bench/run.py: what the first contact with a host that has no CLI costs (the upload
included), what a later task's contact costs (the cached copy, checked by sha256), and that calls after the
handshake cost the same whether the CLI was uploaded or named.

A private sshd whose sessions get a fresh HOME and a bare PATH stands for the host (as in `make demo`); emptying
that HOME's cache makes the next contact a first one again. No root needed. The PATH is the system's /usr/bin and
/bin only: an `orchesjob` this machine may have in /usr/local/bin would otherwise answer the first contact (or, if
this user cannot run it, fail it) and there would be no upload to measure.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.sshd import SshServer  # noqa: E402

CONN_ID = "bench_fresh_host"


def _median_s(sample: Callable[[], float], runs: int) -> float:
    return statistics.median(sample() for _ in range(runs))


def measure(runs: int = 5, calls: int = 20) -> dict[str, Any]:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-bench-airflow-"))
    from orchesjob_provider.cli_pack import packed_cli
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orchesjob-install-bench-") as tmp:
        base = Path(tmp)
        home = base / "host-home"
        home.mkdir(mode=0o700)
        server = SshServer(base / "sshd", extra_config=[f"SetEnv HOME={home} PATH=/usr/bin:/bin"]).start()
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = server.airflow_connection_json()
        state = str(base / "host-state")
        try:

            def contact(fresh: bool, **kwargs: Any) -> float:
                if fresh:
                    shutil.rmtree(home / ".cache", ignore_errors=True)
                hook = OrchesjobHook(CONN_ID, orchesjob_home=state, **kwargs)
                started = time.perf_counter()
                info = hook.version()
                elapsed = time.perf_counter() - started
                hook.close()
                expected = "uploaded" if fresh else ("host" if kwargs else "cached")
                assert info["origin"] == expected, info
                return elapsed

            figures["cli_install_first_contact_s"] = _median_s(lambda: contact(True), runs)
            figures["cli_install_cached_contact_s"] = _median_s(lambda: contact(False), runs)
            named = ["/usr/bin/python3", str(home / ".cache" / "orchesjob" / packed_cli().filename)]
            figures["cli_install_named_contact_s"] = _median_s(lambda: contact(False, orchesjob_bin=named), runs)
            figures["cli_install_upload_bytes"] = len(packed_cli().data)

            def later_calls(**kwargs: Any) -> float:
                with OrchesjobHook(CONN_ID, orchesjob_home=state, **kwargs) as hook:
                    hook.version()
                    samples = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        hook.status(running=True)
                        samples.append(time.perf_counter() - started)
                return statistics.median(samples) * 1000

            figures["cli_install_later_status_ms_uploaded"] = later_calls()
            figures["cli_install_later_status_ms_named"] = later_calls(orchesjob_bin=named)
            figures["cli_install_later_over_named"] = (
                figures["cli_install_later_status_ms_uploaded"] / figures["cli_install_later_status_ms_named"]
            )
        finally:
            server.stop()
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
