"""Turn stored traces into dataset cases (JSONL rows the dataset loader reads), with provenance.

A trace the harness recorded has a root span `case <id>` whose `input.value` is the case's
template variables (JSON): its fields, `expected` and `metadata` become the new row as they
were. Any other trace (a production app traced with the `tracing` helpers: a CHAIN or AGENT
root with an LLM call inside) gives one field, `input`: the last user message of its first LLM
call, else the root's own recorded input. Every row's metadata names where it came from
(`source_trace_id`, `source_run_id`, `source_case_id`, `source_verdict`). Traces recorded
without content (`--no-content`) hold no input and are skipped, with the reason.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tracing
from harness.errors import ConfigError, StoreError
from tracing import conventions as names

VERDICTS = ("pass", "fail", "error")
# Keys Case.template_vars adds to a case's fields; the rest are the dataset row's own columns.
_CASE_VAR_KEYS = ("case_id", "expected", "metadata", "id")
_LLM_OPERATIONS = ("chat", "text_completion", "generate_content")
_INPUT_ROLE = re.compile(r"^llm\.input_messages\.(\d+)\.message\.role$")


@dataclass
class TraceCases:
    """Dataset rows made from traces, and the traces that gave none (trace id, why)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def resolve_trace_id(db: Path, ref: str) -> str:
    """The one stored trace id starting with `ref` (StoreError when none or several)."""
    found = tracing.find_trace_ids(db, ref, limit=2)
    if not found:
        raise StoreError(f"no trace {ref!r} in {db}")
    if len(found) > 1:
        raise StoreError(f"trace id prefix {ref!r} is ambiguous; give more characters")
    return found[0]


