"""``agentgym scenarios list | show NAME``: the built-in and registered scenarios."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import JsonOption, console, err_console, print_json, text_column, typed_column
from agentgym_runtime.scenarios import ScenarioNotFoundError, get_scenario, list_scenarios

scenarios_app = typer.Typer(help="Scenarios: tools, tasks, rewards and success criteria.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``scenarios`` command group to ``app``."""
    app.add_typer(scenarios_app, name="scenarios")


@scenarios_app.command("list")
def list_command(as_json: bool = JsonOption) -> None:
    """List the available scenarios."""
    scenarios = [get_scenario(name) for name in list_scenarios()]
    if as_json:
        print_json([{**s.metadata(), "tools": [t.name for t in s.tools()]} for s in scenarios])
        return
    table = Table(title="scenarios")
    typed_column(table, "name")
    typed_column(table, "difficulty")
    text_column(table, "tools")
    text_column(table, "description")
    for scenario in scenarios:
        tools = ", ".join(t.name for t in scenario.tools())
        table.add_row(Text(scenario.name), scenario.difficulty, Text(tools), Text(scenario.description))
    console.print(table)


@scenarios_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Scenario name."),
    samples: int = typer.Option(3, "--samples", "-n", min=0, help="Sample tasks to show per split."),
    as_json: bool = JsonOption,
) -> None:
    """Show one scenario: metadata, success criteria, tools with their schemas, sample tasks."""
    try:
        scenario = get_scenario(name)
    except ScenarioNotFoundError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from None
    if as_json:
        print_json(
            {
                **scenario.metadata(),
                "success_criteria": scenario.success_criteria(),
                "tools": scenario.tool_definitions(),
                "tasks": [
                    {
                        "split": split,
                        "id": task.id,
                        "prompt": task.prompt,
                        "expected_calls": [{"name": c.name, "arguments": c.arguments} for c in task.expected_calls],
                        "expected_answer": task.expected_answer,
                    }
                    for split in ("train", "heldout")
                    for task in (scenario.tasks(split, samples, seed=0) if samples else [])
                ],
            }
        )
        return
    meta = Table(title=f"scenario {scenario.name}", show_header=False)
    meta.add_column("what", style="bold")
    meta.add_column("value")
    info = scenario.metadata()
    for key in ("name", "description", "difficulty", "estimated_time"):
        meta.add_row(key.replace("_", " "), str(info[key]))
    low, high = info["reward_range"]
    meta.add_row("reward range", f"[{low}, {high}]")
    for key, value in scenario.success_criteria().items():
        meta.add_row(f"criterion {key}", f"{value:g}")
    console.print(meta)

    tools = Table(title="tools")
    typed_column(tools, "tool")
    text_column(tools, "description")
    text_column(tools, "parameters (JSON schema)")
    for definition in scenario.tool_definitions():
        tools.add_row(
            definition["name"], Text(definition["description"]), Text(json.dumps(definition["parameters"], indent=1))
        )
    console.print(tools)

    if samples:
        tasks = Table(title="sample tasks")
        typed_column(tasks, "split")
        typed_column(tasks, "id")
        for column in ("prompt", "expected calls", "expected answer"):
            text_column(tasks, column)
        for split in ("train", "heldout"):
            for task in scenario.tasks(split, samples, seed=0):
                calls = "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in task.expected_calls)
                # Text cells: task text is data, never Rich markup or :emoji: codes (ids contain ":train:")
                tasks.add_row(split, Text(task.id), Text(task.prompt), Text(calls), Text(task.expected_answer or ""))
        console.print(tasks)
