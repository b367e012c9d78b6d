"""The compare page's data: harness.compare's comparison of two runs, flips with word diffs.

The statistics (paired deltas, bootstrap intervals, p-values) are `harness.compare`'s, so the
page shows the same numbers as `evals compare`. Outputs of flipped cases are diffed word by
word with difflib; the pieces are plain text, escaped by the template like everything else.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from harness.casediff import CaseFlip
from harness.compare import Comparison, compare_runs
from harness.runrefs import load_from_store
from harness.store import Store

MAX_FLIPS = 200
CACHED_COMPARISONS = 8
MAX_DIFF_TOKENS = 4_000
_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")
_CACHE: OrderedDict[tuple[Any, ...], CompareView] = OrderedDict()
_LOCK = threading.Lock()


@dataclass
class DiffPiece:
    """A run of text that is the same on both sides, or only on one (`del` base, `ins` cand)."""

    kind: str  # same | del | ins
    text: str


@dataclass
class FlipView:
    flip: CaseFlip
    base: list[DiffPiece]
    cand: list[DiffPiece]


@dataclass
class CompareView:
    comparison: Comparison
    flips: list[FlipView]
    flips_total: int
    slice_fields: list[str]


def _append(pieces: list[DiffPiece], kind: str, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1].kind == kind:
        pieces[-1].text += text
    else:
        pieces.append(DiffPiece(kind, text))


def word_diff(base: str | None, cand: str | None) -> tuple[list[DiffPiece], list[DiffPiece]]:
    """Word-level diff of two texts: (pieces of the base, pieces of the candidate)."""
    left = _TOKENS.findall(base or "")[:MAX_DIFF_TOKENS]
    right = _TOKENS.findall(cand or "")[:MAX_DIFF_TOKENS]
    base_pieces: list[DiffPiece] = []
    cand_pieces: list[DiffPiece] = []
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(base_pieces, "same", "".join(left[i1:i2]))
            _append(cand_pieces, "same", "".join(right[j1:j2]))
        else:
            _append(base_pieces, "del", "".join(left[i1:i2]))
            _append(cand_pieces, "ins", "".join(right[j1:j2]))
    return base_pieces, cand_pieces


def slice_fields(base_cases: list[dict[str, object]]) -> list[str]:
    """Metadata keys of the cases (for the slice menu)."""
    keys: set[str] = set()
    for data in base_cases:
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            keys.update(str(k) for k in metadata)
    return sorted(keys)


def compare(
    store: Store,
    base_run: dict[str, Any],
    cand_run: dict[str, Any],
    *,
    by: str | None = None,
    max_flips: int = MAX_FLIPS,
) -> CompareView:
    """Compare two stored runs (records as `queries.get_run` gives them).

    Comparing two 10,000-case runs takes seconds (loading every result, bootstrapping), so
    the view of two completed runs (which never change again) is kept for later visits.
    """
    key = (str(store.path), base_run["id"], cand_run["id"], by, max_flips)
    final = base_run["status"] == cand_run["status"] == "completed"
    with _LOCK:
        cached = _CACHE.get(key) if final else None
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    view = _compare(store, base_run["id"], cand_run["id"], by, max_flips)
    if final:
        with _LOCK:
            _CACHE[key] = view
            while len(_CACHE) > CACHED_COMPARISONS:
                _CACHE.popitem(last=False)
    return view


def _compare(
    store: Store, base_id: str, cand_id: str, by: str | None, max_flips: int
) -> CompareView:
    base = load_from_store(store, base_id)
    cand = load_from_store(store, cand_id)
    comparison = compare_runs(base, cand, by=[by] if by else None)
    flips = [
        FlipView(flip, *word_diff(flip.base_output, flip.cand_output))
        for flip in comparison.flips[:max_flips]
    ]
    fields = slice_fields([r.case_data for r in base.results[:500]])
    return CompareView(comparison, flips, len(comparison.flips), fields)
