"""The training job's entry point: ``python -m agentgym_runtime.trainers.job --spec <spec.json>``.

It reads a :class:`~agentgym_runtime.trainers.base.TrainingJobSpec`, imports the
trainer it names, checks that the trainer can run here, runs it with a progress
callback, and writes ``result.json`` into the spec's ``output_dir``. Only files
cross the process boundary:

* ``progress.jsonl`` — one ``{"time", "fraction", "message"}`` line per progress report
  (also echoed to stdout, which the backend keeps in ``job.log``);
* ``result.json`` — the :class:`~agentgym_runtime.trainers.base.TrainingResult`, on success;
* ``error.json`` — ``{"kind", "type", "message"}`` when it could not succeed.

Exit codes tell the scheduler what happened without parsing logs:
:data:`EXIT_OK` (0), :data:`EXIT_CRASH` (1, the trainer raised), :data:`EXIT_BAD_SPEC`
(2, unreadable spec, unknown trainer, or the agent's code served while the job imported it to
replay the agent: see :mod:`~agentgym_runtime.recording.import_guard`), :data:`EXIT_UNAVAILABLE`
(3, ``TrainerUnavailable`` or ``GPUNotAvailableError``: missing extra, unreachable endpoint, no GPU).

Which class runs a trainer name: ``options["trainer_class"] = "module:Class"`` in the spec,
else the ``AGENTGYM_EXTRA_TRAINERS`` environment variable (``name=module:Class`` pairs separated
by commas, or a JSON object), else the built-in :data:`~agentgym_runtime.trainers.base.TRAINERS`.
That is the extension point for your own trainers: any class with the
:class:`~agentgym_runtime.trainers.base.Trainer` methods, importable by the job's Python.

Example:
    >>> resolve_trainer_path("demos", {})
    'agentgym_runtime.trainers.demos:DemosTrainer'
    >>> resolve_trainer_path("mine", {"trainer_class": "my_pkg.train:MyTrainer"})
    'my_pkg.train:MyTrainer'
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentgym_runtime.errors import ConfigurationError, MissingExtraError
from agentgym_runtime.recording.files import atomic_write_text
from agentgym_runtime.recording.import_guard import AgentCodeImportError, training_job
from agentgym_runtime.trainers.base import TRAINERS, Trainer, TrainerUnavailable, TrainingJobSpec

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BAD_SPEC = 2
EXIT_UNAVAILABLE = 3

EXTRA_TRAINERS_ENV = "AGENTGYM_EXTRA_TRAINERS"
SPEC_NAME = "spec.json"
RESULT_NAME = "result.json"
ERROR_NAME = "error.json"
PROGRESS_NAME = "progress.jsonl"
LOG_NAME = "job.log"


def extra_trainers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Trainer names mapped to ``module:Class`` by ``AGENTGYM_EXTRA_TRAINERS``.

    Raises:
        ConfigurationError: The variable is set but malformed (the message shows the expected form).

    Example:
        >>> extra_trainers({"AGENTGYM_EXTRA_TRAINERS": "mine=pkg.mod:Mine, other=pkg.o:O"})
        {'mine': 'pkg.mod:Mine', 'other': 'pkg.o:O'}
    """
    text = (environ if environ is not None else os.environ).get(EXTRA_TRAINERS_ENV, "").strip()
    if not text:
        return {}
    mapping: dict[str, str] = {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{EXTRA_TRAINERS_ENV} is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ConfigurationError(f"{EXTRA_TRAINERS_ENV} must be a JSON object of name -> 'module:Class'")
        mapping = {str(k): str(v) for k, v in parsed.items()}
    else:
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, target = part.partition("=")
            if not sep:
                raise ConfigurationError(f"{EXTRA_TRAINERS_ENV} entry {part!r} is not of the form name=module:Class")
            mapping[name.strip()] = target.strip()
    for name, target in mapping.items():
        if ":" not in target:
            raise ConfigurationError(f"{EXTRA_TRAINERS_ENV}: {name}={target!r} must be 'module:Class'")
    return mapping


def resolve_trainer_path(name: str, options: Mapping[str, Any]) -> str:
    """The ``module:Class`` that runs trainer ``name`` (see the module docstring for the order).

    Raises:
        ConfigurationError: No trainer of that name is known.
    """
    override = options.get("trainer_class")
    if override is not None:
        if not isinstance(override, str) or ":" not in override:
            raise ConfigurationError(f"trainer_class must be 'module:Class', got {override!r}")
        return override
    extra = extra_trainers()
    if name in extra:
        return extra[name]
    if name in TRAINERS:
        return TRAINERS[name]
    known = sorted(set(TRAINERS) | set(extra))
    raise ConfigurationError(
        f"unknown trainer {name!r}; choose one of: {', '.join(known)} "
        f"(or register your own with {EXTRA_TRAINERS_ENV} or trainer_options={{'trainer_class': 'module:Class'}})"
    )


def load_trainer(spec: TrainingJobSpec) -> Trainer:
    """Import and instantiate the trainer ``spec`` names.

    Raises:
        ConfigurationError: Unknown trainer name, or the target is not a class with the trainer methods.
        TrainerUnavailable: Its module cannot be imported here (e.g. a missing extra); says what to install.
    """
    path = resolve_trainer_path(spec.trainer, spec.options)
    module_name, _, qualname = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingExtraError as exc:
        raise TrainerUnavailable(f"trainer {spec.trainer!r} cannot run here: {exc}") from exc
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        if missing and importlib.util.find_spec(missing.partition(".")[0]) is not None:
            # The package is installed but an import inside it fails: report that, not a missing extra.
            raise TrainerUnavailable(
                f"trainer {spec.trainer!r} cannot run here: importing {module_name!r} failed with "
                f"{type(exc).__name__}: {exc} (the package {missing.partition('.')[0]!r} is installed; "
                "an import inside it is broken)"
            ) from exc
        hint = (
            "pip install 'agentgym-runtime[train]'"
            if module_name.startswith("agentgym_runtime.")
            else f"make {module_name!r} importable by the job's Python (PYTHONPATH or install it)"
        )
        raise TrainerUnavailable(
            f"trainer {spec.trainer!r} cannot run here: importing {module_name!r} failed "
            f"(missing module {missing!r}); {hint}"
        ) from exc
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigurationError(f"trainer {spec.trainer!r}: {module_name!r} has no attribute {qualname!r}")
    instance = target() if isinstance(target, type) else target
    if not (callable(getattr(instance, "train", None)) and callable(getattr(instance, "check_available", None))):
        raise ConfigurationError(f"trainer {spec.trainer!r}: {path} has no train()/check_available() methods")
    return instance  # type: ignore[no-any-return]


class ProgressWriter:
    """The progress callback handed to the trainer: appends to ``progress.jsonl`` and echoes to stdout.

    Example:
        >>> import tempfile
        >>> writer = ProgressWriter(tempfile.mkdtemp())
        >>> writer(0.5, "half way")  # doctest: +ELLIPSIS
        [progress] 50% half way
        >>> read_progress(writer.path)[1]
        'half way'
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / PROGRESS_NAME

    def __call__(self, fraction: float, message: str) -> None:
        """Record that ``fraction`` (0..1) of the work is done, with a message."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        line = json.dumps({"time": time.time(), "fraction": fraction, "message": str(message)})
        with self.path.open("a") as handle:
            handle.write(line + "\n")
        print(f"[progress] {fraction:.0%} {message}", flush=True)


def read_progress(path: str | Path) -> tuple[float, str] | None:
    """The last complete progress report in ``path`` as ``(fraction, message)``, or ``None``.

    Example:
        >>> read_progress("/nonexistent/progress.jsonl") is None
        True
    """
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
            return float(entry["fraction"]), str(entry["message"])
        except (ValueError, KeyError, TypeError):
            continue  # a line being written right now
    return None


def _write_json(path: Path, payload: str) -> None:
    atomic_write_text(path, payload, mode=0o644)


def _fail(output_dir: Path | None, kind: str, exc: BaseException, code: int) -> int:
    message = str(exc) or type(exc).__name__
    print(f"[{kind}] {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
    if output_dir is not None:
        try:
            payload = json.dumps({"kind": kind, "type": type(exc).__name__, "message": message})
            _write_json(output_dir / ERROR_NAME, payload)
        except OSError:
            pass
    return code


def run_job(spec: TrainingJobSpec) -> int:
    """Run one job in this process; returns the exit code (see the module docstring)."""
    output_dir = Path(spec.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer = load_trainer(spec)
    except ConfigurationError as exc:
        return _fail(output_dir, "invalid_spec", exc, EXIT_BAD_SPEC)
    except TrainerUnavailable as exc:
        return _fail(output_dir, "unavailable", exc, EXIT_UNAVAILABLE)
    progress = ProgressWriter(output_dir)
    try:
        trainer.check_available(spec)
    except TrainerUnavailable as exc:
        return _fail(output_dir, "unavailable", exc, EXIT_UNAVAILABLE)
    except AgentCodeImportError as exc:
        return _fail(output_dir, "agent_code", exc, EXIT_BAD_SPEC)
    except Exception as exc:
        traceback.print_exc()
        return _fail(output_dir, "crash", exc, EXIT_CRASH)
    try:
        progress(0.0, f"trainer {spec.trainer!r} started")
        result = trainer.train(spec, progress)
        _write_json(output_dir / RESULT_NAME, result.model_dump_json(indent=2))
        progress(1.0, f"trainer {spec.trainer!r} finished")
    except TrainerUnavailable as exc:  # e.g. the endpoint went away after the check
        return _fail(output_dir, "unavailable", exc, EXIT_UNAVAILABLE)
    except AgentCodeImportError as exc:  # the agent's code served while the job imported it
        return _fail(output_dir, "agent_code", exc, EXIT_BAD_SPEC)
    except Exception as exc:
        traceback.print_exc()
        return _fail(output_dir, "crash", exc, EXIT_CRASH)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--spec`` and run the job; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agentgym_runtime.trainers.job", description="Run one agentgym training job."
    )
    parser.add_argument("--spec", required=True, help="path of the TrainingJobSpec JSON file")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    try:
        spec = TrainingJobSpec.model_validate_json(spec_path.read_text())
    except (OSError, ValueError) as exc:
        return _fail(spec_path.parent if spec_path.parent.is_dir() else None, "invalid_spec", exc, EXIT_BAD_SPEC)
    print(f"[job] run {spec.run_id}: trainer {spec.trainer!r} for agent {spec.agent!r} (pid {os.getpid()})", flush=True)
    with training_job():  # this process only trains: the agent's code must not serve when imported
        return run_job(spec)


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(main())
