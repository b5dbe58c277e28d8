"""SSHHook settings that make tests fail fast, limited to what the installed SSH provider accepts.

The SSH provider 4.x (the one Airflow 2.10 resolves) has no `conn_retry_attempts`; newer ones retry a failed
connection several times by default, which only slows a test that expects the failure.
"""

import inspect
from typing import Any


def fast_ssh_hook_kwargs(**extra: Any) -> dict[str, Any]:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    accepted = inspect.signature(SSHHook.__init__).parameters
    wanted = dict({"conn_retry_attempts": 1}, **extra)
    return {k: v for k, v in wanted.items() if k in accepted}
