"""What the provider needs beyond Airflow itself, checked once where a DAG first imports it.

The distribution installs the CLI alone by default (hosts need nothing else); the Airflow side needs the SSH
libraries of the ``airflow`` extra. Without them the provider is still listed by ``airflow providers list`` (its
metadata needs nothing), and the first import of a hook, operator, sensor or trigger would fail deep inside with
``No module named 'paramiko'``. This check turns that into an error that names the fix.
"""

from __future__ import annotations

import importlib.util

#: module -> the distribution that provides it (all of them come with ``orchesjob[airflow]``)
NEEDED = {
    "paramiko": "paramiko",
    "asyncssh": "asyncssh",
    "airflow.providers.ssh": "apache-airflow-providers-ssh",
}

INSTALL_HINT = "pip install 'orchesjob[airflow]'"


class MissingAirflowExtra(ImportError):
    """The ``airflow`` extra is not installed; the message names what is missing and the command that installs it."""


def missing() -> list[str]:
    """The distributions of NEEDED whose modules cannot be found (without importing them)."""
    absent = []
    for module, dist in NEEDED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing (airflow.providers), or a broken one
            found = False
        if not found:
            absent.append(dist)
    return absent


def require() -> None:
    """Raise MissingAirflowExtra when any module of the ``airflow`` extra is missing."""
    absent = missing()
    if absent:
        raise MissingAirflowExtra(
            "orchesjob's Airflow provider needs %s, which %s not installed here: %s (with your Airflow's constraints "
            "file) installs them" % (", ".join(absent), "is" if len(absent) == 1 else "are", INSTALL_HINT)
        )
