"""What every command shares: where the store is, opening it for reading, printing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from agentgym_runtime.cli.access import StoreMissingError, open_for_reading
from agentgym_runtime.cli.format import fmt_percent, json_default
from agentgym_runtime.collectors.store import TraceStore
from agentgym_runtime.config import Settings
from agentgym_runtime.errors import StoreUnavailableError

console = Console()
err_console = Console(stderr=True)

HomeOption = typer.Option(None, "--home", help="agentgym home directory (default: $AGENTGYM_HOME or ./.agentgym).")
StoreOption = typer.Option(None, "--store", help="DuckDB file to read (default: <home>/traces.duckdb).")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


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
    try:
        with open_for_reading(settings.store_path) as opened:
            if opened.snapshot:
                err_console.print("[dim]store in use by a running process: reading a snapshot copy[/dim]")
            yield opened.store
    except StoreMissingError as exc:
        err_console.print(f"[yellow]{exc}[/yellow] — nothing has been recorded there yet.")
        raise typer.Exit(2) from None
    except StoreUnavailableError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error on stderr; the ``typer.Exit`` to raise."""
    err_console.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code)


def print_json(payload: object) -> None:
    """``--json`` output: one JSON document on stdout (never Rich-formatted or wrapped)."""
    import json
    import sys

    sys.stdout.write(json.dumps(payload, default=json_default) + "\n")


def fmt_ratio(value: float | None) -> str:
    """A share as a percentage, or a dash (:func:`agentgym_runtime.cli.format.fmt_percent`)."""
    return fmt_percent(value)


def typed_column(table: Table, header: str, *, justify: Literal["left", "right"] = "left") -> None:
    """A column of values users type back (agent names, versions, run ids, tools).

    Rich never wraps or truncates it; the free-text columns beside it absorb the width, so a
    table at 80 columns still shows every name whole.
    """
    table.add_column(header, justify=justify, no_wrap=True, overflow="ignore", min_width=len(header))


def text_column(table: Table, header: str) -> None:
    """A column of free text: wraps between words, folds only a word longer than the column."""
    table.add_column(header, overflow="fold", ratio=1)


def number_column(table: Table, header: str) -> None:
    """A right-aligned column of numbers, never wrapped."""
    table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
