"""``@agentgym.tool``: plain Python tools with a JSON schema, validation and a span per call.

The schema comes from the function's type hints (through pydantic); arguments
are validated before the function runs, so a model's bad call never reaches
the tool: the caller gets a :class:`~agentgym_runtime.errors.ToolArgumentsError`
naming the argument, and the call is recorded as ``invalid_arguments``.

Example:
    >>> import agentgym_runtime as agentgym
    >>> @agentgym.tool
    ... def get_order(order_id: int) -> dict:
    ...     '''Look up an order.'''
    ...     return {"id": order_id, "status": "shipped"}
    >>> get_order(order_id=7)
    {'id': 7, 'status': 'shipped'}
    >>> get_order.parameters["required"]
    ['order_id']
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, overload

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentgym_runtime import semconv
from agentgym_runtime.errors import ConfigurationError, ToolArgumentsError, UnknownToolError
from agentgym_runtime.recording.capture import ToolCall, record_tool_failure, start_tool_call
from agentgym_runtime.recording.runtime import get_runtime
from agentgym_runtime.recording.sandbox import current_sandbox, sandboxed_result
from agentgym_runtime.recording.serialization import safe_str
from agentgym_runtime.semconv import ToolOutcome

P = ParamSpec("P")
R = TypeVar("R")

#: Argument types whose values pydantic's lax mode returns unchanged when they already have
#: exactly that type, so a plain ``type(value) is T`` check gives pydantic's answer.
_PLAIN_TYPES: frozenset[type] = frozenset({int, str, float, bool})
_REQUIRED = object()
_MISSING = object()


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Summary paragraph and Google-style ``Args:`` descriptions of ``fn``'s docstring."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].strip()
    params: dict[str, str] = {}
    lines = doc.splitlines()
    inside = False
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            inside = True
            continue
        if inside:
            if stripped.endswith(":") and " " not in stripped:
                break  # next section, e.g. "Returns:"
            if not stripped:
                continue
            head, sep, rest = stripped.partition(":")
            name = head.split("(")[0].strip()
            if (
                sep
                and name.isidentifier()
                and line.startswith(("    ", "\t"))
                and not line.startswith(("        ", "\t\t"))
            ):
                current = name
                params[name] = rest.strip()
            elif current:
                params[current] = f"{params[current]} {stripped}".strip()
    return summary, params


def _arguments_model(fn: Callable[..., Any], name: str, descriptions: Mapping[str, str]) -> type[BaseModel]:
    from pydantic import Field

    signature = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigurationError(
                f"tool {name!r}: parameter {param.name!r} must be a named parameter "
                "(tools are called with keyword arguments from JSON; "
                "*args, **kwargs and positional-only parameters are not allowed)"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=descriptions.get(param.name)))
    model_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_")) + "Arguments"
    return create_model(model_name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields)


def _plain_fields(fn: Callable[..., Any]) -> dict[str, tuple[type, Any]] | None:
    """``{name: (type, default)}`` when every parameter is a plain scalar, else ``None``.

    Such tools take the fast path of :meth:`Tool.validate`: arguments that already have the
    declared types are accepted as they are; anything else goes to pydantic, whose errors
    (and conversions) stay the reference.
    """
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        return None
    fields: dict[str, tuple[type, Any]] = {}
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name)
        if annotation not in _PLAIN_TYPES:
            return None
        default = param.default
        if default is inspect.Parameter.empty:
            default = _REQUIRED
        elif default is not None and type(default) not in _PLAIN_TYPES:
            return None  # pydantic may copy or wrap other defaults: let it
        fields[param.name] = (annotation, default)
    return fields


def _problems(error: ValidationError) -> list[dict[str, Any]]:
    problems = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item.get("loc", ())) or "(arguments)"
        problems.append({"argument": loc, "message": item.get("msg", "invalid"), "type": item.get("type", "")})
    return problems


class _Schema(NamedTuple):
    summary: str
    model: type[BaseModel]
    plain: dict[str, tuple[type, Any]] | None
    parameters: dict[str, Any]


# Building a tool's pydantic model and JSON schema costs ~2 ms; tools made per request or per world
# (closures of the same ``def``, as scenarios and many agents create them) share one.
_SCHEMAS: dict[Hashable, _Schema] = {}
_SCHEMAS_MAX = 1024


def _schema_key(fn: Callable[..., Any], name: str) -> Hashable | None:
    """What determines a function's schema: code, name, annotations, defaults, docstring (None: do not cache)."""
    code = getattr(fn, "__code__", None)
    if code is None or inspect.ismethod(fn):
        return None
    try:
        key = (
            code,
            name,
            tuple(sorted(getattr(fn, "__annotations__", {}).items(), key=lambda item: item[0])),
            getattr(fn, "__defaults__", None),
            tuple(sorted((getattr(fn, "__kwdefaults__", None) or {}).items(), key=lambda item: item[0])),
            getattr(fn, "__doc__", None),
        )
        hash(key)
    except TypeError:  # an unhashable default or annotation: build the schema every time
        return None
    return key


