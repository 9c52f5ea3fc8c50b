"""``agentgym report``: the home's charts as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import typer

from agentgym_runtime.cli.common import HomeOption, StoreOption, console, settings_for


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app``."""
    app.command("report")(report)


def report(
    out: Path = typer.Argument(Path("agentgym-report.html"), help="HTML file to write."),
    price_in: float = typer.Option(0.15, "--price-in", min=0, help="Price per million input tokens."),
    price_out: float = typer.Option(0.60, "--price-out", min=0, help="Price per million output tokens."),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """Write charts of reliability, failures, the gate, training and cost to one HTML file (no network needed)."""
    from agentgym_runtime.cli.report import Prices, write_report

    settings = settings_for(home, store)
    written = write_report(settings.home, out, Prices(price_in, price_out), settings.store_path)
    console.print(f"wrote {written} ({written.stat().st_size:,} bytes)", highlight=False)
