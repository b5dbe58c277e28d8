"""Where the example DAGs find the host: one Airflow SSH connection and the path of the CLI on it.

Copy the examples into your dags folder and change these lines (or set the environment variables).
"""

import os

SSH_CONN_ID = os.environ.get("ORCHESJOB_SSH_CONN_ID", "orchesjob_ssh")
# The CLI on the host. None (the default): none named, so the provider runs `orchesjob` from the host's PATH or,
# when the host has none, uploads its own copy to ~/.cache/orchesjob (install_cli "auto"): the host needs nothing
# but SSH and a Python 3.9+. To use an installed CLI, give its absolute path (non-login SSH commands have a short
# PATH) here or as the connection's `orchesjob_bin` extra.
ORCHESJOB_BIN = os.environ.get("ORCHESJOB_REMOTE_BIN") or None
# ORCHESJOB_HOME on the host; None uses the host's default (/var/lib/orchesjob for root, ~/.local/state/orchesjob).
ORCHESJOB_HOME = os.environ.get("ORCHESJOB_REMOTE_HOME") or None
# Where the demo jobs write what they did, so a reader can count executions.
WORKDIR = os.environ.get("ORCHESJOB_EXAMPLE_WORKDIR", "/tmp/orchesjob-examples")

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # noqa: F401
