"""Local stand-ins for the RunPod and Lambda Cloud APIs, speaking their documented endpoints.

One HTTP server on 127.0.0.1 (a thread) answers both:

* RunPod REST v2: ``POST /v2/pods`` (201), ``GET /v2/pods``, ``GET /v2/pods/{id}``,
  ``DELETE /v2/pods/{id}`` (204); status ``PROVISIONING`` → ``STARTING`` → ``RUNNING``;
  errors as ``{"error": "..."}``.
* Lambda Cloud v1: ``POST /api/v1/instance-operations/launch``, ``POST .../terminate``,
  ``GET /api/v1/instances[/{id}]``; status ``booting`` → ``active``; errors as
  ``{"error": {"code", "message", "suggestion"}}``.

Both check the bearer token, can answer ``429`` (with ``Retry-After``) to the next requests of a
path, or a provider error to the next launch. The "rented machine" is the loopback SSH server:
a running instance's address is ``127.0.0.1`` and that server's port.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LAMBDA_BAD_KEY = {
    "error": {
        "code": "global/invalid-api-key",
        "message": "API key was invalid, expired, or deleted.",
        "suggestion": "Check your API key or create a new one, then try again.",
    }
}
LAMBDA_NO_CAPACITY = {
    "error": {
        "code": "instance-operations/launch/insufficient-capacity",
        "message": "Not enough capacity to fulfill launch request.",
        "suggestion": "Choose an instance type with more availability, or try your request again later.",
    }
}


@dataclass
class StandIn:
    """The providers' state, for the tests to steer and inspect."""

    token: str
    ssh_port: int
    url: str = ""
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    rate_limit: dict[str, int] = field(default_factory=dict)  # path -> how many 429s still to answer
    launch_error: tuple[int, dict[str, Any]] | None = None
    runpod_price: float = 0.44
    lambda_cents: int = 75
    public_keys: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def state(self, instance_id: str) -> str:
        """The provider status of a pod or instance."""
        with self.lock:
            if instance_id in self.pods:
                return str(self.pods[instance_id]["status"])
            return str(self.instances[instance_id]["status"])

    def count(self, method: str, prefix: str) -> int:
        """How many requests of ``method`` to paths starting with ``prefix`` arrived."""
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))


_RUNPOD_NEXT = {"PROVISIONING": "STARTING", "STARTING": "RUNNING"}


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self, method: str) -> None:
        stand: StandIn = self.server.stand
        path = self.path.split("?")[0]
        stand.requests.append((method, path))
        lambda_api = path.startswith("/api/v1/")
        if self.headers.get("Authorization") != f"Bearer {stand.token}":
            self._send(401, LAMBDA_BAD_KEY if lambda_api else {"error": "invalid or missing API key"})
            return
        with stand.lock:
            if stand.rate_limit.get(path, 0) > 0:
                stand.rate_limit[path] -= 1
                message = "Too many requests" if not lambda_api else None
                body = (
                    {"error": {"code": "global/too-many-requests", "message": "Rate limit exceeded."}}
                    if lambda_api
                    else {"error": message}
                )
                self._send(429, body, {"Retry-After": "0"})
                return
        if lambda_api:
            self._lambda(method, path, stand)
        else:
            self._runpod(method, path, stand)

    def _runpod(self, method: str, path: str, stand: StandIn) -> None:
        parts = path.strip("/").split("/")
        with stand.lock:
            if method == "POST" and path == "/v2/pods":
                body = self._body()
                if stand.launch_error is not None:
                    status, error = stand.launch_error
                    self._send(status, {"error": error["error"]["message"]})
                    return
                stand.public_keys.append(body["env"]["PUBLIC_KEY"])
                pod_id = f"pod_{next(stand._ids)}"
                stand.pods[pod_id] = {
                    "id": pod_id,
                    "name": body["name"],
                    "image": body["image"],
                    "status": "PROVISIONING",
                    "gpu": {
                        "type": body["gpu"]["type"],
                        "count": body["gpu"]["count"],
                        "displayName": body["gpu"]["type"].replace("NVIDIA ", ""),
                    },
                    "disk": body["disk"],
                    "ports": body["ports"],
                    "costPerHr": stand.runpod_price,
                }
                self._send(201, dict(stand.pods[pod_id]))
                return
            if method == "GET" and path == "/v2/pods":
                self._send(200, list(stand.pods.values()))
                return
            pod = stand.pods.get(parts[-1]) if len(parts) == 3 else None
            if pod is None:
                self._send(404, {"error": "pod not found"})
                return
            if method == "GET":
                view = dict(pod)
                if pod["status"] in _RUNPOD_NEXT:
                    pod["status"] = _RUNPOD_NEXT[pod["status"]]
                if view["status"] == "RUNNING":
                    view.update(publicIp="127.0.0.1", portMappings={"22": stand.ssh_port})
                self._send(200, view)
                return
            if method == "DELETE":
                pod["status"] = "TERMINATED"
                self._send(204)
                return
        self._send(405, {"error": "method not allowed"})

    def _lambda(self, method: str, path: str, stand: StandIn) -> None:
        with stand.lock:
            if method == "POST" and path == "/api/v1/instance-operations/launch":
                body = self._body()
                if stand.launch_error is not None:
                    status, error = stand.launch_error
                    self._send(status, error)
                    return
                instance_id = f"i-{next(stand._ids):04x}"
                stand.instances[instance_id] = {
                    "id": instance_id,
                    "name": body["name"],
                    "status": "booting",
                    "ssh_key_names": body["ssh_key_names"],
                    "region": {"name": body["region_name"]},
                    "instance_type": {
                        "name": body["instance_type_name"],
                        "description": "1x A10 (24 GB PCIe)",
                        "price_cents_per_hour": stand.lambda_cents,
                    },
                }
                self._send(200, {"data": {"instance_ids": [instance_id]}})
                return
            if method == "POST" and path == "/api/v1/instance-operations/terminate":
                ids = self._body()["instance_ids"]
                done = []
                for instance_id in ids:
                    if instance_id in stand.instances:
                        stand.instances[instance_id]["status"] = "terminated"
                        done.append(dict(stand.instances[instance_id]))
                self._send(200, {"data": {"terminated_instances": done}})
                return
            if method == "GET" and path == "/api/v1/instances":
                self._send(200, {"data": list(stand.instances.values())})
                return
            if method == "GET" and path.startswith("/api/v1/instances/"):
                instance = stand.instances.get(path.rsplit("/", 1)[1])
                if instance is None:
                    self._send(404, {"error": {"code": "global/object-does-not-exist", "message": "Not found"}})
                    return
                view = dict(instance)
                if instance["status"] == "booting":
                    instance["status"] = "active"
                if view["status"] == "active":
                    view.update(ip="127.0.0.1", ssh_port=stand.ssh_port)
                self._send(200, {"data": view})
                return
        self._send(404, {"error": {"code": "global/not-found", "message": "no such endpoint"}})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@contextmanager
def provider_stand_in(token: str, ssh_port: int) -> Iterator[StandIn]:
    """Serve both APIs on a free loopback port until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    stand = StandIn(token=token, ssh_port=ssh_port, url=f"http://127.0.0.1:{server.server_address[1]}")
    server.stand = stand  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="provider-stand-in", daemon=True)
    thread.start()
    try:
        yield stand
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
