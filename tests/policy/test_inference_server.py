"""Serving trained adapters from an inference server: load before routing, route back on rollback, refusals.

A real loopback HTTP stand-in (``vllm_standin``) speaks vLLM's (and SGLang's) OpenAI-compatible and
LoRA endpoints; the agent's calls go through the ``openai`` client with the model name
``agentgym.served_model`` gives, and the stand-in answers with the model it was asked for.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.policy.artifact import manifest_digest
from agentgym_runtime.policy.inference_server import InferenceServer, ServerAdapters
from agentgym_runtime.policy.registry import PolicyRegistry
from agentgym_runtime.services import Services

from .vllm_standin import Running, StandIn, closed_port_url

openai = pytest.importorskip("openai")

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
AGENT = "support"


def _adapter_dir(root: Path, base: str = BASE, *, config: bool = True) -> Path:
    """A PEFT-shaped adapter directory: adapter_config.json and a (tiny, valid) safetensors file."""
    root.mkdir(parents=True, exist_ok=True)
    if config:
        (root / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": base, "peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]})
        )
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    (root / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return root


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with Running(StandIn(base_model=BASE, api_key="sk-loopback")) as server:
        yield server


def _configure(home: Path, url: str, **extra: Any) -> Services:
    return agentgym.configure(
        home=home,
        strict=True,
        schedule_delay_ms=20,
        canary_evaluate_every=None,
        inference_server_url=url,
        inference_server_model=BASE,
        inference_server_timeout_s=extra.pop("timeout_s", 5.0),
        inference_server_retries=extra.pop("retries", 1),
        **extra,
    )


@pytest.fixture
def runtime(tmp_path: Path, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    monkeypatch.setenv("VLLM_API_KEY", "sk-loopback")
    services = _configure(tmp_path / "home", standin.url)
    yield services
    agentgym.shutdown()


def _call(server_url: str, session: str) -> str:
    """One episode of the agent: an OpenAI-compatible client sends the model the pinned policy names."""
    with agentgym.episode(agent=AGENT, session_id=session):
        policy = agentgym.current_policy()
        assert policy is not None
        endpoint = policy.llm.endpoint if policy.llm is not None and policy.llm.endpoint else f"{server_url}/v1"
        client = openai.OpenAI(base_url=endpoint, api_key="sk-loopback", max_retries=0, timeout=10)
        try:
            reply = client.chat.completions.create(
                model=agentgym.served_model(BASE), messages=[{"role": "user", "content": "where is order 7?"}]
            )
        finally:
            client.close()
        assert reply.choices[0].message.content == f"served by {reply.model}"
        return reply.model


def _lora(services: Services, version: int) -> tuple[str, str]:
    """The adapter's name on the server and the path the server is told to load it from."""
    registry = services.policies
    digest = manifest_digest(registry.artifact_path(AGENT, version))
    return f"{AGENT}-v{version}-{digest[:12]}", str((registry.artifact_path(AGENT, version) / "adapter").resolve())


def _since(standin: StandIn, start: int) -> list[tuple[str, str, Any]]:
    return standin.requests[start:]


def test_canary_promotion_and_rollback_route_calls_to_the_adapter(
    runtime: Services, standin: StandIn, tmp_path: Path
) -> None:
    chat = ("POST", "/v1/chat/completions")
    v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
    v2 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a2"))
    name1, path1 = _lora(runtime, v1.version)
    name2, path2 = _lora(runtime, v2.version)
    assert standin.requests == []  # registration asks the server nothing

    assert _call(standin.url, "s1") == BASE  # before: the agent's own model

    # Canary: the adapter is loaded before any call is routed to it.
    agentgym.promote(AGENT, v1.version, canary=1.0)
    mark = len(standin.requests)
    assert _call(standin.url, "s2") == name1
    assert standin.requests[1:mark] == [("POST", "/v1/load_lora_adapter", {"lora_name": name1, "lora_path": path1})]
    assert [(m, p) for m, p, _ in _since(standin, mark)] == [chat]
    assert _since(standin, mark)[0][2]["model"] == name1

    # Promotion of the canary: already loaded, nothing more to ask; every call names it.
    mark = len(standin.requests)
    agentgym.promote(AGENT, v1.version)
    assert [_call(standin.url, f"p{i}") for i in range(3)] == [name1] * 3
    assert standin.paths()[mark:] == [chat] * 3

    # v2 straight to live: loaded first; v1 stays loaded (it is the rollback target).
    mark = len(standin.requests)
    agentgym.promote(AGENT, v2.version)
    assert _call(standin.url, "s3") == name2
    assert _since(standin, mark)[:1] == [("POST", "/v1/load_lora_adapter", {"lora_name": name2, "lora_path": path2})]
    assert standin.paths()[mark + 1 :] == [chat]
    assert sorted(standin.loras) == sorted([name1, name2])

    # Rollback: routes back to v1 (still loaded) and unloads the rejected v2.
    mark = len(standin.requests)
    state = agentgym.rollback(AGENT, reason="worse")
    assert state.live == v1.version
    assert _call(standin.url, "s4") == name1
    assert _since(standin, mark)[:1] == [("POST", "/v1/unload_lora_adapter", {"lora_name": name2})]
    assert standin.paths()[mark + 1 :] == [chat]
    assert list(standin.loras) == [name1]

    # Rolling v1 back too: the agent's own model serves again, and v1's adapter is unloaded.
    mark = len(standin.requests)
    assert agentgym.rollback(AGENT).live == 0
    assert _call(standin.url, "s5") == BASE
    assert _since(standin, mark) == [
        ("POST", "/v1/unload_lora_adapter", {"lora_name": name1}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": BASE, "messages": [{"role": "user", "content": "where is order 7?"}]},
        ),
    ]
    assert standin.loras == {}


