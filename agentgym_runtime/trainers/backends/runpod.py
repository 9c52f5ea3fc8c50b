"""RunPod through its public REST API (v2): ``POST /v2/pods``, ``GET /v2/pods/{id}``, ``DELETE /v2/pods/{id}``.

The pod runs the configured image with one GPU of the configured type, SSH exposed on
``22/tcp`` and your public key in ``PUBLIC_KEY`` (RunPod's images add it to
``authorized_keys``). Status ``PROVISIONING`` → ``STARTING`` → ``RUNNING``; the SSH address is
``publicIp`` and the public port mapped to 22 in ``portMappings``; the price is ``costPerHr``.
The API key comes from ``RUNPOD_API_KEY`` (or the keyring), never from settings or specs.

Example:
    >>> RunPodProvider("https://api.runpod.io", "key", gpu_type="NVIDIA A40").ssh_user
    'root'
"""

from __future__ import annotations

from typing import Any

from agentgym_runtime.config import Settings
from agentgym_runtime.trainers.backends.cloud import ApiClient, Instance
from agentgym_runtime.trainers.backends.secrets import require_secret

TOKEN_ENV = "RUNPOD_API_KEY"
_STATES = {
    "PROVISIONING": "pending",
    "STARTING": "pending",
    "RUNNING": "running",
    "EXITED": "failed",
    "ERROR": "failed",
    "TERMINATED": "terminated",
}


class RunPodProvider:
    """RunPod pods (see the module docstring).

    Args:
        api_url: API root (``https://api.runpod.io``; a test points it at a local stand-in).
        token: API key.
        gpu_type: GPU type id (``"NVIDIA A40"``).
        image: Container image with Python 3.11 and SSH.
        disk_gb: Container disk.
        max_hourly_usd: The most you pay per hour; a pricier pod is terminated unused.
    """

    name = "runpod"
    ssh_user = "root"
    #: RunPod injects RUNPOD_POD_ID and a pod-scoped key; the image ships runpodctl.
    self_stop_command: str | None = 'runpodctl remove pod "$RUNPOD_POD_ID"'

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        gpu_type: str = "NVIDIA A40",
        image: str = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1",
        disk_gb: int = 40,
        max_hourly_usd: float = 1.0,
    ) -> None:
        self.api = ApiClient("runpod", api_url, token)
        self.gpu_type = gpu_type
        self.image = image
        self.disk_gb = disk_gb
        self.max_hourly_usd = max_hourly_usd

    @classmethod
    def from_settings(cls, settings: Settings) -> RunPodProvider:
        """Built from ``runpod_*`` settings and ``RUNPOD_API_KEY``."""
        return cls(
            settings.runpod_api_url,
            require_secret(TOKEN_ENV, "the runpod backend"),
            gpu_type=settings.runpod_gpu_type,
            image=settings.runpod_image,
            disk_gb=settings.runpod_disk_gb,
            max_hourly_usd=settings.runpod_max_hourly_usd,
        )

    def launch(self, name: str, public_key: str) -> str:
        """``POST /v2/pods``; the pod id."""
        body = {
            "name": name,
            "image": self.image,
            "gpu": {"type": self.gpu_type, "count": 1},
            "disk": self.disk_gb,
            "ports": ["22/tcp"],
            "env": {"PUBLIC_KEY": public_key},
        }
        pod = self.api.request("POST", "/v2/pods", body)
        return str(pod["id"])

    def get(self, instance_id: str) -> Instance:
        """``GET /v2/pods/{id}`` (a 404 is a terminated pod)."""
        pod = self.api.request("GET", f"/v2/pods/{instance_id}", ok_404=True)
        if pod is None:
            return Instance(id=instance_id, name="", status="terminated")
        return _instance(pod)

    def terminate(self, instance_id: str) -> None:
        """``DELETE /v2/pods/{id}`` (already gone is fine)."""
        self.api.request("DELETE", f"/v2/pods/{instance_id}", ok_404=True)

    def list_instances(self) -> list[Instance]:
        """``GET /v2/pods``."""
        body = self.api.request("GET", "/v2/pods")
        pods = body.get("pods", body.get("data", [])) if isinstance(body, dict) else body
        return [_instance(pod) for pod in pods or []]


def _instance(pod: dict[str, Any]) -> Instance:
    ports = pod.get("portMappings") or {}
    gpu = pod.get("gpu") or {}
    price = pod.get("costPerHr")
    return Instance(
        id=str(pod["id"]),
        name=str(pod.get("name", "")),
        status=_STATES.get(str(pod.get("status", "")).upper(), "pending"),
        host=pod.get("publicIp") or None,
        ssh_port=int(ports.get("22", 22)),
        gpu_type=gpu.get("displayName") or gpu.get("type") or gpu.get("id"),
        hourly_usd=float(price) if price is not None else None,
    )
