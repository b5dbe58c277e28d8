"""What the CLI and the Airflow provider must agree on, defined once: the JSON contract.

The provider runs this CLI on its hosts (the host's own install, or the copy it uploads) and reads its answers. Both
sides take the names below from here: the statuses, the exit codes, the limits on values, the defaults the provider
leaves to the CLI, the format of a `wait --watch` entry and the fields of a job object. The provider imports nothing
else of the `orchesjob` package (its `cli_pack` reads the package's files to pack them, it does not import them).

A change here that a reader of the JSON could notice is a new CONTRACT_VERSION, and every new contract is a new
release version (docs/json-contract.md, CHANGELOG "Upgrading"): a host and a provider of one version always agree.

Imports only the package's face, and nothing of the standard library: every CLI start reads this module.
"""

from __future__ import annotations

from . import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The release that speaks this contract (one definition: orchesjob/__init__.py, where packaging reads it).
VERSION = __version__
#: The number `orchesjob version` answers as "contract"; the provider refuses a CLI with another.
CONTRACT_VERSION = 3

# -- statuses -----------------------------------------------------------------------------------------------------
#: A job that may still run: its run key is busy.
ACTIVE = ("STARTING", "RUNNING")
#: A job that has ended for good (an ABORTED job may still be stopping: its `finished_at` is then empty).
TERMINAL = ("SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")
STATUSES = ACTIVE + TERMINAL

# -- exit codes (one error type each in orchesjob/errors.py and orchesjob_provider/exceptions.py) -----------------
EXIT_OK = 0
EXIT_ERROR = 1  # error types not listed below ("database", "unsafe_cli", ...)
EXIT_INVALID = 2  # "invalid_argument"
EXIT_NOT_FOUND = 3  # "not_found"
EXIT_INCONSISTENT = 4  # "inconsistent_state"
EXIT_LOCK = 5  # "lock_timeout"
# Only commands that report something other than their own failure:
EXIT_FINDINGS = 1  # doctor: something on the host needs doing (its JSON says what)
EXIT_JOB_DID_NOT_SUCCEED = 6  # logs --follow: the followed job ended FAILED, ABORTED, LOST or CANCELLED
EXIT_INTERRUPTED = 130  # logs --follow ended by Ctrl-C (SIGINT), as a shell reports 128 + 2

# -- limits on values ---------------------------------------------------------------------------------------------
MAX_RUN_KEY = 256  # characters
MAX_REQUEST_ID = 128  # characters, also a watch cursor's and an owner's
MAX_JOB_ID = 64  # characters
MAX_TEXT = 4096  # characters of a reason, a path, an environment value
MAX_CHUNK = 16 << 20  # bytes of log one answer may carry
MAX_OFFSET = 1 << 62  # byte offsets and counts: far beyond any log, still a valid file offset
MAX_LOCK_TIMEOUT = 86400.0  # seconds (ORCHESJOB_LOCK_TIMEOUT)

# -- defaults: what a caller gets by leaving a flag out ------------------------------------------------------------
DEFAULT_WAIT_TIMEOUT = 30.0  # wait --timeout, seconds
DEFAULT_MAX_BYTES = 65536  # wait/logs --max-bytes
DEFAULT_ABORT_GRACE = 5.0  # abort --grace-seconds
DEFAULT_START_TIMEOUT = 10.0  # start --start-timeout, seconds
DEFAULT_LOCK_TIMEOUT = 30.0  # ORCHESJOB_LOCK_TIMEOUT, seconds

# -- wait --watch -------------------------------------------------------------------------------------------------
WATCH_MAX_ENTRIES = 1000  # --watch values in one call
WATCH_MIN_TOTAL_BYTES = 65536  # the smallest --max-total-bytes taken
WATCH_DEFAULT_TOTAL_BYTES = 1 << 20
STREAMS = ("stdout", "stderr")
WATCH_SEPARATOR = ":"


def watch_spec(
    job_id: str,
    read: tuple[int, int] | None = None,
    delivered: tuple[int, int] | None = None,
    cursor: str | None = None,
) -> str:
    """One `--watch` value: `JOB_ID`, `JOB_ID:OUT:ERR` (log offsets read), or `JOB_ID:OUT:ERR:DOUT:DERR:CURSOR`
    (and the offsets delivered, recorded on the host under CURSOR). The values are the caller's to check first; a
    job id never holds the separator, a cursor may (it is the rest of the value)."""
    if read is None:
        return job_id
    parts = [job_id, str(read[0]), str(read[1])]
    if cursor is not None:
        done = read if delivered is None else delivered
        parts += [str(done[0]), str(done[1]), cursor]
    return WATCH_SEPARATOR.join(parts)


def split_watch_spec(spec: str) -> Sequence[str]:
    """The parts of a `--watch` value as `watch_spec` joins them: 1, 3 or 6 strings (any other count is the
    caller's error to report)."""
    return spec.split(WATCH_SEPARATOR, 5)


# -- the job object -----------------------------------------------------------------------------------------------
#: orchesjob 1.1.0's fields, in its order: every answer about a job starts with them.
REFERENCE_JOB_FIELDS = (
    "job_id",
    "run_key",
    "command",
    "pid",
    "pid_kind",
    "worker_pid",
    "target_pid",
    "status",
    "exit_code",
    "stdout_file",
    "stderr_file",
    "attempt_no",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "started_at",
    "started_at_iso",
    "finished_at",
    "finished_at_iso",
    "updated_at",
    "updated_at_iso",
    "aborted_at",
    "aborted_at_iso",
)
#: The fields this project adds after them, in order (docs/json-contract.md describes each).
ADDED_JOB_FIELDS = (
    "strict",
    "strict_override_used",
    "override_reason",
    "cwd",
    "env",
    "timeout",
    "signal",
    "signal_name",
    "end_reason",
    "active",
    "liveness",
    "liveness_reason",
    "request_id",
    "owner",
    "pid_namespace",
    "imported_from",
)
JOB_FIELDS = REFERENCE_JOB_FIELDS + ADDED_JOB_FIELDS
#: Present only on a job found under another state directory than the caller's (`status` searching them).
OPTIONAL_JOB_FIELDS = ("state_dir",)
#: What `liveness` says of an active or stopping job: "verified" (its lock is held), "unknown" (no evidence either
#: way: nothing is started, killed or failed on it).
LIVENESS = ("verified", "unknown")
