"""Assemble the Typer app from one module per command group.

To add commands, add a module with a ``register(app: typer.Typer) -> None``
function and list it in :data:`COMMAND_MODULES`; modules are imported only
when the CLI runs (never by ``import agentgym_runtime``).
"""

from __future__ import annotations

import importlib

import typer

from agentgym_runtime._version import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "agentgym_runtime.cli.store_commands",
    "agentgym_runtime.cli.train_commands",
    "agentgym_runtime.cli.policy_commands",
    "agentgym_runtime.cli.scenario_commands",
    "agentgym_runtime.cli.demo_commands",
    "agentgym_runtime.cli.backend_commands",
    "agentgym_runtime.cli.collect_commands",
    "agentgym_runtime.cli.ui_commands",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agentgym-runtime {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The ``agentgym`` Typer application with every command group registered."""
    app = typer.Typer(
        name="agentgym",
        help="Record, reward, retrain and hot-swap the policies of production AI agents.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """agentgym-runtime command line."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app
