"""Fallback to the incumbent policy when a canary's routed LLM endpoint is down (LangChain, AutoGen, CrewAI).

Every test serves a live policy v1 (``LIVE PROMPT``) and a canary v2 that routes the model to its
own endpoint (``policy.llm``) through the real registry and router. The canary's "endpoint" is a
scripted model built by the adapter's factory that raises ``ConnectionError``; the host's own
model answers with the prompt it was given, so the answer shows which policy served the retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

import agentgym_runtime as agentgym
from agentgym_runtime import semconv
from agentgym_runtime.adapters import load_adapter
from agentgym_runtime.adapters.autogen import register_client_factory
from agentgym_runtime.adapters.fallback import is_endpoint_failure
from agentgym_runtime.adapters.langchain import register_model_factory
from agentgym_runtime.policy.registry import PolicyStatus
from agentgym_runtime.recording.policy import LLMConfig
from agentgym_runtime.recording.runtime import Runtime
from agentgym_runtime.testing import Recorded
from tests.adapters.autogen_stub import StubClient

AGENT = "support"
ENDPOINT = "http://10.255.0.9:8000/v1"
LIVE_PROMPT = "LIVE PROMPT"
CANARY_PROMPT = "CANARY PROMPT"


def serve_routed_canary(runtime: Runtime, agent: str = AGENT) -> int:
    """Live v1 (a prompt), canary v2 on its own endpoint for every session; returns the threshold N."""
    registry = runtime.policies
    registry.promote(agent, registry.register(agent, system_prompt=LIVE_PROMPT).version)
    canary = registry.register(agent, system_prompt=CANARY_PROMPT, llm={"endpoint": ENDPOINT, "model": "canary-lora"})
    registry.start_canary(agent, canary.version, 1.0)
    return runtime.router.config.fallback_failures


def assert_rolled_back_by_router(runtime: Runtime, failures: int, agent: str = AGENT) -> None:
    state = runtime.policies.state(agent)
    assert (state.live, state.canary, state.status_of(2)) == (1, None, PolicyStatus.ROLLED_BACK)
    event = runtime.policies.events(agent)[-1]
    assert (event.version, event.to_status, event.actor) == (2, "rolled_back", "router")
    assert event.reason == f"{failures} LLM failures within 60s (ConnectionError)"
    assert event.details["last_error"] == f"ConnectionError: connection refused: {ENDPOINT}"
    assert event.details["fallback_to"] == 1


def assert_canary_untouched(runtime: Runtime, agent: str = AGENT) -> None:
    state = runtime.policies.state(agent)
    assert (state.live, state.canary) == (1, 2)
    assert runtime.router.stats()["llm_failures"] == {}


def chat_rows(recorded: Recorded) -> list[tuple[int, str, str | None]]:
    rows = recorded.query(
        "SELECT policy_version, status_code, error_type FROM spans WHERE operation = 'chat' ORDER BY start_unix_nano"
    )
    return [(r["policy_version"], r["status_code"], r["error_type"]) for r in rows]


def fallback_marks(recorded: Recorded, agent: str = AGENT) -> list[tuple[int, int | None]]:
    """(policy version, ``agentgym.policy.fallback_from``) of agentgym's spans of ``agent``, in order.

    AutoGen records an ``invoke_agent`` span of its own too; only ours are read here.
    """
    rows = recorded.query(
        "SELECT policy_version, attributes FROM spans WHERE operation = 'invoke_agent' AND agent = ? "
        "AND scope_name = 'agentgym_runtime' ORDER BY start_unix_nano",
        [agent],
    )
    marks = []
    for row in rows:
        attributes = row["attributes"]
        attributes = json.loads(attributes) if isinstance(attributes, str) else dict(attributes or {})
        marks.append((row["policy_version"], attributes.get(semconv.POLICY_FALLBACK_FROM)))
    return marks


# --- the classification -----------------------------------------------------------------------------
def test_which_errors_count_as_endpoint_failures() -> None:
    import httpx
    import openai

    request = httpx.Request("POST", f"{ENDPOINT}/chat/completions")

    def status_error(status: int) -> openai.APIStatusError:
        return openai.APIStatusError("failed", response=httpx.Response(status, request=request), body=None)

    assert is_endpoint_failure(ConnectionRefusedError("refused"))
    assert is_endpoint_failure(TimeoutError())
    assert is_endpoint_failure(httpx.ConnectError("refused", request=request))
    assert is_endpoint_failure(httpx.ReadTimeout("slow", request=request))
    assert is_endpoint_failure(openai.APIConnectionError(request=request))
    assert is_endpoint_failure(openai.APITimeoutError(request=request))
    assert [s for s in (400, 401, 404, 413, 422, 429, 500, 503) if is_endpoint_failure(status_error(s))] == [
        401,
        404,
        429,
        500,
        503,
    ]
    response = httpx.Response(503, request=request)
    assert is_endpoint_failure(httpx.HTTPStatusError("unavailable", request=request, response=response))
    # a framework's wrapper raised ``from`` a client error counts (CrewAI: ValueError from NotFoundError)
    wrapped = ValueError("Model canary-lora not found")
    wrapped.__cause__ = status_error(404)
    assert is_endpoint_failure(wrapped)
    # the host's own errors, and anything that merely carries a status, do not
    for error in (ValueError("bad"), TypeError("bug"), KeyError("k"), RuntimeError("x"), FileNotFoundError("f")):
        assert not is_endpoint_failure(error)
    own = ValueError("status")
    own.status_code = 503  # type: ignore[attr-defined]
    assert not is_endpoint_failure(own)
    assert not is_endpoint_failure(asyncio.CancelledError())


# --- LangChain ----------------------------------------------------------------------------------------
def _system(messages: Sequence[BaseMessage]) -> str:
    return next((str(m.content) for m in messages if m.type == "system"), "")


class OwnModel(BaseChatModel):
    """The host's own model: answers ``[<system prompt>] <question>``; optionally down itself."""

    calls: list[list[BaseMessage]]
    down: bool = False

    @property
    def _llm_type(self) -> str:
        return "own"

    def _answer(self, messages: list[BaseMessage]) -> str:
        self.calls.append(list(messages))
        if self.down:
            raise ConnectionError("the host's own endpoint is down too")
        return f"[{_system(messages)}] {messages[-1].content}"

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._answer(messages)))])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        head, _, tail = self._answer(messages).partition(" ")
        yield ChatGenerationChunk(message=AIMessageChunk(content=head))
        yield ChatGenerationChunk(message=AIMessageChunk(content=" " + tail))


