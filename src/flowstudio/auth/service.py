"""Accounts: registration, sign-in with server-side sessions, CSRF and API tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flowstudio.auth import repository
from flowstudio.auth.models import ApiToken, User, UserSession
from flowstudio.auth.ratelimit import LoginRateLimiter
from flowstudio.auth.security import (
    PasswordHasher,
    csrf_matches,
    csrf_token_for,
    new_api_token,
    new_session_token,
    token_hash,
)
from flowstudio.db import utcnow
from flowstudio.errors import (
    EmailTaken,
    InvalidCredentials,
    NotFound,
    RateLimitedError,
    RegistrationClosed,
)

# Refresh a session's last_seen_at at most this often, so reads do not write on every request.
_TOUCH_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class SignedIn:
    user: User
    session_token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Principal:
    """Who is calling, and how: a browser session (needs CSRF) or an API token (does not)."""

    user: User
    session_token_hash: str | None = None
    session_id: uuid.UUID | None = None
    api_token_id: uuid.UUID | None = None
    # Its last-use time is older than _TOUCH_EVERY: record_use() should refresh it.
    touch_due: bool = False

    @property
    def uses_cookie(self) -> bool:
        return self.session_token_hash is not None


class PrincipalCache:
    """Who a session or API token belongs to, remembered for a few seconds.

    Every authenticated request starts with this lookup; for a client making many requests it
    is the same answer each time. Signing out, rotating a session and revoking a token forget
    the user's answers at once in this process, and keep them from being remembered again for
    `seconds` (the change commits after it is made, and a lookup in between would read the
    old row); another process (several `serve --no-worker` behind a load balancer) notices
    within `seconds`. Zero seconds turns the cache off.
    """

    def __init__(self, *, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        # key -> (principal, fresh until (monotonic), session expiry or None)
        self._entries: dict[str, tuple[Principal, float, datetime | None]] = {}
        # user id -> until when (monotonic) nothing of theirs is remembered
        self._quiet: dict[uuid.UUID, float] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, fresh_until, expires_at = entry
        if time.monotonic() >= fresh_until or (expires_at is not None and utcnow() >= expires_at):
            del self._entries[key]
            return None
        return principal

    def put(self, key: str, principal: Principal, *, expires_at: datetime | None = None) -> None:
        if self.seconds <= 0:
            return
        now = time.monotonic()
        quiet_until = self._quiet.get(principal.user.id)
        if quiet_until is not None:
            if now < quiet_until:
                return
            del self._quiet[principal.user.id]
        if len(self._entries) >= self.max_entries:
            stale = [k for k, (_, fresh_until, _) in self._entries.items() if fresh_until <= now]
            for stale_key in stale or list(self._entries)[: self.max_entries // 10 or 1]:
                del self._entries[stale_key]
        # What is remembered never asks for a last-use refresh (the lookup that loaded it did),
        # and holds a copy of the user that no session owns: a rollback in the request that
        # loaded the user expires that instance, and later requests must still read it.
        remembered = replace(principal, user=_unowned_copy(principal.user), touch_due=False)
        self._entries[key] = (remembered, now + self.seconds, expires_at)

    def clear(self) -> None:
        self._entries.clear()

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop every answer naming this user, and remember none for a while."""
        now = time.monotonic()
        self._quiet = {u: t for u, t in self._quiet.items() if t > now}
        self._quiet[user_id] = now + self.seconds
        for key in [k for k, (p, _, _) in self._entries.items() if p.user.id == user_id]:
            del self._entries[key]


def _unowned_copy(user: User) -> User:
    return User(**{column.key: getattr(user, column.key) for column in _USER_COLUMNS})


_USER_COLUMNS = sa_inspect(User).column_attrs


def _session_key(hashed: str) -> str:
    return "session:" + hashed


def _token_key(hashed: str) -> str:
    return "token:" + hashed


def normalize_email(email: str) -> str:
    return email.strip().lower()


