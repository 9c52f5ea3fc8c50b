"""Training progress in the shell: round i/N, the current reward and the ETA, then a summary.

Trainers report progress as ``(fraction, message)`` (see ``trainers.base.ProgressFn``); the
rounds and the reward are read from the message by a documented convention — ``round 2/5``
(also ``step``, ``epoch``, ``stage``, ``iteration``) and ``reward 0.625`` — which the GRPO
trainer and the test trainers follow. On a terminal the view is a live Rich progress line;
elsewhere (CI logs, pipes) it prints one plain line per new report, so a log shows every
round seen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from agentgym_runtime.cli.format import fmt_duration, fmt_eta

_ROUND = re.compile(r"\b(?:round|step|epoch|stage|iteration)\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_REWARD = re.compile(r"\breward\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Report:
    """One progress report, with the round and reward read from its message (``None`` if absent).

    Example:
        >>> Report.parse(0.5, "step 3/8: reward 0.625")
        Report(fraction=0.5, message='step 3/8: reward 0.625', round=3, rounds=8, reward=0.625)
        >>> Report.parse(0.1, "snapshot of 4 episodes").round is None
        True
    """

    fraction: float
    message: str
    round: int | None = None
    rounds: int | None = None
    reward: float | None = None

    @classmethod
    def parse(cls, fraction: float, message: str) -> Report:
        """Read ``round i/N`` and ``reward X`` from ``message`` (see the module docstring)."""
        found = _ROUND.search(message)
        reward = _REWARD.search(message)
        return cls(
            fraction=max(0.0, min(1.0, float(fraction))),
            message=message,
            round=int(found.group(1)) if found else None,
            rounds=int(found.group(2)) if found else None,
            reward=float(reward.group(1)) if reward else None,
        )


class TrainingProgress:
    """The progress display of one training run (a context manager fed by :meth:`update`).

    Example:
        >>> import io
        >>> out = Console(file=io.StringIO(), width=100)
        >>> with TrainingProgress("support (fake)", out) as view:
        ...     view.update(0.5, "round 1/2: reward 0.5")
        >>> "round 1/2" in out.file.getvalue() and view.last_reward
        0.5
    """

    def __init__(self, label: str, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.console = console
        self._clock = clock
        self.started = self._clock()
        self.reports = 0
        self.last: Report | None = None
        self.last_round: tuple[int, int] | None = None
        self.last_reward: float | None = None
        self._live: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TrainingProgress:
        self.started = self._clock()
        if self.console.is_terminal:
            self._live = Progress(
                TextColumn("[bold]{task.fields[label]}[/bold]"),
                BarColumn(bar_width=20),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[round]}"),
                TextColumn("{task.fields[reward]}"),
                TextColumn("ETA {task.fields[eta]}"),
                TextColumn("[dim]{task.description}[/dim]"),
                console=self.console,
            )
            self._live.__enter__()
            self._task = self._live.add_task("starting", total=1.0, label=self.label, round="", reward="", eta="—")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, value, traceback)

    def update(self, fraction: float, message: str) -> None:
        """Show one report (repeats of the last one are ignored)."""
        report = Report.parse(fraction, message)
        if self.last is not None and (report.fraction, report.message) == (self.last.fraction, self.last.message):
            return
        self.last = report
        self.reports += 1
        if report.round is not None and report.rounds is not None:
            self.last_round = (report.round, report.rounds)
        if report.reward is not None:
            self.last_reward = report.reward
        eta = fmt_eta(report.fraction, self._clock() - self.started)
        round_text = f"round {self.last_round[0]}/{self.last_round[1]}" if self.last_round else ""
        reward_text = f"reward {self.last_reward:.3f}" if self.last_reward is not None else ""
        if self._live is not None and self._task is not None:
            self._live.update(
                self._task,
                completed=report.fraction,
                description=message,
                round=round_text,
                reward=reward_text,
                eta=eta,
            )
            return
        parts = [f"{report.fraction:>4.0%}", round_text, reward_text, f"ETA {eta}", message]
        self.console.print(f"{self.label}: " + " · ".join(p for p in parts if p), markup=False, highlight=False)

    def summary(self, status: str) -> str:
        """One line for the end of the run: status, rounds done, last reward, time taken.

        Example:
            >>> view = TrainingProgress("a", Console(quiet=True))
            >>> view.update(1.0, "round 3/3: reward 0.9")
            >>> view.summary("succeeded").split(" in ")[0]
            'training succeeded: 3/3 rounds, last reward 0.900'
        """
        details: list[str] = []
        if self.last_round is not None:
            details.append(f"{self.last_round[0]}/{self.last_round[1]} rounds")
        if self.last_reward is not None:
            details.append(f"last reward {self.last_reward:.3f}")
        text = f"training {status}" + (": " + ", ".join(details) if details else "")
        return f"{text} in {fmt_duration(self._clock() - self.started)}"