class CanaryEndpoint(BaseChatModel):
    """What the canary's factory builds: every call raises ``error`` (after ``chunks_first`` chunks)."""

    endpoint: str
    attempts: Any  # the fixture's list itself (a ``list`` field would be copied by validation)
    error: str = "connection"
    chunks_first: int = 0

    @property
    def _llm_type(self) -> str:
        return "canary"

    def _fail(self) -> BaseException:
        error: BaseException
        if self.error == "connection":
            error = ConnectionError(f"connection refused: {self.endpoint}")
        else:
            error = ValueError("the host's model code rejects this prompt")
        self.attempts.append(error)
        return error

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        raise self._fail()

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for _ in range(self.chunks_first):
            yield ChatGenerationChunk(message=AIMessageChunk(content="partial"))
        raise self._fail()


def uninstrument_fully(framework: str) -> None:
    """Undo every ``instrument()`` of a framework's adapter (the decorator's included): a fresh state."""
    adapter = load_adapter(framework)
    while type(adapter)._instrument_count:
        adapter.uninstrument()


@pytest.fixture
def langchain_endpoint() -> Iterator[dict[str, Any]]:
    """Route policies with ``llm`` to a :class:`CanaryEndpoint`; yields its settings and attempts."""
    settings: dict[str, Any] = {"attempts": [], "configs": [], "error": "connection", "chunks_first": 0}

    def factory(config: LLMConfig) -> BaseChatModel:
        settings["configs"].append(config)
        return CanaryEndpoint(
            endpoint=config.endpoint or "?",
            attempts=settings["attempts"],
            error=settings["error"],
            chunks_first=settings["chunks_first"],
        )

    register_model_factory(factory)
    yield settings
    register_model_factory(None)
    uninstrument_fully("langchain")


def langchain_agent(down: bool = False) -> tuple[Any, OwnModel]:
    model = OwnModel(calls=[], down=down)
    prompt = ChatPromptTemplate.from_messages([("system", "You help with orders."), ("human", "{question}")])
    return agentgym.train_online(prompt | model, name=AGENT), model


