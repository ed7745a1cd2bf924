"""The queue at depth: round-robin claims that respect the per-user cap, never claim a row
twice, and keep user_queues in step with the generations themselves; admission control."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, case, column, func, insert, select, table, text, update

from flowstudio.auth.models import User
from flowstudio.db import UTCDateTime, create_engine, session_factory, utcnow
from flowstudio.generations import repository
from flowstudio.generations.models import Generation, UserQueue
from flowstudio.ids import uuid7
from flowstudio.runs.models import Run
from tests.fixtures.flows import generate, start_run

LEASE = timedelta(minutes=5)


class Queue:
    """Users, runs and pending rows written straight into the tables, and claims made
    through the repository, as a worker makes them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.runs: dict[uuid.UUID, uuid.UUID] = {}

    async def add_user(self) -> uuid.UUID:
        user_id, run_id = uuid7(), uuid7()
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(User).values(
                    id=user_id, email=f"{user_id.hex}@example.com", password_hash="x"
                )
            )
            await connection.execute(
                insert(Run).values(
                    id=run_id,
                    user_id=user_id,
                    flow_slug="quick",
                    flow_snapshot={},
                    title="queue",
                    inputs={},
                )
            )
        self.runs[user_id] = run_id
        return user_id

    async def enqueue(
        self, user_id: uuid.UUID, count: int, *, due: datetime | None = None
    ) -> list[uuid.UUID]:
        now = utcnow()
        rows = [
            {
                "id": uuid7(),
                "user_id": user_id,
                "run_id": self.runs[user_id],
                "step_id": "image",
                "flow_slug": "quick",
                "batch_id": uuid7(),
                "batch_index": 0,
                "source": "generated",
                "status": "pending",
                "prompt": "a queued thing",
                "params": {},
                "provider": "local",
                "model": "local",
                "output": {},
                "attempts": 0,
                "next_attempt_at": due or now,
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(count)
        ]
        if rows:
            # Only these columns, typed, with no defaults: the schema may be an older revision's.
            columns = Generation.__table__.c
            generations = table("generations", *(column(k, columns[k].type) for k in rows[0]))
            async with self.engine.begin() as connection:
                for start in range(0, len(rows), 500):
                    await connection.execute(insert(generations), rows[start : start + 500])
        return [row["id"] for row in rows]

    async def claim(self, *, owner: str = "w", limit: int, per_user: int) -> list[Generation]:
        async with self.sessions() as db:
            rows = await repository.claim_pending(
                db, owner=owner, limit=limit, per_user=per_user, now=utcnow(), lease=LEASE
            )
            await db.commit()
        return rows

    async def finish(self, ids: list[uuid.UUID], status: str = "succeeded") -> None:
        """Finish rows as workers do, one user's at a time in user order (each change locks
        the user's queue row on PostgreSQL)."""
        if not ids:
            return
        async with self.engine.begin() as connection:
            owners = dict(
                (
                    await connection.execute(
                        select(Generation.id, Generation.user_id).where(Generation.id.in_(ids))
                    )
                ).all()
            )
            for user_id in sorted(set(owners.values())):
                await connection.execute(
                    update(Generation)
                    .where(Generation.id.in_([g for g in ids if owners[g] == user_id]))
                    .values(status=status, lease_owner=None, updated_at=utcnow())
                )

    async def running_by_user(self) -> Counter:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(Generation.user_id, func.count())
                .where(Generation.status == "running")
                .group_by(Generation.user_id)
            )
            return Counter(dict(rows.all()))

    async def assert_in_step(self) -> None:
        """user_queues says what the generations say."""
        async with self.engine.connect() as connection:
            actual = {
                user_id: (pending, running, _utc(due))
                for user_id, pending, running, due in await connection.execute(
                    select(
                        Generation.user_id,
                        func.sum(case((Generation.status == "pending", 1), else_=0)),
                        func.sum(case((Generation.status == "running", 1), else_=0)),
                        func.min(
                            case((Generation.status == "pending", Generation.next_attempt_at))
                        ),
                    ).group_by(Generation.user_id)
                )
            }
            kept = {
                user_id: (pending, running, _utc(due))
                for user_id, pending, running, due in await connection.execute(
                    select(
                        UserQueue.user_id,
                        UserQueue.pending,
                        UserQueue.running,
                        UserQueue.next_due_at,
                    )
                )
            }
        for user_id, counts in actual.items():
            assert kept.get(user_id, (0, 0, None)) == counts, user_id
        for user_id, counts in kept.items():
            assert counts[:2] == (0, 0) or user_id in actual


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's min() over the stored text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@pytest.fixture
async def queue(engine) -> Queue:
    return Queue(engine)


