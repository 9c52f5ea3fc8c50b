"""Serve trained LoRA adapters from the user's inference server (vLLM or SGLang).

With ``AGENTGYM_INFERENCE_SERVER_URL`` set, a policy version that carries a LoRA adapter
(``llm.adapter``) is served by the user's own server, not in-process:

* **before any call is routed to it** (the version enters canary, is promoted or pinned) the
  registry asks :class:`ServerAdapters` to load its adapter through the server's LoRA-loading
  endpoint — vLLM ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` (the server needs
  ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), SGLang
  ``POST /load_lora_adapter`` — under the name ``<agent>-v<version>-<digest>`` (the digest is the
  artifact's manifest sha256 recorded at registration, so a name always means the same weights);
* the policy that calls pin then names that adapter: ``llm.model`` is the adapter's model name on the
  server (vLLM: the LoRA name; SGLang: ``<base model>:<LoRA name>``) and ``llm.endpoint`` the server's
  OpenAI-compatible ``/v1``. A user's OpenAI-compatible client reads it per call with
  :func:`agentgym_runtime.served_model` (or through a registered model factory, which gets the
  routed ``LLMConfig``);
* **rollback** routes back to the previous version and unloads the rejected adapter; a promotion
  unloads the adapters no pointer needs any more (the previous live one stays: it is the rollback
  target);
* a server that **refuses** (4xx/5xx) or is **down / times out** (bounded retries) leaves the live
  version serving: the change is refused with :class:`~agentgym_runtime.policy.errors.InferenceServerError`,
  logged in the registry's decision log with the server's message (``agentgym policies show``), and
  the serving router never routes to an adapter it could not load — nothing raises into the agent.

The server reads the adapter files itself, from the artifact directory: the same path when it runs
on this machine, or ``AGENTGYM_INFERENCE_SERVER_ADAPTER_ROOT`` when ``<home>/policies`` is mounted
elsewhere on it (a shared filesystem). The path sent is always built from the registry's own,
verified artifact (never from a string in a policy), and an adapter for another base model than
the server serves is refused at registration, never at serving time.

Example:
    >>> server = InferenceServer(url="http://vllm:8000", base_model="Qwen/Qwen2.5-0.5B-Instruct")
    >>> adapters = ServerAdapters(server, policies_root=Path("/srv/home/policies"))
    >>> from agentgym_runtime.recording.policy import LLMConfig, Policy
    >>> llm = LLMConfig(model="Qwen/Qwen2.5-0.5B-Instruct", adapter="adapter")
    >>> policy = Policy(agent="support", version=3, llm=llm)
    >>> adapters.lora_name(policy, "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    'support-v3-0f1e2d3c4b5a'
    >>> adapters.server_path(policy)
    '/srv/home/policies/support/v3/adapter'
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal

from agentgym_runtime.errors import MissingExtraError
from agentgym_runtime.policy.artifact import ADAPTER_DIR, adapter_base_model, same_model
from agentgym_runtime.policy.errors import InferenceServerError, PolicyArtifactError
from agentgym_runtime.recording.policy import LLMConfig, Policy

if TYPE_CHECKING:
    import httpx

    from agentgym_runtime.config import Settings

logger = logging.getLogger("agentgym_runtime.policy")

ServerKind = Literal["vllm", "sglang"]
#: The HTTP statuses worth retrying: the server is overloaded or restarting, not refusing.
RETRIED_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class InferenceServer:
    """Where the user's inference server is and how to talk to it.

    Attributes:
        url: Base URL (``http://vllm:8000``; a trailing ``/v1`` is accepted and dropped).
        kind: ``"vllm"`` or ``"sglang"`` (the LoRA endpoints' paths and the model-name syntax).
        base_model: The base model the server serves; adapters for another one are refused.
        adapter_root: Where the server sees the policies directory (``None``: the same path).
        api_key_env: The environment variable holding its API key (``None``: no key).
        timeout_s: Timeout of one request.
        retries: Further attempts after no answer or a 5xx/429 (a 4xx refusal is final).
        backoff_s: Wait before the first retry; doubled for each next one.

    Example:
        >>> InferenceServer(url="http://vllm:8000/v1/").url
        'http://vllm:8000'
    """

    url: str
    kind: ServerKind = "vllm"
    base_model: str | None = None
    adapter_root: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.25

    def __post_init__(self) -> None:
        url = self.url.strip().rstrip("/")
        url = url.removesuffix("/v1")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"inference server URL {self.url!r} must start with http:// or https://")
        if self.kind not in ("vllm", "sglang"):
            raise ValueError(f"inference server kind {self.kind!r} must be 'vllm' or 'sglang'")
        object.__setattr__(self, "url", url)

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible base URL callers send chat completions to (``<url>/v1``)."""
        return f"{self.url}/v1"

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceServer | None:
        """The server ``AGENTGYM_INFERENCE_SERVER_*`` describe, or ``None`` when no URL is set.

        Example:
            >>> from agentgym_runtime.config import Settings
            >>> InferenceServer.from_settings(Settings()) is None
            True
            >>> InferenceServer.from_settings(Settings(inference_server_url="http://vllm:8000")).kind
            'vllm'
        """
        if not settings.inference_server_url:
            return None
        return cls(
            url=settings.inference_server_url,
            kind=settings.inference_server_kind,
            base_model=settings.inference_server_model,
            adapter_root=settings.inference_server_adapter_root,
            api_key_env=settings.inference_server_api_key_env,
            timeout_s=settings.inference_server_timeout_s,
            retries=settings.inference_server_retries,
        )


def server_message(response: httpx.Response) -> str:
    """The error message in a server's answer, in the shapes vLLM, SGLang and FastAPI use.

    Example:
        >>> import httpx
        >>> server_message(httpx.Response(400, json={"object": "error", "message": "No adapter found"}))
        'No adapter found'
        >>> server_message(httpx.Response(400, json={"error": {"message": "bad rank"}}))
        'bad rank'
        >>> server_message(httpx.Response(400, json={"success": False, "error_message": "shape mismatch"}))
        'shape mismatch'
    """
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:500] or f"HTTP {response.status_code}"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "error_message", "detail", "error"):
            if payload.get(key):
                return str(payload[key])
    return json.dumps(payload)[:500]


