"""Pairwise judging: which of two outputs for the same case is better, asked in both orders.

The outputs come from two runs (base and candidate) or from two models in one run. Each
shared case is judged twice, base shown first and then candidate shown first; when the two
orders disagree the case is a tie. Cases where the judge picked the same position both times
are counted as following position: their share is the position-bias rate. Results are
stored in the `pairwise_results` table.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import judging
from harness.config import ModelConfig
from harness.errors import ConfigError
from harness.providers import ClientPool, ModelClient
from harness.registry import record_version
from harness.rubrics import LoadedRubric
from harness.store import ResultRow, Store
from harness.verdicts import parse_winner

OUTCOMES = ("candidate", "base", "tie", "error")
WINNER_FORM = '{"reason": "...", "winner": "A" or "B" or "tie"}'

_PAIRWISE = """\
Compare two responses to the same input against these criteria.

Criteria:
{criteria}
{sections}
Response A:
{a}

Response B:
{b}

Which response meets the criteria better? Judge quality only: not length, not order.
Reply with only the JSON object {{"reason": "<one or two short sentences>", \
"winner": "A" or "B" or "tie"}}.
"""


def pairwise_messages(
    loaded: LoadedRubric, sections: dict[str, str], first: str, second: str, nonce: str
) -> list[dict[str, str]]:
    """Messages asking which of two responses (`first` shown as A) better meets the rubric."""
    rubric = loaded.rubric
    shown = []
    for name, title in (
        ("input", "The input both systems were given"),
        ("context", "The context both systems were given"),
        ("reference", "A reference answer known to be correct"),
    ):
        if name in sections:
            shown.append(f"\n{title}:\n{judging.delimit(name, sections[name], nonce)}\n")
    user = _PAIRWISE.format(
        criteria=rubric.criteria.strip(),
        sections="".join(shown),
        a=judging.delimit("response_a", first, nonce),
        b=judging.delimit("response_b", second, nonce),
    )
    answer = (
        'Answer with one JSON object and nothing else: {"reason": "<one or two short '
        'sentences>", "winner": "A" or "B" or "tie"}.'
    )
    return [
        {
            "role": "system",
            "content": judging.SYSTEM_TEMPLATE.format(
                rubric=loaded.ref, nonce=nonce, answer=answer
            ),
        },
        {"role": "user", "content": user},
    ]


def winner_schema() -> dict[str, Any]:
    return judging.answer_schema("winner", {"type": "string", "enum": ["A", "B", "tie"]})


def pairwise_decision(first: str, second: str) -> tuple[str, bool]:
    """Combine the two orders of one pairwise comparison.

    `first` is the winner slot ("A", "B", "tie") when base was shown as A; `second` when the
    candidate was shown as A. Returns (outcome, followed_position): outcome is "base",
    "candidate" or "tie" (any disagreement between the orders is a tie); followed_position is
    true when the judge picked the same slot both times, i.e. position, not content, decided.
    """
    as_first = {"A": "base", "B": "candidate", "tie": "tie"}[first]
    as_second = {"A": "candidate", "B": "base", "tie": "tie"}[second]
    outcome = as_first if as_first == as_second else "tie"
    return outcome, first == second and first in ("A", "B")


@dataclass
class PairwiseCase:
    """The judged comparison of one case's two outputs."""

    case_id: str
    epoch: int
    base_model: str
    candidate_model: str
    outcome: str  # candidate | base | tie | error
    first_winner: str | None = None  # slot picked with base shown as A
    second_winner: str | None = None  # slot picked with candidate shown as A
    followed_position: bool | None = None
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairwiseReport:
    """A whole comparison: what was compared, per-case outcomes and the summary."""

    comparison_id: str
    base_run: str
    candidate_run: str
    rubric: str
    rubric_version: str
    judge_model: str
    cases: list[PairwiseCase]
    skipped: int = 0

    def summary(self) -> dict[str, Any]:
        """Win/tie/loss of the candidate against the base, errors apart, position bias."""
        counts = {o: sum(1 for c in self.cases if c.outcome == o) for o in OUTCOMES}
        decided = counts["candidate"] + counts["base"] + counts["tie"]
        followed = sum(1 for c in self.cases if c.followed_position)
        judge_usage = [c.usage for c in self.cases]
        costs = [u.get("cost_usd") for u in judge_usage]
        return {
            "n": decided,
            "wins": counts["candidate"],
            "losses": counts["base"],
            "ties": counts["tie"],
            "errors": counts["error"],
            "skipped": self.skipped,
            "win_rate": counts["candidate"] / decided if decided else None,
            "loss_rate": counts["base"] / decided if decided else None,
            "tie_rate": counts["tie"] / decided if decided else None,
            "position_bias_rate": followed / decided if decided else None,
            "judge": {
                "calls": sum(u.get("calls", 0) for u in judge_usage),
                "input_tokens": sum(u.get("input_tokens", 0) for u in judge_usage),
                "output_tokens": sum(u.get("output_tokens", 0) for u in judge_usage),
                "cost_usd": None
                if any(c is None for c in costs)
                else float(sum(c or 0.0 for c in costs)),
            },
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data


def _models(rows: list[ResultRow]) -> list[str]:
    return sorted({r.model for r in rows})


def pair_results(
    base: list[ResultRow],
    candidate: list[ResultRow],
    *,
    base_model: str | None = None,
    candidate_model: str | None = None,
) -> tuple[list[tuple[ResultRow, ResultRow]], int]:
    """Pairs of (base, candidate) results of the same case and epoch, and how many shared
    cases were skipped for lack of an output. With one model per side, any two models pair
    up; with several, results pair by model name."""
    for rows, model, side in (
        (base, base_model, "base"),
        (candidate, candidate_model, "candidate"),
    ):
        if model is not None and model not in _models(rows):
            raise ConfigError(
                f"the {side} run has no results for model {model!r} "
                f"(it has: {', '.join(_models(rows)) or 'none'})"
            )
    base = [r for r in base if base_model is None or r.model == base_model]
    candidate = [r for r in candidate if candidate_model is None or r.model == candidate_model]
    by_model = len(_models(base)) > 1 or len(_models(candidate)) > 1

    def key(row: ResultRow) -> tuple[str, str, int]:
        return (row.case_id, row.model if by_model else "", row.epoch)

    theirs = {key(r): r for r in candidate}
    pairs, skipped = [], 0
    for row in base:
        other = theirs.get(key(row))
        if other is None:
            continue
        if row.output is None or other.output is None:
            skipped += 1
            continue
        pairs.append((row, other))
    return pairs, skipped


def _sections(loaded: LoadedRubric, row: ResultRow) -> dict[str, str]:
    data = row.case_data or {}
    detail = row.detail or {}
    sections = {}
    if "input" in loaded.rubric.uses:
        sections["input"] = judging.input_text(
            detail.get("messages") or [], data.get("fields") or {}, row.output
        )
    if "reference" in loaded.rubric.uses and data.get("expected") is not None:
        sections["reference"] = str(data["expected"])
    return sections


async def judge_pair(
    client: ModelClient,
    loaded: LoadedRubric,
    base: ResultRow,
    candidate: ResultRow,
    *,
    params: dict[str, Any],
    fmt: dict[str, Any] | None,
    max_reasks: int,
) -> PairwiseCase:
    """Judge one pair in both orders and combine the two verdicts."""
    sections = _sections(loaded, base)
    base_out, cand_out = base.output or "", candidate.output or ""
    nonce = judging.make_nonce(
        base.case_id, loaded.version, *sorted(sections.items()), base_out, cand_out
    )
    orders = (
        pairwise_messages(loaded, sections, base_out, cand_out, nonce),
        pairwise_messages(loaded, sections, cand_out, base_out, nonce),
    )
    outcomes = await asyncio.gather(
        *(
            judging.ask(
                client,
                messages,
                parse_winner,
                params=params,
                fmt=fmt,
                form=WINNER_FORM,
                max_reasks=max_reasks,
            )
            for messages in orders
        ),
        return_exceptions=True,
    )
    case = PairwiseCase(base.case_id, base.epoch, base.model, candidate.model, "error")
    calls = [c for o in outcomes if isinstance(o, judging.Answer) for c in o.calls]
    case.usage = judging.usage(calls)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        if not isinstance(failures[0], judging.JudgeError):
            raise failures[0]
        case.error = str(failures[0])
        return case
    first, second = (o.value for o in outcomes if isinstance(o, judging.Answer))
    case.first_winner, case.second_winner = first[0], second[0]
    case.outcome, case.followed_position = pairwise_decision(first[0], second[0])
    case.reasons = [first[1], second[1]]
    return case


async def compare(
    store: Store,
    base_ref: str,
    candidate_ref: str,
    loaded: LoadedRubric,
    judge: ModelConfig,
    *,
    base_model: str | None = None,
    candidate_model: str | None = None,
    max_reasks: int = 2,
    structured: str = "auto",
    pool: ClientPool | None = None,
) -> PairwiseReport:
    """Judge every shared case of two runs (or two models of one run) and store the result."""
    base_run = store.get_run(base_ref)["id"]
    candidate_run = store.get_run(candidate_ref)["id"]
    if base_run == candidate_run and (base_model is None or base_model == candidate_model):
        raise ConfigError("compare two runs, or two different models of one run (--models A,B)")
    pairs, skipped = pair_results(
        store.results(base_run),
        store.results(candidate_run),
        base_model=base_model,
        candidate_model=candidate_model,
    )
    if not pairs:
        raise ConfigError(
            f"runs {base_run} and {candidate_run} share no case with outputs on both sides"
        )
    if pool is None:
        pool = ClientPool()
        pool.configure(cache=store, cache_mode="auto", concurrency=None)
    client = pool.client(judge)
    params = {**judging.DEFAULT_PARAMS, **judge.params}
    fmt = judging.response_format(judge, winner_schema(), structured)
    cases = await asyncio.gather(
        *(
            judge_pair(client, loaded, b, c, params=params, fmt=fmt, max_reasks=max_reasks)
            for b, c in pairs
        )
    )
    report = PairwiseReport(
        comparison_id=time.strftime("pw-%Y%m%d-%H%M%S-") + secrets.token_hex(3),
        base_run=base_run,
        candidate_run=candidate_run,
        rubric=loaded.name,
        rubric_version=loaded.version,
        judge_model=judge.label,
        cases=list(cases),
        skipped=skipped,
    )
    record_version(store, "rubric", loaded.name, loaded.rubric.content(), loaded.version)
    store_report(store, report)
    store.flush()  # the judge calls' cache entries
    return report


def store_report(store: Store, report: PairwiseReport) -> None:
    """Write a comparison's per-case rows to `pairwise_results` (one transaction)."""
    now = time.time()
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO pairwise_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    report.comparison_id,
                    report.base_run,
                    report.candidate_run,
                    c.base_model,
                    c.candidate_model,
                    report.rubric,
                    report.rubric_version,
                    report.judge_model,
                    c.case_id,
                    c.epoch,
                    c.outcome,
                    c.first_winner,
                    c.second_winner,
                    None if c.followed_position is None else int(c.followed_position),
                    json.dumps({"reasons": c.reasons, "error": c.error, "usage": c.usage}),
                    now,
                )
                for c in report.cases
            ],
        )


def stored_outcomes(store: Store, comparison_id: str) -> dict[str, int]:
    """Outcome counts of a stored comparison."""
    rows = store.conn.execute(
        "SELECT outcome, COUNT(*) FROM pairwise_results WHERE comparison_id = ? GROUP BY outcome",
        (comparison_id,),
    )
    return {outcome: count for outcome, count in rows}
