"""Every span, attribute and value name agentgym-runtime writes, in one place.

The ``gen_ai.*`` names follow the OpenTelemetry GenAI semantic conventions
(development status); the ``agentgym.*`` names are this project's own. Nothing
else in the package spells out a span or attribute name as a literal, so the
store schema, the adapters and the exports cannot drift apart.

Example:
    >>> from agentgym_runtime import semconv
    >>> semconv.tool_span_name("get_order")
    'execute_tool get_order'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

#: Instrumentation scope of the spans agentgym-runtime creates itself.
SCOPE_NAME: Final = "agentgym_runtime"

# --- GenAI operation names (gen_ai.operation.name) --------------------------------------
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"
OP_EVALUATION: Final = "evaluation"

# --- GenAI attributes ------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_TOOL_DEFINITIONS: Final = "gen_ai.tool.definitions"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_VERSION: Final = "gen_ai.agent.version"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
ERROR_TYPE: Final = "error.type"

# --- agentgym attributes ---------------------------------------------------------------
EPISODE_ID: Final = "agentgym.episode.id"
EPISODE_ROOT: Final = "agentgym.episode.root"
EPISODE_SESSION_ID: Final = "agentgym.episode.session_id"
EPISODE_STATUS: Final = "agentgym.episode.status"
EPISODE_INPUT: Final = "agentgym.episode.input"
EPISODE_OUTPUT: Final = "agentgym.episode.output"
EPISODE_METADATA: Final = "agentgym.episode.metadata"
EPISODE_ENTRYPOINT: Final = "agentgym.episode.entrypoint"
EPISODE_SCENARIO: Final = "agentgym.episode.scenario"
EPISODE_TOOL_CALLS: Final = "agentgym.episode.tool_calls"
EPISODE_TOOL_FAILURES: Final = "agentgym.episode.tool_failures"
EPISODE_TOOL_RELIABILITY: Final = "agentgym.episode.tool_reliability"
EPISODE_LLM_CALLS: Final = "agentgym.episode.llm_calls"
EPISODE_INPUT_TOKENS: Final = "agentgym.episode.input_tokens"
EPISODE_OUTPUT_TOKENS: Final = "agentgym.episode.output_tokens"
EPISODE_REWARD: Final = "agentgym.episode.reward"
FRAMEWORK: Final = "agentgym.framework"
POLICY_VERSION: Final = "agentgym.policy.version"
TOOL_OUTCOME: Final = "agentgym.tool.outcome"
TOOL_ERROR_MESSAGE: Final = "agentgym.tool.error_message"
TOOL_ATTEMPT: Final = "agentgym.tool.attempt"
TOOL_REQUESTED_CALLS: Final = "agentgym.llm.requested_tool_calls"
#: On an ``invalid_arguments`` tool span: whether the tool ran anyway (the framework did not
#: validate), and how that run ended (``ok`` / ``error_result`` / ``tool_error``).
TOOL_EXECUTED_ANYWAY: Final = "agentgym.tool.executed_anyway"
TOOL_EXECUTED_OUTCOME: Final = "agentgym.tool.executed_outcome"
#: Why a tool's schema could not be used to check a call (the schema itself is invalid).
TOOL_SCHEMA_ERROR: Final = "agentgym.tool.schema_error"
#: On a tool span of an MCP tool: the server's own name (``serverInfo.name``), the transport
#: (``stdio`` / ``streamable_http`` / ``sse``) and its target (the server's command or URL).
MCP_SERVER_NAME: Final = "agentgym.mcp.server.name"
MCP_TRANSPORT: Final = "agentgym.mcp.transport"
MCP_SERVER_TARGET: Final = "agentgym.mcp.server.target"
FEEDBACK_COMMENT: Final = "agentgym.feedback.comment"
FEEDBACK_TARGET_EPISODE: Final = "agentgym.feedback.episode_id"
FEEDBACK_ID: Final = "agentgym.feedback.id"
POLICY_FALLBACK_FROM: Final = "agentgym.policy.fallback_from"
"""Set on an agent span whose call fell back to the incumbent policy after an LLM failure (the failed version)."""

# --- span names ------------------------------------------------------------------------
FEEDBACK_SPAN_NAME: Final = "gen_ai.evaluation.result"


def agent_span_name(agent: str) -> str:
    """Name of the span covering one agent invocation (``invoke_agent {agent}``)."""
    return f"{OP_INVOKE_AGENT} {agent}"


def tool_span_name(tool: str) -> str:
    """Name of the span covering one tool call (``execute_tool {tool}``)."""
    return f"{OP_EXECUTE_TOOL} {tool}"


def chat_span_name(model: str | None) -> str:
    """Name of the span covering one LLM call (``chat {model}``)."""
    return f"{OP_CHAT} {model}" if model else OP_CHAT


class ToolOutcome(StrEnum):
    """What became of one tool call the model requested.

    Only ``OK`` counts as a success for tool reliability.

    Example:
        >>> ToolOutcome("unknown_tool").is_failure
        True
    """

    OK = "ok"
    """The tool exists, its arguments validated, it ran and returned a non-error result."""
    UNKNOWN_TOOL = "unknown_tool"
    """The model named a tool the agent does not have."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """The arguments did not parse as JSON or did not validate against the tool's schema."""
    TOOL_ERROR = "tool_error"
    """The tool raised while running."""
    ERROR_RESULT = "error_result"
    """The tool ran, but the framework marked its result as an error."""
    NOT_EXECUTED = "not_executed"
    """A valid call to a known tool that the framework never ran (e.g. the run stopped first)."""

    @property
    def is_failure(self) -> bool:
        """Whether this outcome counts against tool reliability."""
        return self is not ToolOutcome.OK


class EpisodeStatus(StrEnum):
    """How an episode ended."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