class AuthService:
    def __init__(
        self,
        *,
        secret: bytes,
        hasher: PasswordHasher,
        limiter: LoginRateLimiter,
        session_lifetime: timedelta,
        registration_open: bool,
        principal_cache_seconds: float = 0,
    ) -> None:
        self.principals = PrincipalCache(seconds=principal_cache_seconds)
        self.secret = secret
        self.hasher = hasher
        self.limiter = limiter
        self.session_lifetime = session_lifetime
        self.registration_open = registration_open

    async def _hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def create_user(
        self,
        db: AsyncSession,
        *,
        email: str,
        password: str,
        is_admin: bool = False,
        language: str | None = None,
    ) -> User:
        email = normalize_email(email)
        if await repository.get_user_by_email(db, email) is not None:
            raise EmailTaken("An account with this email already exists; sign in instead.")
        user = User(
            email=email,
            password_hash=await self._hash_password(password),
            is_admin=is_admin,
            language=language,
        )
        try:
            async with db.begin_nested():
                db.add(user)
                await db.flush()
        except IntegrityError:
            raise EmailTaken(
                "An account with this email already exists; sign in instead."
            ) from None
        return user

    async def register(
        self, db: AsyncSession, *, email: str, password: str, language: str | None = None
    ) -> SignedIn:
        if not self.registration_open:
            raise RegistrationClosed("Ask the administrator of this server for an account.")
        user = await self.create_user(db, email=email, password=password, language=language)
        return await self._start_session(db, user=user)

    async def login(
        self,
        db: AsyncSession,
        *,
        email: str,
        password: str,
        client: str,
        previous_token: str | None = None,
    ) -> SignedIn:
        email = normalize_email(email)
        keys = (f"email:{email}", f"client:{client}")
        wait = await self.limiter.retry_after(db, *keys)
        if wait is not None:
            seconds = max(1, int(wait + 0.999))
            raise RateLimitedError(
                f"Too many failed sign-in attempts; try again in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        user = await repository.get_user_by_email(db, email)
        # The hash is checked even for unknown emails, so timing does not reveal accounts.
        valid = await asyncio.to_thread(
            self.hasher.verify, password, user.password_hash if user else None
        )
        if not valid or user is None or user.disabled_at is not None:
            await self.limiter.record_failure(db, *keys)
            # The one write a failed request keeps: the error rolls the rest back.
            await db.commit()
            raise InvalidCredentials("Wrong email or password.")
        await self.limiter.reset(db, f"email:{email}")
        if previous_token:
            self.principals.forget_user(user.id)
            await repository.delete_session(db, token_hash(previous_token))
        return await self._start_session(db, user=user)

    async def _start_session(self, db: AsyncSession, *, user: User) -> SignedIn:
        token = new_session_token()
        hashed = token_hash(token)
        now = utcnow()
        expires_at = now + self.session_lifetime
        db.add(
            UserSession(
                user_id=user.id,
                token_hash=hashed,
                created_at=now,
                expires_at=expires_at,
                last_seen_at=now,
            )
        )
        await db.flush()
        return SignedIn(
            user=user,
            session_token=token,
            csrf_token=csrf_token_for(self.secret, hashed),
            expires_at=expires_at,
        )

    async def logout(
        self, db: AsyncSession, *, user_id: uuid.UUID, session_token: str | None
    ) -> None:
        if session_token:
            self.principals.forget_user(user_id)
            await repository.delete_session(db, token_hash(session_token))

    async def principal_from_session(
        self, sessions: async_sessionmaker[AsyncSession], *, session_token: str
    ) -> Principal | None:
        """Whose sign-in session this is; the database is read (in a session of `sessions`)
        only when the principal cache has no answer."""
        hashed = token_hash(session_token)
        key = _session_key(hashed)
        if (cached := self.principals.get(key)) is not None:
            return cached
        now = utcnow()
        async with sessions() as db:
            found = await repository.get_session_with_user(db, hashed, now)
        if found is None:
            return None
        session_id, last_seen_at, expires_at, user = found
        principal = Principal(
            user=user,
            session_token_hash=hashed,
            session_id=session_id,
            touch_due=now - last_seen_at > _TOUCH_EVERY,
        )
        self.principals.put(key, principal, expires_at=expires_at)
        return principal

    async def principal_from_api_token(
        self, sessions: async_sessionmaker[AsyncSession], *, token: str
    ) -> Principal | None:
        """Whose API token this is; like principal_from_session."""
        hashed = token_hash(token)
        key = _token_key(hashed)
        if (cached := self.principals.get(key)) is not None:
            return cached
        async with sessions() as db:
            found = await repository.get_api_token_with_user(db, hashed)
        if found is None:
            return None
        api_token_id, last_used_at, user = found
        principal = Principal(
            user=user,
            api_token_id=api_token_id,
            touch_due=last_used_at is None or utcnow() - last_used_at > _TOUCH_EVERY,
        )
        self.principals.put(key, principal)
        return principal

    async def record_use(self, db: AsyncSession, *, principal: Principal) -> None:
        """Refresh the last-use time of the principal's session or token. Callers run it in a
        transaction of its own, so the request's own can stay read-only."""
        now = utcnow()
        if principal.session_id is not None:
            await repository.touch_session(db, principal.session_id, now)
        if principal.api_token_id is not None:
            await repository.touch_api_token(db, principal.api_token_id, now)

    def csrf_token(self, principal: Principal) -> str | None:
        if principal.session_token_hash is None:
            return None
        return csrf_token_for(self.secret, principal.session_token_hash)

    def csrf_valid(self, principal: Principal, presented: str | None) -> bool:
        if principal.session_token_hash is None:
            return True
        return csrf_matches(self.secret, principal.session_token_hash, presented)

    async def create_api_token(
        self, db: AsyncSession, *, user: User, name: str
    ) -> tuple[ApiToken, str]:
        token = new_api_token()
        api_token = ApiToken(
            user_id=user.id,
            name=name.strip(),
            token_prefix=token[:10],
            token_hash=token_hash(token),
        )
        db.add(api_token)
        await db.flush()
        return api_token, token

    async def list_api_tokens(self, db: AsyncSession, *, user: User) -> list[ApiToken]:
        return await repository.list_api_tokens(db, user.id)

    async def set_language(self, db: AsyncSession, *, user: User, language: str) -> User:
        """Store the pages' language with the account (remembered answers forget the user, so
        the next request reads it)."""
        stored = await db.get(User, user.id)
        if stored is None:
            raise NotFound("No such user.")
        stored.language = language
        await db.flush()
        self.principals.forget_user(user.id)
        return stored

    async def revoke_api_token(self, db: AsyncSession, *, user: User, token_id: uuid.UUID) -> None:
        api_token = await repository.get_api_token(db, user.id, token_id)
        if api_token is None:
            raise NotFound("No such API token.")
        api_token.revoked_at = utcnow()
        await db.flush()
        self.principals.forget_user(user.id)


__all__ = [
    "AuthService",
    "Principal",
    "PrincipalCache",
    "SignedIn",
    "UserSession",
    "normalize_email",
]
