"""What every command shares: where the store is, opening it for reading, printing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.config import Settings
from agentgym_runtime.errors import StoreUnavailableError

console = Console()
err_console = Console(stderr=True)

HomeOption = typer.Option(None, "--home", help="agentgym home directory (default: $AGENTGYM_HOME or ./.agentgym).")
StoreOption = typer.Option(None, "--store", help="DuckDB file to read (default: <home>/traces.duckdb).")


def settings_for(home: Path | None, store: str | None = None) -> Settings:
    """Settings from the environment, overridden by the command's options."""
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    if store is not None:
        overrides["store"] = store
    return Settings(**overrides)


@contextmanager
def reading_store(settings: Settings) -> Iterator[TraceStore]:
    """Open the store read-only; if a live process holds its lock, read a snapshot copy.

    Raises:
        typer.Exit: With code 2 and a message naming the path when nothing can be read.
    """
    path = settings.store_path
    if path == ":memory:":
        err_console.print("[red]an in-memory store cannot be read from another process[/red]")
        raise typer.Exit(2)
    if not os.path.exists(path):
        err_console.print(f"[yellow]no trace store at {path}[/yellow] — nothing has been recorded there yet.")
        raise typer.Exit(2)
    store = TraceStore(path, read_only=True)
    try:
        store.connect()
    except StoreUnavailableError as exc:
        if "lock" not in str(exc).lower():
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        with _snapshot(path) as copy:
            snapshot = TraceStore(copy, read_only=True)
            try:
                snapshot.connect()
            except StoreUnavailableError as snap_exc:
                err_console.print(f"[red]the store is in use and no snapshot could be read: {snap_exc}[/red]")
                raise typer.Exit(2) from None
            err_console.print("[dim]store in use by a running process: reading a snapshot copy[/dim]")
            try:
                yield snapshot
            finally:
                snapshot.close()
        return
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _snapshot(path: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="agentgym-snapshot-") as tmp:
        copy = os.path.join(tmp, "traces.duckdb")
        shutil.copyfile(path, copy)
        if os.path.exists(path + ".wal"):
            shutil.copyfile(path + ".wal", copy + ".wal")
        yield copy


def fmt_ratio(value: float | None) -> str:
    """A share as a percentage, or a dash."""
    return "—" if value is None else f"{value * 100:.1f}%"
