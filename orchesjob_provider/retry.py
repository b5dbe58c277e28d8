"""When a failed CLI call is tried again, and after how long: one policy for both hooks. No I/O.

Every verb says how far a repeat of it is safe (its ``retry`` kind, set where the verb is defined in
``orchesjob_provider.command``); the policy says what that allows after each kind of failure:

| retry kind | transport failure, command not sent | transport failure, command sent | ``lock_timeout`` |
|---|---|---|---|
| ``always`` | retried | retried | retried |
| ``before_send`` | retried | not retried | not retried |
| ``never`` | not retried | not retried | not retried |

Other errors (the CLI said no: not found, invalid argument, conflict ...) and transport errors that are not
transient (a refused login, an unknown host key) are never retried: the same call would get the same answer.

``always`` is for calls a repeat cannot make happen twice: the reads (``status``, ``wait``, ``logs``,
``version``) and ``start``, which always carries a request id: the host answers a repeat of a request with the job
it answered the first time, whatever that job's status, so a repeat never launches a second execution in any mode.
``before_send`` is for calls that change state and have no such id (``abort``, ``rerun``, ``unlock``, ``clean``).

The policy only decides and describes; the hooks sleep (``time.sleep`` or ``asyncio.sleep``) and log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchesjob_provider.exceptions import OrchesjobError

ALWAYS = "always"
BEFORE_SEND = "before_send"
NEVER = "never"
KINDS = (ALWAYS, BEFORE_SEND, NEVER)


class RetryPolicy:
    """How many retries a call gets and the pauses between them: ``backoff`` seconds before the first, doubling
    each time, at most ``max_backoff``.

    :param retries: retries after the first attempt (0: one attempt only).
    :param backoff: the first pause, in seconds.
    :param max_backoff: the longest pause.
    """

    def __init__(self, retries: int = 3, backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(0.0, float(max_backoff))

    def __repr__(self) -> str:
        return f"RetryPolicy(retries={self.retries}, backoff={self.backoff:g}, max_backoff={self.max_backoff:g})"

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based)."""
        return min(self.backoff * (2 ** (max(1, retry) - 1)), self.max_backoff)

    @staticmethod
    def allows(exc: OrchesjobError, kind: str) -> bool:
        """Whether a call of retry ``kind`` may be repeated after ``exc`` (the table in this module's docstring)."""
        from orchesjob_provider.exceptions import OrchesjobLockTimeout, OrchesjobTransportError

        if kind not in KINDS:
            raise ValueError(f"retry must be one of {', '.join(KINDS)}; got {kind!r}")
        if kind == NEVER:
            return False
        if isinstance(exc, OrchesjobLockTimeout):
            return kind == ALWAYS  # the CLI gave up before writing anything, but only idempotent calls repeat it
        if isinstance(exc, OrchesjobTransportError) and exc.transient:
            return kind == ALWAYS or not exc.sent
        return False

    def next_delay(self, exc: OrchesjobError, kind: str, retry: int) -> float | None:
        """The pause before retry number ``retry`` after ``exc``, or None when the call must give up."""
        if retry > self.retries or not self.allows(exc, kind):
            return None
        return self.delay(retry)


class Attempts:
    """The attempts of one call: how many retries so far, and whether any attempt reached the host.

    ``failed(exc)`` after each failed attempt returns the pause before the next one, or None: give up and raise
    ``exc``. A transport error leaves with ``sent`` True once any attempt of the call was sent (a later attempt that
    failed while connecting must not make the caller believe the command never reached the host).
    """

    def __init__(self, policy: RetryPolicy, kind: str, verb: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"retry must be one of {', '.join(KINDS)}; got {kind!r}")
        self.policy = policy
        self.kind = kind
        self.verb = verb
        self.retries = 0
        self.sent = False

    def failed(self, exc: OrchesjobError) -> float | None:
        from orchesjob_provider.exceptions import OrchesjobTransportError

        if isinstance(exc, OrchesjobTransportError):
            self.sent = exc.sent = self.sent or exc.sent
        pause = self.policy.next_delay(exc, self.kind, self.retries + 1)
        if pause is not None:
            self.retries += 1
        return pause

    def describe(self, exc: OrchesjobError, pause: float) -> str:
        """The log line of the retry just decided: the verb, the attempt that failed, its error, the pause."""
        return (
            f"orchesjob {self.verb}: attempt {self.retries} of {self.policy.retries + 1} failed ({exc}); "
            f"retry {self.retries} of {self.policy.retries} in {pause:.1f}s"
        )