def test_a_refusing_server_leaves_the_live_version_serving(runtime: Services, standin: StandIn, tmp_path: Path) -> None:
    v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
    name1, path1 = _lora(runtime, v1.version)
    refusal = "LoRA rank 8 is greater than max_lora_rank 4."
    standin.refuse_loads = (400, refusal)

    with pytest.raises(agentgym.InferenceServerError) as raised:
        agentgym.promote(AGENT, v1.version)
    assert raised.value.status == 400
    assert raised.value.server_message == refusal
    assert refusal in str(raised.value)
    with pytest.raises(agentgym.InferenceServerError):
        agentgym.promote(AGENT, v1.version, canary=0.5)
    # 4xx is final: one request each, never retried.
    load = ("POST", "/v1/load_lora_adapter", {"lora_name": name1, "lora_path": path1})
    assert standin.requests == [load, load]

    state = runtime.policies.state(AGENT)
    assert (state.live, state.canary) == (0, None)
    assert [_call(standin.url, f"s{i}") for i in range(3)] == [BASE] * 3

    decision = runtime.policies.last_decision(AGENT)
    assert decision is not None
    assert decision.actor == "server"
    assert decision.version == v1.version
    assert refusal in (decision.reason or "")
    assert "v0 stays live" in (decision.reason or "")
    assert decision.details["status"] == 400
    assert decision.details["server_message"] == refusal
    assert decision.details["lora_name"] == name1

    # Visible in the shell: `agentgym policies show` prints the server's refusal as the last decision.
    from typer.testing import CliRunner

    from agentgym_runtime.cli.app import build_app

    runtime.flush()
    shown = CliRunner().invoke(
        build_app(), ["policies", "show", AGENT, "1", "--home", str(runtime.settings.home)], env={"COLUMNS": "400"}
    )
    assert shown.exit_code == 0, shown.output
    assert "max_lora_rank 4" in " ".join(shown.output.split())

    # The server accepts it later: the promotion goes through.
    standin.refuse_loads = None
    assert agentgym.promote(AGENT, v1.version).live == v1.version
    assert _call(standin.url, "later") == name1


def test_a_server_that_is_down_or_times_out_leaves_the_live_version_serving(
    tmp_path: Path, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "sk-loopback")
    services = _configure(tmp_path / "home", closed_port_url(), retries=2, timeout_s=0.5)
    try:
        v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
        with pytest.raises(agentgym.InferenceServerError) as raised:
            agentgym.promote(AGENT, v1.version, canary=1.0)
        assert raised.value.status is None
        assert "did not answer after 3 attempt(s)" in str(raised.value)
        assert "ConnectError" in raised.value.server_message
        state = services.policies.state(AGENT)
        assert (state.live, state.canary) == (0, None)
        assert _call(standin.url, "s1") == BASE
        decision = services.policies.last_decision(AGENT)
        assert decision is not None and decision.actor == "server"
        assert decision.details["status"] is None and "ConnectError" in decision.details["server_message"]
    finally:
        agentgym.shutdown()

    # Too slow to answer: every attempt times out (and is counted), the live version stays.
    standin.load_delay_s = 2.0
    mark = len(standin.requests)
    services = _configure(tmp_path / "home2", standin.url, retries=1, timeout_s=0.3)
    try:
        v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
        with pytest.raises(agentgym.InferenceServerError) as raised:
            agentgym.promote(AGENT, v1.version)
        assert "ReadTimeout" in raised.value.server_message
        assert standin.paths()[mark:] == [("POST", "/v1/load_lora_adapter")] * 2
        assert services.policies.state(AGENT).live == 0
    finally:
        agentgym.shutdown()


def test_a_5xx_is_retried_within_the_bound(runtime: Services, standin: StandIn, tmp_path: Path) -> None:
    v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
    standin.fail_next_loads = [(503, "engine is restarting")]
    assert agentgym.promote(AGENT, v1.version).live == v1.version
    assert standin.paths() == [("POST", "/v1/load_lora_adapter")] * 2
    assert runtime.policies.last_decision(AGENT) is None

    v2 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a2"))
    standin.fail_next_loads = [(503, "engine is restarting"), (500, "CUDA out of memory")]
    with pytest.raises(agentgym.InferenceServerError, match="CUDA out of memory"):
        agentgym.promote(AGENT, v2.version)  # retries=1: two attempts, the last answer is final
    assert runtime.policies.state(AGENT).live == v1.version


