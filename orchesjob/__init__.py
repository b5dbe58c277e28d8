"""Run a command exactly once per run key, as a detached, supervised job."""

__version__ = "2.0.0"
CONTRACT_VERSION = 3
