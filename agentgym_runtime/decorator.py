"""``@agentgym.train_online``: one decorator on an agent that already runs.

On a function (sync, async, generator or async generator) each call becomes an
episode; on an agent object (LangChain, AutoGen, CrewAI or any callable) it
returns a transparent proxy whose entry points do the same. The wrapped agent
returns exactly what it returned and raises exactly what it raised.

Example:
    >>> import agentgym_runtime as agentgym
    >>> @agentgym.train_online(name="greeter")
    ... def greet(name: str) -> str:
    ...     '''Say hello.'''
    ...     return f"hello {name}"
    >>> greet("ada"), greet.__name__, greet.__doc__
    ('hello ada', 'greet', 'Say hello.')
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

# Importing the services wires the default runtime (policy router, training scheduler) before the
# first episode of a decorated agent starts; the adapters plug auto-instrumentation into episodes.
import agentgym_runtime.services  # noqa: F401
from agentgym_runtime.adapters import FRAMEWORKS, adapter_for
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.recording.episodes import AgentOptions
from agentgym_runtime.recording.rewards import RewardFn, RewardSource
from agentgym_runtime.recording.wrapping import CallKind, call_async, call_sync, iterate_async, iterate_sync

T = TypeVar("T")


def _entrypoint(fn: Callable[..., Any]) -> str | None:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module == "__main__":  # `python app.py`: a training job imports the script again by its path
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        module = os.path.abspath(script) if script else module
    return f"{module}:{qualname}" if module and qualname else None


def _input_recorder(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """Record the call's arguments by parameter name, so a replay can call ``fn(**input)``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return lambda args, kwargs: {"args": list(args), "kwargs": kwargs}
    params = list(signature.parameters)
    skip_first = bool(params) and params[0] in ("self", "cls")

    def record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return {"args": list(args), "kwargs": kwargs}
        if skip_first and params[0] in bound:
            bound = {k: v for k, v in bound.items() if k != params[0]}
        return dict(bound)

    return record


def _wrap_function(fn: Callable[..., Any], options: AgentOptions) -> Callable[..., Any]:
    record = _input_recorder(fn)
    kind = CallKind.of(fn)
    wrapper: Callable[..., Any]
    if kind is CallKind.ASYNC:

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_async(options, fn, args, kwargs, record(args, kwargs))

        wrapper = async_wrapper
    elif kind is CallKind.GENERATOR:

        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            return (yield from iterate_sync(options, fn, args, kwargs, record(args, kwargs)))

        wrapper = gen_wrapper
    elif kind is CallKind.ASYNC_GENERATOR:

        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            async for item in iterate_async(options, fn, args, kwargs, record(args, kwargs)):
                yield item

        wrapper = agen_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return call_sync(options, fn, args, kwargs, record(args, kwargs))

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, "agentgym_options", options)  # noqa: B010 - an attribute functions do not declare
    return wrapper


def _options(
    target: Any,
    *,
    name: str | None,
    scenario: Any,
    reward: RewardFn | RewardSource | None,
    framework: str | None,
    session_id: str | None,
    metadata: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None = None,
) -> AgentOptions:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    if reward is not None and not callable(reward) and not isinstance(reward, RewardSource):
        raise ConfigurationError(f"reward must be a callable (episode[, output]) -> float, got {type(reward).__name__}")
    if framework is not None and framework not in FRAMEWORKS:
        raise ConfigurationError(f"unknown framework {framework!r}; choose one of: {', '.join(sorted(FRAMEWORKS))}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, got {type(metadata).__name__}")
    if scenario is not None and not isinstance(scenario, str) and not isinstance(scenario, RewardSource):
        raise ConfigurationError("scenario must be a scenario name or an object with a reward(episode, output) method")
    if isinstance(scenario, str):
        from agentgym_runtime.scenarios.registry import list_scenarios

        known = list_scenarios()
        if scenario not in known:
            raise ConfigurationError(f"unknown scenario {scenario!r}; choose one of: {', '.join(known)}")
    agent_name = name or _default_name(target)
    entrypoint = _entrypoint(target) if inspect.isroutine(target) else _entrypoint(type(target))
    training_options: dict[str, Any] = {}
    if training:
        from agentgym_runtime.trainers.scheduler import training_config

        scenario_name = scenario if isinstance(scenario, str) else getattr(scenario, "name", None)
        config = training_config(
            agent_name,
            **training,
            entrypoint=entrypoint,
            scenario=scenario_name if isinstance(scenario_name, str) else None,
        )
        training_options = {"config": config}  # handed on as built, never dumped and rebuilt
    return AgentOptions(
        name=agent_name,
        scenario=scenario,
        reward=reward,
        framework=framework,
        entrypoint=entrypoint,
        session_id=session_id,
        metadata=dict(metadata or {}),
        training=training_options,
    )


