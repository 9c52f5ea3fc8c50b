"""``agentgym backends check | cleanup``: what can run training jobs, and leftover rented machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import (
    HomeOption,
    JsonOption,
    console,
    print_json,
    settings_for,
    text_column,
    typed_column,
)


def register(app: typer.Typer) -> None:
    """Add the ``backends`` command group to ``app``."""
    group = typer.Typer(help="Where training jobs run: check backends, clean up rented machines.", no_args_is_help=True)
    group.command("check")(check)
    group.command("cleanup")(cleanup)
    app.add_typer(group, name="backends")


def check(
    name: list[str] = typer.Argument(None, help="Backends to check (default: local and every configured one)."),
    home: Path | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Show which backends can take a job now and, for the others, why not."""
    from agentgym_runtime.trainers.backends.select import BACKEND_NAMES, check_backend, local_cuda

    settings = settings_for(home, None)
    names = list(
        name or [n for n in BACKEND_NAMES if n == "local" or n in settings.backend_order or n == settings.backend]
    )
    has_cuda, why = local_cuda()
    checked: list[dict[str, Any]] = [{"backend": "cuda (local)", "ready": has_cuda, "why": why}]
    for backend in names:
        ok, message = check_backend(backend, settings)
        checked.append({"backend": backend, "ready": ok, "why": message})
    failed = sum(not row["ready"] for row in checked[1:])
    if as_json:
        print_json(checked)
    else:
        table = Table(title="training backends")
        typed_column(table, "backend")
        typed_column(table, "ready")
        text_column(table, "why")
        for row in checked:
            ready = "yes" if row["ready"] else "no"
            colour = "green" if row["ready"] else "red"
            table.add_row(
                Text(str(row["backend"])),
                Text(ready, style="" if row is checked[0] else colour),
                Text(str(row["why"])),
            )
        console.print(table)
        if settings.backend_order:
            console.print(f"gpu='auto' tries: local CUDA, then {', '.join(settings.backend_order)}, then local CPU")
    if failed:
        raise typer.Exit(1)


def cleanup(
    force: bool = typer.Option(False, "--force", help="Also terminate machines whose job is still running here."),
    home: Path | None = HomeOption,
) -> None:
    """Terminate rented machines tagged ``agentgym-`` that no live job holds (RunPod, Lambda)."""
    from agentgym_runtime.trainers.backends.select import cleanup as run_cleanup

    settings = settings_for(home, None)
    failed = False
    for provider, outcome in run_cleanup(settings, force=force).items():
        if isinstance(outcome, str):
            failed = failed or outcome.startswith("failed")
            console.print(f"{provider}: {outcome}")
        else:
            console.print(
                f"{provider}: terminated {len(outcome)} machine(s){': ' + ', '.join(outcome) if outcome else ''}"
            )
    if failed:
        raise typer.Exit(1)