def run_langchain(agent: Any, mode: str, question: str) -> str:
    """One episode through ``mode``; the canary's share is 1.0, so every episode pins it."""
    if mode == "invoke":
        return str(agent.invoke({"question": question}).content)
    if mode == "stream":
        return "".join(str(c.content) for c in agent.stream({"question": question}))

    async def run_async() -> str:
        if mode == "ainvoke":
            return str((await agent.ainvoke({"question": question})).content)
        return "".join([str(c.content) async for c in agent.astream({"question": question})])

    return asyncio.run(run_async())


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_langchain_falls_back_once_then_the_router_rolls_the_canary_back(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any], mode: str
) -> None:
    threshold = serve_routed_canary(agentgym_runtime)
    agent, own = langchain_agent()

    answers = [run_langchain(agent, mode, f"where is order {i}?") for i in range(threshold + 1)]

    # the host gets the incumbent's answer (v1's prompt, its own model) every time
    assert answers == [f"[{LIVE_PROMPT}] where is order {i}?" for i in range(threshold + 1)]
    # one attempt at the canary's endpoint and exactly one retry per episode, until the rollback
    assert len(langchain_endpoint["attempts"]) == threshold
    assert [c.endpoint for c in langchain_endpoint["configs"]] == [ENDPOINT] * threshold
    assert len(own.calls) == threshold + 1
    assert all(_system(call) == LIVE_PROMPT for call in own.calls)
    assert_rolled_back_by_router(agentgym_runtime, threshold)
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "UNSET", None)] * threshold + [
        (1, "UNSET", None)
    ]
    assert fallback_marks(recorded) == [(2, 2)] * threshold + [(1, None)]
    episodes = recorded.episodes(AGENT)
    assert [e["policy_version"] for e in episodes] == [2] * threshold + [1]  # failures count against v2
    assert [e["status"] for e in episodes] == ["ok"] * (threshold + 1)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_langchain_host_model_error_is_not_retried(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any], mode: str
) -> None:
    serve_routed_canary(agentgym_runtime)
    langchain_endpoint["error"] = "value"
    agent, own = langchain_agent()

    with pytest.raises(ValueError) as raised:
        run_langchain(agent, mode, "where is order 7?")

    (original,) = langchain_endpoint["attempts"]
    assert raised.value is original and raised.type is ValueError
    assert own.calls == []
    assert_canary_untouched(agentgym_runtime)
    assert chat_rows(recorded) == [(2, "ERROR", "ValueError")]
    assert fallback_marks(recorded) == [(2, None)]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_langchain_incumbent_failing_too_propagates_the_original_error(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any], mode: str
) -> None:
    serve_routed_canary(agentgym_runtime)
    agent, own = langchain_agent(down=True)

    with pytest.raises(ConnectionError) as raised:
        run_langchain(agent, mode, "where is order 7?")

    (original,) = langchain_endpoint["attempts"]
    assert raised.value is original
    assert str(raised.value) == f"connection refused: {ENDPOINT}"
    assert len(own.calls) == 1  # exactly one retry, which failed as well
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "ERROR", "ConnectionError")]
    assert fallback_marks(recorded) == [(2, 2)]
    (episode,) = recorded.episodes(AGENT)
    assert (episode["status"], episode["error_type"]) == ("error", "ConnectionError")


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_langchain_stream_failing_after_its_first_chunk_propagates(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any], mode: str
) -> None:
    serve_routed_canary(agentgym_runtime)
    langchain_endpoint["chunks_first"] = 1
    agent, own = langchain_agent()
    received: list[str] = []

    def consume() -> None:
        if mode == "stream":
            received.extend(str(chunk.content) for chunk in agent.stream({"question": "where is order 7?"}))
            return

        async def consume_async() -> None:
            async for chunk in agent.astream({"question": "where is order 7?"}):
                received.append(str(chunk.content))

        asyncio.run(consume_async())

    with pytest.raises(ConnectionError) as raised:
        consume()

    assert received == ["partial"]
    assert raised.value is langchain_endpoint["attempts"][0]
    assert len(langchain_endpoint["attempts"]) == 1 and own.calls == []
    assert_canary_untouched(agentgym_runtime)
    assert fallback_marks(recorded) == [(2, None)]


