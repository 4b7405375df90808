"""The deployment state machine (§5) and the naming rule for deployed models.

PENDING -> DEPLOYING -> RUNNING, or FAILED when the model cannot be loaded; DELETING while
the serving process unloads it. The services and the serving supervisor ask this table
instead of comparing statuses themselves.
"""

from __future__ import annotations

import re
from enum import StrEnum

from dashtune.domain.errors import InvalidParameter, UnsupportedOperation


class DeploymentStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    DELETING = "DELETING"


class DeploymentAction(StrEnum):
    """What can happen to a deployment: user actions and supervisor events alike."""

    LOAD = "load"  # the supervisor starts loading it
    READY = "ready"  # loaded and answering
    FAIL = "fail"  # could not be loaded
    RELOAD = "reload"  # the serving process restarted: load it again
    SCALE = "scale"
    DELETE = "delete"


S, A = DeploymentStatus, DeploymentAction

# status -> action -> next status; a missing entry means the action is refused.
_TRANSITIONS: dict[DeploymentStatus, dict[DeploymentAction, DeploymentStatus]] = {
    S.PENDING: {A.LOAD: S.DEPLOYING, A.SCALE: S.PENDING, A.DELETE: S.DELETING},
    S.DEPLOYING: {
        A.READY: S.RUNNING,
        A.FAIL: S.FAILED,
        A.RELOAD: S.DEPLOYING,
        A.SCALE: S.DEPLOYING,
        A.DELETE: S.DELETING,
    },
    S.RUNNING: {
        A.READY: S.RUNNING,  # a new capacity applied
        A.RELOAD: S.DEPLOYING,
        A.SCALE: S.RUNNING,
        A.DELETE: S.DELETING,
    },
    S.FAILED: {A.DELETE: S.DELETING},
    S.DELETING: {A.DELETE: S.DELETING},  # idempotent
}

# A deployment in these states may hold memory in the serving process.
LOADED_STATES = frozenset({S.DEPLOYING, S.RUNNING, S.DELETING})
# Nothing was loaded yet (or loading failed): a delete can drop the row at once.
UNLOADED_STATES = frozenset({S.PENDING, S.FAILED})

MAX_CAPACITY = 1024
_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def can(status: DeploymentStatus | str, action: DeploymentAction) -> bool:
    return action in _TRANSITIONS[DeploymentStatus(status)]


def transition(
    name: str, status: DeploymentStatus | str, action: DeploymentAction
) -> DeploymentStatus:
    """The next status, or `UnsupportedOperation` saying why the action is refused."""
    current = DeploymentStatus(status)
    nxt = _TRANSITIONS[current].get(action)
    if nxt is None:
        raise UnsupportedOperation(
            f"Deployment '{name}' is {current}; it cannot be {_PAST.get(action, action)} now."
            + (" Delete it and deploy the model again." if current is S.FAILED else "")
        )
    return nxt


_PAST = {A.SCALE: "scaled", A.DELETE: "deleted", A.LOAD: "loaded"}


def check_capacity(value: object) -> int:
    """`capacity`: concurrent request slots, an integer in 1..MAX_CAPACITY."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidParameter(f"capacity must be an integer >= 1, got {value!r}.")
    if not 1 <= int(value) <= MAX_CAPACITY:
        raise InvalidParameter(f"capacity={value!r} is out of range [1, {MAX_CAPACITY}].")
    return int(value)


MAX_DEPLOYED_NAME = 300  # the column's length


def deployed_name(model_name: str, suffix: str | None, short_id: str) -> str:
    """`{model_name}-{suffix}`, or `{model_name}-{short id}` without a suffix."""
    if suffix is not None and not _SUFFIX.match(suffix):
        raise InvalidParameter(
            f"suffix {suffix!r} must be 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    name = f"{model_name}-{short_id if suffix is None else suffix}"
    if len(name) > MAX_DEPLOYED_NAME:
        raise InvalidParameter(
            f"The deployment name would be {len(name)} characters; the limit is "
            f"{MAX_DEPLOYED_NAME}: give a shorter suffix."
        )
    return name
