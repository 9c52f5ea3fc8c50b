"""Pieces the job-side trainers share: options, replay agent from a spec, the job's own store.

Example:
    >>> option_float({"lr": "0.1"}, "lr", 1.0)
    0.1
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from agentgym_runtime.recording.import_guard import importing_agent_code
from agentgym_runtime.trainers.base import TrainerUnavailable, TrainingJobSpec

#: Options any job may carry that are not a trainer's own hyper-parameters.
GENERIC_OPTIONS = frozenset(
    {
        "trainer_class",
        "heldout_fraction",
        "replay",
        "reward",
        "prompt",
        "guide",
        "live_tools",
        "fake_tools",
        "model_path",
        "tool_format",
        "chat_template",
        "pad_token",
        "extra_snapshots",
    }
)


def trainer_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without :data:`GENERIC_OPTIONS` (what a trainer's own config validates).

    Example:
        >>> trainer_options({"steps": 3, "trainer_class": "m:C"})
        {'steps': 3}
    """
    return {k: v for k, v in options.items() if k not in GENERIC_OPTIONS}


def option_float(options: Mapping[str, Any], name: str, default: float) -> float:
    """A float option (``default`` when absent).

    Example:
        >>> option_float({}, "x", 2.0)
        2.0
    """
    value = options.get(name, default)
    return float(value)


def option_int(options: Mapping[str, Any], name: str, default: int) -> int:
    """An int option (``default`` when absent).

    Example:
        >>> option_int({"n": "3"}, "n", 1)
        3
    """
    return int(options.get(name, default))


def import_object(path: str) -> Any:
    """Import ``module:qualname``, or ``/path/to/script.py:qualname`` (an agent run as ``python script.py``).

    A script is imported again under its own name (``__main__`` code under ``if __name__ ==
    "__main__":`` does not run), with its directory on ``sys.path`` as ``python script.py`` has it.

    Raises:
        ValueError: Not of the form ``module:qualname``.

    Example:
        >>> import_object("json:dumps")([1])
        '[1]'
    """
    module_name, _, qualname = path.rpartition(":")
    if not module_name or not qualname:
        raise ValueError(f"{path!r} must be 'module:qualname'")
    # Serving at import time (a loop outside `if __name__ == "__main__":`) is refused during the import.
    with importing_agent_code(module_name):
        target: Any = (
            import_script(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
        )
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def import_script(path: str) -> ModuleType:
    """Import the Python file at ``path`` as a module (once per process).

    Raises:
        ValueError: No such file.
    """
    script = Path(path)
    if not script.is_file():
        raise ValueError(f"the agent's script {path} does not exist here (the job imports it again to replay it)")
    name = f"agentgym_script_{abs(hash(str(script.resolve())))}_{script.stem}"
    if name in sys.modules:
        return sys.modules[name]
    directory = str(script.parent.resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def require_modules(trainer: str, modules: Mapping[str, str]) -> None:
    """Raise :class:`TrainerUnavailable` naming the first missing module and the extra that brings it.

    Example:
        >>> require_modules("demos", {"json": "train"})
    """
    for module, extra in modules.items():
        if importlib.util.find_spec(module) is None:
            raise TrainerUnavailable(
                f"the {trainer!r} trainer needs the Python package {module!r}, which is not installed in the "
                f"training environment: pip install 'agentgym-runtime[{extra}]'"
            )


def job_store_path(spec: TrainingJobSpec) -> Path:
    """The job's own Agent Lightning DuckDB file (never the service's trace store).

    Example:
        >>> job_store_path(TrainingJobSpec(run_id="r", agent="a", trainer="demos", snapshot_dir="s",
        ...                                output_dir="/tmp/o")).name
        'lightning.duckdb'
    """
    return Path(spec.output_dir) / "lightning.duckdb"


def replay_agent_from_spec(spec: TrainingJobSpec) -> Any | None:
    """The replay agent for a job: ``options["replay"]`` (``module:qualname``) or the recorded entrypoint.

    Options: ``reward`` (``module:qualname`` of ``(task, output) -> float``), ``live_tools`` / ``fake_tools``
    (``{tool: "module:qualname"}``). Returns ``None`` when neither a replay function nor an entrypoint is known.

    Example:
        >>> replay_agent_from_spec(TrainingJobSpec(run_id="r", agent="a", trainer="demos", snapshot_dir="s",
        ...                                        output_dir="o")) is None  # doctest: +SKIP
        True
    """
    path = spec.options.get("replay") or spec.entrypoint
    if not path:
        return None
    from agentgym_runtime.trainers.lightning.replay import ReplayAgent, load_replay_function

    reward_path = spec.options.get("reward")
    reward: Callable[..., Any] | None = import_object(reward_path) if reward_path else None
    live = {name: import_object(p) for name, p in dict(spec.options.get("live_tools", {})).items()}
    fakes = {name: import_object(p) for name, p in dict(spec.options.get("fake_tools", {})).items()}
    return ReplayAgent(
        load_replay_function(str(path)), agent=spec.agent, scenario_reward=reward, live_tools=live, fake_tools=fakes
    )
