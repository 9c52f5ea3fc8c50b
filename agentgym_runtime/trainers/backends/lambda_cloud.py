"""Lambda Cloud through its public API: launch, ``GET /api/v1/instances/{id}``, terminate.

``POST /api/v1/instance-operations/launch`` with the instance type, region and the name of an
SSH key registered in your Lambda account; status ``booting`` → ``active`` (``unhealthy``,
``terminating``, ``terminated``); the address is ``ip``, the price
``instance_type.price_cents_per_hour``. Lambda allows about one request per second (launch:
one per 12 s), so requests are spaced and ``429`` answers retried after ``Retry-After``.
Errors come as ``{"error": {"code", "message", "suggestion"}}``. The API key comes from
``LAMBDA_API_KEY`` (or the keyring).

Example:
    >>> LambdaProvider("https://cloud.lambdalabs.com", "key", ssh_key_name="me").ssh_user
    'ubuntu'
"""

from __future__ import annotations

from typing import Any

from agentgym_runtime.config import Settings
from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.trainers.backends.cloud import ApiClient, Instance
from agentgym_runtime.trainers.backends.secrets import require_secret

TOKEN_ENV = "LAMBDA_API_KEY"
_STATES = {
    "booting": "pending",
    "active": "running",
    "unhealthy": "failed",
    "terminating": "terminated",
    "terminated": "terminated",
}


class LambdaProvider:
    """Lambda Cloud instances (see the module docstring).

    Args:
        api_url: API root (``https://cloud.lambdalabs.com``).
        token: API key.
        instance_type: ``gpu_1x_a10`` and the like.
        region: ``us-east-1`` and the like.
        ssh_key_name: The SSH key registered in the Lambda account (its private half is ``ssh_key_path``).
        max_hourly_usd: The most you pay per hour.
        min_interval_s: Least time between requests (the API's rate limit).
    """

    name = "lambda"
    ssh_user = "ubuntu"
    #: Halts the machine from inside; billing stops only at termination, which cleanup does.
    self_stop_command: str | None = "sudo shutdown -h now"

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        instance_type: str = "gpu_1x_a10",
        region: str = "us-east-1",
        ssh_key_name: str | None = None,
        max_hourly_usd: float = 1.5,
        min_interval_s: float = 1.0,
    ) -> None:
        self.api = ApiClient("lambda", api_url, token, min_interval_s=min_interval_s)
        self.instance_type = instance_type
        self.region = region
        self.ssh_key_name = ssh_key_name
        self.max_hourly_usd = max_hourly_usd

    @classmethod
    def from_settings(cls, settings: Settings) -> LambdaProvider:
        """Built from ``lambda_*`` settings and ``LAMBDA_API_KEY``."""
        return cls(
            settings.lambda_api_url,
            require_secret(TOKEN_ENV, "the lambda backend"),
            instance_type=settings.lambda_instance_type,
            region=settings.lambda_region,
            ssh_key_name=settings.lambda_ssh_key_name,
            max_hourly_usd=settings.lambda_max_hourly_usd,
        )

    def launch(self, name: str, public_key: str) -> str:
        """``POST /api/v1/instance-operations/launch``; the instance id."""
        if not self.ssh_key_name:
            raise ConfigurationError(
                "the lambda backend needs the name of an SSH key registered in your Lambda account "
                "(AGENTGYM_LAMBDA_SSH_KEY_NAME)"
            )
        body = {
            "region_name": self.region,
            "instance_type_name": self.instance_type,
            "ssh_key_names": [self.ssh_key_name],
            "quantity": 1,
            "name": name,
        }
        data = self.api.request("POST", "/api/v1/instance-operations/launch", body)["data"]
        return str(data["instance_ids"][0])

    def get(self, instance_id: str) -> Instance:
        """``GET /api/v1/instances/{id}`` (a 404 is a terminated instance)."""
        body = self.api.request("GET", f"/api/v1/instances/{instance_id}", ok_404=True)
        if body is None:
            return Instance(id=instance_id, name="", status="terminated")
        return _instance(body["data"])

    def terminate(self, instance_id: str) -> None:
        """``POST /api/v1/instance-operations/terminate``."""
        self.api.request("POST", "/api/v1/instance-operations/terminate", {"instance_ids": [instance_id]}, ok_404=True)

    def list_instances(self) -> list[Instance]:
        """``GET /api/v1/instances``."""
        return [_instance(item) for item in self.api.request("GET", "/api/v1/instances")["data"]]


def _instance(data: dict[str, Any]) -> Instance:
    kind = data.get("instance_type") or {}
    cents = kind.get("price_cents_per_hour")
    return Instance(
        id=str(data["id"]),
        name=str(data.get("name") or ""),
        status=_STATES.get(str(data.get("status", "")), "pending"),
        host=data.get("ip") or None,
        ssh_port=int(data.get("ssh_port", 22)),
        gpu_type=kind.get("description") or kind.get("name"),
        hourly_usd=float(cents) / 100.0 if cents is not None else None,
    )
