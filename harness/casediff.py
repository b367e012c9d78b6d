"""Per-case differences between two runs: flips and stability, cost and latency, errors, and
(RAG runs) gold documents that left or entered the retrieved top k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness import stats
from harness.retrieval_metrics import matches_document
from harness.store import ResultRow

Key = tuple[str, int]  # (case id, epoch) within one model
Stability = Literal["pass", "fail", "flaky", "error"]
OUTPUT_CHARS = 2000  # outputs kept per side in a comparison (the full text stays in the run)


@dataclass
class CaseFlip:
    """A case whose outcome differs between the runs, or that is flaky on either side.

    `kind` is `regressed` (stable pass -> stable fail), `improved` (the reverse) or `flaky`
    (mixed outcomes over repeats on either side: not blamed on the change).
    """

    model: str
    case_id: str
    kind: str
    base: Stability
    cand: Stability
    base_passes: str  # passes/settled epochs, e.g. "2/3"
    cand_passes: str
    base_output: str | None
    cand_output: str | None
    base_reason: str
    cand_reason: str


@dataclass
class CostLatency:
    """One model's cost (total, and mean per paired result) and latency percentiles."""

    model: str
    base_cost: float | None
    cand_cost: float | None
    base_cost_complete: bool
    cand_cost_complete: bool
    cost_change: float | None  # relative change of the total
    paired_cost_results: int
    base_cost_per_case: float | None
    cand_cost_per_case: float | None
    cost_per_case_change: float | None
    latency_results_base: int  # settled, uncached results with a latency
    latency_results_cand: int
    base_p50_ms: float | None
    cand_p50_ms: float | None
    base_p95_ms: float | None
    cand_p95_ms: float | None
    p50_change: float | None
    p95_change: float | None


@dataclass
class ErrorItem:
    side: Literal["base", "cand"]
    model: str
    case_id: str
    epoch: int
    kind: str
    message: str


def stability(statuses: list[str]) -> Stability:
    """pass / fail when every settled epoch agrees, flaky when they differ, error when none
    settled."""
    settled = [s for s in statuses if s != "error"]
    if not settled:
        return "error"
    if all(s == "pass" for s in settled):
        return "pass"
    if all(s == "fail" for s in settled):
        return "fail"
    return "flaky"


def _reason(result: ResultRow | None) -> str:
    if result is None:
        return ""
    if result.status == "error":
        return result.error or "error"
    return "; ".join(f"{s.scorer}: {s.reason}" for s in result.scores if s.status != "pass")


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= OUTPUT_CHARS:
        return text
    return text[:OUTPUT_CHARS] + f"… [{len(text) - OUTPUT_CHARS} more characters]"


def _shown(rows: list[ResultRow]) -> ResultRow | None:
    """The epoch to show for a case: its first failing one, else its first."""
    for row in rows:
        if row.status == "fail":
            return row
    return rows[0] if rows else None


def case_flips(
    base: dict[str, dict[Key, ResultRow]], cand: dict[str, dict[Key, ResultRow]]
) -> list[CaseFlip]:
    """Cases (per model) that flipped or are flaky, judged on every scorer passing."""
    flips: list[CaseFlip] = []
    for model in sorted(base.keys() & cand.keys()):
        by_case: dict[str, tuple[list[ResultRow], list[ResultRow]]] = {}
        for (case_id, _), row in sorted(base[model].items()):
            by_case.setdefault(case_id, ([], []))[0].append(row)
        for (case_id, _), row in sorted(cand[model].items()):
            by_case.setdefault(case_id, ([], []))[1].append(row)
        for case_id, (base_rows, cand_rows) in sorted(by_case.items()):
            if not base_rows or not cand_rows:
                continue
            before = stability([r.status for r in base_rows])
            after = stability([r.status for r in cand_rows])
            if "flaky" in (before, after):
                kind = "flaky"
            elif (before, after) == ("pass", "fail"):
                kind = "regressed"
            elif (before, after) == ("fail", "pass"):
                kind = "improved"
            else:
                continue
            shown_base, shown_cand = _shown(base_rows), _shown(cand_rows)
            flips.append(
                CaseFlip(
                    model=model,
                    case_id=case_id,
                    kind=kind,
                    base=before,
                    cand=after,
                    base_passes=_passes(base_rows),
                    cand_passes=_passes(cand_rows),
                    base_output=_clip(shown_base.output if shown_base else None),
                    cand_output=_clip(shown_cand.output if shown_cand else None),
                    base_reason=_reason(shown_base),
                    cand_reason=_reason(shown_cand),
                )
            )
    order = {"regressed": 0, "improved": 1, "flaky": 2}
    return sorted(flips, key=lambda f: (order[f.kind], f.model, f.case_id))


def _passes(rows: list[ResultRow]) -> str:
    settled = [r for r in rows if r.status != "error"]
    return f"{sum(1 for r in settled if r.status == 'pass')}/{len(settled)}"


