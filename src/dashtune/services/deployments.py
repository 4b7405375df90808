"""Deployment use cases (§5): for callers (create, list, get, scale, delete, what a model
name calls) and for the serving supervisor (load, ready, fail, unload, restart).

Every change is one transaction and goes through `domain.deployments.transition`.
A deployment of a fine-tuned model records the model's `job_id`, which is what stops
`services.jobs.delete` from removing weights that are being served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from dashtune.domain import ids
from dashtune.domain.deployments import (
    UNLOADED_STATES,
    DeploymentAction,
    DeploymentStatus,
    check_capacity,
    deployed_name,
    transition,
)
from dashtune.domain.errors import (
    Conflict,
    InvalidParameter,
    NotFound,
    ServiceUnavailable,
    UnsupportedOperation,
)
from dashtune.services import weights
from dashtune.services.engine import model_path
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Deployment, Model

A, S = DeploymentAction, DeploymentStatus


@dataclass
class CreateDeployment:
    """A create request as parsed off the wire; the service validates the values."""

    model_name: Any = None
    capacity: Any = None
    suffix: Any = None


@dataclass(frozen=True)
class Target:
    """What a model name in an inference request resolves to in the serving process."""

    key: str
    capacity: int
    weights: weights.Weights | None  # catalog models: loaded on first use from these


@dataclass(frozen=True)
class Work:
    """A deployment the supervisor has to act on, as it was when read."""

    id: int
    key: str
    deployed_model: str
    status: DeploymentStatus
    capacity: int
    ready_capacity: int


def serving_key(deployment_id: int) -> str:
    """The name a deployment has in the serving process (unique across workspaces)."""
    return f"dep-{deployment_id}"


def base_key(model_id: str) -> str:
    return f"base:{model_id}"


# -- callers ---------------------------------------------------------------------------


def create(rt: Runtime, who: Principal, req: CreateDeployment) -> Deployment:
    """A PENDING deployment; the supervisor loads it and makes it RUNNING (or FAILED)."""
    if not isinstance(req.model_name, str) or not req.model_name.strip():
        raise InvalidParameter("Missing model_name: the base or fine-tuned model to deploy.")
    model_name = req.model_name.strip()
    if req.capacity is None:
        raise InvalidParameter("Missing capacity: the number of concurrent requests (>= 1).")
    capacity = check_capacity(req.capacity)
    if req.suffix is not None and not isinstance(req.suffix, str):
        raise InvalidParameter(f"suffix must be a string, got {req.suffix!r}.")
    suffix = req.suffix.strip() if req.suffix and req.suffix.strip() else None

    with rt.db.write() as s:
        rt.db.lock(s, "workspaces", "id", who.workspace_id)
        base_model, job_id = _deployable(rt, s, who, model_name)
        name = deployed_name(model_name, suffix, ids.short_id())
        while suffix is None and _find(s, who.workspace_id, name) is not None:
            name = deployed_name(model_name, None, ids.short_id())
        if _find(s, who.workspace_id, name) is not None or _is_model_name(rt, s, who, name):
            raise Conflict(f"Model instance {name} already exists, please specify a suffix.")
        now = utcnow()
        dep = Deployment(
            workspace_id=who.workspace_id,
            deployed_model=name,
            model_name=model_name,
            base_model=base_model,
            job_id=job_id,
            status=S.PENDING.value,
            capacity=capacity,
            ready_capacity=0,
            creator=who.user_id,
            modifier=who.user_id,
            message=None,
            gmt_create=now,
            gmt_modified=now,
        )
        s.add(dep)
        s.flush()
    return dep


def _deployable(rt: Runtime, s: Any, who: Principal, model_name: str) -> tuple[str, str | None]:
    """(base model, job id) of a catalog model or a model of the caller's workspace."""
    if model_name in rt.catalog:
        return model_name, None
    row = s.scalars(
        select(Model).where(Model.workspace_id == who.workspace_id, Model.name == model_name)
    ).first()
    if row is None:
        known = ", ".join(sorted(rt.catalog.entries))
        raise InvalidParameter(
            f"Model '{model_name}' is not a base model of the catalog or a fine-tuned model of "
            f"this workspace; deploy a succeeded job's finetuned_output or one of: {known}."
        )
    return row.base_model, row.job_id


def _is_model_name(rt: Runtime, s: Any, who: Principal, name: str) -> bool:
    """A deployed_model must not shadow a model name that inference would otherwise call."""
    if name in rt.catalog:
        return True
    return (
        s.scalars(
            select(Model.id).where(Model.workspace_id == who.workspace_id, Model.name == name)
        ).first()
        is not None
    )


def _find(s: Any, workspace_id: str, name: str, lock: bool = False) -> Deployment | None:
    q = select(Deployment).where(
        Deployment.workspace_id == workspace_id, Deployment.deployed_model == name
    )
    if lock:
        q = q.with_for_update()
    return s.scalars(q).first()


