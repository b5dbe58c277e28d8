"""The run key an Airflow task instance uses by default, and the request id of one of its tries.

Every try of one task instance must share the run key (that is what makes a retry reattach), and different task
instances must never share it. dag id, task id, run id and map index identify a task instance; the try number is
left out on purpose.

The request id is the opposite: one per try. The host answers a repeated request id with the job it answered the
first time, whatever happened to that job since, and makes the latest request it answered the job's owner. So a
transport retry inside one try (same id) never launches a second execution, a new try (new id) decides afresh, and
``abort --if-owner`` from a try that a newer one replaced is refused.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from orchesjob.contract import MAX_REQUEST_ID, MAX_RUN_KEY  # the CLI's own limits, defined once


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


def request_id_for_try(
    dag_id: str, task_id: str, run_id: str, map_index: int | None = -1, try_number: Any = None, nonce: str | None = None
) -> str:
    """``airflow:<dag>:<task>:<run>:<map index>:try<N>:<nonce>``, at most the CLI's 128 printable characters.

    The random ``nonce`` (8 hex digits unless given) keeps two tries apart even where Airflow reuses a try number
    (``airflow tasks test``, ``dags test``, a cleared run on some versions). When the whole is too long, the
    identity part is cut, never the try number and nonce.
    """
    tail = ":try%s:%s" % ("?" if try_number is None else try_number, nonce or uuid.uuid4().hex[:8])
    head = "airflow:%s:%s:%s:%s" % (dag_id, task_id, run_id, -1 if map_index is None else int(map_index))
    head = "".join(c if c.isprintable() else "?" for c in head)
    tail = "".join(c if c.isprintable() else "?" for c in tail)[:MAX_REQUEST_ID]
    return head[: MAX_REQUEST_ID - len(tail)] + tail


def request_id_from_context(context: Mapping[str, Any]) -> str:
    """A new request id for the try that ``context`` runs (call it once per try and keep it)."""
    ti = context["ti"]
    return request_id_for_try(
        ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1), getattr(ti, "try_number", None)
    )
