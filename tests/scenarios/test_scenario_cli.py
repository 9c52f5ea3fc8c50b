"""``agentgym scenarios list | show``, and ``agentgym demo``'s checks before it starts."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from agentgym_runtime.cli import scenario_commands


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    scenario_commands.register(app)
    return app


def test_registered_in_the_cli() -> None:
    from agentgym_runtime.cli.app import COMMAND_MODULES

    assert "agentgym_runtime.cli.scenario_commands" in COMMAND_MODULES


def test_list_shows_every_scenario() -> None:
    result = CliRunner().invoke(_app(), ["scenarios", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("customer_support", "code_review", "qa_testing"):
        assert name in result.output
    assert "refund_order" in result.output and "submit_review" in result.output


def test_show_prints_tools_schemas_criteria_and_tasks() -> None:
    result = CliRunner().invoke(_app(), ["scenarios", "show", "customer_support", "-n", "2"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "criterion tool_reliability" in out and "0.95" in out
    assert "criterion cost_reduction" in out and "0.3" in out
    assert "reward range" in out and "[0.0, 1.0]" in out
    assert '"order_id"' in out and '"integer"' in out  # a tool's JSON schema
    assert "customer_support:train:0:1" in out and "customer_support:heldout:0:1" in out


def test_show_unknown_scenario_lists_the_names() -> None:
    result = CliRunner().invoke(_app(), ["scenarios", "show", "nope"], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "unknown scenario 'nope'; available scenarios: code_review, customer_support, qa_testing" in result.output


def test_demo_rejects_an_unknown_scenario_and_bad_options_before_starting() -> None:
    from agentgym_runtime.cli import demo_commands

    app = _app()
    demo_commands.register(app)
    unknown = CliRunner().invoke(app, ["demo", "--scenario", "nope"], env={"COLUMNS": "250"})
    assert unknown.exit_code == 2
    assert "unknown scenario 'nope'; available scenarios: code_review, customer_support, qa_testing" in unknown.output
    zero = CliRunner().invoke(app, ["demo", "--promotions", "0"], env={"COLUMNS": "250"})
    assert zero.exit_code == 2
    assert "Invalid value for '--promotions': Input should be greater than or equal to 1" in zero.output