class Tool(Generic[P, R]):
    """A function callable by an agent, with a schema, validation and recording.

    Create it with :func:`agentgym_runtime.tool`. Calling it behaves like the function
    (same return value, same exceptions) after validating the arguments.

    Attributes:
        name: The tool's name as models see it.
        description: What the tool does (first paragraph of the docstring by default).
        parameters: JSON schema of the arguments.
    """

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None) -> None:
        if not callable(fn):
            raise ConfigurationError(f"tool needs a function, got {type(fn).__name__}")
        tool_name = name or getattr(fn, "__name__", None)
        if not tool_name or not isinstance(tool_name, str):
            raise ConfigurationError("tool needs a name: pass name=... for callables without __name__")
        key = _schema_key(fn, tool_name)
        schema = _SCHEMAS.get(key) if key is not None else None
        if schema is None:
            summary, param_docs = _doc_parts(fn)
            model = _arguments_model(fn, tool_name, param_docs)
            schema = _Schema(summary, model, _plain_fields(fn), _clean_schema(model.model_json_schema()))
            if key is not None:
                if len(_SCHEMAS) >= _SCHEMAS_MAX:
                    _SCHEMAS.pop(next(iter(_SCHEMAS)))
                _SCHEMAS[key] = schema
        self.fn = fn
        self.name: str = tool_name
        self.description: str = description if description is not None else schema.summary
        self._model = schema.model
        self._fields = tuple(self._model.model_fields)
        self._plain = schema.plain
        self.parameters: dict[str, Any] = copy.deepcopy(schema.parameters)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    # --- schema -----------------------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        """``{"name", "description", "parameters"}``: what an LLM is offered."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def openai_schema(self) -> dict[str, Any]:
        """The definition in OpenAI's ``tools=[...]`` format."""
        return {"type": "function", "function": self.definition()}

    @property
    def arguments_model(self) -> type[BaseModel]:
        """The pydantic model :meth:`validate` checks arguments with: an unknown argument is an error.

        Hand it to a framework that builds its own tool from the function (LangChain's
        ``args_schema``), or the framework infers a model of its own that drops an argument the
        function does not take and runs the call, where :meth:`validate` (and the schema the model
        is shown, ``additionalProperties: false``) refuses it.

        Example:
            >>> import agentgym_runtime as agentgym
            >>> @agentgym.tool
            ... def get_order(order_id: int) -> str:
            ...     "Look up an order."
            ...     return "shipped"
            >>> get_order.arguments_model.model_config["extra"]
            'forbid'
        """
        return self._model

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validate keyword ``arguments``; return them converted to the declared types.

        Raises:
            ToolArgumentsError: Names each argument that is missing, unknown or of the wrong type.
        """
        plain = self._plain
        if plain is not None and type(arguments) is dict:  # before the (slower) Mapping ABC check
            checked = self._validate_plain(plain, arguments)
            if checked is not None:
                return checked
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsError(
                self.name,
                [
                    {
                        "argument": "(arguments)",
                        "message": f"expected an object, got {type(arguments).__name__}",
                        "type": "type",
                    }
                ],
            )
        try:
            model = self._model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, _problems(exc)) from None
        except (RecursionError, ValueError, TypeError) as exc:  # pathological values pydantic cannot walk
            problem = {"argument": "(arguments)", "message": f"cannot validate: {safe_str(exc)}", "type": "value"}
            raise ToolArgumentsError(self.name, [problem]) from None
        return {field: getattr(model, field) for field in self._fields}

    @staticmethod
    def _validate_plain(plain: dict[str, tuple[type, Any]], arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The validated arguments if each has exactly its declared type, else ``None`` (ask pydantic)."""
        validated: dict[str, Any] = {}
        given = 0
        for name, (expected, default) in plain.items():
            value = arguments.get(name, _MISSING)
            if value is _MISSING:
                if default is _REQUIRED:
                    return None
                validated[name] = default
            elif type(value) is expected:
                validated[name] = value
                given += 1
            else:
                return None
        return validated if given == len(arguments) else None  # an unknown argument: pydantic names it

    # --- calling ----------------------------------------------------------------------------
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not args:
            return kwargs
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentsError(
                self.name, [{"argument": "(arguments)", "message": str(exc), "type": "binding"}]
            ) from None
        return dict(bound.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Validate the arguments, run the tool and record the call."""
        arguments = self._bind(args, kwargs)
        if self.is_async:
            return self._acall(arguments, None)  # type: ignore[return-value]
        return self._call(arguments, None)

    def call_with(self, arguments: Mapping[str, Any], *, call_id: str | None = None) -> R:
        """Call with keyword ``arguments`` (as parsed from a model's tool call)."""
        if self.is_async:
            return self._acall(dict(arguments), call_id)  # type: ignore[return-value]
        return self._call(dict(arguments), call_id)

    def _open(self, arguments: dict[str, Any], call_id: str | None) -> ToolCall | None:
        runtime = get_runtime()
        if not runtime.settings.enabled:
            return None
        try:
            call = start_tool_call(self.name, call_id=call_id, arguments=arguments, runtime=runtime)
            # The tool's definition, where the trainer's dataset reads the tools an agent offers
            # (a plain agent records no chat span listing them).
            trace.get_current_span().set_attribute(
                semconv.GEN_AI_TOOL_DEFINITIONS, runtime.serializer.to_json([self.definition()])
            )
            return call
        except Exception as exc:
            runtime.internal_error("tool start", exc)
            return None

    def _validated(self, call: ToolCall | None, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.validate(arguments)
        except ToolArgumentsError as exc:
            if call is not None:
                _guard(call.fail, ToolOutcome.INVALID_ARGUMENTS, message=safe_str(exc))
            raise

    def _call(self, arguments: dict[str, Any], call_id: str | None) -> R:
        if current_sandbox.get() is not None:  # a training replay: the sandbox answers, the tool never runs
            return sandboxed_result(self.name, arguments)  # type: ignore[no-any-return]
        call = self._open(arguments, call_id)
        validated = self._validated(call, arguments)
        try:
            result = self.fn(**validated)  # type: ignore[call-arg]
        except BaseException as exc:
            if call is not None:
                _guard(call.fail, ToolOutcome.TOOL_ERROR, error=exc)
            raise
        if call is not None:
            _guard(call.succeed, result)
        return result

    async def _acall(self, arguments: dict[str, Any], call_id: str | None) -> Any:
        if current_sandbox.get() is not None:  # a training replay: the sandbox answers, the tool never runs
            return sandboxed_result(self.name, arguments)
        call = self._open(arguments, call_id)
        validated = self._validated(call, arguments)
        try:
            result = await self.fn(**validated)  # type: ignore[call-arg, misc]
        except BaseException as exc:
            if call is not None:
                _guard(call.fail, ToolOutcome.TOOL_ERROR, error=exc)
            raise
        if call is not None:
            _guard(call.succeed, result)
        return result

    def __repr__(self) -> str:
        return f"<agentgym tool {self.name!r}>"


def _guard(action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a recording step; a failure in it is the middleware's, never the caller's."""
    try:
        action(*args, **kwargs)
    except Exception as exc:
        get_runtime().internal_error("tool recording", exc)


def _loose_arguments(arguments: Mapping[str, Any] | str | None) -> Any:
    """A model's raw arguments as the sandbox takes them (JSON text parsed when it parses)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    return {} if arguments is None else dict(arguments)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    schema.pop("title", None)
    props = schema.get("properties") or {}
    schema["properties"] = {k: {kk: vv for kk, vv in v.items() if kk != "title"} for k, v in props.items()}
    schema.setdefault("required", [])
    schema["additionalProperties"] = False
    return schema


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(*, name: str | None = None, description: str | None = None) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None, description: str | None = None
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make ``fn`` an agent tool: schema from type hints, validated calls, one span per call.

    Args:
        fn: The function (when used bare, ``@agentgym.tool``).
        name: The name models see (default: the function's name).
        description: What models are told the tool does (default: the docstring's summary).

    Example:
        >>> import agentgym_runtime as agentgym
        >>> @agentgym.tool(name="add", description="Add two integers.")
        ... def add_numbers(a: int, b: int) -> int:
        ...     return a + b
        >>> add_numbers(a=2, b=3), add_numbers.name
        (5, 'add')
    """

    def decorate(function: Callable[P, R]) -> Tool[P, R]:
        return Tool(function, name=name, description=description)

    if fn is not None:
        return decorate(fn)
    return decorate


class Toolbox:
    """Tools by name, with dispatch of a model's tool call that records every failure kind.

    Example:
        >>> import agentgym_runtime as agentgym
        >>> @agentgym.tool
        ... def ping() -> str:
        ...     return "pong"
        >>> box = agentgym.Toolbox([ping])
        >>> box.call("ping", "{}")
        'pong'
        >>> box.call("pong", {})
        Traceback (most recent call last):
        ...
        agentgym_runtime.errors.UnknownToolError: unknown tool 'pong'; available tools: ping
    """

    def __init__(self, tools: Iterable[Tool[..., Any] | Callable[..., Any]]) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            wrapped = item if isinstance(item, Tool) else Tool(item)
            if wrapped.name in self._tools:
                raise ConfigurationError(f"two tools are named {wrapped.name!r}")
            self._tools[wrapped.name] = wrapped

    @property
    def names(self) -> list[str]:
        """Tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool[..., Any]:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, list(self._tools)) from None

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def definitions(self) -> list[dict[str, Any]]:
        """Every tool's definition, as offered to a model."""
        return [t.definition() for t in self._tools.values()]

    def _resolve(
        self, name: str, arguments: Mapping[str, Any] | str | None, call_id: str | None
    ) -> tuple[Tool[..., Any], dict[str, Any]]:
        """The tool and its keyword arguments; a call that cannot run is recorded, then raised."""

        def refuse(outcome: ToolOutcome, error: Exception) -> Exception:
            # Raw argument text is recorded through the serializer's text path (secrets masked).
            _guard(record_tool_failure, name, outcome, call_id=call_id, arguments=arguments, message=str(error))
            return error

        def bad_arguments(message: str, kind: str) -> Exception:
            problem = {"argument": "(arguments)", "message": message, "type": kind}
            return refuse(ToolOutcome.INVALID_ARGUMENTS, ToolArgumentsError(name, [problem]))

        found = self._tools.get(name)
        if found is None:
            raise refuse(ToolOutcome.UNKNOWN_TOOL, UnknownToolError(name, list(self._tools)))
        if arguments is None:
            return found, {}
        parsed: Any = arguments
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise bad_arguments(f"not valid JSON: {exc.msg} at char {exc.pos}", "json") from None
            except RecursionError:  # a model can emit JSON nested deeper than the interpreter's stack
                raise bad_arguments("JSON nested too deeply to parse", "json") from None
            except ValueError as exc:  # e.g. an integer past sys.get_int_max_str_digits()
                raise bad_arguments(f"not parseable JSON: {safe_str(exc)}", "json") from None
        if not isinstance(parsed, Mapping):
            raise bad_arguments(f"expected an object, got {type(parsed).__name__}", "type")
        return found, dict(parsed)

    def call(self, name: str, arguments: Mapping[str, Any] | str | None = None, *, call_id: str | None = None) -> Any:
        """Run the tool ``name`` with ``arguments`` (a mapping or JSON text).

        Raises:
            UnknownToolError: No tool has that name (recorded as ``unknown_tool``).
            ToolArgumentsError: The arguments do not parse or validate (``invalid_arguments``).
        """
        if current_sandbox.get() is not None:  # a training replay: the sandbox judges every call, known or not
            return sandboxed_result(name, _loose_arguments(arguments))
        found, parsed = self._resolve(name, arguments, call_id)
        return found.call_with(parsed, call_id=call_id)

    async def acall(
        self, name: str, arguments: Mapping[str, Any] | str | None = None, *, call_id: str | None = None
    ) -> Any:
        """Async form of :meth:`call` (awaits async tools, calls sync ones)."""
        found, parsed = self._resolve(name, arguments, call_id)
        result = found.call_with(parsed, call_id=call_id)
        if inspect.isawaitable(result):
            return await result
        return result
