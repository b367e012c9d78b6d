"""Parse a judge's reply into a verdict, tolerantly, or say precisely why it cannot be used.

Accepted: a bare JSON object, one inside a ```json fence, one surrounded by prose, Python-style
single quotes, trailing commas. Never accepted: a verdict without JSON ("GRADE: PASS"), several
objects that disagree, a score outside the scale. What cannot be used raises VerdictError,
which the caller turns into a re-ask and finally an `error` result, never a silent 0.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from harness.rubrics import Scale

MAX_CANDIDATE_CHARS = 20_000
SCORE_KEYS = ("score", "grade", "rating", "verdict")
REASON_KEYS = ("reason", "reasoning", "explanation", "rationale")
PASS_WORDS = {"pass", "passed", "yes", "true", "correct", "meets"}
FAIL_WORDS = {"fail", "failed", "no", "false", "incorrect"}

_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_JSON_WORDS = re.compile(r"\b(true|false|null)\b")
_NUMBER = re.compile(r"([-+]?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?")
_REFUSAL = re.compile(
    r"\b(I can(?:no|')t|I cannot|I am unable|I'm unable|I won't|I will not|I'm sorry|"
    r"I apologi[sz]e|as an AI)\b",
    re.IGNORECASE,
)


class VerdictError(ValueError):
    """A judge reply that cannot be used; `problem` names why (unparseable, refusal, ...)."""

    def __init__(self, message: str, *, problem: str = "unparseable") -> None:
        super().__init__(message)
        self.problem = problem


def _balanced_objects(text: str) -> list[str]:
    """Every top-level {...} span of `text`, skipping braces inside quoted strings."""
    spans: list[str] = []
    depth, start, quote, escaped = 0, 0, "", False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'" and depth > 0:
            quote = char
        elif char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : index + 1])
    return spans


def _decode(candidate: str) -> dict[str, Any] | None:
    """A JSON object from a candidate span, repairing the usual slips; None when impossible."""
    candidate = candidate.strip()
    if not candidate.startswith("{") or len(candidate) > MAX_CANDIDATE_CHARS:
        return None
    repaired = _TRAILING_COMMA.sub(r"\1", candidate)
    for text in (candidate, repaired):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    # Single quotes: a Python literal. literal_eval evaluates literals only, nothing else.
    pythonic = _JSON_WORDS.sub(
        lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)], repaired
    )
    for text in (repaired, pythonic):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects a reply holds: fenced ones first, then any in the prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates += _balanced_objects(text)
    found = []
    for candidate in candidates:
        decoded = _decode(candidate)
        if decoded is not None:
            found.append({str(k).strip().lower(): v for k, v in decoded.items()})
    return found


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


def coerce_score(value: Any, scale: Scale) -> float:
    """A score on `scale` from what a judge wrote (1, 4.0, "4", "4/5", true, "pass")."""
    number: float | None = None
    if isinstance(value, bool):
        number = float(value) if scale.is_pass_fail else None
    elif isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        word = value.strip().lower()
        if scale.is_pass_fail and word in PASS_WORDS | FAIL_WORDS:
            number = 1.0 if word in PASS_WORDS else 0.0
        else:
            match = _NUMBER.fullmatch(word)
            if match and (match.group(2) is None or int(match.group(2)) == scale.max):
                number = float(match.group(1))
    if number is None or not math.isfinite(number):
        raise VerdictError(f"score {value!r} is not a number on the scale", problem="bad_score")
    if not scale.min <= number <= scale.max:
        raise VerdictError(
            f"score {value!r} is outside the scale {scale.min}..{scale.max}", problem="out_of_range"
        )
    return number


def _no_json(text: str) -> VerdictError:
    if _REFUSAL.search(text):
        return VerdictError(
            f"the judge refused or did not grade: {text.strip()[:120]!r}", problem="refusal"
        )
    return VerdictError(f"no JSON verdict in the reply: {text.strip()[:120]!r}")


def parse_verdict(text: str, scale: Scale) -> tuple[float, str]:
    """(score, reason) from a judge reply; VerdictError when there is no single valid one."""
    objects = [o for o in json_objects(text) if _first(o, SCORE_KEYS) is not None]
    if not objects:
        raise _no_json(text)
    verdicts = [(coerce_score(_first(o, SCORE_KEYS), scale), o) for o in objects]
    if len({score for score, _ in verdicts}) > 1:
        raise VerdictError("the reply holds several verdicts that disagree", problem="conflicting")
    score, data = verdicts[0]
    return score, str(_first(data, REASON_KEYS) or "")


def parse_winner(text: str) -> tuple[str, str]:
    """("A" | "B" | "tie", reason) from a pairwise judge reply; VerdictError otherwise."""
    objects = [o for o in json_objects(text) if _first(o, ("winner", "better", "choice"))]
    if not objects:
        raise _no_json(text)
    winners = set()
    for data in objects:
        raw = str(_first(data, ("winner", "better", "choice"))).strip().lower()
        raw = raw.removeprefix("response").removeprefix("output").strip(" _-")
        if raw in ("a", "b"):
            winners.add(raw.upper())
        elif raw in ("tie", "equal", "draw", "both", "neither", "none"):
            winners.add("tie")
        else:
            raise VerdictError(f"winner {raw!r} is not A, B or tie", problem="bad_score")
    if len(winners) > 1:
        raise VerdictError("the reply holds several verdicts that disagree", problem="conflicting")
    return winners.pop(), str(_first(objects[0], REASON_KEYS) or "")
