"""Span attribute names and values: OTel GenAI, OpenInference and our own `evals.*`, side by side.

Names only: no logic, no dependencies. The OTel GenAI names follow the current semantic
conventions (`gen_ai.provider.name`, `gen_ai.usage.input_tokens`); the deprecated
`gen_ai.system` and `gen_ai.usage.prompt_tokens`/`completion_tokens` are deliberately absent,
since trace backends such as Phoenix no longer map them. OpenInference names are what Phoenix
reads first. Indexed OpenInference names are templates: fill them with `str.format`.
"""

from typing import Final

# --- OpenTelemetry GenAI semantic conventions -------------------------------------------------

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"

# Values of gen_ai.operation.name.
OP_CHAT: Final = "chat"
OP_EMBEDDINGS: Final = "embeddings"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_RETRIEVAL: Final = "retrieval"
OP_INVOKE_AGENT: Final = "invoke_agent"

# General OTel semantic conventions.
ERROR_TYPE: Final = "error.type"
SERVICE_NAME: Final = "service.name"

# --- OpenInference ------------------------------------------------------------------------------

OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_PROJECT_NAME: Final = "openinference.project.name"  # a resource attribute

# Values of openinference.span.kind.
KIND_LLM: Final = "LLM"
KIND_RETRIEVER: Final = "RETRIEVER"
KIND_EMBEDDING: Final = "EMBEDDING"
KIND_TOOL: Final = "TOOL"
KIND_CHAIN: Final = "CHAIN"
KIND_EVALUATOR: Final = "EVALUATOR"
KIND_AGENT: Final = "AGENT"

LLM_MODEL_NAME: Final = "llm.model_name"
LLM_PROVIDER: Final = "llm.provider"
LLM_INVOCATION_PARAMETERS: Final = "llm.invocation_parameters"
LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL: Final = "llm.token_count.total"
LLM_COST_TOTAL: Final = "llm.cost.total"

LLM_INPUT_MESSAGES: Final = "llm.input_messages"
LLM_OUTPUT_MESSAGES: Final = "llm.output_messages"
# Templates: LLM_INPUT_MESSAGE_ROLE.format(i=0) == "llm.input_messages.0.message.role".
LLM_INPUT_MESSAGE_ROLE: Final = "llm.input_messages.{i}.message.role"
LLM_INPUT_MESSAGE_CONTENT: Final = "llm.input_messages.{i}.message.content"
LLM_INPUT_MESSAGE_TOOL_CALL_ID: Final = "llm.input_messages.{i}.message.tool_call_id"
LLM_OUTPUT_MESSAGE_ROLE: Final = "llm.output_messages.{i}.message.role"
LLM_OUTPUT_MESSAGE_CONTENT: Final = "llm.output_messages.{i}.message.content"
# Tool calls of a message: fill both {i} (message) and {j} (tool call).
LLM_OUTPUT_TOOL_CALL_ID: Final = "llm.output_messages.{i}.message.tool_calls.{j}.tool_call.id"
LLM_OUTPUT_TOOL_CALL_NAME: Final = (
    "llm.output_messages.{i}.message.tool_calls.{j}.tool_call.function.name"
)
LLM_OUTPUT_TOOL_CALL_ARGUMENTS: Final = (
    "llm.output_messages.{i}.message.tool_calls.{j}.tool_call.function.arguments"
)
LLM_INPUT_TOOL_CALL_ID: Final = "llm.input_messages.{i}.message.tool_calls.{j}.tool_call.id"
LLM_INPUT_TOOL_CALL_NAME: Final = (
    "llm.input_messages.{i}.message.tool_calls.{j}.tool_call.function.name"
)
LLM_INPUT_TOOL_CALL_ARGUMENTS: Final = (
    "llm.input_messages.{i}.message.tool_calls.{j}.tool_call.function.arguments"
)

RETRIEVAL_DOCUMENTS: Final = "retrieval.documents"
RETRIEVAL_DOCUMENT_ID: Final = "retrieval.documents.{i}.document.id"
RETRIEVAL_DOCUMENT_CONTENT: Final = "retrieval.documents.{i}.document.content"
RETRIEVAL_DOCUMENT_SCORE: Final = "retrieval.documents.{i}.document.score"
RETRIEVAL_DOCUMENT_METADATA: Final = "retrieval.documents.{i}.document.metadata"

EMBEDDING_MODEL_NAME: Final = "embedding.model_name"
EMBEDDING_TEXT: Final = "embedding.embeddings.{i}.embedding.text"

TOOL_NAME: Final = "tool.name"
TOOL_PARAMETERS: Final = "tool.parameters"  # the tool's parameter schema (JSON), not a call's args

INPUT_VALUE: Final = "input.value"
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
OUTPUT_MIME_TYPE: Final = "output.mime_type"
MIME_JSON: Final = "application/json"
MIME_TEXT: Final = "text/plain"

SESSION_ID: Final = "session.id"
METADATA: Final = "metadata"

# --- Our own harness attributes -----------------------------------------------------------------

EVALS_RUN_ID: Final = "evals.run.id"
EVALS_CASE_ID: Final = "evals.case.id"
EVALS_MODEL: Final = "evals.model"
EVALS_EPOCH: Final = "evals.epoch"
EVALS_VERDICT: Final = "evals.verdict"  # "pass" | "fail" | "error"
EVALS_COST_USD: Final = "evals.cost_usd"
EVALS_CACHE_HIT: Final = "evals.cache_hit"
EVALS_RETRIES: Final = "evals.retries"
EVALS_LATENCY_MS: Final = "evals.latency_ms"
EVALS_SCORE: Final = "evals.score"
EVALS_PASSED: Final = "evals.passed"
EVALS_REASON: Final = "evals.reason"
EVALS_SCORER_NAME: Final = "evals.scorer.name"
EVALS_SCORER_TYPE: Final = "evals.scorer.type"
EVALS_RETRIEVAL_TOP_K: Final = "evals.retrieval.top_k"
EVALS_RETRIEVAL_QUERY: Final = "evals.retrieval.query"
EVALS_EMBEDDING_INPUTS: Final = "evals.embedding.inputs"  # number of texts embedded

# --- Content: attributes that carry prompt, completion, document or tool text -----------------

# Dropped at export when content capture is off. Exact names, then prefixes of flattened lists.
CONTENT_ATTRIBUTES: Final = frozenset(
    {
        INPUT_VALUE,
        OUTPUT_VALUE,
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
        EVALS_RETRIEVAL_QUERY,
    }
)
CONTENT_PREFIXES: Final = (
    LLM_INPUT_MESSAGES + ".",
    LLM_OUTPUT_MESSAGES + ".",
    "embedding.embeddings.",
)
# Flattened retrieval documents keep id, score and metadata; only this suffix is content.
RETRIEVAL_DOCUMENT_CONTENT_SUFFIX: Final = ".document.content"
