"""Jinja2 filters of the viewer: numbers, money, durations, times and JSON as display text.

Each returns plain text; the templates escape it like any other value.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def pts(value: float | None) -> str:
    """A difference of rates in percentage points, signed."""
    return "–" if value is None else f"{value * 100:+.1f} pts"


def interval(bounds: tuple[float | None, float | None] | None) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "–"
    return f"{bounds[0] * 100:.1f}–{bounds[1] * 100:.1f}%"


def money(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    return f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value:.2f} ms"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def pretty(value: Any) -> str:
    """Strings as they are; anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def bar(value: float) -> str:
    """A fraction as an SVG coordinate on a 0–1000 axis (the waterfall's bars)."""
    return f"{max(0.0, min(value, 1.0)) * 1000:.1f}"


FILTERS: dict[str, Callable[..., Any]] = {
    "pct": pct,
    "pts": pts,
    "interval": interval,
    "money": money,
    "ms": ms,
    "seconds": seconds,
    "when": when,
    "num": num,
    "p_value": p_value,
    "pretty": pretty,
    "bar": bar,
}
