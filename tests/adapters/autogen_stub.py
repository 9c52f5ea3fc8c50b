"""The base of the scripted AutoGen model clients the tests drive agents with.

``ChatCompletionClient`` has nine abstract members; a stand-in only scripts ``create`` and
``create_stream``. The other seven (usage, token counting, capabilities, model info) are the same
for every stand-in: an unlimited function-calling model that reports no usage of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, LLMMessage, ModelFamily, ModelInfo, RequestUsage

INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


class StubClient(ChatCompletionClient):
    """A client whose subclasses write ``create`` and ``create_stream``; the rest is answered here."""

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def total_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def count_tokens(self, messages: Sequence[LLMMessage], **kwargs: Any) -> int:
        return 0

    def remaining_tokens(self, messages: Sequence[LLMMessage], **kwargs: Any) -> int:
        return 1000

    @property
    def capabilities(self) -> Any:
        return {}

    @property
    def model_info(self) -> ModelInfo:
        return INFO
