"""What the tests do with a provider hook that is not a hook call of its own. No pytest here."""

from __future__ import annotations

import time
from typing import Any


def wait_ended(hook: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job once it has ended, asked through the hook's ``wait`` (5 s at a time) until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = hook.wait(job_id=job_id, timeout=5)
        if not job["active"]:
            return job
        assert time.monotonic() < deadline, job
