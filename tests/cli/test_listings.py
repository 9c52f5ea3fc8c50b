"""Every listing command: ``--json`` (one valid JSON document, the same rows as the table), and a
table that fits 80 columns with every value users type back whole (agent names, versions, run
ids, episode ids), on a home with a long agent name filled by a real agent and a real training run.

The commands are discovered from the Typer app: a new command must either appear in
:data:`ARGUMENTS` (a listing, tested here) or in :data:`ACTIONS` (it changes something or runs a
process and prints no listing); otherwise this test fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

from agentgym_runtime.cli.app import build_app
from tests.cli.conftest import fill_trained_home, run_cli
from tests.cli.dashboard_agent import AGENT

#: Listing commands and the arguments they are run with here.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "status": (),
    "traces": ("-n", "3"),
    "reliability": (),
    "runs": (),
    "sql": ("SELECT agent, count(*) AS episodes FROM episodes GROUP BY agent",),
    "policies list": (),
    "policies show": (AGENT,),
    "policies diff": (AGENT, "0", "1"),
    "policies evaluate": (AGENT,),
    "scenarios list": (),
    "scenarios show": ("customer_support", "-n", "1"),
    "backends check": ("local",),
}
#: Commands that act or serve rather than list, with why they have no ``--json`` listing.
ACTIONS = {
    "train": "runs a training job (its progress and summary are lines)",
    "export": "writes files",
    "demo": "runs the demo (its --json is the final summary)",
    "collect": "serves OTLP until stopped",
    "dashboard": "a live terminal UI",
    "report": "writes an HTML file",
    "policies promote": "changes the registry",
    "policies canary": "changes the registry",
    "policies rollback": "changes the registry",
    "policies pin": "changes the registry",
    "policies unpin": "changes the registry",
    "backends cleanup": "terminates machines",
}


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group (Typer's groups need not subclass this click's Group)
            found.update(_commands(command, f"{path} "))
        else:
            found[path] = command
    return found


COMMANDS = _commands(typer.main.get_command(build_app()))  # type: ignore[arg-type]


def test_every_command_is_a_listing_or_an_action() -> None:
    assert set(COMMANDS) == set(ARGUMENTS) | set(ACTIONS)
    assert not set(ARGUMENTS) & set(ACTIONS)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("listings") / "home"
    fill_trained_home(path)
    return path


def _typed_values(document: Any) -> set[str]:
    """Values users type back, found anywhere in the JSON document."""
    found: set[str] = set()

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif key in ("agent", "run_id", "episode_id", "name", "tool", "key") and isinstance(value, str):
            found.add(value)
        elif key in ("version", "live", "canary", "candidate_version") and isinstance(value, int):
            found.add(f"v{value}")

    walk(document, None)
    return found


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_listing_prints_json_and_fits_80_columns(home: Path, command: str) -> None:
    options = {param.opts[0] for param in COMMANDS[command].params if param.opts}
    assert "--json" in options, f"{command} has no --json"

    args = (*command.split(), *ARGUMENTS[command])
    as_json = run_cli(*args, "--json", home=home, columns=80)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)  # one document: never JSON lines or a wrapped table
    assert document, command

    table = run_cli(*args, home=home, columns=80)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    too_wide = [line for line in lines if len(line) > 80 and str(home) not in line]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in table.stdout
    if command == "sql":
        return  # a user's query: its columns are free text
    words = set(table.stdout.replace("│", " ").replace("@", " ").split())
    missing = {value for value in _typed_values(document) if value not in words and value not in table.stdout}
    if command == "scenarios show":
        missing = {v for v in missing if v != "customer_support"} - {
            t["name"] for t in document["tools"]
        }  # tool names are whole in the table (checked below)
        assert all(t["name"] in table.stdout for t in document["tools"])
    assert not missing, (missing, table.stdout)
    if not command.startswith(("scenarios", "backends", "status")):
        assert AGENT in _typed_values(document), command


def test_unknown_agents_are_errors_listing_the_agents(home: Path) -> None:
    for args in (
        ("traces", "-a", "nosuch"),
        ("reliability", "-a", "nosuch"),
        ("runs", "-a", "nosuch"),
        ("export", str(home / "x.jsonl"), "-a", "nosuch"),
    ):
        result = run_cli(*args, home=home, columns=200)
        assert result.returncode == 2, args
        assert f"unknown agent 'nosuch'; agents with recorded episodes: {AGENT}" in result.stderr, args
    for args in (
        ("policies", "list", "-a", "nosuch"),
        ("policies", "show", "nosuch"),
        ("policies", "pin", "nosuch", "1"),
    ):
        result = run_cli(*args, home=home, columns=200)
        assert result.returncode == 1, args
        assert f"no policies registered for agent 'nosuch'; agents with policies: {AGENT}" in result.stderr, args
