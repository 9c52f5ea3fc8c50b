"""The demo model served through the shared engine gives, token for token, what it gave before the engine.

``GOLDEN`` was recorded with the demo's own serving path (``DemoModel.complete`` over one deep copy of the
base weights per adapter, ``TinyToolCallingChatModel`` building its own ``AIMessage``) before it became a
user of :class:`~agentgym_runtime.models.engine.ChatEngine`. The model is a small warm start built here from
a config (same architecture as the demo's, fewer steps, a 128-token context so that long prompts are cut),
the adapters are random LoRA weights made here; both are deterministic on a CPU.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("langchain_core")

from agentgym_runtime.demo.model.chat import TinyToolCallingChatModel  # noqa: E402
from agentgym_runtime.demo.model.format import Step, render_prompt  # noqa: E402
from agentgym_runtime.demo.model.tiny import DemoModel, TinyModelConfig, build_demo_model  # noqa: E402
from agentgym_runtime.scenarios import get_scenario  # noqa: E402

pytestmark = pytest.mark.slow  # builds a small demo model (~40 s on a loaded 2-core CPU)

SCENARIO = "customer_support"
CONFIG = TinyModelConfig(n_positions=128, train_tasks=120, steps=150, batch_size=16)
HISTORY = [
    Step(
        '{"name": "get_order", "arguments": {"order_id": 4411}}',
        '{"order_id": 4411, "status": "shipped", "email": "ana@example.com"}',
    ),
    Step(
        '{"name": "refund_order", "arguments": {"order_id": 4411, "amount": 12}}',
        "invalid arguments for tool 'refund_order': reason: Field required",
        error=True,
    ),
]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoModel:
    # One thread: the golden record below was made by a one-thread build (see build_demo_model).
    return build_demo_model(SCENARIO, tmp_path_factory.mktemp("small-demo") / "model", seed=0, config=CONFIG, threads=1)


def make_adapter(demo: DemoModel, where: Path, seed: int, scale: float) -> Path:
    """A LoRA adapter on the attention of ``demo``'s model with random non-zero weights."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        copy.deepcopy(demo.model), LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
    peft_model.save_pretrained(where)
    return where


