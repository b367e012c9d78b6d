"""Trajectory scorers for agents: which tools were called, with what arguments, in what order."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.agent import parse_arguments
from harness.scorers.base import ScoreContext, Scorer, ScorerOptions, register


def _calls(ctx: ScoreContext) -> list[dict[str, Any]]:
    return list(ctx.tool_calls or [])


def _arguments(call: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return parse_arguments(call.get("arguments"))
    except (ValueError, TypeError):
        return None


class ToolCalledOptions(ScorerOptions):
    tool: str
    min_times: int = Field(default=1, ge=1)
    max_times: int | None = Field(default=None, ge=0)


@register
class ToolCalled(Scorer):
    """Passes when the agent called `tool` between min_times and max_times times."""

    type_name = "tool-called"
    Options = ToolCalledOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        opts: Any = self.options
        count = sum(1 for call in _calls(ctx) if call.get("name") == opts.tool)
        ok = count >= opts.min_times and (opts.max_times is None or count <= opts.max_times)
        return float(ok), f"{opts.tool} called {count} time(s)"


class ToolArgsOptions(ScorerOptions):
    tool: str
    args: dict[str, Any]


@register
class ToolArgs(Scorer):
    """Passes when some call of `tool` had arguments including every key/value of `args`
    (values may be templates over the case, compared as text when types differ)."""

    type_name = "tool-args"
    Options = ToolArgsOptions
    templated = ("args",)

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        opts: Any = self.options
        wanted: dict[str, Any] = self.option("args", ctx)
        seen = []
        for call in _calls(ctx):
            if call.get("name") != opts.tool:
                continue
            arguments = _arguments(call)
            seen.append(arguments)
            if arguments is not None and all(
                key in arguments and _same(arguments[key], value) for key, value in wanted.items()
            ):
                return 1.0, f"{opts.tool} called with {wanted}"
        if not seen:
            return 0.0, f"{opts.tool} was never called"
        return 0.0, f"{opts.tool} never called with {wanted}; calls: {seen}"


def _same(actual: Any, expected: Any) -> bool:
    return bool(actual == expected or str(actual).strip() == str(expected).strip())


class ToolOrderOptions(ScorerOptions):
    tools: list[str] = Field(min_length=1)
    exact: bool = False


@register
class ToolOrder(Scorer):
    """Passes when the tools were called in this order (as a subsequence, or exactly)."""

    type_name = "tool-order"
    Options = ToolOrderOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        opts: Any = self.options
        names = [str(call.get("name")) for call in _calls(ctx)]
        if opts.exact:
            ok = names == list(opts.tools)
        else:
            remaining = iter(names)
            ok = all(any(name == tool for name in remaining) for tool in opts.tools)
        return float(
            ok
        ), f"calls {names} vs expected {'exactly ' if opts.exact else ''}{opts.tools}"


class StepsOptions(ScorerOptions):
    max: int | None = Field(default=None, ge=0)
    min: int | None = Field(default=None, ge=0)


@register
class Steps(Scorer):
    """Passes when the agent used between min and max model calls (and did not run out)."""

    type_name = "steps"
    Options = StepsOptions
    templated = ()

    def evaluate(self, ctx: ScoreContext) -> tuple[float, str]:
        opts: Any = self.options
        steps = int(ctx.extras.get("steps", 0))
        ran_out = bool(ctx.extras.get("max_steps_reached"))
        ok = (
            not ran_out
            and (opts.max is None or steps <= opts.max)
            and (opts.min is None or steps >= opts.min)
        )
        suffix = " (ran out of steps)" if ran_out else ""
        return float(ok), f"{steps} step(s){suffix}"
