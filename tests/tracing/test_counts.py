"""Export counters of several processes, summed through one span store (tracing.counts)."""

from __future__ import annotations

from pathlib import Path

import tracing


def test_saved_counts_are_summed_by_prefix_and_taken_once(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    tracing.save_counts(store, "run r1 worker 11", {"exported": 10, "dropped": 2, "failed": 0})
    tracing.save_counts(store, "run r1 worker 12", {"exported": 5, "dropped": 0, "failed": 1})
    tracing.save_counts(store, "run r10 worker 13", {"exported": 7})  # another prefix
    tracing.save_counts(store, "run r1_x worker 14", {"exported": 100})  # `_` is no wildcard
    assert tracing.take_counts(store, "run r1 ") == {"exported": 15, "dropped": 2, "failed": 1}
    assert tracing.take_counts(store, "run r1 ") == {"exported": 0, "dropped": 0, "failed": 0}
    assert tracing.take_counts(store, "run r10 ") == {"exported": 7, "dropped": 0, "failed": 0}


def test_a_pipeline_saves_what_it_exported(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    handle = tracing.setup(store=store)
    with tracing.step_span(handle.tracer(), "step"):
        pass
    handle.shutdown()
    tracing.save_counts(store, "p 1", handle.counts())
    assert tracing.take_counts(store, "p ") == {"exported": 1, "dropped": 0, "failed": 0}
