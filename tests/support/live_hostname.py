"""Airflow's ``[core] hostname_callable`` for the production-shaped live deployment.

Its two Celery workers run on one machine, where they would share one host name. Each is started with
``ORCHESJOB_LIVE_HOSTNAME`` set to a name of its own, so a task instance's ``hostname`` tells which worker ran it,
as it would on two machines. Every other process gets the machine's name, as by default.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("ORCHESJOB_LIVE_HOSTNAME") or socket.getfqdn()