@tool
def get_order(order_id: int) -> str:
    """Look up an order by its id."""
    return f"order {order_id} shipped"


class ToolCallingOwnModel(OwnModel):
    """The host's own model in a ``create_agent`` graph: a tool call first, then the answer."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        answer = self._answer(messages)
        if messages[-1].type == "human":
            call = {"name": "get_order", "args": {"order_id": 7}, "id": "c1", "type": "tool_call"}
            return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(answer))])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
def test_langchain_agent_keeps_the_incumbent_for_the_rest_of_the_episode(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any], asynchronous: bool
) -> None:
    # LangGraph runs every node in a copy of the context: the fallback must outlive the model node.
    serve_routed_canary(agentgym_runtime)
    own = ToolCallingOwnModel(calls=[])
    graph = agentgym.train_online(create_agent(own, [get_order], system_prompt="You help."), name=AGENT)
    question = {"messages": [HumanMessage("where is order 7?")]}

    result = asyncio.run(graph.ainvoke(question)) if asynchronous else graph.invoke(question)

    assert result["messages"][-1].content == f"[{LIVE_PROMPT}] order 7 shipped"
    assert len(langchain_endpoint["attempts"]) == 1  # one failed call per episode, not one per turn
    assert [_system(call) for call in own.calls] == [LIVE_PROMPT, LIVE_PROMPT]
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "UNSET", None), (1, "UNSET", None)]
    (episode,) = recorded.episodes(AGENT)
    assert recorded.outcomes(episode["episode_id"]) == {"ok": 1}
    assert agentgym_runtime.router.stats()["llm_failures"] == {f"{AGENT}@v2": 1}


def test_langchain_policy_without_llm_is_never_retried(
    agentgym_runtime: Runtime, recorded: Recorded, langchain_endpoint: dict[str, Any]
) -> None:
    registry = agentgym_runtime.policies
    registry.promote(AGENT, registry.register(AGENT, system_prompt=LIVE_PROMPT).version)
    registry.start_canary(AGENT, registry.register(AGENT, system_prompt=CANARY_PROMPT).version, 1.0)
    agent, own = langchain_agent(down=True)  # the host's own endpoint is down: not the canary's fault

    with pytest.raises(ConnectionError, match="own endpoint is down"):
        run_langchain(agent, "invoke", "where is order 7?")

    assert [_system(c) for c in own.calls] == [CANARY_PROMPT]
    assert langchain_endpoint["attempts"] == []
    assert_canary_untouched(agentgym_runtime)


# --- AutoGen ------------------------------------------------------------------------------------------


class ScriptedClient(StubClient):
    """A scripted ``ChatCompletionClient``: answers ``[<system message>] <last user message>``.

    ``failure`` makes every call raise a fresh error instead (``"connection"`` or ``"value"``).
    """

    def __init__(self, failure: str | None = None, endpoint: str = "own") -> None:
        self.failure = failure
        self.endpoint = endpoint
        self.calls: list[list[LLMMessage]] = []
        self.errors: list[BaseException] = []

    def _answer(self, messages: Sequence[LLMMessage]) -> CreateResult:
        self.calls.append(list(messages))
        if self.failure is not None:
            error: BaseException = (
                ConnectionError(f"connection refused: {self.endpoint}")
                if self.failure == "connection"
                else ValueError("the host's model code rejects this prompt")
            )
            self.errors.append(error)
            raise error
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        question = next(str(m.content) for m in reversed(messages) if isinstance(m, UserMessage))
        return CreateResult(
            finish_reason="stop",
            content=f"[{system}] {question}",
            usage=RequestUsage(prompt_tokens=5, completion_tokens=3),
            cached=False,
        )

    async def create(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = (), **kwargs: Any
    ) -> CreateResult:
        return self._answer(messages)

    async def create_stream(  # type: ignore[override]
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = (), **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        result = self._answer(messages)
        assert isinstance(result.content, str)
        head, _, tail = result.content.partition(" ")
        yield head
        yield " " + tail
        yield result


@pytest.fixture
def autogen_endpoint() -> Iterator[dict[str, Any]]:
    """Route policies with ``llm`` to a failing :class:`ScriptedClient` (one per config, as AutoGen caches)."""
    settings: dict[str, Any] = {"failure": "connection", "clients": []}

    def factory(config: LLMConfig) -> ChatCompletionClient:
        client = ScriptedClient(settings["failure"], endpoint=config.endpoint or "?")
        settings["clients"].append(client)
        return client

    register_client_factory(factory)
    yield settings
    register_client_factory(None)
    uninstrument_fully("autogen")


def autogen_agent(streaming: bool, own: ScriptedClient) -> Any:
    inner = AssistantAgent(
        AGENT, model_client=own, system_message="You help with orders.", model_client_stream=streaming
    )
    return agentgym.train_online(inner, name=AGENT)


def run_autogen(agent: Any, question: str) -> str:
    async def run() -> str:
        result = await agent.run(task=question)
        return str(result.messages[-1].content)

    return asyncio.run(run())


def canary_client(settings: dict[str, Any]) -> ScriptedClient:
    (client,) = settings["clients"]
    assert isinstance(client, ScriptedClient)
    return client


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "create_stream"])
def test_autogen_falls_back_once_then_the_router_rolls_the_canary_back(
    agentgym_runtime: Runtime, recorded: Recorded, autogen_endpoint: dict[str, Any], streaming: bool
) -> None:
    threshold = serve_routed_canary(agentgym_runtime)
    own = ScriptedClient()
    agent = autogen_agent(streaming, own)

    answers = [run_autogen(agent, f"where is order {i}?") for i in range(threshold + 1)]

    assert answers == [f"[{LIVE_PROMPT}] where is order {i}?" for i in range(threshold + 1)]
    assert len(canary_client(autogen_endpoint).calls) == threshold
    assert len(own.calls) == threshold + 1
    assert all(isinstance(c[0], SystemMessage) and c[0].content == LIVE_PROMPT for c in own.calls)
    assert_rolled_back_by_router(agentgym_runtime, threshold)
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "UNSET", None)] * threshold + [
        (1, "UNSET", None)
    ]
    assert fallback_marks(recorded) == [(2, 2)] * threshold + [(1, None)]
    assert [e["policy_version"] for e in recorded.episodes(AGENT)] == [2] * threshold + [1]


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "create_stream"])
def test_autogen_host_model_error_is_not_retried(
    agentgym_runtime: Runtime, recorded: Recorded, autogen_endpoint: dict[str, Any], streaming: bool
) -> None:
    serve_routed_canary(agentgym_runtime)
    autogen_endpoint["failure"] = "value"
    own = ScriptedClient()
    agent = autogen_agent(streaming, own)

    with pytest.raises(ValueError) as raised:
        run_autogen(agent, "where is order 7?")

    (original,) = canary_client(autogen_endpoint).errors
    assert raised.value is original
    assert own.calls == []
    assert_canary_untouched(agentgym_runtime)
    assert chat_rows(recorded) == [(2, "ERROR", "ValueError")]
    assert fallback_marks(recorded) == [(2, None)]


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "create_stream"])
def test_autogen_incumbent_failing_too_propagates_the_original_error(
    agentgym_runtime: Runtime, recorded: Recorded, autogen_endpoint: dict[str, Any], streaming: bool
) -> None:
    serve_routed_canary(agentgym_runtime)
    own = ScriptedClient("connection", endpoint="the host's own endpoint")
    agent = autogen_agent(streaming, own)

    with pytest.raises(ConnectionError) as raised:
        run_autogen(agent, "where is order 7?")

    (original,) = canary_client(autogen_endpoint).errors
    assert raised.value is original and str(original) == f"connection refused: {ENDPOINT}"
    assert len(own.calls) == 1
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "ERROR", "ConnectionError")]
    assert fallback_marks(recorded) == [(2, 2)]


# --- CrewAI -------------------------------------------------------------------------------------------
crewai = pytest.importorskip("crewai")

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402

from agentgym_runtime.adapters.crewai import register_llm_factory  # noqa: E402


class OwnLLM(BaseLLM):
    """The host's own CrewAI LLM: a final answer naming the system prompt it saw."""

    def __init__(self, failure: str | None = None, model: str = "own-model", endpoint: str = "own") -> None:
        super().__init__(model=model)
        self.failure = failure
        self.endpoint = endpoint
        self.received: list[list[dict[str, Any]]] = []
        self.errors: list[BaseException] = []

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        self.received.append([dict(m) for m in messages] if isinstance(messages, list) else [messages])
        if self.failure is not None:
            error: BaseException = (
                ConnectionError(f"connection refused: {self.endpoint}")
                if self.failure == "connection"
                else ValueError("the host's model code rejects this prompt")
            )
            self.errors.append(error)
            raise error
        text = json.dumps(messages)
        seen = "live" if LIVE_PROMPT in text else "canary" if CANARY_PROMPT in text else "none"
        return f"Thought: I now know the final answer\nFinal Answer: answered under the {seen} prompt"

    def supports_function_calling(self) -> bool:
        return False


