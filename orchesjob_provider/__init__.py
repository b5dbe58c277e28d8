"""Airflow provider for orchesjob: run remote jobs over SSH exactly once per run key.

This module is what Airflow's provider manager loads through the ``apache_airflow_provider`` entry point, so it
must stay cheap: no Airflow import here, only the metadata dict.
"""

from __future__ import annotations

from typing import Any

from orchesjob.contract import VERSION as __version__

__all__ = ["CONN_FIELDS", "CONN_TYPE", "HOOK_NAME", "UI_FIELD_BEHAVIOUR", "__version__", "get_provider_info"]

INTEGRATION_NAME = "Orchesjob"

CONN_TYPE = "orchesjob_ssh"
HOOK_NAME = "Orchesjob (SSH)"

#: The extras of an ``orchesjob_ssh`` connection, as form fields: name -> (label, description, JSON schema). The
#: SSH ones mean what they mean on the SSH provider's ``ssh`` connection; ``orchesjob_provider.host_keys`` says how
#: the host key ones are applied.
CONN_FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "key_file": (
        "Private key file",
        "Path of the private key on the worker/triggerer.",
        {"type": ["string", "null"]},
    ),
    "private_key": (
        "Private key",
        "The private key itself (PEM/OpenSSH text); wins over the key file.",
        {"type": ["string", "null"], "format": "password"},
    ),
    "private_key_passphrase": (
        "Private key passphrase",
        "Passphrase of the private key, if it has one.",
        {"type": ["string", "null"], "format": "password"},
    ),
    "host_key": (
        "Host key",
        "The host's public key, e.g. 'ssh-ed25519 AAAA...' (ssh-keyscan prints it): only it is trusted.",
        {"type": ["string", "null"]},
    ),
    "known_hosts": (
        "known_hosts file",
        "A known_hosts file to trust the host's key from (default ~/.ssh/known_hosts).",
        {"type": ["string", "null"]},
    ),
    "no_host_key_check": (
        "No host key check",
        "Accept any host key (trusted networks only).",
        {"type": ["boolean", "null"], "default": False},
    ),
    "conn_timeout": (
        "Connect timeout",
        "Seconds to connect and log in.",
        {"type": ["integer", "null"]},
    ),
    "orchesjob_bin": (
        "orchesjob CLI",
        (
            "Absolute path of the CLI on the host; empty: 'orchesjob' on the SSH command's PATH, or the "
            "provider's own copy when there is none (see Install the CLI)."
        ),
        {"type": ["string", "null"]},
    ),
    "orchesjob_home": (
        "orchesjob state directory",
        "ORCHESJOB_HOME on the host; empty: the host's default.",
        {"type": ["string", "null"]},
    ),
    "install_cli": (
        "Install the CLI",
        (
            "auto (default): upload the provider's CLI to ~/.cache/orchesjob when the host has none and no CLI is "
            "named; never: do not upload; always: run the uploaded copy whatever the host has."
        ),
        {"type": ["string", "null"], "enum": ["auto", "never", "always", None]},
    ),
    "orchesjob_python": (
        "Python on the host",
        "Interpreter (3.9+) that runs an uploaded CLI; empty: python3 and the usual paths.",
        {"type": ["string", "null"]},
    ),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema"],
    "relabeling": {"login": "Username"},
    "placeholders": {
        "host": "the job host's name or address",
        "port": "22",
        "login": "the SSH user (default: the user running Airflow)",
        "password": "SSH password (or use a key)",
        "orchesjob_bin": "/opt/orchesjob/bin/orchesjob",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Provider metadata in the shape of Airflow's ``provider_info.schema.json`` (checked on 2.11 and 3.3).

    ``connection-types`` registers the provider's own connection type, ``orchesjob_ssh`` (an SSH connection plus the
    CLI's settings), whose hook is ``OrchesjobHook``: the UI's "Test" button on such a connection runs
    ``orchesjob version`` on the host. Its form is declared here (``conn-fields`` / ``ui-field-behaviour``, read by
    Airflow 3.2+ without importing the hook); Airflow 2 asks the hook's ``get_connection_form_widgets`` /
    ``get_ui_field_behaviour``, built from the same ``CONN_FIELDS``. Plain ``ssh`` connections keep working with
    every hook, operator, sensor and trigger of this provider.
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
                "external-doc-url": "https://orchesjob.github.io/orchesjob/",
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
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "orchesjob_provider.hooks.orchesjob.OrchesjobHook",
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": {
                    "hidden-fields": list(UI_FIELD_BEHAVIOUR["hidden_fields"]),
                    "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
                    "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
                },
                "conn-fields": {
                    name: {"label": label, "description": description, "schema": dict(schema)}
                    for name, (label, description, schema) in CONN_FIELDS.items()
                },
            }
        ],
    }
