"""A loopback stand-in for vLLM's (or SGLang's) OpenAI-compatible server with runtime LoRA loading.

It speaks the endpoints agentgym uses, with the servers' own request and error shapes:

* vLLM: ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` (200 with a text body; 400
  ``{"object": "error", "message": "The lora adapter '<name>' has already been loaded.", ...}``; a
  path without ``adapter_config.json``: 404 "No adapter found ..."), ``POST /v1/unload_lora_adapter
  {"lora_name"}`` (404 "... cannot be found."), ``GET /v1/models`` (each LoRA with its ``parent``);
* SGLang: ``POST /load_lora_adapter`` / ``/unload_lora_adapter`` answering ``{"success", "error_message",
  "loaded_adapters"}``, and ``model="<base>:<lora>"`` in chat requests;
* ``POST /v1/chat/completions`` answers with the model name it was asked for (404 for a model it does
  not hold), so a test sees which model served each call.

Every request is recorded in :attr:`StandIn.requests` as ``(method, path, json body)``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class StandIn:
    """The server's state and the knobs a test turns."""

    base_model: str
    kind: str = "vllm"
    api_key: str | None = None
    loras: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    #: Statuses to answer the next load requests with, one per request (then normal service).
    fail_next_loads: list[tuple[int, str]] = field(default_factory=list)
    #: Every load refused with this status and message.
    refuse_loads: tuple[int, str] | None = None
    load_delay_s: float = 0.0
    url: str = ""

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> Response:
        if self.kind == "sglang":
            return JSONResponse({"success": False, "error_message": message, "loaded_adapters": {}}, status)
        return JSONResponse(
            {"object": "error", "message": message, "type": kind, "param": None, "code": status}, status
        )

    async def _record(self, request: Request) -> Any:
        body = await request.body()
        payload = json.loads(body) if body else None
        self.requests.append((request.method, request.url.path, payload))
        return payload

    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def load(self, request: Request) -> Response:
        payload = await self._record(request)
        if not self._authorized(request):
            return JSONResponse({"error": "Unauthorized"}, 401)
        if self.load_delay_s:
            await asyncio.sleep(self.load_delay_s)  # a server too slow to answer in time
        if self.fail_next_loads:
            status, message = self.fail_next_loads.pop(0)
            return self._error(status, message, "InternalServerError")
        if self.refuse_loads is not None:
            return self._error(*self.refuse_loads)
        name, path = payload.get("lora_name"), payload.get("lora_path")
        if not name or not path:
            return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.loras:
            return self._error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        if not (Path(path) / "adapter_config.json").is_file():
            return self._error(404, f"No adapter found for {path}", "NotFoundError")
        self.loras[name] = path
        if self.kind == "sglang":
            return JSONResponse({"success": True, "error_message": None, "loaded_adapters": dict(self.loras)})
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(self, request: Request) -> Response:
        payload = await self._record(request)
        if not self._authorized(request):
            return JSONResponse({"error": "Unauthorized"}, 401)
        name = payload.get("lora_name")
        if name not in self.loras:
            return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.loras[name]
        if self.kind == "sglang":
            return JSONResponse({"success": True, "error_message": None, "loaded_adapters": dict(self.loras)})
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def models(self, request: Request) -> Response:
        await self._record(request)
        cards = [{"id": self.base_model, "object": "model", "root": self.base_model, "parent": None}]
        cards += [
            {"id": name, "object": "model", "root": path, "parent": self.base_model}
            for name, path in self.loras.items()
        ]
        return JSONResponse({"object": "list", "data": cards})

    async def chat(self, request: Request) -> Response:
        payload = await self._record(request)
        if not self._authorized(request):
            return JSONResponse({"error": "Unauthorized"}, 401)
        model = payload.get("model")
        lora = model
        if self.kind == "sglang" and isinstance(model, str) and ":" in model:
            base, _, lora = model.partition(":")
            if base != self.base_model:
                lora = None
        if model != self.base_model and lora not in self.loras:
            message = f"The model `{model}` does not exist."
            return JSONResponse({"error": {"message": message, "type": "NotFoundError", "code": 404}}, 404)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"served by {model}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            }
        )

    def app(self) -> Starlette:
        prefix = "/v1" if self.kind == "vllm" else ""
        return Starlette(
            routes=[
                Route(f"{prefix}/load_lora_adapter", self.load, methods=["POST"]),
                Route(f"{prefix}/unload_lora_adapter", self.unload, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    def paths(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far."""
        return [(method, path) for method, path, _ in self.requests]


class Running:
    """A :class:`StandIn` served by uvicorn on a loopback port, from a daemon thread."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        standin.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(standin.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self._server.started, "the stand-in server did not start"
        return self.standin

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (a server that is down)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
