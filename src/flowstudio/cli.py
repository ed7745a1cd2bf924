"""The `flowstudio` command: serve, worker, db, user, gc, export."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated, Any

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


@app.callback()
def _configure_logging() -> None:
    """Every command logs the same way (serve and worker apply FLOWSTUDIO_LOG_LEVEL)."""
    from flowstudio.ops.logs import configure_logging

    configure_logging()


user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]Invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _check_flows(settings: Settings) -> None:
    """Fail before serving when a flow file is invalid, naming the file, line and reason."""
    from flowstudio.app import build_providers, check_flow_providers
    from flowstudio.flows import FlowError, FlowRegistry

    try:
        flows = FlowRegistry.load(extra_dirs=[settings.flows_dir] if settings.flows_dir else [])
        check_flow_providers(flows, build_providers(settings))
    except (FlowError, RuntimeError) as exc:
        err.print(f"[red]Cannot start:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command(epilog=_settings_help())
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (FLOWSTUDIO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLOWSTUDIO_PORT).")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve HTTP only; run `flowstudio worker` apart.")
    ] = False,
) -> None:
    """Run the web app (and, unless --no-worker, the generation worker) in one process.

    SIGTERM or Ctrl-C stops it gracefully: event streams are told to reconnect, nothing new is
    claimed, open requests and running generations get FLOWSTUDIO_SHUTDOWN_GRACE_SECONDS, and
    what is still running then goes back to pending for another worker."""
    import asyncio

    import uvicorn

    from flowstudio.app import begin_shutdown, create_app
    from flowstudio.ops.logs import logging_config

    settings = _load_settings()
    _check_flows(settings)
    application = create_app(settings, run_worker=not no_worker)
    console.print(
        f"FlowStudio on http://{host or settings.host}:{port or settings.port} "
        f"(data: {settings.data_dir})"
    )

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                # Runs in the signal handler: the work is scheduled on the loop.
                loop = asyncio.get_event_loop()
                loop.call_soon_threadsafe(begin_shutdown, application)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_config=logging_config(settings.log_level),
        proxy_headers=True,
        # Open requests may take the same grace as running generations; the worker's own
        # grace is spent after this, in the lifespan's end, so it starts a little later.
        timeout_graceful_shutdown=max(settings.shutdown_grace_seconds, 1),
    )
    GracefulServer(config).run()


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
    from flowstudio.ops.logs import configure_logging

    settings = _load_settings()
    configure_logging(settings.log_level)
    _check_flows(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with open_context(settings) as ctx:
            from flowstudio.app import periodic_collector

            runner = Worker(
                ctx, ctx.bus, concurrency=concurrency, maintenance=periodic_collector(ctx)
            )
            await runner.start()
            console.print(f"Worker {runner.owner} is running; Ctrl-C stops it.")
            await stop.wait()
            console.print("Stopping: finishing running generations…")
            await runner.stop()

    asyncio.run(main())


@app.command(epilog=_settings_help())
def providers(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the image providers, whether each is configured, and its models (no network)."""
    import json

    from rich.table import Table

    from flowstudio.app import build_providers

    settings = _load_settings()
    rows = []
    for provider in build_providers(settings):
        missing_settings = getattr(provider, "missing_settings", None)
        missing = list(missing_settings()) if callable(missing_settings) else []
        rows.append(
            {
                "name": provider.name,
                "configured": provider.is_configured(),
                "missing_settings": missing,
                "models": list(provider.models()),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Image providers")
    table.add_column("provider")
    table.add_column("configured", overflow="fold")
    table.add_column("models", overflow="fold")
    for row in rows:
        status = "yes" if row["configured"] else "no, set\n" + "\n".join(row["missing_settings"])
        table.add_row(row["name"], status, "\n".join(row["models"]))
    console.print(table)
    console.print(
        'A flow step picks one with provider = "..." and model = "..."; '
        "a step on an unconfigured provider fails its generations with the setting to set."
    )


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


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report; change nothing.")] = False,
) -> None:
    """Purge expired trash, apply retention, delete orphan objects, report missing ones;
    on SQLite, merge the search index."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flowstudio.app import open_context
    from flowstudio.generations.maintenance import collect_garbage

    settings = _load_settings()

    async def main():  # type: ignore[no-untyped-def]
        async with open_context(settings) as ctx:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                tasks: dict[str, int] = {}

                def progress(phase: str, advance: int, total: int | None) -> None:
                    if phase not in tasks:
                        tasks[phase] = bar.add_task(phase, total=total)
                    bar.update(tasks[phase], advance=advance, total=total)

                return await collect_garbage(ctx, dry_run=dry_run, progress=progress)

    report = asyncio.run(main())
    if report.skipped:
        console.print("Another collector is running; nothing done.")
        return
    verb = "would be" if dry_run else "were"
    table = Table(title="flowstudio gc" + (" (dry run)" if dry_run else ""))
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        f"objects of purged generations that {verb} deleted (recorded after a failed delete)",
        str(report.recorded_deleted),
    )
    table.add_row(f"expired trash rows that {verb} purged", str(report.trash_purged))
    table.add_row(f"deleted runs left empty that {verb} purged", str(report.runs_purged))
    table.add_row(
        f"generations that {verb} moved to trash by retention", str(report.retention_trashed)
    )
    table.add_row(f"expired sessions that {verb} deleted", str(report.sessions_deleted))
    table.add_row("objects scanned", str(report.objects_scanned))
    table.add_row(
        f"orphan objects that {verb} deleted",
        str(len(report.orphan_keys) if dry_run else report.orphans_deleted),
    )
    table.add_row("generations whose image is missing", str(len(report.missing_objects)))
    table.add_row("deletes that failed (retried next time)", str(report.delete_failures))
    if not dry_run and report.search_index_merges:
        table.add_row("search index merge steps (SQLite)", str(report.search_index_merges))
    console.print(table)
    for gid in report.missing_objects[:20]:
        console.print(f"  missing image: generation {gid}")
    console.print(f"Done in {report.seconds:.1f} s.")


@app.command()
def export(
    user: Annotated[str, typer.Option("--user", help="The user's email.")],
    run: Annotated[str | None, typer.Option("--run", help="Only this run's generations.")] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Zip file (default: flowstudio-export-….zip)."),
    ] = None,
    include_deleted: Annotated[
        bool, typer.Option(help="Include generations in the trash.")
    ] = False,
) -> None:
    """Write a zip of a user's generations: images plus metadata.json."""
    import uuid
    from pathlib import Path

    from rich.progress import Progress

    from flowstudio.app import open_context
    from flowstudio.errors import AppError
    from flowstudio.generations.export import export_history

    settings = _load_settings()
    try:
        run_id = uuid.UUID(run) if run else None
    except ValueError:
        err.print(f"[red]--run must be a run id (a UUID), not {run!r}.[/red]")
        raise typer.Exit(2) from None
    name = output or f"flowstudio-export-{user.split('@')[0]}{'-' + run[:8] if run else ''}.zip"

    async def main():  # type: ignore[no-untyped-def]
        async with open_context(settings) as ctx:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("exporting", total=None)

                def progress(advance: int, total: int) -> None:
                    bar.update(task, advance=advance, total=total)

                return await export_history(
                    ctx,
                    email=user,
                    output=Path(name),
                    run_id=run_id,
                    include_deleted=include_deleted,
                    progress=progress,
                )

    try:
        summary = asyncio.run(main())
    except AppError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"Wrote {summary.path}: {summary.generations} generations, "
        f"{summary.images} images"
        + (f", {summary.missing_images} images missing" if summary.missing_images else "")
    )


if __name__ == "__main__":
    app()
