"""D1 has no interactive transactions; a unit of work goes out as one batch, which D1 runs all
or nothing (db/d1.py). These pin what that promises, on the local D1."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from flowstudio.auth.models import User


@pytest.fixture
def backend() -> str:
    return "d1"


def _user(email: str) -> User:
    return User(email=email, password_hash="x")


async def _committed(engine, email: str) -> None:
    async with async_sessionmaker(engine)() as db:
        db.add(_user(email))
        await db.commit()


async def _emails(engine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(select(User.email).order_by(User.email)))


async def test_a_unit_that_fails_half_way_leaves_nothing(engine):
    await _committed(engine, "taken@example.com")
    async with async_sessionmaker(engine)() as db:
        db.add_all([_user("first@example.com"), _user("second@example.com")])
        await db.flush()  # kept: nothing has gone to D1 yet
        db.add(_user("taken@example.com"))  # the third write breaks the unique email
        await db.flush()
        with pytest.raises(IntegrityError):
            await db.commit()  # one batch: D1 refuses it whole
    assert await _emails(engine) == ["taken@example.com"]


async def test_a_rolled_back_unit_wrote_nothing(engine):
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as db:
        db.add(_user("maybe@example.com"))
        await db.flush()
        await db.rollback()
    assert await _emails(engine) == []


async def test_a_read_in_a_unit_sees_its_own_writes(engine):
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as db:
        db.add(_user("mine@example.com"))
        await db.flush()
        count = await db.scalar(select(func.count()).select_from(User))
        assert count == 1
        await db.commit()
    assert await _emails(engine) == ["mine@example.com"]


async def test_a_savepoint_raises_its_conflict_where_the_code_catches_it(engine):
    await _committed(engine, "taken@example.com")
    async with async_sessionmaker(engine)() as db:
        db.add(_user("before@example.com"))
        await db.flush()
        with pytest.raises(IntegrityError):
            async with db.begin_nested():
                db.add(_user("taken@example.com"))
                await db.flush()
        # The conflict was caught; the unit goes on and commits what it kept before.
        db.add(_user("after@example.com"))
        await db.commit()
    assert await _emails(engine) == [
        "after@example.com",
        "before@example.com",
        "taken@example.com",
    ]
