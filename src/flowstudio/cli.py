"""The `flowstudio` command: serve, worker, db, user, gc, export."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import typer
from rich.console import Console

from flowstudio.config import Settings

console = Console()
err = Console(stderr=True)


def _settings_help() -> str:
    lines = ["Settings (environment variables):\n"]
    for name, field in Settings.model_fields.items():
        if field.description:
            lines.append(f"FLOWSTUDIO_{name.upper()}: {field.description}\n")
    return "\n".join(lines)


app = typer.Typer(
    help="FlowStudio: multi-step AI image generation flows with a durable history.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]Invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command(epilog=_settings_help())
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (FLOWSTUDIO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLOWSTUDIO_PORT).")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve HTTP only; run `flowstudio worker` apart.")
    ] = False,
) -> None:
    """Run the web app (and, unless --no-worker, the generation worker) in one process."""
    import uvicorn

    from flowstudio.app import create_app

    settings = _load_settings()
    application = create_app(settings, run_worker=not no_worker)
    console.print(
        f"FlowStudio on http://{host or settings.host}:{port or settings.port} "
        f"(data: {settings.data_dir})"
    )
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level="info",
        proxy_headers=True,
    )


@app.command(epilog=_settings_help())
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs at once (FLOWSTUDIO_WORKER_CONCURRENCY).")
    ] = None,
) -> None:
    """Run a generation worker: claims pending generations until stopped (Ctrl-C / SIGTERM)."""
    import signal

    from flowstudio.app import open_context
    from flowstudio.generations.worker import Worker

    settings = _load_settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with open_context(settings) as ctx:
            runner = Worker(ctx, ctx.bus, concurrency=concurrency)
            await runner.start()
            console.print(f"Worker {runner.owner} is running; Ctrl-C stops it.")
            await stop.wait()
            console.print("Stopping: finishing running generations…")
            await runner.stop()

    asyncio.run(main())


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from flowstudio.migrate import upgrade_sync

    settings = _load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_sync(settings.resolved_database_url, revision)
    console.print("Database is up to date.")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every table)."""
    from flowstudio.db import create_engine
    from flowstudio.migrate import downgrade

    settings = _load_settings()

    async def main() -> None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await downgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(main())
    console.print(f"Database downgraded to {revision}.")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(prompt=True, help="The new user's email.")],
    admin: Annotated[bool, typer.Option(help="Make the user an administrator.")] = False,
    password: Annotated[
        str | None,
        typer.Option(help="Password (prompted when omitted; avoid it on shared machines)."),
    ] = None,
) -> None:
    """Create a user (works even when registration is closed)."""
    from flowstudio.app import open_context
    from flowstudio.db import session_scope
    from flowstudio.errors import AppError

    settings = _load_settings()
    if password is None:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            err.print("[red]The passwords differ.[/red]")
            raise typer.Exit(1)
    if len(password) < 8:
        err.print("[red]Use a password of at least 8 characters.[/red]")
        raise typer.Exit(1)

    async def main() -> None:
        async with open_context(settings) as ctx:
            async for db in session_scope(ctx.sessions):
                await ctx.auth.create_user(db, email=email, password=password, is_admin=admin)

    try:
        asyncio.run(main())
    except AppError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Created {email.strip().lower()}.")


if __name__ == "__main__":
    app()
