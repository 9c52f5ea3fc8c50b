"""A tiny OpenAI-compatible server for the ``apo`` tests: it answers what Agent Lightning's APO sends.

APO renders its POML prompts into chat messages and calls ``POST /chat/completions`` twice per
candidate: a textual gradient (critique), then an edit ("Revise the ... prompt ..."). The stub
answers a critique to the first and, to the second, an improved system prompt (carrying
:data:`MARKER`) when the template being edited is one of the seed system prompts, else an improved
tool description (carrying :data:`TOOL_MARKER`). ``GET /models`` answers the trainer's reachability check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MARKER = "[APO-MARKER]"
TOOL_MARKER = "[TOOL-MARKER]"
SEED_PROMPTS = ("Be helpful.", "Be exact.")
CRITIQUE = "The prompt never says which tool serves which request."
IMPROVED_PROMPT = f"Call refund_order for refunds and track_order for parcels; pass the order id. {MARKER}"
IMPROVED_DESCRIPTION = f"Pass the order_id of the order. {TOOL_MARKER}"


def reply_to(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(kind, content) of the answer to one chat request: ``"gradient"`` or ``"edit"``."""
    text = "\n".join(str(m.get("content") or "") for m in messages)
    if "Revise" not in text:
        return "gradient", CRITIQUE
    if any(seed in text for seed in SEED_PROMPTS):
        return "edit", IMPROVED_PROMPT
    return "edit", IMPROVED_DESCRIPTION


@contextmanager
def openai_stub_server() -> Iterator[dict[str, Any]]:
    """Serve on 127.0.0.1 (a free port) in a thread; yields ``{"base_url", "requests"}``."""
    from aiohttp import web

    requests: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        kind, content = reply_to(body["messages"])
        requests.append({"kind": kind, "model": body["model"], "body": body})
        return web.json_response(
            {
                "id": f"cmpl-{len(requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models)])
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "requests": requests}
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