# -- the property ------------------------------------------------------------------------------

scenarios = st.fixed_dictionaries(
    {
        "backlogs": st.lists(st.integers(0, 12), min_size=1, max_size=4),
        "per_user": st.integers(1, 3),
        "limits": st.lists(st.integers(1, 5), min_size=1, max_size=6),
        "seed": st.integers(0, 2**32 - 1),
    }
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
def test_claims_are_fair_capped_and_exactly_once(database_url, backend, scenario):
    """Over users, backlogs and per-user caps: no user ever runs more than its cap, every due
    row is claimed exactly once, the counts stay in step, and a user who joins with one due
    row is served within one round (before any other user is served twice) however deep
    the others' backlogs are."""
    asyncio.run(_property(database_url, scenario))


async def _property(database_url: str, scenario: dict[str, Any]) -> None:
    engine = create_engine(database_url)
    try:
        await _clear(engine)
        queue = Queue(engine)
        rng = random.Random(scenario["seed"])
        per_user = scenario["per_user"]
        users = [await queue.add_user() for _ in scenario["backlogs"]]
        expected: set[uuid.UUID] = set()
        for user_id, backlog in zip(users, scenario["backlogs"], strict=True):
            expected.update(await queue.enqueue(user_id, backlog))
        # A row due only later is not claimed before it is due.
        later_user = users[0]
        later = await queue.enqueue(later_user, 1, due=utcnow() + timedelta(hours=1))
        await queue.assert_in_step()

        claimed: list[uuid.UUID] = []
        newcomer: uuid.UUID | None = None
        newcomer_row: uuid.UUID | None = None
        others_since = 0
        rounds = 0
        while set(claimed) != expected:
            rounds += 1
            assert rounds < 500, "the queue stopped making progress"
            limit = scenario["limits"][rounds % len(scenario["limits"])]
            if rounds == 2:
                newcomer = await queue.add_user()
                [newcomer_row] = await queue.enqueue(newcomer, 1)
                expected.add(newcomer_row)
            rows = await queue.claim(limit=limit, per_user=per_user)
            claimed.extend(g.id for g in rows)
            assert len(rows) <= limit
            running = await queue.running_by_user()
            assert max(running.values(), default=0) <= per_user, running
            if newcomer_row is not None and newcomer_row not in claimed:
                # Within one round: before it, each other user is served at most once.
                others_since += len(rows)
                assert others_since <= len(users), "the newcomer waited more than a round"
            await queue.assert_in_step()
            # Some running rows finish (succeeded, failed, or retried later), freeing slots.
            async with engine.connect() as connection:
                running_ids = list(
                    (
                        await connection.execute(
                            select(Generation.id).where(Generation.status == "running")
                        )
                    ).scalars()
                )
            done = [g for g in running_ids if rng.random() < 0.7] or running_ids[:1]
            await queue.finish(done, status=rng.choice(["succeeded", "failed"]))
            await queue.assert_in_step()
        assert len(claimed) == len(set(claimed)), "a row was claimed twice"
        assert not set(later) & set(claimed)
    finally:
        await engine.dispose()


async def _clear(engine: Any) -> None:
    from flowstudio.models import metadata

    async with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            await connection.execute(table.delete())


# -- many claimers at once ---------------------------------------------------------------------


async def test_four_claimers_run_each_of_10000_rows_once(queue):
    users = [await queue.add_user() for _ in range(20)]
    expected: set[uuid.UUID] = set()
    for user_id in users:
        expected.update(await queue.enqueue(user_id, 500))

    async def claimer(name: str) -> list[uuid.UUID]:
        mine: list[uuid.UUID] = []
        idle = 0
        while idle < 3:
            rows = await queue.claim(owner=name, limit=16, per_user=4)
            if not rows:
                idle += 1  # another claimer may hold the users this one would serve
                await asyncio.sleep(0.01)
                continue
            idle = 0
            mine.extend(g.id for g in rows)
            await queue.finish([g.id for g in rows])
        return mine

    results = await asyncio.gather(*[claimer(f"w{i}") for i in range(4)])
    claimed = [gid for result in results for gid in result]
    assert len(claimed) == len(set(claimed)) == 10_000
    assert set(claimed) == expected
    await queue.assert_in_step()


# -- the rows follow every path ----------------------------------------------------------------


async def test_counts_follow_retry_release_delete_and_user_removal(queue, engine):
    user_id = await queue.add_user()
    ids = await queue.enqueue(user_id, 3)
    [first] = await queue.claim(limit=1, per_user=5)
    assert first.id == ids[0]
    await queue.assert_in_step()
    # Retried later: back to pending, not due.
    async with engine.begin() as connection:
        await connection.execute(
            update(Generation)
            .where(Generation.id == first.id)
            .values(status="pending", next_attempt_at=utcnow() + timedelta(minutes=10))
        )
    await queue.assert_in_step()
    # Purged while pending: the row goes, and with it its count.
    async with engine.begin() as connection:
        await connection.execute(Generation.__table__.delete().where(Generation.id == ids[1]))
    await queue.assert_in_step()
    rows = await queue.claim(limit=5, per_user=5)
    assert [g.id for g in rows] == [ids[2]]  # the retried row is not due yet
    async with engine.begin() as connection:
        await connection.execute(User.__table__.delete().where(User.id == user_id))
    async with engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(UserQueue))).scalar() == 0


