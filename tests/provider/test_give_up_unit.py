"""The rule that decides whether a killed task gave its job up, and the question put to Airflow, without I/O."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from orchesjob_provider import give_up
from orchesjob_provider.give_up import GAVE_UP, NO_ANSWER, STILL_WANTED, TryIdentity, decide, gave_up

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("state", sorted(GAVE_UP))
def test_a_try_that_ended_gave_the_job_up(state: str) -> None:
    assert gave_up(state, 3, 3) is True
    assert gave_up(state.upper(), None, 3) is True  # Airflow 3 tells no try number: the state decides


@pytest.mark.parametrize("state", sorted(STILL_WANTED, key=str))
def test_a_task_instance_that_still_waits_or_runs_again_keeps_the_job(state: str | None) -> None:
    assert gave_up(state, 3, 3) is False


@pytest.mark.parametrize("state", sorted(GAVE_UP | STILL_WANTED, key=str))
def test_a_newer_try_means_the_old_one_gave_nothing_up(state: str | None) -> None:
    """A cleared task that already ran again (and maybe ended), or a retry that runs now, is a newer try's business:
    whatever its state, the old try gave nothing up (the newer one reattached, or will)."""
    assert gave_up(state, 4, 3) is False


@pytest.mark.parametrize("state", sorted(GAVE_UP | STILL_WANTED, key=str))
def test_a_try_number_behind_the_jobs_is_no_answer(state: str | None) -> None:
    assert gave_up(state, 2, 3) is None


@pytest.mark.parametrize("try_now", [3, None], ids=["airflow2", "airflow3"])
def test_a_retry_to_come_keeps_the_job(try_now: int | None) -> None:
    """up_for_retry: the try failed and Airflow will run the task again, with the same run key. A worker that stalled
    past the heartbeat timeout is marked so while its job is healthy; killed when it resumes, it must leave the job
    to the retry, which reattaches (aborting it made the retry run the job a second time)."""
    assert gave_up("up_for_retry", try_now, 3) is False
    assert gave_up("UP_FOR_RETRY", try_now, 3) is False
    verdict = decide(TryIdentity("d", "t", "r", -1, 3), ("up_for_retry", try_now))
    assert not verdict.abort and not verdict.unknown and "still wants the job" in verdict.reason


def test_every_state_airflow_has_is_decided() -> None:
    """Each task-instance state of the installed Airflow is in exactly one of the sets: no state leaves the kill
    path guessing, and the states of for-good endings are exactly the ones that abort. (Airflow 2.11 still lists the
    deprecated "shutdown": no answer, so nothing is aborted.)"""
    airflow_state = pytest.importorskip("airflow.utils.state")
    names = {str(s.value) for s in airflow_state.TaskInstanceState}
    known = GAVE_UP | STILL_WANTED | NO_ANSWER
    assert names <= known - {None}, names - known
    assert not GAVE_UP & STILL_WANTED and not (GAVE_UP | STILL_WANTED) & NO_ANSWER
    for name in NO_ANSWER:
        assert gave_up(name, 3, 3) is None
    assert GAVE_UP == {"success", "failed", "skipped", "upstream_failed", "removed"}


def test_an_unknown_state_is_no_answer() -> None:
    assert gave_up("some_future_state", 1, 1) is None


def test_enum_states_are_read_by_their_value() -> None:
    class State:
        value = "FAILED"

    assert gave_up(State(), 2, 2) is True


def test_the_try_identity_survives_a_json_round_trip_and_old_kwargs_load_as_unknown() -> None:
    who = TryIdentity("d", "t", "manual__1", 2, 5)
    assert TryIdentity.from_kwargs(json.loads(json.dumps(who.to_kwargs()))) == who
    assert TryIdentity.from_kwargs(None) is None
    assert TryIdentity.from_kwargs({"dag_id": "d"}) is None  # damaged: no task or run


def test_unknown_in_any_way_means_do_not_abort() -> None:
    who = TryIdentity("d", "t", "r", -1, 1)
    assert decide(None, ("failed", 1)) == give_up.Verdict(False, decide(None, None).reason, unknown=True)
    broken = decide(who, ConnectionError("api-server down"))
    assert not broken.abort and broken.unknown and "api-server down" in broken.reason
    odd = decide(who, ("some_future_state", 1))
    assert not odd.abort and odd.unknown
    kept = decide(who, ("deferred", None))
    assert not kept.abort and not kept.unknown
    assert decide(who, ("failed", None)).abort


def test_ask_gives_up_waiting_for_an_airflow_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup stuck behind the interrupted task's own supervisor conversation must not hold on_kill forever."""
    monkeypatch.setattr(give_up, "_lookup", lambda identity: time.sleep(30))  # the case: a lookup that hangs
    started = time.monotonic()
    verdict = give_up.ask(TryIdentity("d", "t", "r", -1, 1), timeout=0.5)
    assert time.monotonic() - started < 5
    assert not verdict.abort and verdict.unknown and "no answer" in verdict.reason

    async def slow() -> Any:
        return await give_up.aask(TryIdentity("d", "t", "r", -1, 1), timeout=0.5)

    verdict = asyncio.run(slow())
    assert not verdict.abort and verdict.unknown


def test_the_manual_abort_command_is_one_a_person_can_paste() -> None:
    line = give_up.manual_abort_command("0f3c-job", "/opt/orchesjob/bin/orchesjob", "/srv/state dir")
    assert line == "ORCHESJOB_HOME='/srv/state dir' /opt/orchesjob/bin/orchesjob abort --job-id=0f3c-job"


@pytest.mark.timeout(300)  # the question's thread uses orchesjob_provider.compat, which imports Airflow
def test_the_warm_up_asks_once_per_process_and_decides_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first question of a triggerer is the slow one (its supervisor builds its API then), so the trigger puts
    it once, early, in the background; later triggers of the process do not ask again, and no identity, no question.
    """
    import orchesjob_provider.compat  # noqa: F401 - imported whole before the question's thread uses it, as in a trigger

    asked: list[TryIdentity] = []

    def lookup(identity: TryIdentity) -> Any:
        asked.append(identity)
        return ("failed", None)  # an answer that would abort, were anything decided from it

    monkeypatch.setattr(give_up, "_lookup", lookup)
    monkeypatch.setattr(give_up, "_warm_up", None)
    first, second = TryIdentity("d", "t", "r", -1, 1), TryIdentity("d", "t", "r2", -1, 1)

    async def start_triggers() -> Any:
        give_up.warm_up(None)
        assert give_up._warm_up is None
        give_up.warm_up(first)
        give_up.warm_up(second)
        assert give_up._warm_up is not None
        return await give_up._warm_up

    verdict = asyncio.run(start_triggers())
    assert asked == [first]
    assert verdict.abort  # the answer is only kept, never acted on: nothing here holds a job or a hook
