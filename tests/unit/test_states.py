from __future__ import annotations

import pytest

from dashtune.domain.errors import UnsupportedOperation
from dashtune.domain.states import Action, JobStatus, allowed_actions, can, transition


def test_cancel_rules() -> None:
    assert transition("j", JobStatus.PENDING, Action.CANCEL) is JobStatus.CANCELED
    assert transition("j", JobStatus.QUEUING, Action.CANCEL) is JobStatus.CANCELED
    assert transition("j", JobStatus.RUNNING, Action.CANCEL) is JobStatus.CANCELING
    assert transition("j", JobStatus.CANCELING, Action.CANCEL) is JobStatus.CANCELING
    for done in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
        with pytest.raises(UnsupportedOperation, match="cannot be canceled"):
            transition("j", done, Action.CANCEL)


def test_delete_only_when_ended() -> None:
    live_states = (
        JobStatus.PENDING,
        JobStatus.QUEUING,
        JobStatus.RUNNING,
        JobStatus.CANCELING,
        JobStatus.PAUSING,
        JobStatus.PAUSED,
    )
    for live in live_states:
        assert not can(live, Action.DELETE)
        with pytest.raises(UnsupportedOperation, match="cancel it first"):
            transition("j", live, Action.DELETE)
    for done in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
        assert can(done, Action.DELETE)


def test_engine_transitions() -> None:
    assert transition("j", JobStatus.PENDING, Action.VALIDATE) is JobStatus.QUEUING
    assert transition("j", JobStatus.QUEUING, Action.START) is JobStatus.RUNNING
    assert transition("j", JobStatus.RUNNING, Action.SUCCEED) is JobStatus.SUCCEEDED
    assert transition("j", JobStatus.CANCELING, Action.STOPPED) is JobStatus.CANCELED
    with pytest.raises(UnsupportedOperation):
        transition("j", JobStatus.PENDING, Action.START)
    with pytest.raises(UnsupportedOperation):
        transition("j", JobStatus.SUCCEEDED, Action.FAIL)


def test_allowed_actions() -> None:
    assert allowed_actions(JobStatus.QUEUING) == ["cancel", "pause"]
    assert allowed_actions(JobStatus.RUNNING) == ["cancel", "pause"]
    assert allowed_actions(JobStatus.PAUSING) == ["cancel", "pause"]
    assert allowed_actions(JobStatus.PAUSED) == ["cancel", "resume"]
    assert allowed_actions(JobStatus.SUCCEEDED) == ["delete", "export"]
    assert allowed_actions(JobStatus.FAILED) == ["delete"]


def test_pause_and_resume_rules() -> None:
    assert transition("j", JobStatus.RUNNING, Action.PAUSE) is JobStatus.PAUSING
    assert transition("j", JobStatus.QUEUING, Action.PAUSE) is JobStatus.PAUSED
    assert transition("j", JobStatus.PAUSING, Action.PAUSE) is JobStatus.PAUSING
    assert transition("j", JobStatus.PAUSING, Action.STOPPED) is JobStatus.PAUSED
    assert transition("j", JobStatus.PAUSING, Action.CANCEL) is JobStatus.CANCELING
    assert transition("j", JobStatus.PAUSED, Action.RESUME) is JobStatus.QUEUING
    assert transition("j", JobStatus.PAUSED, Action.CANCEL) is JobStatus.CANCELED
    for state in set(JobStatus) - {JobStatus.QUEUING, JobStatus.RUNNING, JobStatus.PAUSING}:
        with pytest.raises(UnsupportedOperation, match="cannot be paused"):
            transition("j", state, Action.PAUSE)
    for state in set(JobStatus) - {JobStatus.PAUSED}:
        with pytest.raises(UnsupportedOperation, match="cannot be resumed"):
            transition("j", state, Action.RESUME)


def test_only_a_running_job_is_retried() -> None:
    assert transition("j", JobStatus.RUNNING, Action.RETRY) is JobStatus.QUEUING
    for state in set(JobStatus) - {JobStatus.RUNNING}:
        assert not can(state, Action.RETRY)
