"""create_app(): the lifespan builds engine, storage, providers and flows, then mounts routers."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from fastapi import APIRouter, Depends, FastAPI, Request

from flowstudio import openapi
from flowstudio.auth.ratelimit import LoginRateLimiter
from flowstudio.auth.routes import router as auth_router
from flowstudio.auth.security import PasswordHasher
from flowstudio.auth.service import AuthService
from flowstudio.config import Settings
from flowstudio.context import AppContext
from flowstudio.db import Reads, create_engine, session_factory
from flowstudio.deps import reject_nul_characters
from flowstudio.errors import install_error_handlers
from flowstudio.flows import FlowRegistry
from flowstudio.flows.routes import router as flows_router
from flowstudio.generations.events import EventBus
from flowstudio.generations.history_routes import router as history_router
from flowstudio.generations.maintenance import PeriodicCollector
from flowstudio.generations.routes import router as generations_router
from flowstudio.generations.service import MAX_UPLOAD_BYTES
from flowstudio.generations.worker import Worker
from flowstudio.health import router as health_router
from flowstudio.limits import JSON_BODY_LIMIT, BodyLimits
from flowstudio.pagination import CursorCodec
from flowstudio.providers import LocalProvider, ProviderRegistry
from flowstudio.runs.routes import router as runs_router
from flowstudio.storage import open_object_store

log = logging.getLogger("flowstudio")


def build_providers(settings: Settings) -> ProviderRegistry:
    """Every provider is registered; real ones without keys report ``is_configured()`` false
    and fail their generations with a message naming the setting to set."""
    from pydantic import SecretStr

    from flowstudio.providers.cloudflare import CloudflareProvider
    from flowstudio.providers.gemini import GeminiProvider
    from flowstudio.providers.http import HttpTimeouts
    from flowstudio.providers.openai import OpenAIProvider
    from flowstudio.providers.replicate import ReplicateProvider

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    timeouts = HttpTimeouts(
        connect=settings.provider_connect_timeout_seconds,
        read=settings.provider_read_timeout_seconds,
    )
    registry = ProviderRegistry()
    registry.register(
        LocalProvider(
            delay_seconds=settings.local_provider_delay,
            failure_rate=settings.local_provider_failure_rate,
        )
    )
    registry.register(
        OpenAIProvider(
            api_key=secret(settings.openai_api_key),
            base_url=settings.openai_base_url,
            timeouts=timeouts,
        )
    )
    registry.register(
        GeminiProvider(
            api_key=secret(settings.gemini_api_key),
            base_url=settings.gemini_base_url,
            timeouts=timeouts,
        )
    )
    registry.register(
        CloudflareProvider(
            account_id=settings.cloudflare_account_id,
            api_token=secret(settings.cloudflare_api_token),
            base_url=settings.cloudflare_base_url,
            timeouts=timeouts,
        )
    )
    registry.register(
        ReplicateProvider(
            api_token=secret(settings.replicate_api_token),
            base_url=settings.replicate_base_url,
            timeouts=timeouts,
            poll_interval=settings.replicate_poll_interval_seconds,
            # Replicate stops the prediction itself shortly after the worker gives up on it.
            cancel_after_seconds=settings.provider_timeout_seconds + 30,
        )
    )
    return registry


class ConfigurationError(RuntimeError):
    """The flows and providers do not fit together; the message says what to change."""


def check_flow_providers(flows: FlowRegistry, providers: ProviderRegistry) -> None:
    problems = []
    for flow in flows.all():
        for step in flow.steps:
            if step.provider not in providers:
                problems.append(
                    f"flow '{flow.slug}' step '{step.id}' uses provider '{step.provider}', "
                    f"which is not available (available: {', '.join(providers.names())})"
                )
    if problems:
        raise ConfigurationError("; ".join(problems))


def periodic_collector(ctx: AppContext) -> PeriodicCollector:
    return PeriodicCollector(ctx, interval=timedelta(minutes=ctx.settings.gc_interval_minutes))


@asynccontextmanager
async def run_worker_in(ctx: AppContext) -> AsyncIterator[Worker]:
    worker = Worker(ctx, ctx.bus, maintenance=periodic_collector(ctx))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@asynccontextmanager
async def open_context(
    settings: Settings, *, migrate_sqlite: bool = True
) -> AsyncIterator[AppContext]:
    """Everything a process needs, opened in order and closed in reverse."""
    async with AsyncExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        flows = FlowRegistry.load(extra_dirs=[settings.flows_dir] if settings.flows_dir else [])
        engine = create_engine(settings.resolved_database_url)
        stack.push_async_callback(engine.dispose)
        if settings.is_sqlite and migrate_sqlite:
            # Imported here: Alembic costs half a second of start-up that PostgreSQL
            # deployments (migrated by `flowstudio db upgrade`) never need.
            from flowstudio import migrate

            await migrate.upgrade(engine)
        store = open_object_store(
            settings.resolved_storage_url,
            access_key_id=settings.storage_access_key_id,
            secret_access_key=(
                settings.storage_secret_access_key.get_secret_value()
                if settings.storage_secret_access_key
                else None
            ),
            region=settings.storage_region,
        )
        stack.push_async_callback(store.close)
        providers = build_providers(settings)
        stack.push_async_callback(providers.aclose)
        check_flow_providers(flows, providers)
        reads = Reads(engine)
        stack.push_async_callback(reads.close)
        bus = EventBus(database_url=settings.resolved_database_url)
        await bus.start()
        stack.push_async_callback(bus.stop)
        auth = AuthService(
            secret=settings.secret,
            hasher=PasswordHasher(
                time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_cost
            ),
            limiter=LoginRateLimiter(attempts=settings.login_attempts_per_minute),
            session_lifetime=timedelta(days=settings.session_days),
            registration_open=settings.registration == "open",
            principal_cache_seconds=settings.principal_cache_seconds,
        )
        yield AppContext(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine, sync_session_class=bus.session_class),
            read_sessions=session_factory(reads.engine, sync_session_class=bus.session_class),
            reads=reads,
            store=store,
            auth=auth,
            flows=flows,
            providers=providers,
            bus=bus,
            cursors=CursorCodec(settings.secret),
        )


def begin_shutdown(app: FastAPI) -> None:
    """The first steps of a graceful stop, before the server waits for open connections: every
    event stream is told to reconnect and ends (else it would hold the process open until the
    browser went away), and the worker claims nothing more. The worker's running jobs get
    FLOWSTUDIO_SHUTDOWN_GRACE_SECONDS at the lifespan's end, then go back to pending."""
    ctx = getattr(app.state, "ctx", None)
    if ctx is not None:
        ctx.bus.close_streams()
    worker = getattr(app.state, "worker", None)
    if worker is not None:
        worker.stop_claiming()


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings) as ctx:
            app.state.ctx = ctx
            if run_worker:
                async with run_worker_in(ctx) as worker:
                    app.state.worker = worker
                    yield
            else:
                yield

    app = FastAPI(
        dependencies=[Depends(reject_nul_characters)],
        title="FlowStudio",
        version="0.1.0",
        summary="Multi-step AI image generation flows with a durable per-user history.",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    # Bodies are refused before they are read: 1 MB of JSON, an upload's cap plus its form.
    app.add_middleware(
        BodyLimits,
        default=JSON_BODY_LIMIT,
        rules=[
            ("POST", r"/api/runs/[^/]+/steps/[^/]+/assets", MAX_UPLOAD_BYTES + 64 * 1024),
        ],
    )
    web = _web_module()
    install_error_handlers(app, html_handler=getattr(web, "html_error_page", None))
    openapi.install(app)
    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(flows_router)
    app.include_router(runs_router)
    app.include_router(generations_router)
    app.include_router(history_router)

    # Anything else under /api is a problem+json 404 (the exception handler renders it).
    api_fallback = APIRouter()

    @api_fallback.api_route(
        "/api/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def _unknown_api_route(request: Request, path: str) -> None:
        from flowstudio.errors import MethodNotAllowed, NotFound

        # Reached when no route matched in full: if a documented operation has this address,
        # the method is what is wrong (405 with Allow, as HTTP says); else nothing is here.
        allowed = {
            method
            for pattern, methods in _api_addresses(request.app)
            if pattern.fullmatch(request.url.path)
            for method in methods
        }
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise MethodNotAllowed(
                f"{request.method} is not supported here; use {', '.join(sorted(allowed))}.",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise NotFound("There is no API endpoint at this address.")

    app.include_router(api_fallback)
    if web is not None:
        web.install_web(app)
    return app


def _api_addresses(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """Each documented address as a pattern, with its methods (from the OpenAPI schema)."""
    found = getattr(app.state, "api_addresses", None)
    if found is None:
        found = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\{[^}/]+\\}", "[^/]+", re.escape(template)))
            found.append((pattern, {method.upper() for method in operations}))
        app.state.api_addresses = found
    return found


def _web_module():  # type: ignore[no-untyped-def]
    try:
        import flowstudio.web as web
    except ImportError:
        return None
    return web if hasattr(web, "install_web") else None
