"""``agentgym dashboard`` (live terminal UI) and ``agentgym report`` (one self-contained HTML file)."""

from __future__ import annotations

from pathlib import Path

import typer

from agentgym_runtime.cli.common import HomeOption, StoreOption, console, settings_for


def register(app: typer.Typer) -> None:
    """Add ``dashboard`` and ``report`` to ``app``."""
    app.command("dashboard")(dashboard)
    app.command("report")(report)


def dashboard(
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
    plain: bool = typer.Option(False, "--plain", help="Print the panels once as tables (no terminal UI)."),
    refresh: float = typer.Option(2.0, "--refresh", min=0.2, help="Seconds between refreshes."),
) -> None:
    """Watch agents, reliability, the canary and gate, training runs and recent failures live."""
    from agentgym_runtime.cli.dashboard import build_app, read_recent, registry_actions, render_plain
    from agentgym_runtime.cli.sources import HomeSource

    settings = settings_for(home, store)
    source = HomeSource(settings.home, settings.store_path)
    if plain or not console.is_terminal:
        console.print(render_plain(read_recent(source)))
        return
    try:
        app = build_app(source, registry_actions(settings.home), refresh)
    except ImportError:
        console.print("[yellow]textual is not installed (pip install 'agentgym-runtime[ui]'): plain view[/yellow]")
        console.print(render_plain(read_recent(source)))
        return
    app.run()


def report(
    out: Path = typer.Argument(Path("agentgym-report.html"), help="HTML file to write."),
    price_in: float | None = typer.Option(
        None, "--price-in", min=0, help="USD per million input tokens, every model (default: token_prices)."
    ),
    price_out: float | None = typer.Option(
        None, "--price-out", min=0, help="USD per million output tokens, every model (default: token_prices)."
    ),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """Write charts of reliability, failures, the gate, training and cost to one HTML file (no network needed)."""
    from agentgym_runtime.cli.report import write_report
    from agentgym_runtime.collectors.pricing import TokenPrices

    settings = settings_for(home, store)
    prices = TokenPrices(settings.token_prices)
    if price_in is not None or price_out is not None:  # one price for every model, as the options say
        base_in, base_out = prices.table.get("*", (0.0, 0.0))
        chosen = (base_in if price_in is None else price_in, base_out if price_out is None else price_out)
        prices = TokenPrices({"*": chosen})
    written = write_report(settings.home, out, prices, settings.store_path)
    console.print(f"wrote {written} ({written.stat().st_size:,} bytes)", highlight=False)
