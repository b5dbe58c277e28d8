"""Run a command exactly once per run key, as a detached, supervised job."""

# The one definition of the version (packaging and cli_pack read this line); orchesjob/contract.py holds the rest of
# what the CLI and the provider agree on.
__version__ = "2.0.0"