def _get_for_update(rt: Runtime, s: Any, who: Principal, name: str) -> Deployment:
    dep = _find(s, who.workspace_id, name, lock=not rt.db.is_sqlite)
    if dep is None:
        raise NotFound(f"Deployment '{name}' not found.")
    return dep


def get(rt: Runtime, who: Principal, name: str) -> Deployment:
    with rt.db.read() as s:
        dep = _find(s, who.workspace_id, name)
    if dep is None:
        raise NotFound(f"Deployment '{name}' not found.")
    return dep


def page(rt: Runtime, who: Principal, page_no: int, page_size: int) -> tuple[list[Deployment], int]:
    """Newest first."""
    cond = Deployment.workspace_id == who.workspace_id
    with rt.db.read() as s:
        total = int(s.scalar(select(func.count()).select_from(Deployment).where(cond)) or 0)
        rows = s.scalars(
            select(Deployment)
            .where(cond)
            .order_by(Deployment.gmt_create.desc(), Deployment.id.desc())
            .offset((page_no - 1) * page_size)
            .limit(page_size)
        ).all()
    return list(rows), total


def scale(rt: Runtime, who: Principal, name: str, capacity: Any) -> Deployment:
    """Set the capacity; the supervisor applies it (ready_capacity follows)."""
    if capacity is None:
        raise InvalidParameter("Missing capacity: the number of concurrent requests (>= 1).")
    value = check_capacity(capacity)
    with rt.db.write() as s:
        dep = _get_for_update(rt, s, who, name)
        transition(name, dep.status, A.SCALE)
        dep.capacity = value
        dep.modifier = who.user_id
        dep.gmt_modified = utcnow()
    return dep


def delete(rt: Runtime, who: Principal, name: str) -> None:
    """Remove a deployment. One that may hold memory goes to DELETING until the supervisor
    has unloaded it; either way its job is released at once (the job may be deleted)."""
    with rt.db.write() as s:
        dep = _get_for_update(rt, s, who, name)
        nxt = transition(name, dep.status, A.DELETE)
        if dep.status in UNLOADED_STATES or not rt.settings.serving:
            s.delete(dep)
            return
        dep.status = nxt.value
        dep.job_id = None
        dep.modifier = who.user_id
        dep.gmt_modified = utcnow()


def tuned_key(workspace_id: str, name: str) -> str:
    """The serving key of a fine-tuned model called without a deployment."""
    return f"tuned:{workspace_id}:{name}"


def tuned_key_current(rt: Runtime, key: str) -> bool:
    """Does the fine-tuned model a `tuned:` serving key was loaded for still exist?"""
    _, workspace_id, name = key.split(":", 2)
    return model_path(rt, workspace_id, name) is not None


def resolve_target(rt: Runtime, who: Principal, name: Any, tuned_on_demand: bool = False) -> Target:
    """The serving key a model name calls: a RUNNING deployment of the caller's workspace,
    or a base model of the catalog (loaded on first use); with `tuned_on_demand` (the
    OpenAI-compatible route, as OpenAI serves `fine_tuned_model`) also a fine-tuned model
    of the workspace, loaded on first use like a base model."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameter("Missing model: a deployed_model or a base model id.")
    name = name.strip()
    with rt.db.read() as s:
        dep = _find(s, who.workspace_id, name)
    if dep is not None:
        if dep.status == S.DEPLOYING.value:
            # Loading, e.g. again after a serving restart: retryable, and says when.
            again = " again after a serving restart" if dep.message else ""
            raise ServiceUnavailable(
                f"Deployment '{dep.deployed_model}' is loading its model{again}; retry shortly."
            )
        if dep.status != S.RUNNING.value:
            raise UnsupportedOperation(_not_running(dep))
        return Target(serving_key(dep.id), dep.capacity, None)
    if name in rt.catalog:
        path, builtin = weights.base_weights(rt, name)
        spec = weights.Weights(path, None, builtin, name)
        return Target(base_key(name), rt.settings.serving_base_capacity, spec)
    tuned = model_path(rt, who.workspace_id, name)
    if tuned is not None and tuned_on_demand:
        spec = weights.resolve(rt, who.workspace_id, name)
        return Target(tuned_key(who.workspace_id, name), rt.settings.serving_base_capacity, spec)
    if tuned is not None:
        raise UnsupportedOperation(
            f"Model '{name}' is not deployed: deploy it (POST /api/v1/deployments) and call "
            "its deployed_model once the deployment is RUNNING."
        )
    raise NotFound(
        f"Model '{name}' not found: call a RUNNING deployment's deployed_model or a base "
        "model of the catalog."
    )


def _not_running(dep: Deployment) -> str:
    name, status = dep.deployed_model, dep.status
    if status == S.FAILED.value:
        return f"Deployment '{name}' FAILED: {dep.message or 'no reason recorded'}."
    if status == S.DELETING.value:
        return f"Deployment '{name}' is being deleted."
    return f"Deployment '{name}' is {status}; call it once it is RUNNING."


def callable_models(rt: Runtime, who: Principal) -> list[tuple[str, Any, str]]:
    """(name, created, owner) of what inference can call: RUNNING deployments, then the
    catalog's base models."""
    with rt.db.read() as s:
        rows = s.execute(
            select(Deployment.deployed_model, Deployment.gmt_create)
            .where(
                Deployment.workspace_id == who.workspace_id,
                Deployment.status == S.RUNNING.value,
            )
            .order_by(Deployment.gmt_create.desc())
        ).all()
    out: list[tuple[str, Any, str]] = [(r[0], r[1], who.workspace_id) for r in rows]
    return out + [(mid, None, "dashtune") for mid in sorted(rt.catalog.entries)]


