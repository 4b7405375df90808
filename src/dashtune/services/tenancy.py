"""Users, workspaces and API keys: who is calling, and in which workspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class IssuedKey:
    """A new API key (shown once) and where it acts by default."""

    key: str
    key_id: str  # the key's first characters: names it in `keys revoke --id`
    user_id: str
    workspace_id: str
    workspace_name: str


def ensure_user(rt: Runtime, name: str, workspace: str | None = None) -> tuple[str, Workspace]:
    """Create the user if missing; return (user_id, the workspace the new key uses).

    `workspace` names a workspace to join, by name or id (created if missing). Without
    it an existing user keeps its default workspace and a new user gets a workspace of
    its own, named after it, or after it plus a suffix when that name is taken: a new
    user never joins an existing workspace by accident of its name.
    """
    with rt.db.write() as s:
        user = s.scalars(select(User).where(User.name == name)).first()
        ws: Workspace | None = None
        if workspace:
            ws = s.scalars(
                select(Workspace).where((Workspace.name == workspace) | (Workspace.id == workspace))
            ).first()
            if ws is None:
                ws = _new_workspace(s, workspace)
        if user is None:
            user = User(id=ids.new_user_id(), name=name, created_at=utcnow())
            s.add(user)
            s.flush()
        elif ws is None:
            ws = s.scalars(
                select(Workspace)
                .join(Membership, Membership.workspace_id == Workspace.id)
                .where(Membership.user_id == user.id, Membership.is_default)
            ).first()
        if ws is None:
            taken = s.scalars(
                select(Workspace.id).where((Workspace.name == name) | (Workspace.id == name))
            ).first()
            ws = _new_workspace(s, f"{name}-{ids.short_id()}" if taken else name)
        member = s.get(Membership, (user.id, ws.id))
        if member is None:
            has_default = s.scalars(
                select(Membership).where(Membership.user_id == user.id, Membership.is_default)
            ).first()
            s.add(Membership(user_id=user.id, workspace_id=ws.id, is_default=has_default is None))
        return user.id, ws


def _new_workspace(s: Any, name: str) -> Workspace:
    ws = Workspace(id=ids.new_workspace_id(), name=name, job_count=0, created_at=utcnow())
    s.add(ws)
    s.flush()
    return ws


def issue_key(rt: Runtime, user: str, workspace: str | None = None) -> IssuedKey:
    """Issue a new API key for `user` (created if missing). The key is returned once, never stored."""
    if not user.strip():
        raise InvalidParameter("user must not be empty.")
    user_id, ws = ensure_user(rt, user, workspace)
    key = ids.new_api_key()
    with rt.db.write() as s:
        s.add(
            ApiKey(
                user_id=user_id,
                key_hash=ids.hash_api_key(key),
                prefix=key[:10],
                workspace_id=ws.id,
                revoked=False,
                created_at=utcnow(),
            )
        )
    return IssuedKey(key, key[:10], user_id, ws.id, ws.name)


def create_key(rt: Runtime, user: str, workspace: str | None = None) -> str:
    """`issue_key`, the key alone."""
    return issue_key(rt, user, workspace).key


def revoke_key(rt: Runtime, key: str) -> bool:
    """Revoke the key itself; False when no such key."""
    with rt.db.write() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_hash == ids.hash_api_key(key))).first()
        if row is None:
            return False
        row.revoked = True
        return True


def revoke_key_id(rt: Runtime, key_id: str) -> int:
    """Revoke the one live key whose id (first characters) starts with `key_id`.

    Returns how many live keys matched: only 1 revokes; 0 or 2+ revoke nothing.
    """
    if len(key_id) < 6:
        raise InvalidParameter("A key id must be at least 6 characters (e.g. sk-1a2b3c4).")
    with rt.db.write() as s:
        rows = s.scalars(
            select(ApiKey).where(ApiKey.prefix.startswith(key_id[:10]), ApiKey.revoked.is_(False))
        ).all()
        rows = [r for r in rows if r.prefix.startswith(key_id)]
        if len(rows) == 1:
            rows[0].revoked = True
        return len(rows)


def has_users(rt: Runtime) -> bool:
    with rt.db.read() as s:
        return s.scalars(select(User.id).limit(1)).first() is not None


def bearer_key(authorization: str | None) -> str:
    """The key of `Authorization: Bearer <key>`; InvalidApiKey when the header is not that."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise InvalidApiKey("Invalid API-key provided: send 'Authorization: Bearer <api key>'.")
    return authorization[7:].strip()


def authenticate(rt: Runtime, authorization: str | None, workspace: str | None) -> Principal:
    """Resolve `Authorization: Bearer <key>` and the optional workspace header."""
    return principal_for(rt, ids.hash_api_key(bearer_key(authorization)), workspace)


def principal_for(rt: Runtime, key_hash: str, workspace: str | None) -> Principal:
    """Who the key with this SHA-256 is, acting in `workspace` (None: the key's default)."""
    with rt.db.read() as s:
        row = s.execute(
            select(ApiKey.workspace_id, ApiKey.revoked, User.id, User.name)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == key_hash)
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