async def test_claim_reads_about_as_many_rows_as_it_claims(queue, engine, backend):
    """The plan: users from the ready index, each user's row from its pending index; no scan
    of the generations table, however many rows wait."""
    heavy = await queue.add_user()
    await queue.enqueue(heavy, 3000)
    light = await queue.add_user()
    [light_row] = await queue.enqueue(light, 1)
    sqlite = backend in ("sqlite", "d1")  # D1 is SQLite
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    lock = "" if sqlite else "FOR UPDATE SKIP LOCKED"
    statement = text(
        explain + repository._CLAIM_ROUND_SQL.format(lock=lock, columns="id")
    ).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("lease_until", type_=UTCDateTime())
    )
    now = utcnow()
    params = {"now": now, "lease_until": now, "owner": "o", "per_user": 2, "limit": 2}
    async with engine.connect() as connection:
        plan = " | ".join(str(row[-1]) for row in await connection.execute(statement, params))
    assert "SCAN generations" not in plan and "Seq Scan on generations" not in plan, plan
    assert "ix_generations_pending" in plan, plan
    rows = await queue.claim(limit=2, per_user=2)
    assert light_row in {g.id for g in rows}


# -- admission control -------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"max_pending_per_user": 3}])
async def test_a_full_queue_answers_queue_full_and_queues_nothing(app, alice, bob):
    await app.state.worker.stop()
    run = await start_run(alice)
    first = await generate(alice, run["id"], "object", count=2, wait=False)
    assert first.status_code == 202
    refused = await generate(alice, run["id"], "object", count=2, wait=False)
    assert refused.status_code == 429
    problem = refused.json()
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "queue_full"
    assert (problem["pending"], problem["limit"]) == (2, 3)
    assets = await alice.get(f"/api/runs/{run['id']}/steps/object/assets")
    assert len(assets.json()["items"]) == 2
    # One more still fits, and another user's queue is their own.
    assert (await generate(alice, run["id"], "object", count=1, wait=False)).status_code == 202
    other = await start_run(bob)
    assert (await generate(bob, other["id"], "object", count=3, wait=False)).status_code == 202


