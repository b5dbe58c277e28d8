"""The run key an Airflow task instance uses by default.

Every try of one task instance must share it (that is what makes a retry reattach), and different task instances
must never share it. dag id, task id, run id and map index identify a task instance; the try number is left out
on purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from orchesjob.cli import MAX_RUN_KEY  # the CLI's own limit, defined once


def for_task_instance(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """`airflow/<dag>/<task>/<run>[/<map index>]`, shortened with a hash when it would exceed the CLI's limit."""
    key = "airflow/%s/%s/%s" % (dag_id, task_id, run_id)
    if map_index is not None and int(map_index) >= 0:
        key += "/%d" % int(map_index)
    if len(key) <= MAX_RUN_KEY and key.isprintable():
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    readable = "".join(c if c.isprintable() else "?" for c in key)
    return readable[: MAX_RUN_KEY - len(digest) - 1] + "#" + digest


def from_context(context: Mapping[str, Any]) -> str:
    ti = context["ti"]
    return for_task_instance(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