def _default_name(target: Any) -> str:
    if inspect.isroutine(target):
        return str(getattr(target, "__name__", "agent"))
    for attribute in ("name", "role"):
        value = getattr(target, attribute, None)
        if isinstance(value, str) and value.strip():
            return value
    return type(target).__name__


@overload
def train_online(target: T, /) -> T: ...
@overload
def train_online(
    target: T,
    /,
    *,
    name: str | None = ...,
    scenario: Any = ...,
    reward: RewardFn | RewardSource | None = ...,
    framework: str | None = ...,
    session_id: str | None = ...,
    metadata: Mapping[str, Any] | None = ...,
    schedule: str | None = ...,
    min_new_episodes: int | None = ...,
    trainer: str | Sequence[str] | None = ...,
    teachers: Sequence[str] | None = ...,
    gpu: str | None = ...,
    trainer_options: Mapping[str, Any] | None = ...,
    canary_share: float | None = ...,
    backend: str | None = ...,
    max_heldout_drop: float | None = ...,
) -> T: ...
@overload
def train_online(
    *,
    name: str | None = ...,
    scenario: Any = ...,
    reward: RewardFn | RewardSource | None = ...,
    framework: str | None = ...,
    session_id: str | None = ...,
    metadata: Mapping[str, Any] | None = ...,
    schedule: str | None = ...,
    min_new_episodes: int | None = ...,
    trainer: str | Sequence[str] | None = ...,
    teachers: Sequence[str] | None = ...,
    gpu: str | None = ...,
    trainer_options: Mapping[str, Any] | None = ...,
    canary_share: float | None = ...,
    backend: str | None = ...,
    max_heldout_drop: float | None = ...,
) -> Callable[[T], T]: ...
def train_online(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    scenario: Any = None,
    reward: RewardFn | RewardSource | None = None,
    framework: str | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    schedule: str | None = None,
    min_new_episodes: int | None = None,
    trainer: str | Sequence[str] | None = None,
    teachers: Sequence[str] | None = None,
    gpu: str | None = None,
    trainer_options: Mapping[str, Any] | None = None,
    canary_share: float | None = None,
    backend: str | None = None,
    max_heldout_drop: float | None = None,
) -> Any:
    """Record every run of an agent as an episode (and, with training configured, improve it).

    Args:
        target: A function that runs the agent, or the agent object itself.
        name: The agent's name in the store (default: the function's name or agent's ``name``).
        scenario: A scenario name (one of ``agentgym scenarios list``), or an object whose
            ``reward(episode, output)`` rewards runs.
        reward: ``reward(episode)`` or ``reward(episode, output)`` → float; default: tool reliability.
        framework: Force an adapter (``"langchain"``, ``"autogen"``, ``"crewai"``, ``"ag2"``, ``"callable"``).
        session_id: Default session id of the episodes (used for sticky canary routing).
        metadata: Stored with every episode.
        schedule: Retrain in the background on this schedule: a duration (``"30m"``, ``"6h"``,
            ``"1d"``) or a 5-field cron string (``"0 3 * * *"``, UTC).
        min_new_episodes: Skip a scheduled run unless this many episodes ended since the last
            successful one (default 20).
        trainer: ``"demos"`` (default), ``"apo"``, ``"grpo"``, ``"sft"``, ``"verl"`` or your own
            (``AGENTGYM_EXTRA_TRAINERS`` or ``trainer_options={"trainer_class": "module:Class"}``);
            or a list run in stages, e.g. ``["sft", "grpo"]``: supervised on the traces first,
            then each later job reinforces from the live version's adapter (an option named after
            a stage holds that stage's own options: ``{"grpo": {"steps": 20}}``).
        teachers: Other agents' names whose recorded episodes train this one too (``sft``,
            ``grpo``): distil a large API model's agent, recorded by its own ``train_online``, into
            this agent's open model.
        gpu: ``"auto"`` (CUDA when available, else CPU; default), ``"cpu"`` or ``"local"`` (this
            machine's GPU, required).
        trainer_options: Passed to the trainer (JSON-serialisable).
        canary_share: Serve each trained candidate to this share of episodes (sticky per session)
            right away; the router's gate then promotes it or rolls it back.
        backend: Where training jobs run: ``"local"``, ``"ssh"``, ``"ray"``, ``"runpod"``, ``"lambda"``
            (configured by ``AGENTGYM_SSH_*``/``RAY_*``/``RUNPOD_*``/``LAMBDA_*`` settings); default: ``gpu`` decides.
        max_heldout_drop: The offline gate: a trained candidate whose reward on the snapshot's
            held-out split fell more than this below its starting point's is registered but not
            canaried (default 0.02; 0: it must not measure worse). With
            ``AGENTGYM_CANARY_PROMOTION=non_inferiority`` the live gate promotes a canary that is
            not worse, so this is where a candidate shows it is better.

    Returns:
        The wrapped function, or a transparent proxy of the agent object.

    Raises:
        ConfigurationError: An argument cannot work (the message names it).
        MissingExtraError: The agent's framework extra is not installed.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> @agentgym.train_online
        ... async def answer(question: str) -> str:
        ...     return "42"
        >>> import asyncio
        >>> asyncio.run(answer("why?"))
        '42'
    """
    training = {
        key: value
        for key, value in (
            ("schedule", schedule),
            ("min_new_episodes", min_new_episodes),
            ("trainer", trainer),
            ("teachers", teachers),
            ("gpu", gpu),
            ("trainer_options", trainer_options),
            ("canary_share", canary_share),
            ("backend", backend),
            ("max_heldout_drop", max_heldout_drop),
        )
        if value is not None
    }

    def apply(obj: Any) -> Any:
        if isinstance(obj, type):
            raise ConfigurationError(
                f"train_online wraps functions and agent objects, not classes: wrap an instance, "
                f"e.g. agentgym.train_online({obj.__name__}(...))"
            )
        if obj is None or not (callable(obj) or framework is not None or _has_entry_point(obj)):
            raise ConfigurationError(f"train_online needs a function or an agent object, got {type(obj).__name__}")
        options = _options(
            obj,
            name=name,
            scenario=scenario,
            reward=reward,
            framework=framework,
            session_id=session_id,
            metadata=metadata,
            training=training,
        )
        if options.training:
            from agentgym_runtime.trainers.scheduler import register_training

            register_training(options.training["config"])
        if (inspect.isroutine(obj) or isinstance(obj, functools.partial)) and framework in (None, "callable"):
            return _wrap_function(obj, options)
        adapter = adapter_for(obj, framework)
        options.framework = options.framework or adapter.framework
        return adapter.wrap(obj, options)

    if target is None:
        return apply
    return apply(target)


def _has_entry_point(obj: Any) -> bool:
    return any(callable(getattr(obj, n, None)) for n in ("invoke", "run", "kickoff", "ainvoke", "arun"))