@pytest.fixture
def crewai_endpoint() -> Iterator[dict[str, Any]]:
    """Route policies with ``llm`` to a failing :class:`OwnLLM` (CrewAI caches one per config)."""
    settings: dict[str, Any] = {"failure": "connection", "llms": []}

    def factory(config: LLMConfig) -> BaseLLM:
        llm = OwnLLM(settings["failure"], model=config.model or "?", endpoint=config.endpoint or "?")
        settings["llms"].append(llm)
        return llm

    register_llm_factory(factory)
    yield settings
    register_llm_factory(None)
    uninstrument_fully("crewai")


def crew_of(own: OwnLLM) -> Any:
    agent = Agent(
        role=AGENT,
        goal="answer order questions",
        backstory="You help customers with orders.",
        llm=own,
        verbose=False,
        max_retry_limit=0,  # CrewAI would re-run a failed task itself: count only our retry
    )
    task = Task(description="Where is order 7?", expected_output="the order status", agent=agent)
    return agentgym.train_online(Crew(name="support-crew", agents=[agent], tasks=[task], verbose=False))


def canary_llm(settings: dict[str, Any]) -> OwnLLM:
    (llm,) = settings["llms"]
    assert isinstance(llm, OwnLLM)
    return llm


def test_crewai_falls_back_once_then_the_router_rolls_the_canary_back(
    agentgym_runtime: Runtime, recorded: Recorded, crewai_endpoint: dict[str, Any]
) -> None:
    threshold = serve_routed_canary(agentgym_runtime)
    own = OwnLLM()
    crew = crew_of(own)

    answers = [crew.kickoff().raw for _ in range(threshold + 1)]

    assert answers == ["answered under the live prompt"] * (threshold + 1)
    assert len(canary_llm(crewai_endpoint).received) == threshold
    assert len(own.received) == threshold + 1
    assert_rolled_back_by_router(agentgym_runtime, threshold)
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "UNSET", None)] * threshold + [
        (1, "UNSET", None)
    ]
    # the crew's episode pins the crew's own (baseline) policy; the agent's turn pins the canary
    assert fallback_marks(recorded) == [(2, 2)] * threshold + [(1, None)]
    assert [e["status"] for e in recorded.episodes("support-crew")] == ["ok"] * (threshold + 1)