def total_cost(rows: list[ResultRow]) -> tuple[float | None, bool]:
    """(total cost, whether every result's cost is known); errored calls that cost nothing
    known are not counted as unknown (they may never have reached the provider)."""
    costs = [r.cost_usd for r in rows if r.status != "error" or r.cost_usd is not None]
    known = [c for c in costs if c is not None]
    if not known:
        return (0.0 if not costs else None), not costs
    return float(sum(known)), len(known) == len(costs)


def _latencies(rows: list[ResultRow]) -> list[float]:
    return [
        r.latency_ms
        for r in rows
        if r.latency_ms is not None and not r.cached and r.status != "error"
    ]


def costs(
    base: dict[str, dict[Key, ResultRow]],
    cand: dict[str, dict[Key, ResultRow]],
    models: list[str],
) -> list[CostLatency]:
    """Cost and latency per model, with relative changes."""
    out = []
    for model in models:
        base_rows, cand_rows = base.get(model, {}), cand.get(model, {})
        base_total, base_complete = total_cost(list(base_rows.values()))
        cand_total, cand_complete = total_cost(list(cand_rows.values()))
        paired: list[tuple[float, float]] = []
        for key in base_rows.keys() & cand_rows.keys():
            base_cost, cand_cost = base_rows[key].cost_usd, cand_rows[key].cost_usd
            if base_cost is not None and cand_cost is not None:
                paired.append((base_cost, cand_cost))
        base_per = sum(b for b, _ in paired) / len(paired) if paired else None
        cand_per = sum(c for _, c in paired) / len(paired) if paired else None
        base_lat, cand_lat = (
            _latencies(list(base_rows.values())),
            _latencies(list(cand_rows.values())),
        )
        b50, c50 = stats.percentile(base_lat, 50), stats.percentile(cand_lat, 50)
        b95, c95 = stats.percentile(base_lat, 95), stats.percentile(cand_lat, 95)
        out.append(
            CostLatency(
                model=model,
                base_cost=base_total,
                cand_cost=cand_total,
                base_cost_complete=base_complete,
                cand_cost_complete=cand_complete,
                cost_change=stats.relative_change(base_total, cand_total),
                paired_cost_results=len(paired),
                base_cost_per_case=base_per,
                cand_cost_per_case=cand_per,
                cost_per_case_change=stats.relative_change(base_per, cand_per),
                latency_results_base=len(base_lat),
                latency_results_cand=len(cand_lat),
                base_p50_ms=b50,
                cand_p50_ms=c50,
                base_p95_ms=b95,
                cand_p95_ms=c95,
                p50_change=stats.relative_change(b50, c50),
                p95_change=stats.relative_change(b95, c95),
            )
        )
    return out


def errors(base: list[ResultRow], cand: list[ResultRow]) -> list[ErrorItem]:
    """Every errored result on either side (never silently dropped)."""
    items = []
    for side, rows in (("base", base), ("cand", cand)):
        for row in rows:
            if row.status == "error":
                items.append(
                    ErrorItem(
                        side=side,  # type: ignore[arg-type]
                        model=row.model,
                        case_id=row.case_id,
                        epoch=row.epoch,
                        kind=row.error_kind or "error",
                        message=(row.error or "")[:500],
                    )
                )
    return items


@dataclass
class GoldChange:
    """A case whose labelled relevant documents (or chunks) in the retrieved top k differ."""

    case_id: str
    dropped: list[str]  # gold labels retrieved by the baseline, not by the candidate
    gained: list[str]  # the reverse
    base_k: int  # chunks each side retrieved
    cand_k: int


def _gold(row: ResultRow) -> list[str]:
    data = row.case_data or {}
    value = (data.get("fields") or {}).get("relevant")
    if value is None:
        value = (data.get("metadata") or {}).get("relevant")
    items = value if isinstance(value, list) else [] if value is None else [value]
    return [str(v) for v in items]


def _retrieved(rows: list[ResultRow]) -> dict[str, list[dict[str, Any]]]:
    """Per case: the chunks its first result that retrieved anything stored."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        chunks = (row.detail or {}).get("retrieved")
        if isinstance(chunks, list) and row.case_id not in found:
            found[row.case_id] = [c for c in chunks if isinstance(c, dict)]
    return found


def _found(label: str, chunks: list[dict[str, Any]]) -> bool:
    return any(
        label == str(c.get("id")) or matches_document(label, str(c.get("document_id")))
        for c in chunks
    )


def gold_changes(base: list[ResultRow], cand: list[ResultRow]) -> list[GoldChange]:
    """Cases of RAG runs (results with retrieved chunks and `relevant` labels) whose gold
    documents dropped out of, or came into, the top k between the runs."""
    before, after = _retrieved(base), _retrieved(cand)
    labels = {row.case_id: _gold(row) for row in [*base, *cand] if _gold(row)}
    changes = []
    for case_id in sorted(before.keys() & after.keys() & labels.keys()):
        old, new = before[case_id], after[case_id]
        dropped = [g for g in labels[case_id] if _found(g, old) and not _found(g, new)]
        gained = [g for g in labels[case_id] if _found(g, new) and not _found(g, old)]
        if dropped or gained:
            changes.append(GoldChange(case_id, dropped, gained, len(old), len(new)))
    return changes
