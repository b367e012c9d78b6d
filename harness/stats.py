"""Paired statistics for run comparisons: bootstrap intervals, exact McNemar, Wilcoxon, Holm.

Every function takes per-case paired differences (candidate minus baseline) or discordant
counts and returns plain floats, so the same code serves the terminal, JSON and the gate.
scipy is imported inside the functions that need it: it is slow to import and `evals --help`
must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 5_000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
# Bootstrap draws are generated in blocks of at most this many indices, so memory stays
# bounded (~16 MB) however many cases a run has.
_BLOCK_ELEMENTS = 2_000_000
# Up to this many distinct differences, resample counts per value instead of indices.
_FEW_DISTINCT = 32


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_mean_ci(
    differences: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """Percentile interval of the mean paired difference, resampling cases with replacement.

    Vectorised: each resample is one row of an index matrix; rows are drawn in blocks.
    None when there are no pairs.
    """
    values = np.asarray(differences, dtype=float)
    n = values.size
    if n == 0:
        return None
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if np.all(values == values[0]):
        # Every resample has the same mean; skip the work (and float noise).
        return Interval(float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size <= _FEW_DISTINCT:
        # Pass/fail differences take a handful of values: drawing how many times each value
        # is resampled (multinomial) is the same bootstrap distribution, at O(k) per resample.
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ distinct / n
    else:
        means = np.empty(resamples)
        rows = max(1, _BLOCK_ELEMENTS // n)
        for start in range(0, resamples, rows):
            stop = min(resamples, start + rows)
            index = rng.integers(0, n, size=(stop - start, n))
            means[start:stop] = values[index].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(low), float(high))


def mcnemar_exact(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs.

    `improved` pairs went fail -> pass, `regressed` pass -> fail. With no discordant pairs
    there is no evidence of a difference: p = 1.
    """
    if improved < 0 or regressed < 0:
        raise ValueError("counts must be non-negative")
    discordant = improved + regressed
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(improved, discordant, 0.5, alternative="two-sided").pvalue)


def sign_counts(differences: Sequence[float] | np.ndarray) -> tuple[int, int]:
    """(cases that improved, cases that regressed) among per-case differences."""
    values = np.asarray(differences, dtype=float)
    return int(np.sum(values > 0)), int(np.sum(values < 0))


def wilcoxon_signed_rank(differences: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped).

    All-zero (or no) differences carry no evidence of a change: p = 1.
    """
    values = np.asarray(differences, dtype=float)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 1.0
    from scipy.stats import wilcoxon

    result = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    p = float(result.pvalue)
    return 1.0 if np.isnan(p) else min(1.0, p)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None entries are kept and not counted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), or None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def relative_change(base: float | None, cand: float | None) -> float | None:
    """(cand - base) / base; None when either is unknown or the base is zero."""
    if base is None or cand is None or base == 0:
        return None
    return (cand - base) / base
