"""The load script's core in a short run, on SQLite and on PostgreSQL: its checks must hold.

Only correctness is asserted (no 5xx, accepted generations == persisted ones, nothing stuck);
its latencies belong to `python -m bench.load`, not to the test suite.
"""

from __future__ import annotations

import pytest
from bench.load import serve_and_load


async def test_short_load_keeps_the_books(database_url: str, tmp_path) -> None:
    result, server = await serve_and_load(
        users=4,
        duration=8,
        seed=7,
        database_url=database_url,
        fast_hashing=True,
        # Generous: a loaded CI machine may drain slowly; the check is that it drains at all.
        drain_timeout=240,
        data_dir=tmp_path / "data",
    )
    failed = [c for c in result.checks if not c["ok"]]
    assert not failed, (failed, result.unexpected)
    checks = {c["check"] for c in result.checks}
    assert {
        "no 5xx",
        "accepted == persisted (SQL)",
        "accepted == history incl. trash (API)",
        "nothing pending/running after the drain",
        "no object without a row (store listed with no grace)",
    } <= checks
    # The run really exercised the API: generations were accepted and finished, some were
    # deleted and restored, and the history was paged.
    assert result.books["accepted"] > 0
    assert result.books["persisted_by_status"].get("succeeded", 0) > 0
    endpoints = {row["endpoint"]: row for row in result.endpoints}
    assert endpoints["POST /api/runs/{run_id}/steps/{step_id}/generate"]["2xx"] > 0
    assert endpoints["GET /api/history"]["2xx"] > 0
    assert server["database"] == ("sqlite" if database_url.startswith("sqlite") else "postgresql")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_lost_generation_fails_the_books(database_url: str, tmp_path) -> None:
    """The accepted == persisted check can fail: remove a row behind the server's back."""
    from sqlalchemy import delete

    from bench import load
    from flowstudio.db import create_engine
    from flowstudio.generations.models import Generation

    original = load.database_view

    async def lose_one(url, user_ids):  # type: ignore[no-untyped-def]
        view = await original(url, user_ids)
        victim = next(iter(view["ids"]))
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(delete(Generation).where(Generation.id == victim))
        finally:
            await engine.dispose()
        return await original(url, user_ids)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(load, "database_view", lose_one)
        result, _ = await serve_and_load(
            users=2,
            duration=3,
            seed=3,
            database_url=database_url,
            fast_hashing=True,
            drain_timeout=240,
            data_dir=tmp_path / "data",
        )
    by_name = {c["check"]: c for c in result.checks}
    assert not by_name["accepted == persisted (SQL)"]["ok"]
    assert "1 missing" in by_name["accepted == persisted (SQL)"]["detail"]
    assert not by_name["accepted == history incl. trash (API)"]["ok"]
    assert not result.ok
