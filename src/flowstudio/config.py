"""Settings: the one place that reads the environment (prefix ``FLOWSTUDIO_``)."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowstudio.db import d1

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "changethis", "placeholder"})


class Settings(BaseSettings):
    """Every setting FlowStudio reads. Each can be set as ``FLOWSTUDIO_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FLOWSTUDIO_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="'production' refuses placeholder secrets and marks cookies Secure.",
    )
    data_dir: Path = Field(
        Path("./flowstudio-data"),
        description="Where the embedded database, objects and the generated secret key live.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite+aiosqlite:///<data_dir>/flowstudio.db. "
        "PostgreSQL: postgresql+asyncpg://user:pass@host/db. "
        "Cloudflare D1: d1://ACCOUNT_ID/DATABASE_ID",
    )
    d1_api_token: SecretStr | None = Field(
        None, description="Cloudflare API token with D1 edit rights (else CLOUDFLARE_API_TOKEN)."
    )
    d1_api_url: str = Field(
        d1.DEFAULT_API_URL, description="Cloudflare API base for D1 (a local D1 in tests)."
    )
    storage_url: str | None = Field(
        None,
        description="Object store; default file://<data_dir>/objects. "
        "S3 / R2: s3://bucket?endpoint=https://...&region=auto",
    )
    storage_access_key_id: str | None = Field(None, description="S3 key id (else AWS_ env vars)")
    storage_secret_access_key: SecretStr | None = Field(None, description="S3 secret key")
    storage_region: str | None = Field(None, description="S3 region (else from the URL or env)")
    secret_key: SecretStr | None = Field(
        None,
        description="Signs cursors and CSRF tokens; generated once into the data dir if unset.",
    )
    registration: Literal["open", "closed"] = Field(
        "open", description="'closed' disables self-service sign-up."
    )
    host: str = Field("127.0.0.1", description="Address `flowstudio serve` binds to.")
    port: int = Field(8000, description="Port `flowstudio serve` binds to.")
    trash_days: int = Field(7, ge=0, description="Days a deleted generation stays restorable.")
    keep_last_per_step: int | None = Field(
        None, ge=1, description="Retention: keep the newest N non-adopted candidates per step."
    )
    max_age_days: int | None = Field(
        None, ge=1, description="Retention: drop non-adopted generations older than this."
    )
    gc_interval_minutes: float = Field(
        60.0, gt=0, description="How often workers collect garbage (trash, retention, orphans)."
    )
    flows_dir: Path | None = Field(None, description="Extra directory of flow *.toml files.")
    session_days: int = Field(14, ge=1, description="Lifetime of a browser session.")
    principal_cache_seconds: float = Field(
        10.0,
        ge=0,
        description=(
            "How long a process remembers whom a session or API token belongs to. Sign-out "
            "and revocation apply at once in the process that made them and within this time "
            "in the others; 0 looks every request up."
        ),
    )
    login_attempts_per_minute: int = Field(
        10, ge=1, description="Failed logins allowed per email and per client address a minute."
    )
    # Password hashing cost. The defaults are argon2id's recommended parameters; tests lower them.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8)
    # Worker
    worker_concurrency: int = Field(4, ge=1, description="Generations a worker runs at once.")
    per_user_concurrency: int = Field(
        2, ge=1, description="Generations of one user running at once across all workers."
    )
    max_pending_per_user: int = Field(
        1000,
        ge=0,
        description=(
            "Generations one user may have waiting in the queue; past it, generate answers "
            "429 queue_full and queues nothing. 0 = unlimited."
        ),
    )
    image_processes: int = Field(
        0,
        ge=0,
        description=(
            "Child processes a worker makes thumbnails in; 0 makes them in a thread of its own "
            "process. Processes keep thumbnails clear of the event loop's interpreter lock, "
            "at the cost of copying each image to them."
        ),
    )
    lease_seconds: float = Field(30.0, gt=0, description="A worker's claim on a generation.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="FlowStudio's log level (uvicorn logs at INFO, libraries at WARNING)."
    )
    shutdown_grace_seconds: float = Field(
        10.0,
        ge=0,
        description=(
            "On SIGTERM / Ctrl-C: how long running generations may finish before they are "
            "released to another worker; also how long open requests may take."
        ),
    )
    max_attempts: int = Field(3, ge=1, description="Tries for a generation on retryable errors.")
    provider_timeout_seconds: float = Field(120.0, gt=0)
    local_provider_delay: float = Field(0.0, ge=0, description="Artificial delay (seconds).")
    local_provider_failure_rate: float = Field(0.0, ge=0, le=1)
    # Real image providers: each is usable once its key (and, for Cloudflare, account) is set.
    # Keys are only ever sent to the provider's own base URL; they are never logged or stored.
    provider_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="Real providers: seconds to wait for a connection."
    )
    provider_read_timeout_seconds: float = Field(
        120.0, gt=0, description="Real providers: seconds to wait for each response."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="OpenAI API key; enables the 'openai' provider (gpt-image-1 ...)."
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="OpenAI API base URL; any OpenAI-compatible Images API works.",
    )
    gemini_api_key: SecretStr | None = Field(
        None, description="Google Gemini API key; enables the 'gemini' provider."
    )
    gemini_base_url: str = Field(
        "https://generativelanguage.googleapis.com/v1beta", description="Gemini API base URL."
    )
    cloudflare_account_id: str | None = Field(
        None, description="Cloudflare account id for the 'cloudflare' (Workers AI) provider."
    )
    cloudflare_api_token: SecretStr | None = Field(
        None, description="Cloudflare API token with Workers AI permission."
    )
    cloudflare_base_url: str = Field(
        "https://api.cloudflare.com/client/v4", description="Cloudflare API base URL."
    )
    replicate_api_token: SecretStr | None = Field(
        None, description="Replicate API token; enables the 'replicate' provider."
    )
    replicate_base_url: str = Field(
        "https://api.replicate.com/v1", description="Replicate API base URL."
    )
    replicate_poll_interval_seconds: float = Field(
        1.0, gt=0, description="How often to poll a running Replicate prediction."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment == "production" and self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if value.lower() in PLACEHOLDER_SECRETS or len(value) < 16:
                raise ValueError(
                    "FLOWSTUDIO_SECRET_KEY is a placeholder or too short; set a random value "
                    "of at least 16 characters (or unset it to have one generated)."
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.is_d1 and not (self.database_url or "").startswith(d1.SQLALCHEMY_DRIVERNAME):
            # Cloudflare's own variable is the fallback. Read here, not as an alias of the field:
            # pydantic-settings matches aliases case-insensitively, so the alias also took the
            # `cloudflare_api_token` keyword (the Workers AI provider's setting).
            token = (
                self.d1_api_token.get_secret_value()
                if self.d1_api_token
                else os.environ.get("CLOUDFLARE_API_TOKEN", "")
            )
            url = d1.sqlalchemy_url(
                self.database_url or "", api_token=token, api_url=self.d1_api_url
            )
            return url.render_as_string(hide_password=False)
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'flowstudio.db'}"

    @property
    def is_d1(self) -> bool:
        url = self.database_url or ""
        return url.startswith((f"{d1.URL_SCHEME}://", d1.SQLALCHEMY_DRIVERNAME))

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir / 'objects'}"

    @property
    def is_sqlite(self) -> bool:
        """The embedded SQLite file (D1 is SQLite too, but a service of its own)."""
        return not self.is_d1 and self.resolved_database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.environment == "production"

    @cached_property
    def secret(self) -> bytes:
        """The signing key: the configured one, or one generated once and kept in the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secret_key.{secrets.token_hex(8)}")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            try:
                # link() refuses to overwrite, so concurrent first starts agree on one key.
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()
