"""``agentgym train | runs``: run a training job from the command line, list training runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from agentgym_runtime.cli.common import (
    HomeOption,
    JsonOption,
    StoreOption,
    console,
    err_console,
    print_json,
    reading_store,
    settings_for,
    text_column,
    typed_column,
)
from agentgym_runtime.cli.format import fmt_duration
from agentgym_runtime.cli.progress import TrainingProgress
from agentgym_runtime.errors import ConfigurationError, StoreUnavailableError


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""
    app.command("train")(train)
    app.command("runs")(runs)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--option {pair!r} must be KEY=VALUE")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text  # a bare string
    return options


def train(
    agent: str = typer.Option(..., "--agent", "-a", help="The agent to train."),
    trainer: str | None = typer.Option(
        None, "--trainer", "-t", help="demos | apo | grpo | sft | verl (or your own); runs alone, not the stages."
    ),
    now: bool = typer.Option(False, "--now", help="Run even with fewer new episodes than --min-episodes."),
    gpu: str | None = typer.Option(None, "--gpu", help="auto | cpu | local"),
    backend: str | None = typer.Option(None, "--backend", "-b", help="local | ssh | ray | runpod | lambda"),
    min_episodes: int | None = typer.Option(None, "--min-episodes", help="New episodes needed (default 20)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Kill the job after this many seconds."),
    option: list[str] = typer.Option([], "--option", "-o", help="Trainer option KEY=VALUE (JSON value); repeatable."),
    since: str | None = typer.Option(
        None,
        "--since",
        help="Retrain on the episodes ended since this ISO date/time (e.g. 2026-12-05T10:00), "
        "whatever earlier runs used.",
    ),
    pickup_timeout: float = typer.Option(
        20.0, "--pickup-timeout", help="When a service holds the store: how long to wait for it to take the request."
    ),
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """Snapshot the agent's new episodes and run one training job, with a progress bar.

    The job runs exactly as the background scheduler runs it (same snapshot, lock, subprocess
    and bookkeeping in ``training_runs``). When a running service holds the store, the request
    is handed to that service's scheduler (through ``<home>/requests``) and followed from here.
    """
    from agentgym_runtime.api import configure, shutdown
    from agentgym_runtime.trainers.scheduler import alone, training_config

    settings = settings_for(home, store)
    overrides: dict[str, Any] = {}
    for key, value in (
        ("trainer", trainer),
        ("gpu", gpu),
        ("min_new_episodes", min_episodes),
        ("timeout_s", timeout),
        ("backend", backend),
    ):
        if value is not None:
            overrides[key] = value
    try:
        trainer_options = _parse_options(option)
        since_at = _parse_since(since)
        runtime = configure(home=settings.home, store=settings.store)
    except ConfigurationError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        try:
            runtime.store.connect()
        except StoreUnavailableError as exc:
            if "lock" not in str(exc).lower():
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            shutdown()
            if trainer_options:
                overrides["trainer_options"] = trainer_options
            if since is not None:
                overrides["since"] = since_at.isoformat() if since_at is not None else since
            try:
                # Refuse bad options here, not in the service.
                training_config(agent, **{k: v for k, v in overrides.items() if k != "since"})
            except ConfigurationError as config_exc:
                err_console.print(f"[red]{config_exc}[/red]")
                raise typer.Exit(2) from None
            _train_through_service(settings.home, agent, now, overrides, pickup_timeout)
            return
        known = runtime.scheduler.known_agents()
        if agent not in known:  # before any run row is written
            choices = ", ".join(sorted(known)) or "none yet (record episodes first)"
            err_console.print(f"[red]unknown agent {agent!r}; known agents: {choices}[/red]")
            raise typer.Exit(2)
        configured = runtime.scheduler.config_for(agent)
        # A trainer named here runs alone, not the config's stages.
        base = alone(configured, trainer) if trainer is not None else configured.model_dump(exclude={"agent"})
        base.update(overrides)
        if trainer_options:
            base["trainer_options"] = {**base.get("trainer_options", {}), **trainer_options}
        try:
            config = training_config(agent, **base)
        except ConfigurationError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        config = runtime.scheduler.staged(config)  # the title names the stage that runs
        with TrainingProgress(f"{agent} ({config.trainer})", console) as view:
            run = runtime.scheduler.run_now(agent, config=config, force=now, since=since_at, progress=view.update)
    finally:
        shutdown()
    console.print(view.summary(run.status), markup=False, highlight=False)
    _print_run(run.status, run.run_id, run.reason, run.error, run.candidate_version, run.metrics, run.log_tail)
    if run.status == "failed":
        raise typer.Exit(1)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(
            f"--since must be an ISO 8601 date/time like 2026-12-05T10:00, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _train_through_service(
    home: Path, agent: str, force: bool, overrides: dict[str, Any], pickup_timeout: float
) -> None:
    import time

    from agentgym_runtime.trainers.scheduler import request_status, submit_request, withdraw_request

    request_id = submit_request(home, agent, force=force, overrides=overrides)
    err_console.print(
        f"[dim]a running service holds the store: asked it to train {agent!r} (request {request_id})[/dim]"
    )
    deadline = time.monotonic() + pickup_timeout
    status: dict[str, Any] | None = None
    with TrainingProgress(agent, console) as view:
        while True:
            status = request_status(home, request_id)
            if status is None and time.monotonic() > deadline and withdraw_request(home, request_id):
                break
            if status is not None:
                if status.get("message"):
                    view.update(float(status.get("fraction") or 0.0), str(status["message"]))
                if status.get("state") == "done":
                    break
            time.sleep(0.1)
    if status is None:
        err_console.print(
            f"[red]no service took the request within {pickup_timeout:g}s[/red]: the process holding the store "
            "serves training requests once an agent in it is decorated with training options "
            "(train_online(schedule=...)); otherwise stop it and run this command again."
        )
        raise typer.Exit(2)
    if status.get("status") == "rejected":
        err_console.print(f"[red]the service rejected the request: {status.get('error')}[/red]")
        raise typer.Exit(2)
    console.print(view.summary(str(status.get("status"))), markup=False, highlight=False)
    _print_run(
        str(status.get("status")),
        str(status.get("run_id")),
        status.get("reason"),
        status.get("error"),
        status.get("candidate_version"),
        dict(status.get("metrics") or {}),
        status.get("log_tail"),
    )
    if status.get("status") == "failed":
        raise typer.Exit(1)


def _print_run(
    status: str,
    run_id: str,
    reason: str | None,
    error: str | None,
    candidate: int | None,
    metrics: dict[str, Any],
    log_tail: str | None,
) -> None:
    color = {"succeeded": "green", "failed": "red", "skipped": "yellow"}.get(status, "white")
    console.print(f"run [bold]{run_id}[/bold]: [{color}]{status}[/{color}]")
    if candidate is not None:
        console.print(f"candidate policy: v{candidate}")
    if metrics:
        console.print("metrics: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    if reason:
        console.print(f"reason: {reason}")
    if error:
        console.print(f"[red]error: {error}[/red]")
    if status == "failed" and log_tail:
        console.print("[dim]--- job log (tail) ---[/dim]")
        console.print(log_tail[-2000:], markup=False, highlight=False)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "—"


def runs(
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's runs."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs, newest first."),
    as_json: bool = JsonOption,
    home: Path | None = HomeOption,
    store: str | None = StoreOption,
) -> None:
    """List training runs: status, episodes, candidate version, reason or error."""
    from agentgym_runtime.cli.store_commands import check_agent
    from agentgym_runtime.trainers.scheduler import list_runs

    settings = settings_for(home, store)
    with reading_store(settings) as reader:
        check_agent(reader, agent)
        rows = list_runs(reader, agent, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("[dim]no training runs yet[/dim]")
        return
    # One table per agent, its name whole in the title: run ids and names are what users type.
    for name in dict.fromkeys(str(row["agent"]) for row in rows):
        table = Table(title=Text(f"training runs · {name}"), title_justify="left")
        typed_column(table, "run")
        typed_column(table, "trainer")
        typed_column(table, "status")
        typed_column(table, "candidate")
        text_column(table, "details")
        for row in rows:
            if row["agent"] != name:
                continue
            started, ended = row["started_at"], row["ended_at"]
            duration = fmt_duration((ended - started).total_seconds()) if started and ended else None
            color = {"succeeded": "green", "failed": "red", "skipped": "yellow"}.get(row["status"], "white")
            detail = row["error"] or row["reason"] or ""
            details = [
                _when(started or row["scheduled_at"]),
                *([f"took {duration}"] if duration else []),
                *([f"{row['episodes']} episodes"] if row["episodes"] is not None else []),
                *([detail if len(detail) <= 80 else detail[:77] + "..."] if detail else []),
            ]
            table.add_row(
                Text(row["run_id"]),
                Text(row["trainer"]),
                Text(row["status"], style=color),
                "—" if row["candidate_version"] is None else f"v{row['candidate_version']}",
                Text(" · ".join(details)),
            )
        console.print(table)
