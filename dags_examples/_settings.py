"""Where the example DAGs find the host: one Airflow SSH connection and the path of the CLI on it.

Copy the examples into your dags folder and change these three lines (or set the environment variables).
"""

import os

SSH_CONN_ID = os.environ.get("ORCHESJOB_SSH_CONN_ID", "orchesjob_ssh")
# Non-login SSH commands have a short PATH: an absolute path to the CLI (a venv, pipx, or orchesjob.pyz) is safest.
ORCHESJOB_BIN = os.environ.get("ORCHESJOB_REMOTE_BIN", "orchesjob")
# ORCHESJOB_HOME on the host; None uses the host's default (/var/lib/orchesjob for root, ~/.local/state/orchesjob).
ORCHESJOB_HOME = os.environ.get("ORCHESJOB_REMOTE_HOME") or None
# Where the demo jobs write what they did, so a reader can count executions.
WORKDIR = os.environ.get("ORCHESJOB_EXAMPLE_WORKDIR", "/tmp/orchesjob-examples")

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # noqa: F401