def test_a_promotion_made_elsewhere_is_loaded_before_the_router_routes_to_it(
    runtime: Services, standin: StandIn, tmp_path: Path
) -> None:
    """Another process (the CLI without server settings) promoted: the serving process loads it first."""
    v1 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a1"))
    name1, path1 = _lora(runtime, v1.version)
    elsewhere = PolicyRegistry(runtime.settings.policies_dir)  # no server: it loads nothing
    elsewhere.promote(AGENT, v1.version)
    assert standin.requests == []
    assert _call(standin.url, "s1") == name1
    assert standin.requests[0] == ("POST", "/v1/load_lora_adapter", {"lora_name": name1, "lora_path": path1})
    assert standin.paths()[1:] == [("POST", "/v1/chat/completions")]

    # A version the server refuses is never routed to: the call runs on what served before.
    v2 = agentgym.register_policy(AGENT, llm={"model": BASE}, adapter_dir=_adapter_dir(tmp_path / "a2"))
    standin.refuse_loads = (400, "No adapter found for /nowhere")
    elsewhere.promote(AGENT, v2.version)
    assert _call(standin.url, "s2") == name1
    assert "No adapter found for /nowhere" in runtime.router.refused[(AGENT, v2.version)]


def test_registration_refuses_foreign_and_escaping_adapters(
    runtime: Services, standin: StandIn, tmp_path: Path
) -> None:
    with pytest.raises(agentgym.PolicyArtifactError) as foreign:
        agentgym.register_policy(AGENT, adapter_dir=_adapter_dir(tmp_path / "llama", "meta-llama/Llama-3.2-1B"))
    message = str(foreign.value)
    assert "trained on base model 'meta-llama/Llama-3.2-1B'" in message
    assert f"the vllm server at {standin.url} serves {BASE!r}" in message

    with pytest.raises(agentgym.PolicyArtifactError, match=re.escape("names base model 'Qwen/Qwen2.5-0.5B'")):
        agentgym.register_policy(AGENT, llm={"model": "Qwen/Qwen2.5-0.5B"}, adapter_dir=_adapter_dir(tmp_path / "a"))

    with pytest.raises(agentgym.PolicyArtifactError, match=re.escape("has no adapter_config.json")):
        agentgym.register_policy(AGENT, adapter_dir=_adapter_dir(tmp_path / "bare", config=False))

    with pytest.raises(agentgym.ConfigurationError, match="pass adapter_dir="):
        agentgym.register_policy(AGENT, llm={"model": BASE, "adapter": "../../../etc/ssl"})

    assert runtime.policies.agents() == []  # nothing was registered
    assert list(runtime.settings.policies_dir.glob(f"{AGENT}/v*")) == []
    assert standin.requests == []  # nothing was ever sent to the server

    # A policy.json rewritten afterwards to point outside its artifact is refused before loading.
    adapters = ServerAdapters(InferenceServer(url=standin.url), runtime.settings.policies_dir)
    from agentgym_runtime.recording.policy import LLMConfig, Policy

    escaping = Policy(agent=AGENT, version=4, llm=LLMConfig(adapter="../../../../etc"))
    with pytest.raises(agentgym.PolicyArtifactError, match="points outside its artifact"):
        adapters.deploy(escaping, "ab" * 32)
    assert standin.requests == []


def test_sglang_endpoints_and_model_syntax(tmp_path: Path) -> None:
    with Running(StandIn(base_model=BASE, kind="sglang")) as standin:
        services = _configure(tmp_path / "home", standin.url, inference_server_kind="sglang")
        try:
            v1 = agentgym.register_policy(AGENT, adapter_dir=_adapter_dir(tmp_path / "a1"))
            name1, path1 = _lora(services, v1.version)
            agentgym.promote(AGENT, v1.version)
            assert _call(standin.url, "s1") == f"{BASE}:{name1}"
            assert agentgym.rollback(AGENT).live == 0
            assert _call(standin.url, "s2") == BASE
            assert standin.requests[:1] == [("POST", "/load_lora_adapter", {"lora_name": name1, "lora_path": path1})]
            assert standin.paths()[1:] == [
                ("POST", "/v1/chat/completions"),
                ("POST", "/unload_lora_adapter"),
                ("POST", "/v1/chat/completions"),
            ]
        finally:
            agentgym.shutdown()


def test_a_server_url_without_scheme_is_a_settings_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        agentgym.Settings(inference_server_url="vllm:8000")
    assert InferenceServer.from_settings(agentgym.Settings(inference_server_url="http://vllm:8000/v1/")) == (
        InferenceServer(url="http://vllm:8000", api_key_env="VLLM_API_KEY")
    )