class LoraEndpoints:
    """The server's LoRA-loading endpoints and model list, over HTTP with timeouts and bounded retries.

    Args:
        server: Which server.
        transport: An ``httpx`` transport (tests); ``None``: the network.

    Raises:
        MissingExtraError: ``httpx`` is not installed (``pip install 'agentgym-runtime[inference]'``).
    """

    def __init__(self, server: InferenceServer, transport: httpx.BaseTransport | None = None) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingExtraError("inference server", "inference", "httpx") from exc
        self.server = server
        headers = {}
        key = os.environ.get(server.api_key_env) if server.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=server.url,
            headers=headers,
            timeout=httpx.Timeout(server.timeout_s, connect=min(5.0, server.timeout_s)),
            transport=transport,
        )
        prefix = "/v1" if server.kind == "vllm" else ""
        self.load_path = f"{prefix}/load_lora_adapter"
        self.unload_path = f"{prefix}/unload_lora_adapter"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _request(self, method: str, path: str, what: str, payload: Mapping[str, Any] | None = None) -> httpx.Response:
        """Send one request, retrying no answer and 5xx/429; return the final answer (any status).

        Raises:
            InferenceServerError: No answer after every attempt (down, refused connection, timeout).
        """
        url = f"{self.server.url}{path}"
        attempts = self.server.retries + 1
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.server.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.request(method, path, json=payload)
            except self._httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code in RETRIED_STATUSES and attempt + 1 < attempts:
                last_error = f"HTTP {response.status_code}: {server_message(response)}"
                continue
            return response
        raise InferenceServerError(
            f"{what}: the inference server at {self.server.url} did not answer after {attempts} attempt(s) "
            f"({last_error})",
            url=url,
            status=None,
            server_message=last_error,
        )

    def _refused(self, response: httpx.Response, what: str, path: str) -> InferenceServerError:
        message = server_message(response)
        hint = ""
        if response.status_code in (404, 405) and self.server.kind == "vllm" and "lora" not in message.lower():
            hint = " (is vLLM started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
        return InferenceServerError(
            f"{what}: the inference server at {self.server.url} refused (HTTP {response.status_code}): {message}{hint}",
            url=f"{self.server.url}{path}",
            status=response.status_code,
            server_message=message,
        )

    def load(self, lora_name: str, lora_path: str) -> None:
        """Load an adapter under ``lora_name``; one already loaded under that name counts as loaded.

        Raises:
            InferenceServerError: Refused, or no answer.
        """
        what = f"loading LoRA adapter {lora_name!r} from {lora_path}"
        response = self._request("POST", self.load_path, what, {"lora_name": lora_name, "lora_path": lora_path})
        if response.is_success:
            return
        if response.status_code == 400 and "already" in server_message(response).lower():
            return  # idempotent: the name holds the artifact's digest, so it holds these weights
        raise self._refused(response, what, self.load_path)

    def unload(self, lora_name: str) -> bool:
        """Unload an adapter; ``False`` when the server does not hold it (nothing to do).

        Raises:
            InferenceServerError: Refused otherwise, or no answer.
        """
        what = f"unloading LoRA adapter {lora_name!r}"
        response = self._request("POST", self.unload_path, what, {"lora_name": lora_name})
        if response.is_success:
            return True
        message = server_message(response).lower()
        if response.status_code == 404 and ("cannot be found" in message or "not found" in message):
            return False
        raise self._refused(response, what, self.unload_path)

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the base model(s) and the loaded adapters (vLLM gives each its ``parent``).

        Raises:
            InferenceServerError: Refused, or no answer.
        """
        response = self._request("GET", "/v1/models", "listing models")
        if not response.is_success:
            raise self._refused(response, "listing models", "/v1/models")
        data = response.json().get("data", [])
        return [item for item in data if isinstance(item, dict)]


@dataclass
class ServerFailure:
    """One adapter request the server refused or never answered (kept for ``stats`` and tests)."""

    action: str
    policy: str
    lora_name: str
    status: int | None
    message: str
    at: float = field(default_factory=time.time)


class ServerAdapters:
    """Loads, names and unloads the adapters of policy versions on one inference server.

    The registry calls :meth:`check` at registration, :meth:`deploy` before a version enters
    canary, is promoted or pinned, and :meth:`retire` after a rollback; the router serves the
    policy :meth:`routed` returns. Adapters this process loaded are remembered, so the router's
    check before routing costs nothing after the registry's load.

    Args:
        server: The server.
        policies_root: The policies directory here (``<home>/policies``).
        endpoints: The HTTP client (``None``: built on first use).

    Example:
        >>> adapters = ServerAdapters(InferenceServer(url="http://vllm:8000"), Path("/h/policies"))
        >>> from agentgym_runtime.recording.policy import LLMConfig
        >>> adapters.serves(Policy(agent="a", version=1, llm=LLMConfig(adapter="adapter")))
        True
        >>> adapters.serves(Policy(agent="a", version=1, system_prompt="Hi"))
        False
    """

    def __init__(self, server: InferenceServer, policies_root: Path, endpoints: LoraEndpoints | None = None) -> None:
        self.server = server
        self.policies_root = Path(policies_root)
        self._endpoints = endpoints
        self._lock = threading.RLock()
        self.loaded: dict[str, Policy] = {}
        self.failures: list[ServerFailure] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerAdapters | None:
        """The adapters of the server the settings name, or ``None`` when none is set."""
        server = InferenceServer.from_settings(settings)
        return None if server is None else cls(server, settings.policies_dir)

    @property
    def endpoints(self) -> LoraEndpoints:
        """The HTTP client (built on first use: a registry without server traffic needs no ``httpx``).

        Raises:
            InferenceServerError: ``httpx`` is not installed (the message names the extra).
        """
        with self._lock:
            if self._endpoints is None:
                try:
                    self._endpoints = LoraEndpoints(self.server)
                except MissingExtraError as exc:  # a version that cannot be served, never a crash
                    raise InferenceServerError(
                        str(exc), url=self.server.url, status=None, server_message=str(exc)
                    ) from exc
            return self._endpoints

    def close(self) -> None:
        """Close the HTTP client."""
        with self._lock:
            if self._endpoints is not None:
                self._endpoints.close()

    # --- naming -----------------------------------------------------------------------------------
    def serves(self, policy: Policy) -> bool:
        """Whether ``policy`` is served by this server: it has an adapter and names no other endpoint."""
        llm = policy.llm
        if policy.version == 0 or llm is None or not llm.adapter:
            return False
        if llm.endpoint is None:
            return True
        endpoint = llm.endpoint.strip().rstrip("/").removesuffix("/v1")
        return endpoint == self.server.url

    def lora_name(self, policy: Policy, digest: str | None) -> str:
        """``<agent>-v<version>-<digest[:12]>``: the adapter's name on the server (characters made safe)."""
        agent = _UNSAFE.sub("_", policy.agent).strip("._-") or "agent"
        suffix = f"-{digest[:12]}" if digest else ""
        return f"{agent}-v{policy.version}{suffix}"

    def model_name(self, policy: Policy, digest: str | None) -> str:
        """What callers send as ``model``: vLLM the LoRA name, SGLang ``<base model>:<LoRA name>``."""
        name = self.lora_name(policy, digest)
        if self.server.kind == "sglang":
            base = self.server.base_model or (policy.llm.model if policy.llm else None)
            return f"{base}:{name}" if base else name
        return name

    def server_path(self, policy: Policy) -> str:
        """Where the server reads the version's adapter directory (built from the registry's layout).

        Raises:
            PolicyArtifactError: The policy's adapter path leaves its artifact.
        """
        adapter = (policy.llm.adapter if policy.llm else None) or ADAPTER_DIR
        relative = PurePosixPath(adapter.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts or adapter.startswith("~"):
            raise PolicyArtifactError(f"{policy.ref}: llm.adapter {adapter!r} points outside its artifact")
        parts = (policy.agent, f"v{policy.version}", *relative.parts)
        if self.server.adapter_root:
            return str(PurePosixPath(self.server.adapter_root, *parts))
        return str(self.policies_root.resolve().joinpath(*parts))

    def routed(self, policy: Policy, digest: str | None) -> Policy:
        """``policy`` as calls pin it: ``llm.model`` the adapter's model name, ``llm.endpoint`` the server.

        Example:
            >>> from agentgym_runtime.recording.policy import LLMConfig
            >>> adapters = ServerAdapters(InferenceServer(url="http://vllm:8000"), Path("/h/policies"))
            >>> p = Policy(agent="bot", version=2, llm=LLMConfig(model="base", adapter="adapter"))
            >>> routed = adapters.routed(p, "ab" * 32)
            >>> routed.llm.model, routed.llm.endpoint, routed.metadata["base_model"]
            ('bot-v2-abababababab', 'http://vllm:8000/v1', 'base')
        """
        if not self.serves(policy) or policy.llm is None:
            return policy
        llm = policy.llm.model_copy(
            update={
                "model": self.model_name(policy, digest),
                "endpoint": self.server.openai_base_url,
                "api_key_env": policy.llm.api_key_env or self.server.api_key_env,
            }
        )
        metadata = {**policy.metadata, "served_by": self.server.url, "lora_name": self.lora_name(policy, digest)}
        base = policy.llm.model or self.server.base_model
        if base:
            metadata.setdefault("base_model", base)
        return policy.model_copy(update={"llm": llm, "metadata": metadata})

    # --- registration ---------------------------------------------------------------------------
    def check(self, policy: Policy, adapter_dir: Path | str | None) -> None:
        """Refuse, at registration, an adapter this server could not serve.

        Raises:
            PolicyArtifactError: No ``adapter_config.json`` (the server loads PEFT adapter
                directories), an adapter trained on another base model than the server serves, or a
                policy naming another base model than the server's.
        """
        if adapter_dir is None or not self.serves(policy.model_copy(update={"llm": _with_adapter(policy)})):
            return
        source = Path(adapter_dir)
        where = f"the {self.server.kind} server at {self.server.url}"
        if not (source / "adapter_config.json").is_file():
            raise PolicyArtifactError(
                f"adapter {source} has no adapter_config.json: {where} loads PEFT adapter directories "
                f"(adapter_config.json + adapter_model.safetensors, as peft's save_pretrained writes them)"
            )
        serving = self.server.base_model
        if serving is None:
            return
        trained_on = adapter_base_model(source)
        if trained_on is not None and not same_model(trained_on, serving):
            raise PolicyArtifactError(
                f"adapter {source} was trained on base model {trained_on!r} but {where} serves {serving!r}: "
                f"it cannot be loaded there (train on {serving!r}, or serve it elsewhere)"
            )
        named = policy.llm.model if policy.llm else None
        if named and not same_model(named, serving):
            raise PolicyArtifactError(
                f"{policy.ref} names base model {named!r} but {where} serves {serving!r} "
                f"(set llm.model to {serving!r} or leave it unset)"
            )

    # --- loading --------------------------------------------------------------------------------
    def deploy(self, policy: Policy, digest: str | None) -> str:
        """Load the version's adapter (once per process) and return the model name calls will send.

        Raises:
            InferenceServerError: The server refused or did not answer (recorded in :attr:`failures`).
        """
        name = self.lora_name(policy, digest)
        with self._lock:
            if name in self.loaded:
                return self.model_name(policy, digest)
            try:
                self.endpoints.load(name, self.server_path(policy))
            except InferenceServerError as exc:
                self.failures.append(ServerFailure("load", policy.ref, name, exc.status, exc.server_message))
                raise
            self.loaded[name] = policy
        logger.info("agentgym: loaded %s into %s as %r", policy.ref, self.server.url, name)
        return self.model_name(policy, digest)

    def retire(self, policy: Policy, digest: str | None) -> bool:
        """Unload the version's adapter; ``False`` when the server did not hold it.

        Raises:
            InferenceServerError: The server refused or did not answer (recorded in :attr:`failures`).
        """
        name = self.lora_name(policy, digest)
        with self._lock:
            try:
                held = self.endpoints.unload(name)
            except InferenceServerError as exc:
                self.failures.append(ServerFailure("unload", policy.ref, name, exc.status, exc.server_message))
                raise
            self.loaded.pop(name, None)
        logger.info("agentgym: unloaded %s (%r) from %s", policy.ref, name, self.server.url)
        return held

    def loaded_versions(self, agent: str) -> dict[int, Policy]:
        """The versions of ``agent`` whose adapters this process loaded and has not unloaded."""
        with self._lock:
            return {p.version: p for p in self.loaded.values() if p.agent == agent}

    def stats(self) -> dict[str, Any]:
        """The loaded adapters and the failures so far."""
        with self._lock:
            return {
                "server": self.server.url,
                "loaded": sorted(self.loaded),
                "failures": [f"{f.action} {f.policy}: {f.status} {f.message}" for f in self.failures],
            }


def _with_adapter(policy: Policy) -> LLMConfig:
    llm = policy.llm or LLMConfig()
    return llm if llm.adapter else llm.model_copy(update={"adapter": ADAPTER_DIR})


__all__ = [
    "RETRIED_STATUSES",
    "InferenceServer",
    "LoraEndpoints",
    "ServerAdapters",
    "ServerFailure",
    "ServerKind",
    "server_message",
]
