"""Drop-in for orchesjob 1.1.0: the phrases its messages start with, and the values its users read.

Scripts written for 1.1.0 grep its stderr ("not found", "Job is not running", "Invalid --before", ...); each of our
messages keeps that phrase as its start or as a clause, while staying one JSON error object with a typed exit code.
`make test-reference` runs 1.1.0's own tests as well; these run offline and under every Python we test.
"""

import pytest

pytestmark = pytest.mark.timeout(120)

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def _phrase(r, assert_error, code, error_type, phrase):
    err = assert_error(r, code, error_type)
    assert phrase in err["message"] and phrase in r.err, err
    return err["message"]


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--run-key", "nope"),
        ("status", "--job-id", UNKNOWN_ID),
        ("status", "--run-key", "nope", "--all"),
        ("logs", "--run-key", "nope"),
        ("logs", "--job-id", UNKNOWN_ID),
        ("abort", "--run-key", "nope"),
        ("abort", "--job-id", UNKNOWN_ID),
        ("rerun", "--run-key", "nope"),
        ("rerun", "--job-id", UNKNOWN_ID),
        ("unlock", "--run-key", "nope"),
        ("clean", "--job-id", UNKNOWN_ID),
    ],
)
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-home", "with-history"])
def test_unknown_key_or_id_says_not_found(run, assert_error, start_job, args, fresh):
    if not fresh:
        start_job("other", "true", opts=("--sync",))
    message = _phrase(run(*args), assert_error, 3, "not_found", "not found")
    if args[1] == "--job-id":
        assert message.startswith("Job not found"), message
    elif "--all" not in args:
        assert message.startswith("run_key not found"), message
    else:
        assert message.startswith("No jobs found for run_key"), message


def test_abort_of_a_finished_job_says_job_is_not_running(run, assert_error, start_job):
    j = start_job("done", "true", opts=("--sync",))
    _phrase(run("abort", "--run-key", "done"), assert_error, 4, "inconsistent_state", "Job is not running")
    _phrase(run("abort", "--job-id", j["job_id"]), assert_error, 4, "inconsistent_state", "Job is not running")


@pytest.mark.parametrize("flag", ["--before", "--after"])
@pytest.mark.parametrize("value", ["not-a-date", "2026-13-01", "@soon", "@99999999999999"])
def test_bad_datetime_says_invalid_flag(run, assert_error, flag, value):
    _phrase(run("clean", flag, value), assert_error, 2, "invalid_argument", "Invalid %s" % flag)


def test_active_job_cannot_be_unlocked_or_rerun(run, assert_error, start_job, ok):
    j = start_job("busy", "sleep", "30", opts=("--strict",))
    try:
        _phrase(run("unlock", "--run-key", "busy"), assert_error, 4, "inconsistent_state", "Cannot unlock active job")
        _phrase(run("rerun", "--run-key", "busy"), assert_error, 4, "inconsistent_state", "Cannot rerun active job")
        _phrase(run("rerun", "--job-id", j["job_id"]), assert_error, 4, "inconsistent_state", "Cannot rerun active job")
    finally:
        ok("abort", "--run-key", "busy", "--grace-seconds", "0")


def test_rerun_of_an_old_attempt_while_the_key_is_active_is_refused(run, assert_error, start_job, ok):
    old = start_job("key", "true", opts=("--sync",))
    start_job("key", "sleep", "30")
    try:
        _phrase(
            run("rerun", "--job-id", old["job_id"]), assert_error, 4, "inconsistent_state", "Cannot rerun active job"
        )
    finally:
        ok("abort", "--run-key", "key", "--grace-seconds", "0")


@pytest.mark.parametrize("tail", [(), ("--",)])
def test_start_without_a_command_says_command_is_required(run, assert_error, home, tail):
    _phrase(run("start", "--run-key", "k", *tail), assert_error, 2, "invalid_argument", "command is required")
    assert not home.exists()


def test_rerun_output_says_rerun(start_job, ok):
    first = start_job("r", "true", opts=("--sync",))
    assert "rerun" not in first
    again = ok("rerun", "--run-key", "r", "--sync")
    assert again["rerun"] is True and again["rerun_of_job_id"] == first["job_id"] and again["attempt_no"] == 2


def test_a_new_attempt_after_a_finished_one_names_it_in_rerun_of_job_id(start_job):
    first = start_job("n", "false", opts=("--sync",))
    second = start_job("n", "true", opts=("--sync",))
    assert second["accepted"] is True and second["attempt_no"] == 2
    assert second["rerun_of_job_id"] == first["job_id"] and second["rerun_reason"] is None
