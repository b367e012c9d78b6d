"""Sum the export counters of pipelines in several processes through their shared span store.

Each process that traces (a run's worker processes, say) has its own pipeline, and only that
process knows how many of its spans were exported, dropped or failed. `save_counts` records a
pipeline's counters in the span store's `tracing_meta` table under a key; `take_counts` sums,
and removes, those saved under a key prefix, so one process can report for all of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tracing.spanstore import connect, ensure_schema

COUNTS_KEY = "export_counts/"  # prefix of the counters' keys in tracing_meta
COUNTERS = ("exported", "dropped", "failed")


def save_counts(store: str | Path, key: str, counts: Mapping[str, int]) -> None:
    """Record one pipeline's `counts` (`exported`, `dropped`, `failed`) under `key`."""
    conn = connect(store)
    try:
        ensure_schema(conn)
        conn.execute(
            "INSERT OR REPLACE INTO tracing_meta (key, value) VALUES (?, ?)",
            (COUNTS_KEY + key, json.dumps({name: int(counts.get(name, 0)) for name in COUNTERS})),
        )
    finally:
        conn.close()


def take_counts(store: str | Path, prefix: str) -> dict[str, int]:
    """Sum the counters saved under keys starting with `prefix`, and remove them."""
    totals = dict.fromkeys(COUNTERS, 0)
    pattern = COUNTS_KEY + prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    conn = connect(store)
    try:
        ensure_schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            where = "key LIKE ? ESCAPE '\\'"
            rows = conn.execute(f"SELECT value FROM tracing_meta WHERE {where}", (pattern + "%",))
            for (value,) in rows.fetchall():
                for name, count in json.loads(value).items():
                    if name in totals:
                        totals[name] += int(count)
            conn.execute(f"DELETE FROM tracing_meta WHERE {where}", (pattern + "%",))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return totals
