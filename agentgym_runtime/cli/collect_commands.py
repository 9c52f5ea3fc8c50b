"""``agentgym collect`` (the OTLP/HTTP collector that owns the store) and ``agentgym sql``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agentgym_runtime.cli.common import (
    HomeOption,
    JsonOption,
    StoreOption,
    console,
    err_console,
    print_json,
    reading_store,
    settings_for,
)
from agentgym_runtime.errors import AgentGymError, StoreUnavailableError


def register(app: typer.Typer) -> None:
    """Add ``collect`` and ``sql`` to ``app``."""
    app.command("collect")(collect)
    app.command("sql")(sql)


def collect(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (anything but loopback needs --token)."),
    port: int = typer.Option(4318, "--port", help="Port for OTLP/HTTP (4318 is the standard one)."),
    token: str | None = typer.Option(
        None, "--token", envvar="AGENTGYM_COLLECTOR_TOKEN", help="Bearer token clients must send."
    ),
    max_body_mb: int = typer.Option(16, "--max-body-mb", help="Largest request body accepted."),
    requests_per_s: float = typer.Option(5000.0, "--rate", help="Requests per second per client."),
) -> None:
    """Own the trace store and receive spans over OTLP/HTTP (/v1/traces); serve status and SQL reads."""
    from agentgym_runtime import services
    from agentgym_runtime.collectors.otlp.election import HomeLock, publish_endpoint, read_endpoint
    from agentgym_runtime.collectors.otlp.server import Collector, CollectorServer, Limits

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_for(home, store)
    lock = HomeLock(settings.home)
    if not lock.try_acquire():
        holder = read_endpoint(settings.home) or {}
        err_console.print(
            f"waiting for the process that owns {settings.home} (pid {holder.get('pid', '?')}) to exit...",
        )
        lock.acquire()
    # This process owns the store: its runtime writes in-process, and it runs the deployment's one
    # training scheduler, for the agents the workers register (their registrations arrive as spans).
    wired = services.configure(
        settings.model_copy(update={"share_home": False, "collector_endpoint": None, "handle_sigterm": False})
    )
    runtime = wired.runtime
    # What a SIGKILLed elected owner of this home had journaled and not committed goes in first.
    from agentgym_runtime.collectors.journal import replay_dead_journals

    try:
        replay_dead_journals(settings.home, runtime.store)
    except Exception as exc:  # the files stay for a later owner
        err_console.print(f"[yellow]could not replay the journals in {settings.home}: {exc}[/yellow]")
    wired.follow_registrations()
    try:
        limits = Limits(max_body_bytes=max_body_mb * 1024 * 1024, requests_per_s=requests_per_s)
        server = CollectorServer(Collector(runtime.store, token=token, limits=limits), host=host, port=port)
    except AgentGymError as exc:
        err_console.print(f"[red]{exc}[/red]")
        wired.shutdown()
        lock.release()
        raise typer.Exit(2) from None
    publish_endpoint(settings.home, server.endpoint, store=runtime.store.path)
    err_console.print(f"agentgym collector: {runtime.store.path} ← OTLP/HTTP {server.endpoint}/v1/traces")
    try:
        server.run()
    finally:
        wired.shutdown()
        lock.release()


def sql(
    query: str = typer.Argument(..., help="One SELECT statement."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a read-only SQL query on the store (through its owner while a service records)."""
    from agentgym_runtime.collectors.otlp.election import read_endpoint
    from agentgym_runtime.collectors.otlp.query import remote_sql, run_sql

    settings = settings_for(home, store)
    endpoint = settings.collector_endpoint or (read_endpoint(settings.home) or {}).get("endpoint")
    columns: list[str] = []
    rows: list[list[Any]] | None = None
    try:
        if endpoint is not None:
            try:
                columns, rows = remote_sql(endpoint, query, token=settings.collector_token)
            except StoreUnavailableError:
                rows = None  # its owner is gone: read the file itself
        if rows is None:
            with reading_store(settings) as reader:
                columns, plain = run_sql(reader, query)
                rows = [list(row) for row in plain]
    except AgentGymError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