def select_trace_ids(
    db: Path,
    *,
    run_id: str | None = None,
    verdict: str | None = None,
    trace_refs: Sequence[str] = (),
    limit: int | None = None,
) -> list[str]:
    """Trace ids to convert, oldest first: the traces named (by id or unique prefix), or the
    newest `limit` traces of a run (or of the whole store) with the given verdict."""
    if verdict is not None and verdict not in VERDICTS:
        raise ConfigError(f"--verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    if trace_refs:
        if run_id is not None or verdict is not None:
            raise ConfigError("give --trace, or --run/--verdict to select traces; not both")
        ids = list(dict.fromkeys(resolve_trace_id(db, ref) for ref in trace_refs))
        return ids[:limit] if limit is not None else ids
    count = tracing.count_traces(db, run_id, verdict=verdict)
    summaries = tracing.list_traces(
        db, run_id, limit=limit if limit is not None else max(count, 1), verdict=verdict
    )
    return [summary["trace_id"] for summary in reversed(summaries)]


def cases_from_traces(db: Path, trace_ids: Sequence[str]) -> TraceCases:
    """One dataset row per trace that recorded an input; ids made unique across the rows."""
    result = TraceCases()
    used: set[str] = set()
    with closing(sqlite3.connect(db)) as conn:  # one connection for every trace
        traces = [(trace_id, tracing.get_trace(conn, trace_id)) for trace_id in trace_ids]
    for trace_id, spans in traces:
        if not spans:
            result.skipped.append((trace_id, "no such trace"))
            continue
        row = case_row(spans)
        if isinstance(row, str):
            result.skipped.append((trace_id, row))
            continue
        row["id"] = _unique_id(row["id"], trace_id, used)
        result.rows.append(row)
    return result


def case_row(spans: Sequence[tracing.SpanRecord]) -> dict[str, Any] | str:
    """The dataset row of one trace, or why it has none."""
    root = _root(spans)
    attributes = root["attributes"]
    trace_id = root["trace_id"]
    case_id = _text(attributes.get(names.EVALS_CASE_ID)) or root["case_id"]
    case_vars = _case_vars(attributes, case_id)
    if case_vars is not None:
        fields = {k: v for k, v in case_vars.items() if k not in _CASE_VAR_KEYS}
        expected = case_vars.get("expected")
        original = case_vars.get("metadata")
        metadata = dict(original) if isinstance(original, Mapping) else {}
    else:
        text = _llm_input(spans) or _root_input(attributes)
        if text is None:
            return "no input recorded (traced without content?)"
        fields = text if isinstance(text, dict) else {"input": text}
        expected, metadata = None, {}
    metadata.update(
        source_trace_id=trace_id,
        source_run_id=_text(attributes.get(names.EVALS_RUN_ID)) or root["run_id"],
        source_case_id=case_id,
        source_verdict=_text(attributes.get(names.EVALS_VERDICT)) or root["verdict"],
    )
    output = attributes.get(names.OUTPUT_VALUE)
    if isinstance(output, str):
        metadata["source_output"] = output
    return {
        "id": case_id or f"trace-{trace_id[:12]}",
        **fields,
        "expected": expected,
        "metadata": metadata,
    }


def write_jsonl(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write `rows` as JSONL, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def _root(spans: Sequence[tracing.SpanRecord]) -> tracing.SpanRecord:
    roots = [span for span in spans if span["parent_span_id"] is None]
    return min(roots or spans, key=lambda span: span["start_ns"])


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _case_vars(attributes: Mapping[str, Any], case_id: str | None) -> dict[str, Any] | None:
    """The harness case's template variables, when the root recorded them as its input."""
    if case_id is None:
        return None
    value = _json(attributes.get(names.INPUT_VALUE))
    if isinstance(value, dict) and value.get("case_id") == case_id:
        return value
    return None


def _is_llm(span: tracing.SpanRecord) -> bool:
    if span["span_kind"] is not None:
        return span["span_kind"] == names.KIND_LLM
    return span["attributes"].get(names.GEN_AI_OPERATION_NAME) in _LLM_OPERATIONS


def _llm_input(spans: Sequence[tracing.SpanRecord]) -> str | None:
    """The last user message of the trace's first LLM call."""
    calls = sorted((s for s in spans if _is_llm(s)), key=lambda span: span["start_ns"])
    if not calls:
        return None
    attributes = calls[0]["attributes"]
    return (
        _last_user_openinference(attributes)
        or _last_user_gen_ai(attributes.get(names.GEN_AI_INPUT_MESSAGES))
        or _plain_text(attributes)
    )


def _last_user_openinference(attributes: Mapping[str, Any]) -> str | None:
    users = []
    for key, role in attributes.items():
        match = _INPUT_ROLE.match(key)
        if match and role == "user":
            users.append(int(match.group(1)))
    for index in sorted(users, reverse=True):
        content = attributes.get(names.LLM_INPUT_MESSAGE_CONTENT.format(i=index))
        if isinstance(content, str):
            return content
        prefix = f"llm.input_messages.{index}.message.contents."
        parts = [
            value
            for key, value in sorted(attributes.items())
            if key.startswith(prefix) and key.endswith(".message_content.text")
        ]
        if parts:
            return "\n".join(str(part) for part in parts)
    return None


def _last_user_gen_ai(value: Any) -> str | None:
    messages = _json(value)
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        if isinstance(message.get("content"), str):
            return str(message["content"])
        texts = [
            str(part.get("content", ""))
            for part in message.get("parts") or ()
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if texts:
            return "\n".join(texts)
    return None


def _plain_text(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get(names.INPUT_VALUE)
    if isinstance(value, str) and attributes.get(names.INPUT_MIME_TYPE) != names.MIME_JSON:
        return value
    return None


def _root_input(attributes: Mapping[str, Any]) -> dict[str, Any] | str | None:
    """A root's own input: a JSON object (e.g. `@traced` arguments) as fields, or text."""
    value = attributes.get(names.INPUT_VALUE)
    if not isinstance(value, str):
        return None
    parsed = _json(value) if attributes.get(names.INPUT_MIME_TYPE) == names.MIME_JSON else None
    if isinstance(parsed, dict) and parsed:
        return {k: v for k, v in parsed.items() if k not in ("expected", "metadata", "id")}
    return value


def _unique_id(wanted: str, trace_id: str, used: set[str]) -> str:
    """`wanted`, or `wanted@<trace id prefix>` when another row (another epoch or model of
    the same case) already has it: the dataset loader refuses duplicate ids."""
    for candidate in (wanted, f"{wanted}@{trace_id[:8]}", f"{wanted}@{trace_id}"):
        if candidate not in used:
            break
    else:  # only if one trace is converted twice
        candidate = f"{wanted}@{trace_id}-{len(used)}"
    used.add(candidate)
    return candidate