@pytest.fixture(scope="module")
def adapters(small: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("small-adapters")
    # A mild adapter (still writes calls) and a strong one (rambles to the token limit: no eos).
    return make_adapter(small, where / "mild", 1, 0.1), make_adapter(small, where / "strong", 2, 0.5)


def prompts() -> list[str]:
    support = get_scenario(SCENARIO)
    tasks = support.tasks("heldout", 10, seed=3)
    fresh = [render_prompt(t, support.tools()) for t in tasks]
    # With history the prompts pass the 88 tokens left for them: they are cut from the left.
    return fresh + [render_prompt(t, support.tools(), HISTORY[: i % 2 + 1]) for i, t in enumerate(tasks[:4])]


def conversation(task_prompt: str) -> list[Any]:
    """A LangChain conversation with a successful call, a failed one (LangGraph's error text), an invalid one."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    return [
        HumanMessage(task_prompt),
        AIMessage("", tool_calls=[{"name": "get_order", "args": {"order_id": 4411}, "id": "c1", "type": "tool_call"}]),
        ToolMessage("{'order_id': 4411, 'status': 'shipped'}", tool_call_id="c1"),
        AIMessage(
            "", tool_calls=[{"name": "refund_order", "args": {"order_id": 4411}, "id": "c2", "type": "tool_call"}]
        ),
        ToolMessage(
            "Error invoking tool 'refund_order' with kwargs {'order_id': 4411} with error:\n"
            " reason: Field required\n Please fix the error and try again.",
            tool_call_id="c2",
            status="error",
        ),
        AIMessage(
            "",
            invalid_tool_calls=[
                {
                    "name": "open_ticket",
                    "args": '{"order_id": 4411',
                    "id": "c3",
                    "error": "bad",
                    "type": "invalid_tool_call",
                }
            ],
        ),
        ToolMessage(
            "Error: open_ticket is not a valid tool, try one of [get_order].", tool_call_id="c3", status="error"
        ),
    ]


def message_summary(message: Any) -> dict[str, Any]:
    return {
        "content": message.content,
        "tool_calls": [[c["name"], c["args"]] for c in message.tool_calls],
        "invalid_tool_calls": [[c["name"], c["args"], c["error"]] for c in message.invalid_tool_calls],
        "usage": [message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]],
        "model_name": message.response_metadata["model_name"],
    }


def observe(demo: DemoModel, adapters: tuple[Path, Path]) -> dict[str, Any]:
    """Every output the golden record pins: batched and single completions, chat-model messages."""
    from langchain_core.messages import HumanMessage

    mild, strong = adapters
    texts = prompts()
    support = get_scenario(SCENARIO)
    tools = [{"type": "function", "function": {"name": t.name}} for t in support.tools()]
    observed: dict[str, Any] = {}
    for label, adapter in (("base", None), ("mild", mild), ("strong", strong)):
        observed[f"{label}_batched"] = [list(c) for c in demo.complete(texts, adapter=adapter, batch_size=4)]
        observed[f"{label}_single"] = [list(c) for c in demo.complete(texts[:3], adapter=adapter, batch_size=1)]
        chat = TinyToolCallingChatModel.from_demo_model(demo, adapter=str(adapter) if adapter else None)
        bound = chat.bind_tools(tools)
        task = support.tasks("heldout", 10, seed=3)[0].prompt
        observed[f"{label}_chat"] = [
            message_summary(bound.invoke([HumanMessage(task)])),
            message_summary(bound.invoke(conversation(task))),
            message_summary(bound.invoke([HumanMessage(support.tasks("heldout", 10, seed=3)[1].prompt)])),
        ]
    return observed


GOLDEN: dict[str, Any] = {
    "base_batched": [
        ['{"name": "refund_order", "arguments": {"order_id": 7982, "high"}}', 51, 24],
        ['{"name": "find_customer", "arguments": {"email": "sami@example.com"}}', 46, 19],
        ['{"name": "cancel_order", "arguments": {"order_id": 2917}}', 41, 21],
        ['{"name": "open_ticket", "arguments": {"order_id": 2917, "priority": "low"}}', 45, 27],
        ['{"name": "get_order", "arguments": {"order_id": "#6815"}}', 44, 21],
        ['{"name": "get_order", "arguments": {"order_id": "#5335}}', 47, 21],
        ['{"name": "find_customer", "arguments": {"email": "uma@example.com"}}', 46, 19],
        ['{"name": "get_order", "arguments": {"order_id": "#6539"}}', 43, 21],
        ['{"name": "get_order", "arguments": {"order_id": 1360}}', 42, 21],
        ['{"name": "get_order", "arguments": {"order_id": "#8994}}', 47, 21],
        ['{"answer": "cancelled"}', 88, 7],
        ['{"answer": "cancelled"}', 88, 7],
        ['{"answer": "cancelled"}', 88, 7],
        ['{"answer": "cancelled"}', 88, 7],
    ],
    "base_single": [
        ['{"name": "refund_order", "arguments": {"order_id": 7982, "high"}}', 51, 24],
        ['{"name": "find_customer", "arguments": {"email": "sami@example.com"}}', 46, 19],
        ['{"name": "cancel_order", "arguments": {"order_id": 2917}}', 41, 21],
    ],
    "base_chat": [
        {
            "content": "",
            "tool_calls": [],
            "invalid_tool_calls": [["refund_order", '{"order_id": 7982, "high"}}', "arguments are not valid JSON"]],
            "usage": [51, 24],
            "model_name": "customer_support-tiny",
        },
        {
            "content": "",
            "tool_calls": [],
            "invalid_tool_calls": [["cancel_id", "", "arguments are not valid JSON"]],
            "usage": [88, 23],
            "model_name": "customer_support-tiny",
        },
        {
            "content": "",
            "tool_calls": [["find_customer", {"email": "sami@example.com"}]],
            "invalid_tool_calls": [],
            "usage": [46, 19],
            "model_name": "customer_support-tiny",
        },
    ],
    "mild_batched": [
        ['{"name": "arguments": 7982}}', 51, 11],
        ['{"name": "find_customer", "arguments": {"email": ["sami@example.com"}}', 46, 19],
        ['{"name": "cancel_order", "arguments": {"order_id": 2917}}', 41, 21],
        ['{"name": "arguments": "arguments": {"email": "<e1>"}}', 45, 17],
        ['{"name": "arguments": {"order", "arguments": "#6815"}}', 44, 17],
        ['{"name": "arguments": {"order", "arguments": {"order_idn1>"}}', 47, 20],
        ['{"name": "find_customer", "arguments": {"email": ["uma@example.com"}}', 46, 19],
        ['{"name": "arguments": "arguments": {"order_id": "#6539"}}', 43, 19],
        ['{"name": "arguments": "arguments": 1360}}', 42, 14],
        ['{"name": {"name": "arguments": {"order_idn1>"}}', 47, 17],
        ['{"answer": "delivered"}', 88, 7],
        ['{"answer": "T-4411"}', 88, 10],
        ['{"answer": "T-2917"}', 88, 10],
        ['{"answer": "delivered"}', 88, 7],
    ],
    "mild_single": [
        ['{"name": "arguments": 7982}}', 51, 11],
        ['{"name": "find_customer", "arguments": {"email": ["sami@example.com"}}', 46, 19],
        ['{"name": "cancel_order", "arguments": {"order_id": 2917}}', 41, 21],
    ],
    "mild_chat": [
        {
            "content": "",
            "tool_calls": [],
            "invalid_tool_calls": [["arguments", "7982}}", "arguments are not valid JSON"]],
            "usage": [51, 11],
            "model_name": "customer_support-tiny",
        },
        {
            "content": "",
            "tool_calls": [],
            "invalid_tool_calls": [["find_order", '{"order_id', "arguments are not valid JSON"]],
            "usage": [88, 16],
            "model_name": "customer_support-tiny",
        },
        {
            "content": "",
            "tool_calls": [],
            "invalid_tool_calls": [
                ["find_customer", '{"email": ["sami@example.com"}}', "arguments are not valid JSON"]
            ],
            "usage": [46, 19],
            "model_name": "customer_support-tiny",
        },
    ],
    "strong_batched": [
        ['"eeeeeeeeeeeename "e "ingordercustomerncustomernee "ing " "s>"}nameanswer",n1order"}n1', 51, 41],
        ['"}n1 "', 46, 5],
        ['"refund', 41, 3],
        ['"n1ordering>"}order",', 45, 9],
        ['"order"}', 44, 4],
        ['":cancelledname":customern1s>"}n1name":1name":customer', 47, 18],
        ['"}n1 "11eename": "', 46, 12],
        ["cancelledncustomer", 43, 4],
        ["customer", 42, 2],
        ['":cancelledn11name":cancelledn1name":ingdeliveredeeename":ing>"} <n1id",neen1name": "id",ncustomer', 47, 39],
        ['"id "< "order"}', 88, 7],
        ['" " " " " " "ticket-<"}_n1 "sidsideordere "sids < "sids " " " < < "n "s "', 88, 41],
        ['"id": " " " " "n " " " " " " "refund_e "ename {" "":"}nnnn " " "_n " < " "n', 88, 41],
        ['" " " " " " " "n1": "s>"} < "scancelledeordere1sorderee <n1scancelled " "nn1 < "scancelled', 88, 41],
    ],
    "strong_single": [
        ['"eeeeeeeeeeeename "e "ingordercustomerncustomernee "ing " "s>"}nameanswer",n1order"}n1', 51, 41],
        ['"}n1 "', 46, 5],
        ['"refund', 41, 3],
    ],
    "strong_chat": [
        {
            "content": '"eeeeeeeeeeeename "e "ingordercustomerncustomernee "ing " "s>"}nameanswer",n1order"}n1',
            "tool_calls": [],
            "invalid_tool_calls": [],
            "usage": [51, 41],
            "model_name": "customer_support-tiny",
        },
        {
            "content": 'order"}}ns " " "s "order"}n1s "111s "nnnnnn111n "s "',
            "tool_calls": [],
            "invalid_tool_calls": [],
            "usage": [88, 34],
            "model_name": "customer_support-tiny",
        },
        {
            "content": '"}n1 "',
            "tool_calls": [],
            "invalid_tool_calls": [],
            "usage": [46, 5],
            "model_name": "customer_support-tiny",
        },
    ],
}


def test_completions_are_token_for_token_those_of_the_pre_engine_path(
    small: DemoModel, adapters: tuple[Path, Path]
) -> None:
    observed = observe(small, adapters)
    for key, value in GOLDEN.items():
        assert observed[key] == value, key
    assert set(observed) == set(GOLDEN)


def test_concurrent_calls_on_two_adapters_and_the_base_each_get_their_own_output(
    small: DemoModel, adapters: tuple[Path, Path]
) -> None:
    from langchain_core.messages import HumanMessage

    support = get_scenario(SCENARIO)
    task = support.tasks("heldout", 10, seed=3)[0].prompt
    tools = [{"type": "function", "function": {"name": t.name}} for t in support.tools()]
    expected = {label: GOLDEN[f"{label}_chat"][0] for label in ("base", "mild", "strong")}
    paths = {"base": None, "mild": str(adapters[0]), "strong": str(adapters[1])}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in paths}
    start = threading.Barrier(len(paths))

    def serve(label: str) -> None:
        chat = TinyToolCallingChatModel.from_demo_model(small, adapter=paths[label]).bind_tools(tools)
        start.wait()
        for _ in range(6):
            results[label].append(message_summary(chat.invoke([HumanMessage(task)])))

    threads = [threading.Thread(target=serve, args=(label,)) for label in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label, got in results.items():
        assert got == [expected[label]] * 6, label


def test_streaming_gives_the_message_of_the_non_streaming_call(small: DemoModel, adapters: tuple[Path, Path]) -> None:
    from langchain_core.messages import HumanMessage

    support = get_scenario(SCENARIO)
    tools = [{"type": "function", "function": {"name": t.name}} for t in support.tools()]
    for label, adapter, index in (("base", None, 2), ("strong", adapters[1], 2), ("strong", adapters[1], 0)):
        chat = TinyToolCallingChatModel.from_demo_model(small, adapter=str(adapter) if adapter else None)
        task = support.tasks("heldout", 10, seed=3)[1 if index == 2 else 0].prompt
        chunks = list(chat.bind_tools(tools).stream([HumanMessage(task)]))
        message = chunks[0]
        for chunk in chunks[1:]:
            message += chunk
        expected = GOLDEN[f"{label}_chat"][index]
        assert message.content == expected["content"]
        assert [[c["name"], c["args"]] for c in message.tool_calls] == expected["tool_calls"]
        assert [message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]] == expected["usage"]
