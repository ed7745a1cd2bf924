"""SQL for users, sessions and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import ApiToken, User, UserSession


async def get_user_by_email(db: AsyncSession, email: str) -> User | None:
    return await db.scalar(select(User).where(User.email == email))


# Built once: these run on every authenticated request.
_SESSION_WITH_USER = (
    select(UserSession.id, UserSession.last_seen_at, UserSession.expires_at, User)
    .join(User, User.id == UserSession.user_id)
    .where(
        UserSession.token_hash == bindparam("token_hash"),
        UserSession.expires_at > bindparam("now"),
        User.disabled_at.is_(None),
    )
)
_API_TOKEN_WITH_USER = (
    select(ApiToken.id, ApiToken.last_used_at, User)
    .join(User, User.id == ApiToken.user_id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        User.disabled_at.is_(None),
    )
)


async def get_session_with_user(
    db: AsyncSession, token_hash: str, now: datetime
) -> tuple[uuid.UUID, datetime, datetime, User] | None:
    """(session id, last seen, expires at, user) of a live session."""
    row = (await db.execute(_SESSION_WITH_USER, {"token_hash": token_hash, "now": now})).first()
    return (row[0], row[1], row[2], row[3]) if row else None


async def delete_session(db: AsyncSession, token_hash: str) -> None:
    await db.execute(delete(UserSession).where(UserSession.token_hash == token_hash))


async def count_expired_sessions(db: AsyncSession, now: datetime) -> int:
    return await db.scalar(
        select(func.count()).select_from(UserSession).where(UserSession.expires_at <= now)
    )


async def delete_expired_sessions(db: AsyncSession, now: datetime) -> int:
    # RETURNING, not rowcount: on D1 a write without it goes out with the commit's batch.
    result = await db.execute(
        delete(UserSession).where(UserSession.expires_at <= now).returning(UserSession.id)
    )
    return len(result.all())


async def touch_session(db: AsyncSession, session_id: uuid.UUID, now: datetime) -> None:
    await db.execute(
        update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now)
    )


async def get_api_token_with_user(
    db: AsyncSession, token_hash: str
) -> tuple[uuid.UUID, datetime | None, User] | None:
    """(token id, last used, user) of a live API token."""
    row = (await db.execute(_API_TOKEN_WITH_USER, {"token_hash": token_hash})).first()
    return (row[0], row[1], row[2]) if row else None


async def touch_api_token(db: AsyncSession, token_id: uuid.UUID, now: datetime) -> None:
    await db.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


async def list_api_tokens(db: AsyncSession, user_id: uuid.UUID) -> list[ApiToken]:
    result = await db.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    return list(result)


async def get_api_token(
    db: AsyncSession, user_id: uuid.UUID, token_id: uuid.UUID
) -> ApiToken | None:
    return await db.scalar(
        select(ApiToken).where(
            ApiToken.id == token_id, ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)
        )
    )
