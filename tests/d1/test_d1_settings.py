"""D1 settings: the token and its fallback, and where the token may never show."""

from __future__ import annotations

from flowstudio.config import Settings
from flowstudio.db import create_engine

TOKEN = "d1-secret-token-0123456789"


def test_token_fallback_and_the_workers_ai_token_stay_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        database_url="d1://acct/db",
        cloudflare_api_token="workers-ai-token",
    )
    assert settings.is_d1 and not settings.is_sqlite
    assert settings.cloudflare_api_token.get_secret_value() == "workers-ai-token"
    assert f":{TOKEN}@acct/db" in settings.resolved_database_url
    own = Settings(_env_file=None, data_dir=tmp_path, database_url="d1://acct/db", d1_api_token="x")
    assert ":x@acct/db" in own.resolved_database_url


async def test_the_token_never_shows_in_the_engine_url(tmp_path):
    settings = Settings(
        _env_file=None, data_dir=tmp_path, database_url="d1://acct/db", d1_api_token=TOKEN
    )
    engine = create_engine(settings.resolved_database_url)
    try:
        assert TOKEN not in repr(engine) and TOKEN not in str(engine.url)
        assert TOKEN not in repr(settings)
    finally:
        await engine.dispose()
