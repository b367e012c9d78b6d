"""Scorers: one registry of every scorer type; importing this package registers them all."""

# Imported for their side effect: each module registers its scorer types.
from harness.scorers import (  # noqa: F401
    answer_proxies,
    judge,
    metrics,
    retrieval,
    rules,
    trajectory,
)
from harness.scorers.base import (
    Score,
    ScoreContext,
    Scorer,
    ScorerEnv,
    ScorerOptions,
    registry,
)

build_scorer = registry.build

__all__ = [
    "Score",
    "ScoreContext",
    "Scorer",
    "ScorerEnv",
    "ScorerOptions",
    "build_scorer",
    "registry",
]
