"""A FastAPI service with a wrapped agent, served by the process tests under gunicorn."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import agentgym_runtime as agentgym


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    # uvicorn ends a worker by re-raising SIGTERM after its graceful shutdown, so atexit never
    # runs there: flush in the app's shutdown.
    agentgym.shutdown()


app = FastAPI(lifespan=lifespan)


@agentgym.tool
def lookup(order_id: str) -> str:
    """Find an order."""
    return f"order {order_id}: shipped"


@agentgym.train_online(name="support")
def agent(order_id: str) -> str:
    return lookup(order_id=order_id)


@app.get("/ask/{n}")
def ask(n: int) -> dict[str, object]:
    return {"answer": agent(str(n)), "pid": os.getpid()}