# -- the serving supervisor -----------------------------------------------------------------


def serving_work(rt: Runtime) -> list[Work]:
    """Deployments to load, to rescale, or to unload, oldest first."""
    with rt.db.read() as s:
        rows = s.scalars(
            select(Deployment)
            .where(
                Deployment.status.in_([S.PENDING.value, S.DEPLOYING.value, S.DELETING.value])
                | (
                    (Deployment.status == S.RUNNING.value)
                    & (Deployment.ready_capacity != Deployment.capacity)
                )
            )
            .order_by(Deployment.id)
        ).all()
    return [
        Work(d.id, serving_key(d.id), d.deployed_model, S(d.status), d.capacity, d.ready_capacity)
        for d in rows
    ]


def begin_load(rt: Runtime, deployment_id: int) -> tuple[weights.Weights, int] | None:
    """PENDING -> DEPLOYING; the weights to load and the capacity. None: it went away.
    A model that can no longer be resolved fails the deployment here."""
    with rt.db.write() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None or dep.status not in (S.PENDING.value, S.DEPLOYING.value, S.RUNNING.value):
            return None
        if dep.status == S.PENDING.value:
            dep.status = transition(dep.deployed_model, dep.status, A.LOAD).value
            dep.gmt_modified = utcnow()
        workspace_id, model_name, capacity = dep.workspace_id, dep.model_name, dep.capacity
    try:
        found = weights.resolve(rt, workspace_id, model_name)
    except InvalidParameter as exc:
        load_failed(rt, deployment_id, exc.message)
        return None
    return found, capacity


def loaded(rt: Runtime, deployment_id: int, capacity: int) -> bool:
    """The serving process answers for it with `capacity` slots: RUNNING."""
    with rt.db.write() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None or dep.status not in (S.DEPLOYING.value, S.RUNNING.value):
            return False
        dep.status = transition(dep.deployed_model, dep.status, A.READY).value
        dep.ready_capacity = capacity
        dep.message = None
        dep.gmt_modified = utcnow()
        return True


def load_failed(rt: Runtime, deployment_id: int, message: str) -> None:
    with rt.db.write() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None or dep.status != S.DEPLOYING.value:
            return
        dep.status = transition(dep.deployed_model, dep.status, A.FAIL).value
        dep.ready_capacity = 0
        dep.message = message
        dep.gmt_modified = utcnow()


def unloaded(rt: Runtime, deployment_id: int) -> None:
    """The serving process has let go of a DELETING deployment: the row goes."""
    with rt.db.write() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is not None and dep.status == S.DELETING.value:
            s.delete(dep)


def serving_restarted(rt: Runtime) -> int:
    """A new serving process holds nothing: what was loaded must be loaded again."""
    with rt.db.write() as s:
        rows = s.scalars(
            select(Deployment).where(Deployment.status.in_([S.RUNNING.value, S.DEPLOYING.value]))
        ).all()
        for dep in rows:
            dep.status = transition(dep.deployed_model, dep.status, A.RELOAD).value
            dep.ready_capacity = 0
            dep.message = "The serving process restarted; loading the model again."
            dep.gmt_modified = utcnow()
        return len(rows)


def any_to_serve(rt: Runtime) -> bool:
    """Is there a deployment to load or to serve? (A DELETING one is not: see drop_deleting.)"""
    with rt.db.read() as s:
        found = s.scalars(
            select(Deployment.id)
            .where(Deployment.status.in_([S.PENDING.value, S.DEPLOYING.value, S.RUNNING.value]))
            .limit(1)
        ).first()
    return found is not None


def drop_deleting(rt: Runtime) -> int:
    """Remove DELETING rows that no serving process holds (e.g. left by a server that
    stopped before unloading them: its serving process exited with it)."""
    with rt.db.write() as s:
        rows = s.scalars(select(Deployment).where(Deployment.status == S.DELETING.value)).all()
        for dep in rows:
            s.delete(dep)
        return len(rows)


def wanted_keys(rt: Runtime) -> set[str]:
    """Serving keys that should stay loaded: anything not yet unloaded by the supervisor."""
    with rt.db.read() as s:
        rows = s.scalars(
            select(Deployment.id).where(
                Deployment.status.in_([S.DEPLOYING.value, S.RUNNING.value, S.DELETING.value])
            )
        ).all()
    return {serving_key(i) for i in rows}
