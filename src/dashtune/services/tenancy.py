"""Users, workspaces and API keys: who is calling, and in which workspace."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from dashtune.domain import ids
from dashtune.domain.errors import AccessDenied, InvalidApiKey, InvalidParameter
from dashtune.services.runtime import Runtime, utcnow
from dashtune.store.tables import ApiKey, Membership, User, Workspace


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a user acting in one workspace."""

    user_id: str
    user_name: str
    workspace_id: str


def ensure_user(rt: Runtime, name: str, workspace: str | None = None) -> tuple[str, str]:
    """Create the user (and its workspace) if missing; return (user_id, workspace_id).

    `workspace` names a workspace to join (created if missing); by default each user
    gets a workspace of its own named after it.
    """
    ws_name = workspace or name
    with rt.db.write() as s:
        user = s.scalars(select(User).where(User.name == name)).first()
        if user is None:
            user = User(id=ids.new_user_id(), name=name, created_at=utcnow())
            s.add(user)
        ws = s.scalars(
            select(Workspace).where((Workspace.name == ws_name) | (Workspace.id == ws_name))
        ).first()
        if ws is None:
            ws = Workspace(
                id=ids.new_workspace_id(), name=ws_name, job_count=0, created_at=utcnow()
            )
            s.add(ws)
        s.flush()
        member = s.get(Membership, (user.id, ws.id))
        if member is None:
            has_default = s.scalars(
                select(Membership).where(Membership.user_id == user.id, Membership.is_default)
            ).first()
            s.add(Membership(user_id=user.id, workspace_id=ws.id, is_default=has_default is None))
        return user.id, ws.id


def create_key(rt: Runtime, user: str, workspace: str | None = None) -> str:
    """Issue a new API key for `user` (created if missing). The key is returned once, never stored."""
    if not user.strip():
        raise InvalidParameter("user must not be empty.")
    user_id, ws_id = ensure_user(rt, user, workspace)
    key = ids.new_api_key()
    with rt.db.write() as s:
        s.add(
            ApiKey(
                user_id=user_id,
                key_hash=ids.hash_api_key(key),
                prefix=key[:10],
                workspace_id=ws_id,
                revoked=False,
                created_at=utcnow(),
            )
        )
    return key


def revoke_key(rt: Runtime, key: str) -> bool:
    with rt.db.write() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_hash == ids.hash_api_key(key))).first()
        if row is None:
            return False
        row.revoked = True
        return True


def has_users(rt: Runtime) -> bool:
    with rt.db.read() as s:
        return s.scalars(select(User.id).limit(1)).first() is not None


def authenticate(rt: Runtime, authorization: str | None, workspace: str | None) -> Principal:
    """Resolve `Authorization: Bearer <key>` and the optional workspace header."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise InvalidApiKey("Invalid API-key provided: send 'Authorization: Bearer <api key>'.")
    key = authorization[7:].strip()
    with rt.db.read() as s:
        row = s.execute(
            select(ApiKey.workspace_id, ApiKey.revoked, User.id, User.name)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == ids.hash_api_key(key))
        ).first()
        if row is None or row.revoked:
            raise InvalidApiKey("Invalid API-key provided.")
        ws_id = row.workspace_id
        if workspace and workspace != ws_id:
            member = s.execute(
                select(Membership.workspace_id)
                .join(Workspace, Workspace.id == Membership.workspace_id)
                .where(
                    Membership.user_id == row.id,
                    (Workspace.id == workspace) | (Workspace.name == workspace),
                )
            ).first()
            if member is None:
                raise AccessDenied(f"This API key may not use workspace '{workspace}'.")
            ws_id = member.workspace_id
        return Principal(user_id=row.id, user_name=row.name, workspace_id=ws_id)
