"""``agentgym backends check | cleanup``: what can run training jobs, and leftover rented machines."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agentgym_runtime.cli.common import HomeOption, console, settings_for


def register(app: typer.Typer) -> None:
    """Add the ``backends`` command group to ``app``."""
    group = typer.Typer(help="Where training jobs run: check backends, clean up rented machines.", no_args_is_help=True)
    group.command("check")(check)
    group.command("cleanup")(cleanup)
    app.add_typer(group, name="backends")


def check(
    name: list[str] = typer.Argument(None, help="Backends to check (default: local and every configured one)."),
    home: Path | None = HomeOption,
) -> None:
    """Show which backends can take a job now and, for the others, why not."""
    from agentgym_runtime.trainers.backends.select import BACKEND_NAMES, check_backend, local_cuda

    settings = settings_for(home, None)
    names = list(
        name or [n for n in BACKEND_NAMES if n == "local" or n in settings.backend_order or n == settings.backend]
    )
    table = Table(title="training backends")
    table.add_column("backend")
    table.add_column("ready")
    table.add_column("why")
    has_cuda, why = local_cuda()
    table.add_row("cuda (local)", "yes" if has_cuda else "no", why)
    failed = 0
    for backend in names:
        ok, message = check_backend(backend, settings)
        failed += not ok
        table.add_row(backend, "[green]yes[/green]" if ok else "[red]no[/red]", message)
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
