"""``agentgym demo``: the main job, end to end on the embedded defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from agentgym_runtime.cli.common import console, err_console


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)


def demo(
    scenario: str = typer.Option("customer_support", "--scenario", "-s", help="Scenario to run."),
    minutes: float = typer.Option(
        9.5,
        "--minutes",
        "-m",
        min=0.5,
        help="Time budget of the whole run, the model build included (it ends earlier once the criteria are met).",
    ),
    users: int = typer.Option(3, "--users", min=1, max=16, help="Concurrent simulated users."),
    promotions: int = typer.Option(
        1,
        "--promotions",
        min=1,
        max=5,
        help="Promotions to wait for: each further round trains on from the live version (about 4 min each).",
    ),
    home: Path | None = typer.Option(None, "--home", help="agentgym home (default ./.agentgym)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the model, the tasks and the trainer."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on the last line."),
    report: Path | None = typer.Option(None, "--report", help="Also write the HTML report (charts) to this file."),
) -> None:
    """Watch a live agent's tool reliability climb: record, train (GRPO), canary, hot-swap, measure."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rich.live import Live

    from agentgym_runtime.demo.loop import Demo, DemoConfig, render_state, render_summary
    from agentgym_runtime.scenarios.registry import ScenarioNotFoundError, get_scenario

    try:
        get_scenario(scenario)
    except ScenarioNotFoundError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    config = DemoConfig(scenario=scenario, minutes=minutes, users=users, home=home, seed=seed, promotions=promotions)
    if as_json or not console.is_terminal:
        run = Demo(config, on_update=None)
        summary = run.run()
    else:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            run = Demo(config, on_update=lambda state: live.update(render_state(state, config)))
            summary = run.run()
    console.print(render_summary(summary))
    if summary.get("store"):
        from agentgym_runtime.recording.files import atomic_write_json

        # Kept in the home so `agentgym report` shows the demo's before/after later too.
        demo_home = Path(summary["store"]).parent
        atomic_write_json(demo_home / "demo-summary.json", summary, mode=0o644)
        if report is not None:
            from agentgym_runtime.cli.report import write_report

            console.print(f"report: {write_report(demo_home, report)}", highlight=False)
    if as_json:
        print(json.dumps(summary, default=str))
    # The exit status says what the final screen says: 0 only when every criterion was met.
    if not summary.get("passed"):
        raise typer.Exit(1)