@pytest.mark.parametrize("settings_overrides", [{"max_pending_per_user": 0}])
async def test_zero_means_no_limit(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    for _ in range(3):
        assert (await generate(alice, run["id"], "object", count=4, wait=False)).status_code == 202


async def test_users_take_turns(queue):
    """Claimed one at a time, users with backlogs are served in rotation, each once a round."""
    users = [await queue.add_user() for _ in range(3)]
    for user_id in users:
        await queue.enqueue(user_id, 20)
    served = []
    for _ in range(12):
        [row] = await queue.claim(limit=1, per_user=10)
        served.append(row.user_id)
        await queue.finish([row.id])
    rounds = [served[i : i + 3] for i in range(0, 12, 3)]
    assert all(sorted(r) == sorted(users) for r in rounds), served
    assert all(r == rounds[0] for r in rounds), served


async def test_the_migration_moves_existing_queues(empty_database_url):
    from flowstudio import migrate

    engine = create_engine(empty_database_url)
    try:
        await migrate.upgrade(engine, "0004")
        queue = Queue(engine)
        alice, bob = await queue.add_user(), await queue.add_user()
        await queue.enqueue(alice, 3)
        later = utcnow() + timedelta(minutes=5)
        [running, *_] = await queue.enqueue(bob, 2, due=later)
        async with engine.begin() as connection:
            await connection.execute(
                update(Generation).where(Generation.id == running).values(status="running")
            )
        await migrate.upgrade(engine)
        await queue.assert_in_step()
        async with engine.connect() as connection:
            assert (
                await connection.execute(select(func.count()).select_from(UserQueue))
            ).scalar() == 2
        rows = await queue.claim(limit=10, per_user=10)
        assert Counter(g.user_id for g in rows) == Counter({alice: 3})
    finally:
        await engine.dispose()


async def test_a_change_that_waits_for_another_sees_it(queue, engine):
    """A request queues a row while a worker's finish of the same user's other row waits for
    it: the user's earliest due time must still name the new row (a finish that read it from
    before its wait wrote "nothing due", and the row was never claimed)."""
    user_id = await queue.add_user()
    [running] = await queue.enqueue(user_id, 1)
    [claimed] = await queue.claim(limit=1, per_user=5)
    assert claimed.id == running
    request = await engine.connect()
    finish = await engine.connect()
    try:
        await request.begin()
        await request.execute(
            insert(Generation),
            [
                {
                    "id": uuid7(),
                    "user_id": user_id,
                    "run_id": queue.runs[user_id],
                    "step_id": "image",
                    "flow_slug": "quick",
                    "batch_id": uuid7(),
                    "source": "generated",
                    "status": "pending",
                    "prompt": "queued meanwhile",
                    "params": {},
                    "provider": "local",
                    "model": "local",
                    "output": {},
                    "next_attempt_at": utcnow(),
                }
            ],
        )

        async def finish_running() -> None:
            await finish.begin()
            await finish.execute(
                update(Generation).where(Generation.id == running).values(status="succeeded")
            )
            await finish.commit()

        waiting = asyncio.create_task(finish_running())
        await asyncio.sleep(0.3)  # PostgreSQL: it waits for the request's lock on the user
        await request.commit()
        await asyncio.wait_for(waiting, 30)
    finally:
        await request.close()
        await finish.close()
    await queue.assert_in_step()
    rows = await queue.claim(limit=5, per_user=5)
    assert [g.prompt for g in rows] == ["queued meanwhile"]


@pytest.mark.parametrize("settings_overrides", [{"max_pending_per_user": 5}])
async def test_parallel_generates_at_the_limit_never_overshoot_it(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    answers = await asyncio.gather(
        *(generate(alice, run["id"], "object", count=1, wait=False) for _ in range(12))
    )
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == Counter({202: 5, 429: 7}), statuses
    assets = await alice.get(f"/api/runs/{run['id']}/steps/object/assets")
    assert len(assets.json()["items"]) == 5