def test_crewai_host_model_error_is_not_retried(
    agentgym_runtime: Runtime, recorded: Recorded, crewai_endpoint: dict[str, Any]
) -> None:
    serve_routed_canary(agentgym_runtime)
    crewai_endpoint["failure"] = "value"
    own = OwnLLM()

    with pytest.raises(ValueError) as raised:
        crew_of(own).kickoff()

    (original,) = canary_llm(crewai_endpoint).errors
    assert raised.value is original
    assert own.received == []
    assert_canary_untouched(agentgym_runtime)
    assert chat_rows(recorded) == [(2, "ERROR", "ValueError")]
    assert fallback_marks(recorded) == [(2, None)]


def test_crewai_incumbent_failing_too_propagates_the_original_error(
    agentgym_runtime: Runtime, recorded: Recorded, crewai_endpoint: dict[str, Any]
) -> None:
    serve_routed_canary(agentgym_runtime)
    own = OwnLLM("connection")

    with pytest.raises(ConnectionError) as raised:
        crew_of(own).kickoff()

    (original,) = canary_llm(crewai_endpoint).errors
    assert raised.value is original
    assert len(own.received) == 1
    assert chat_rows(recorded) == [(2, "ERROR", "ConnectionError"), (1, "ERROR", "ConnectionError")]
    assert fallback_marks(recorded) == [(2, 2)]
