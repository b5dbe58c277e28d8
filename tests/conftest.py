"""The root of every suite: the shared fixtures (tests/support/fixtures.py) for all test directories.

Everything under tests/ imports the shared parts one way, as ``tests.support.<module>``: the checkout's root is on
sys.path through ``pythonpath`` in pyproject.toml's pytest settings, never through a path insert in a test.
"""

pytest_plugins = ["tests.support.fixtures"]
