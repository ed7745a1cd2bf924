"""The one Alembic history upgrades, downgrades and upgrades again on both backends."""

from __future__ import annotations

from sqlalchemy import inspect

from flowstudio import migrate
from flowstudio.db import create_engine
from flowstudio.models import metadata


async def table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_upgrade_downgrade_upgrade(empty_database_url):
    engine = create_engine(empty_database_url)
    expected = {t.name for t in metadata.sorted_tables}
    try:
        await migrate.upgrade(engine)
        assert expected <= await table_names(engine)
        head = await migrate.current_revision(engine)
        assert head is not None

        await migrate.downgrade(engine, "base")
        assert await migrate.current_revision(engine) is None
        assert not (expected & await table_names(engine))

        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == head
        assert expected <= await table_names(engine)
    finally:
        await engine.dispose()


async def test_models_match_migrations(database_url):
    """Autogenerate finds nothing to do: the models and the migration history agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    # Full-text search objects are created by migrations outside the ORM metadata.
    diff = [
        d for d in diff if not any(w in repr(d) for w in ("fts", "prompt_tsv", "generation_search"))
    ]
    assert diff == []
