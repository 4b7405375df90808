"""The fine-tune job state machine (§3.3, §3.4): one table that everyone asks.

The API, the scheduler, the worker and the CLI never compare statuses themselves;
they ask `can(status, action)` or `transition(status, action)`.
"""

from __future__ import annotations

from enum import StrEnum

from dashtune.domain.errors import UnsupportedOperation


class JobStatus(StrEnum):
    PENDING = "PENDING"
    QUEUING = "QUEUING"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    PAUSING = "PAUSING"  # the worker is saving a resume point before it stops
    PAUSED = "PAUSED"  # no worker; resumes from its newest resume point
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class Action(StrEnum):
    """Everything that can happen to a job; user actions and engine events alike."""

    VALIDATE = "validate"  # dataset checked: PENDING -> QUEUING
    START = "start"  # a worker claimed it
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    STOPPED = "stopped"  # the worker of a CANCELING or PAUSING job has exited
    RETRY = "retry"  # the worker was lost: queue the job again, to resume (engine)
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    EXPORT = "export"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

# Jobs that count against the per-user quota (§3.6): any non-terminal state, or SUCCEEDED.
QUOTA_STATES = frozenset(set(JobStatus) - {JobStatus.FAILED, JobStatus.CANCELED})

# status -> action -> next status. A missing entry means the action is not allowed.
# DELETE maps to the same status: deletion removes the row, the state does not change.
_TRANSITIONS: dict[JobStatus, dict[Action, JobStatus]] = {
    JobStatus.PENDING: {
        Action.VALIDATE: JobStatus.QUEUING,
        Action.FAIL: JobStatus.FAILED,
        Action.CANCEL: JobStatus.CANCELED,
    },
    JobStatus.QUEUING: {
        Action.START: JobStatus.RUNNING,
        Action.FAIL: JobStatus.FAILED,
        Action.CANCEL: JobStatus.CANCELED,
        Action.PAUSE: JobStatus.PAUSED,  # no worker yet: nothing to save
    },
    JobStatus.RUNNING: {
        Action.SUCCEED: JobStatus.SUCCEEDED,
        Action.FAIL: JobStatus.FAILED,
        Action.CANCEL: JobStatus.CANCELING,
        Action.RETRY: JobStatus.QUEUING,
        Action.PAUSE: JobStatus.PAUSING,
    },
    JobStatus.CANCELING: {
        Action.CANCEL: JobStatus.CANCELING,  # idempotent
        Action.STOPPED: JobStatus.CANCELED,
        Action.FAIL: JobStatus.FAILED,
        # A worker that finished its last step before it saw the cancel still succeeded.
        Action.SUCCEED: JobStatus.SUCCEEDED,
    },
    JobStatus.PAUSING: {
        Action.PAUSE: JobStatus.PAUSING,  # idempotent
        # Also when the worker died while pausing: it resumes from its newest resume point.
        Action.STOPPED: JobStatus.PAUSED,
        Action.CANCEL: JobStatus.CANCELING,
        Action.FAIL: JobStatus.FAILED,
        # The pause came after the last step: the job is done.
        Action.SUCCEED: JobStatus.SUCCEEDED,
    },
    JobStatus.PAUSED: {
        Action.RESUME: JobStatus.QUEUING,
        Action.CANCEL: JobStatus.CANCELED,
    },
    JobStatus.SUCCEEDED: {Action.DELETE: JobStatus.SUCCEEDED, Action.EXPORT: JobStatus.SUCCEEDED},
    JobStatus.FAILED: {Action.DELETE: JobStatus.FAILED},
    JobStatus.CANCELED: {Action.DELETE: JobStatus.CANCELED, Action.EXPORT: JobStatus.CANCELED},
}

# User-facing actions listed in the job object's `allowed_actions` extension.
USER_ACTIONS = (Action.CANCEL, Action.PAUSE, Action.RESUME, Action.DELETE, Action.EXPORT)


def can(status: JobStatus | str, action: Action) -> bool:
    """True when `action` is allowed on a job in `status`."""
    return action in _TRANSITIONS[JobStatus(status)]


def transition(job_id: str, status: JobStatus | str, action: Action) -> JobStatus:
    """The next status, or `UnsupportedOperation` with a message that says what to do."""
    current = JobStatus(status)
    nxt = _TRANSITIONS[current].get(action)
    if nxt is None:
        raise UnsupportedOperation(refusal(job_id, current, action))
    return nxt


def refusal(job_id: str, status: JobStatus, action: Action) -> str:
    """The message for an action the state forbids."""
    if action is Action.CANCEL:
        return (
            f"The fine-tune job {job_id} cannot be canceled because it has already "
            f"succeeded, failed, or been canceled (status {status})."
        )
    if action is Action.DELETE:
        return (
            f"The fine-tune job {job_id} cannot be deleted because it is {status}; "
            "cancel it first and delete it once it is CANCELED."
        )
    if action is Action.PAUSE:
        return (
            f"The fine-tune job {job_id} cannot be paused because it is {status}; "
            "only QUEUING and RUNNING jobs can be paused."
        )
    if action is Action.RESUME:
        return (
            f"The fine-tune job {job_id} cannot be resumed because it is {status}; "
            "only PAUSED jobs can be resumed."
        )
    if action is Action.EXPORT:
        return f"The fine-tune job {job_id} is {status}; checkpoints can be exported once it ends."
    return f"The fine-tune job {job_id} is {status}; action '{action}' is not allowed."


def allowed_actions(status: JobStatus | str) -> list[str]:
    """User actions allowed now, for the job object and the console's buttons."""
    return [a.value for a in USER_ACTIONS if can(status, a)]


def is_terminal(status: JobStatus | str) -> bool:
    return JobStatus(status) in TERMINAL
