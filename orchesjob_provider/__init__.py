"""Airflow provider for orchesjob: run remote jobs over SSH exactly once per run key.

This module is what Airflow's provider manager loads through the ``apache_airflow_provider`` entry point, so it
must stay cheap: no Airflow import here, only the metadata dict.
"""

from __future__ import annotations

from typing import Any

from orchesjob import __version__

__all__ = ["__version__", "get_provider_info"]

INTEGRATION_NAME = "Orchesjob"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata in the shape of Airflow's ``provider_info.schema.json`` (checked on 2.11 and 3.3).

    ``connection-types`` and ``hook-class-names`` are empty on purpose: the hook reuses the SSH provider's ``ssh``
    connection type, and registering it again here would make Airflow warn that ``ssh`` is registered twice.
    """
    return {
        "package-name": "orchesjob",
        "name": "Orchesjob",
        "description": (
            "Run remote jobs over SSH exactly once per run key: retries reattach to the running job or adopt "
            "its result, deferrable while the job runs, with its logs streamed into the task log."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION_NAME,
                "external-doc-url": "https://pypi.org/project/orchesjob/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["orchesjob_provider.hooks.orchesjob"]},
        ],
        "operators": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["orchesjob_provider.operators.orchesjob"]},
        ],
        "sensors": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["orchesjob_provider.sensors.orchesjob"]},
        ],
        "triggers": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["orchesjob_provider.triggers.orchesjob"]},
        ],
        "hook-class-names": [],
        "connection-types": [],
    }
