"""A real MCP server (the ``mcp`` SDK's FastMCP) for the MCP tests: stdio, or streamable HTTP on loopback.

Usage: ``python mcp_server.py`` (stdio) or ``python mcp_server.py http PORT``.
"""

from __future__ import annotations

import sys
import time

from mcp.server.fastmcp import FastMCP

server = FastMCP("orders", host="127.0.0.1", port=int(sys.argv[2]) if len(sys.argv) > 2 else 8000)


@server.tool()
def lookup(order_id: str) -> str:
    """Look up an order by its id."""
    return f"order {order_id}: shipped"


@server.tool()
def refund(order_id: str) -> str:
    """Refund an order (always refused: the server answers isError)."""
    raise ValueError(f"order {order_id} cannot be refunded")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, to let the client time out."""
    time.sleep(seconds)
    return "late"


if __name__ == "__main__":
    server.run("streamable-http" if len(sys.argv) > 1 and sys.argv[1] == "http" else "stdio")
