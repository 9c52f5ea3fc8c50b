"""Errors raised by the policy registry, artifacts and router.

Example:
    >>> from agentgym_runtime.policy.errors import PolicyNotFoundError
    >>> issubclass(PolicyNotFoundError, LookupError)
    True
"""

from __future__ import annotations

from agentgym_runtime.errors import AgentGymError


class PolicyError(AgentGymError):
    """Base class of the policy errors.

    Example:
        >>> isinstance(PolicyConflictError("x"), PolicyError)
        True
    """


class PolicyNotFoundError(PolicyError, LookupError):
    """An agent or version the registry does not hold; the message lists what exists.

    Example:
        >>> str(PolicyNotFoundError("agent 'x' has no version 9; versions: 0, 1"))
        "agent 'x' has no version 9; versions: 0, 1"
    """


class PolicyConflictError(PolicyError, RuntimeError):
    """A registry change lost a race (another process changed the pointers first) or is invalid now.

    Example:
        >>> raise PolicyConflictError("v2 is already live")
        Traceback (most recent call last):
        ...
        agentgym_runtime.policy.errors.PolicyConflictError: v2 is already live
    """


class PolicyArtifactError(PolicyError, ValueError):
    """A policy artifact is missing, corrupt or tampered with; it is never loaded.

    Example:
        >>> str(PolicyArtifactError("sha256 mismatch for policy.json"))
        'sha256 mismatch for policy.json'
    """


class UntrustedFileError(PolicyArtifactError):
    """A file of the policies directory is not trusted: a symlink, owned by another user, or world-writable.

    The pointers, events and artifacts decide what code the service runs with, so only files
    that the service's own user owns and that nobody else may write are read.

    Example:
        >>> issubclass(UntrustedFileError, PolicyArtifactError)
        True
    """


class InferenceServerError(PolicyError, RuntimeError):
    """The inference server (vLLM, SGLang) refused, failed or did not answer an adapter request.

    The version it was about stays unserved: the live version keeps serving.

    Attributes:
        url: The request's URL.
        status: The HTTP status the server answered with (``None``: no answer, e.g. down or timed out).
        server_message: What the server said (its error message), or why there was no answer.

    Example:
        >>> error = InferenceServerError("load refused", url="http://vllm:8000/v1/load_lora_adapter", status=400,
        ...                              server_message="No adapter found")
        >>> error.status, error.server_message
        (400, 'No adapter found')
    """

    def __init__(self, message: str, *, url: str, status: int | None, server_message: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.server_message = server_message
