"""Orchestrate a run: schedule (case, model, epoch) work, score it, store it, resume it."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tracing
from harness import lineage
from harness import workers as workers_mod
from harness.cases import Case
from harness.committer import Committer
from harness.config import ModelConfig
from harness.errors import ConfigError, RunAborted
from harness.providers import (
    PROVIDER_CALLS,
    CacheMode,
    ModelClient,
    is_local,
)
from harness.scorers import Score, ScoreContext, Scorer
from harness.store import ResultRow, ScoreRow, Store
from harness.suite import Selection, Suite
from harness.summary import summarize, wilson_interval
from harness.targets import TargetResult
from tracing import conventions as names

NO_MODEL = "-"
FLUSH_INTERVAL_S = 0.25
MIN_RESULTS_FOR_ABORT = 10
DEFAULT_MAX_ERROR_RATE = 0.10


@dataclass
class RunOptions:
    """How to run (the command line's options)."""

    repeat: int | None = None
    concurrency: int | None = None
    cache_mode: CacheMode = "auto"
    max_error_rate: float | None = None  # None: the suite's max_error_rate, else 10%
    grace_s: float = 10.0
    trace: bool = True
    capture_content: bool = True
    otlp_endpoint: str | None = None
    chroma_url: str | None = None  # a chroma server for the run's index (default: local files)
    workers: int = 0  # processes sharing the run; 0 = auto (both cores for big remote runs)
    selection: Selection = field(default_factory=Selection)
    command: list[str] | None = None


@dataclass
class Progress:
    """Counters the CLI renders while a run goes."""

    total: int
    done: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    cached: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)


@dataclass
class RunOutcome:
    run_id: str
    status: str
    summary: dict[str, Any]
    reason: str | None = None  # why the run could not measure (its error rate): exit 3


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def max_error_rate(suite: Suite, options: RunOptions) -> float:
    """The run's error-rate limit: the command line's, else the suite's, else 10%."""
    for limit in (options.max_error_rate, suite.config.max_error_rate):
        if limit is not None:
            return limit
    return DEFAULT_MAX_ERROR_RATE


def build_manifest(suite: Suite, options: RunOptions, run_id: str) -> dict[str, Any]:
    """The run's lineage: what produced its results."""
    repeat = options.repeat or suite.config.repeat
    prompt = suite.prompt
    return {
        "schema": lineage.MANIFEST_SCHEMA,
        "run_id": run_id,
        "suite": {"name": suite.name, "path": suite.display_path, "version": suite.version},
        "dataset": {
            "source": suite.dataset.source,
            "version": suite.dataset.version,
            "rows": suite.dataset.rows,
            "selected": len(suite.cases),
            "selection": options.selection.as_dict(),
        },
        "prompt": None
        if prompt is None
        else {
            "name": prompt.name,
            "version": prompt.version,
            "source": prompt.source,
            "content": prompt.content(),
        },
        # Other versioned artifacts, kind -> [{name, version, content}]: the RAG issue fills
        # retrieval and index, the judge issue rubric (harness/run_versions.py registers them).
        "artifacts": _artifacts(suite),
        "target": suite.config.target.model_dump(exclude_none=True),
        "models": [m.model_dump(exclude_none=True) for m in suite.models],
        "scorers": [s.config() for s in suite.scorers],
        "thresholds": dict(suite.config.thresholds),
        "repeat": repeat,
        "seed": suite.config.seed if options.selection.seed is None else options.selection.seed,
        "cache": options.cache_mode,
        "max_error_rate": max_error_rate(suite, options),
        "git": lineage.git_state(suite.project_dir),
        "environment": lineage.environment(),
        "command": lineage.command_line(options.command),
        "started_at": time.time(),
    }


def _artifacts(suite: Suite) -> dict[str, list[dict[str, Any]]]:
    """Versioned artifacts beyond prompt and dataset (rubrics, retrieval configs, indexes)."""
    found: dict[str, list[dict[str, Any]]] = {"retrieval": [], "index": [], "rubric": []}
    target = getattr(suite.target, "artifacts", None)  # a rag target's config and index
    sources = [target] if target is not None else []
    for artifacts in [*sources, *(scorer.artifacts for scorer in suite.scorers)]:
        for kind, entries in artifacts().items():
            for entry in entries:
                if entry not in found.setdefault(kind, []):
                    found[kind].append(entry)
    return found


RESUME_KEYS = ("suite", "dataset", "prompt", "target", "models", "scorers", "repeat", "seed")


def resume_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first part of the lineage that differs between an interrupted run and now."""
    for key in RESUME_KEYS:
        before, after = old.get(key), new.get(key)
        if key == "suite":
            before = {k: v for k, v in (before or {}).items() if k != "path"}
            after = {k: v for k, v in (after or {}).items() if k != "path"}
        if before != after:
            return key
    return None


class Runner:
    """Runs a loaded suite against the store; the CLI drives it and renders its progress."""

    def __init__(
        self,
        suite: Suite,
        store: Store,
        options: RunOptions,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        run_id: str | None = None,
        resume: bool = False,
        worker_spec: workers_mod.WorkerSpec | None = None,
    ) -> None:
        self.suite = suite
        self.worker_spec = worker_spec  # how a child process rebuilds this run (None: no children)
        self.early: workers_mod.EarlyStart | None = None  # children started before validation
        self._children: workers_mod.Children | None = None
        self._queues: dict[str, Any] = {}
        self._shared = False
        self.store = store
        self.options = options
        self.on_progress = on_progress
        self.resume = resume
        self.run_id = run_id or new_run_id()
        self.recorded = resume  # whether the store holds this run's record (a resumed one does)
        self.repeat = options.repeat or suite.config.repeat
        self.max_error_rate = max_error_rate(suite, options)
        self.outcome: RunOutcome | None = None  # set when the run ends (aborted runs too)
        self.clients: dict[str, ModelClient | None] = {}
        self._stopping = asyncio.Event()
        self._abort_reason: str | None = None
        self._session_start = 0.0  # results created from then on are this session's
        self._prior = (0, 0)  # a resumed run's pass and fail results, which it keeps
        self._committer: Committer | None = None
        self.progress = Progress(total=0)

    def request_stop(self) -> None:
        """Stop scheduling new work; in-flight work finishes (bounded by the grace period)."""
        self._stopping.set()
        self._signal_children()

    # --- setup ----------------------------------------------------------------------------
    def _prepare(self) -> set[tuple[str, str, int]]:
        manifest = build_manifest(self.suite, self.options, self.run_id)
        if self.resume:
            old = self.store.get_run(self.run_id)
            errors = self.store.result_counts(self.run_id).get("error", 0)
            if old["status"] == "completed" and not errors:  # errors may be run again
                raise ConfigError(f"run {self.run_id} already completed; nothing to resume")
            changed = resume_mismatch(old["manifest"], manifest)
            if changed:
                raise ConfigError(
                    f"cannot resume run {self.run_id}: its {changed} differs from the "
                    "interrupted run's (start a new run instead)",
                    field="--resume",
                )
            self.store.update_run(self.run_id, status="running")
            return self.store.completed_keys(self.run_id)
        self.store.create_run(self.run_id, self.suite.name, manifest)
        self.recorded = True
        return set()

    def _make_clients(self) -> list[tuple[str, ModelConfig | None]]:
        models: list[tuple[str, ModelConfig | None]] = [(m.label, m) for m in self.suite.models]
        if not models:
            models = [(NO_MODEL, None)]
        concurrency = self.options.concurrency or self.suite.config.concurrency
        pool = self.suite.clients
        pool.configure(
            cache=self.store, cache_mode=self.options.cache_mode, concurrency=concurrency
        )
        for label, model in models:
            self.clients[label] = None if model is None else pool.client(model)
        return models

    # --- the run --------------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        done_keys = self._prepare()
        self._session_start = time.time()
        prior = self.store.result_counts(self.run_id) if self.resume else {}
        self._prior = (prior.get("pass", 0), prior.get("fail", 0))  # errors are run again
        self.progress.passed, self.progress.failed = self._prior
        models = self._make_clients()
        queues: dict[str, deque[tuple[Case, int]]] = {}
        for label, _ in models:
            queues[label] = deque(
                (case, epoch)
                for epoch in range(self.repeat)
                for case in self.suite.cases
                if (case.id, label, epoch) not in done_keys
            )
        planned = len(self.suite.cases) * self.repeat * len(models)
        self.progress.total, self.progress.done = planned, len(done_keys)
        if self.on_progress:  # the run is valid and planned: progress may show from now on
            self.on_progress(self.progress)
        pending = sum(len(q) for q in queues.values())
        processes = worker_processes(self.options, self.suite, pending)
        if self.early is not None:
            processes = self.early.spec.processes  # they were started for that many
        sources: dict[str, Any]
        if processes > 1 and self.worker_spec is not None and pending > 1:
            sources = self._start_children(queues, processes)
        else:
            sources = {label: workers_mod.LocalSource(q) for label, q in queues.items()}
        flusher = asyncio.create_task(self._flush_loop())
        status = "completed"
        try:
            await self._wait_workers(self._start_workers(models, sources))
        finally:
            flusher.cancel()
            try:
                await self._last_commit()
            finally:
                await self._join_children()
        remaining = sum(source.remaining() for source in sources.values())
        new = self.store.result_counts(self.run_id, since=self._session_start)
        settled = len(done_keys) + sum(new.get(kind, 0) for kind in ("pass", "fail", "error"))
        if settled < planned or remaining:  # an abort on the last item still completed the run
            status = "aborted" if self._abort_reason else "interrupted"
        results = self.store.results(self.run_id, for_summary=True)  # latest of each item
        summary = summarize(results, self.suite.config.thresholds, planned=planned)
        summary["processes"] = 1 + len(self._children.started() if self._children else [])
        reason = self._error_rate_verdict(status, summary)
        summary.update(
            max_error_rate=self.max_error_rate,
            error_rate_ok=reason is None,
            aborted=status == "aborted",
            abort_reason=reason if status == "aborted" else None,
        )
        self.store.update_run(self.run_id, status=status, summary=summary, finished=True)
        self.outcome = RunOutcome(self.run_id, status, summary, reason)
        if status == "aborted":
            raise RunAborted(f"run {self.run_id} aborted: {reason}")
        return self.outcome

    def _error_rate_verdict(self, status: str, summary: dict[str, Any]) -> str | None:
        """Why the run could not measure (exit 3), or None: it aborted early (its error rate
        confidently above the limit), or it completed with a final error rate above it."""
        if status == "aborted":
            return self._abort_reason
        if status == "completed" and summary["error_rate"] > self.max_error_rate:
            return (
                f"error rate {summary['errors']}/{summary['results']} exceeds "
                f"--max-error-rate {self.max_error_rate:.0%}"
            )
        return None

    async def _wait_workers(self, workers: list[asyncio.Task[None]]) -> None:
        stop: asyncio.Task[Any] = asyncio.create_task(self._stopping.wait())
        pending: set[asyncio.Task[Any]] = set(workers)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stop}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop)
                for task in done:
                    if task is not stop and task.exception() is not None:
                        # A worker failed (e.g. the store could not commit): the others stop
                        # too, and so do the worker processes (`_join_children`).
                        self._stopping.set()
                        for other in pending:
                            other.cancel()
                        await asyncio.gather(*pending, return_exceptions=True)
                        raise task.exception()  # type: ignore[misc]
                if stop in done:
                    break
            if pending:
                # Graceful stop: in-flight items finish (and are saved) within the grace period.
                _, late = await asyncio.wait(pending, timeout=self.options.grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            stop.cancel()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self._commits().kick()
            if self._shared and self._children:
                self._poll_progress()
                if self._stopping.is_set():
                    self._signal_children()

    def _start_workers(
        self, models: list[tuple[str, ModelConfig | None]], sources: dict[str, Any]
    ) -> list[asyncio.Task[None]]:
        tasks = []
        for label, _ in models:
            client = self.clients[label]
            count = (
                client.concurrency
                if client is not None
                else (self.options.concurrency or self.suite.config.concurrency or 8)
            )
            for _ in range(max(1, count)):
                tasks.append(asyncio.create_task(self._worker(label, sources[label])))
        return tasks

    async def _worker(self, label: str, source: Any) -> None:
        client = self.clients[label]
        while not self._stopping.is_set():
            item = await source.take()
            if item is None or self._stopping.is_set():
                return
            case, epoch = item
            calls = [0]
            PROVIDER_CALLS.set(calls)  # this task's own context: counts this item's calls
            result = await self.run_item(case, label, client, epoch)
            await self._save(result, paid=calls[0] > 0 or not result.cached)
            self._record(result)

    # --- worker processes -----------------------------------------------------------------
    def _start_children(
        self, queues: dict[str, deque[tuple[Case, int]]], processes: int
    ) -> dict[str, Any]:
        """Share the pending work with processes-1 children through chunked queues; each child
        takes chunks as soon as it is up (forked from a fork server that imported litellm,
        unless the run looked answered from the cache: `harness.workers`). Children a new run
        started before its model check (`_start_early`) get the work now. This process keeps
        its share of each model's concurrency."""
        assert self.worker_spec is not None
        self.worker_spec.processes = processes
        for client in self.clients.values():
            if client is not None:
                client.share(processes)
        pending = {k: list(v) for k, v in queues.items()}
        early, self.early = self.early, None
        if early is not None:  # started before the run was validated: give them the work
            early.taken = True
            self._queues = workers_mod.fill_queues(early.context, pending, processes, early.queues)
            self._children = early.starting
            early.spec.go.set()
        else:
            context = workers_mod.worker_context()
            self._queues = workers_mod.fill_queues(context, pending, processes)
            self._children = workers_mod.Children(
                context, self.worker_spec, self._queues, processes - 1
            )
        self._shared = True
        cases = {case.id: case for case in self.suite.cases}
        return {
            label: workers_mod.SharedSource(queue, cases) for label, queue in self._queues.items()
        }

    async def _join_children(self) -> None:
        if self._children is None:
            return
        children = await asyncio.to_thread(self._children.started)
        if self._stopping.is_set():
            self._signal_children()  # again: a child may have started since the stop
        for child in children:
            await asyncio.to_thread(child.join, self.options.grace_s + 30)
            if child.is_alive():
                child.kill()
        for queue in self._queues.values():
            queue.cancel_join_thread()  # leftover chunks (after a stop) must not block exit
        self._poll_progress()

    def _signal_children(self) -> None:
        if self._children is not None:
            self._children.signal(signal.SIGTERM)

    def _poll_progress(self) -> None:
        """With worker processes, progress and the error-rate check read the shared store."""
        progress = self.progress
        counts = self.store.result_counts(self.run_id, since=self._session_start)
        passed, failed = self._prior  # a resumed run's earlier errors are being run again
        progress.passed = passed + counts.get("pass", 0)
        progress.failed = failed + counts.get("fail", 0)
        progress.errors = counts.get("error", 0)
        progress.done = progress.passed + progress.failed + progress.errors
        progress.cached, progress.cost_usd = counts.get("cached", 0), counts.get("cost", 0.0)
        if self.on_progress:
            self.on_progress(progress)
        self._check_error_rate()

    async def run_shared(self, queues: dict[str, Any]) -> None:
        """A child process's part of a run: take shared work until none is left."""
        models = self._make_clients()
        for client in self.clients.values():
            if client is not None and self.worker_spec is not None:
                client.share(self.worker_spec.processes)
        cases = {case.id: case for case in self.suite.cases}
        sources = {label: workers_mod.SharedSource(queues[label], cases) for label, _ in models}
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._wait_workers(self._start_workers(models, sources))
        finally:
            flusher.cancel()
            try:
                await self._last_commit()
            finally:
                for queue in queues.values():
                    queue.cancel_join_thread()

    async def _save(self, result: ResultRow, paid: bool = True) -> None:
        """Commit a result before its worker takes more work, so a kill -9 loses only calls in
        flight, never finished ones (a resume would pay for them again). A commit never waits
        for the write lock on the loop (`harness.committer`); results finishing while the lock
        is held share the next commit. A result that is not `paid` for (every model call it
        made, judges' included, was answered from the response cache) is committed with
        others a moment later: a kill -9 that loses it costs a replay from the cache, no call."""
        await self._commits().save(result, wait=paid)

    def save_now(self) -> int:
        """Write every finished result at once (a second Ctrl-C, just before quitting)."""
        if self._committer is not None:
            return self._committer.write_now()
        return self.store.flush()

    def _commits(self) -> Committer:
        if self._committer is None:
            self._committer = Committer(self.store)
        return self._committer

    async def _last_commit(self) -> None:
        """Every saved result committed, then whatever else is buffered (cache entries)."""
        if self._committer is not None:
            self._committer.detach()
            await self._committer.drain()
            self._committer = None
        self.store.flush()

    def _record(self, result: ResultRow) -> None:
        if self._shared:  # counts come from the store (every process writes there)
            return
        progress = self.progress
        progress.done += 1
        if result.status == "pass":
            progress.passed += 1
        elif result.status == "fail":
            progress.failed += 1
        else:
            progress.errors += 1
        progress.cached += int(result.cached)
        progress.cost_usd += result.cost_usd or 0.0
        if self.on_progress:
            self.on_progress(progress)
        self._check_error_rate()

    def _check_error_rate(self) -> None:
        """Abort when the provider is clearly failing: the error rate's lower 95% bound, or the
        errors already certain, exceed the allowed rate."""
        progress, limit = self.progress, self.max_error_rate
        if self._abort_reason or progress.errors == 0 or limit >= 1:
            return
        settled = progress.passed + progress.failed + progress.errors
        certain = progress.errors > limit * progress.total
        confident = (
            settled >= MIN_RESULTS_FOR_ABORT and _wilson_low(progress.errors, settled) > limit
        )
        if certain or confident:
            self._abort_reason = (
                f"error rate {progress.errors}/{settled} exceeds --max-error-rate {limit:.0%}"
            )
            self._stopping.set()

    # --- one item -------------------------------------------------------------------------
    async def run_item(
        self, case: Case, label: str, client: ModelClient | None, epoch: int
    ) -> ResultRow:
        """Run, score and trace one (case, model, epoch): the case is one trace."""
        attributes: dict[str, Any] = {
            names.EVALS_RUN_ID: self.run_id,
            names.EVALS_CASE_ID: case.id,
            names.EVALS_MODEL: label,
            names.EVALS_EPOCH: epoch,
        }
        with tracing.step_span(None, f"case {case.id}", **attributes) as span:
            result = await self._run_item(case, label, client, epoch)
            span.set_input(case.template_vars())
            if result.output is not None:
                span.set_output(result.output)
            span.set_attributes(
                {
                    names.EVALS_VERDICT: result.status,
                    names.EVALS_COST_USD: result.cost_usd,
                    names.EVALS_SCORE: result.score,
                }
            )
            if result.status == "error":
                span.set_error(result.error or "error", result.error_kind or "error")
            context = span.span.get_span_context()
            if context.is_valid:
                result.trace_id = format(context.trace_id, "032x")
            return result

    async def _run_item(
        self, case: Case, label: str, client: ModelClient | None, epoch: int
    ) -> ResultRow:
        target = await self.suite.target.run(case, client, epoch)
        scores: list[ScoreRow] = []
        status, error, error_kind = "error", target.error, target.error_kind
        value: float | None = None
        if target.error is None:
            ctx = self._context(case, label, target)
            scorers = self.suite.scorers
            if sum(scorer.waits() for scorer in scorers) > 1:  # e.g. two judges: concurrently
                outcomes = await asyncio.gather(*(self._score(s, ctx) for s in scorers))
            else:  # rule scorers finish without waiting: no task per scorer
                outcomes = [await self._score(s, ctx) for s in scorers]
            scores = [row for row, _ in outcomes]
            failures = [row for row in scores if row.status == "error"]
            if failures:
                error = f"scorer {failures[0].scorer}: {failures[0].reason}"
                error_kind = (failures[0].detail or {}).get("kind", "scorer_error")
            else:
                status = "pass" if all(row.status == "pass" for row in scores) else "fail"
                error, error_kind = None, None
            weighted = [
                (s.weight, row.value)
                for (row, _), s in zip(outcomes, self.suite.scorers, strict=True)
                if row.value is not None and row.status != "error"
            ]
            total_weight = sum(w for w, _ in weighted)
            if weighted and total_weight > 0 and status != "error":  # an error has no score
                value = sum(w * (v or 0.0) for w, v in weighted) / total_weight
        return ResultRow(
            run_id=self.run_id,
            case_id=case.id,
            model=label,
            epoch=epoch,
            status=status,
            score=value,
            output=target.output,
            error=error,
            error_kind=error_kind,
            latency_ms=target.latency_ms,
            input_tokens=target.input_tokens,
            output_tokens=target.output_tokens,
            cost_usd=target.cost_usd,
            cached=target.cached,
            attempts=target.attempts,
            trace_id=None,
            case_data={"fields": case.fields, "expected": case.expected, "metadata": case.metadata},
            detail=_detail(target),
            scores=scores,
            created_at=time.time(),
        )

    def _context(self, case: Case, label: str, target: TargetResult) -> ScoreContext:
        return ScoreContext(
            case=case,
            output=target.output,
            vars=case.template_vars(),
            model=label,
            latency_ms=target.latency_ms,
            cost_usd=target.cost_usd,
            input_tokens=target.input_tokens,
            output_tokens=target.output_tokens,
            messages=target.messages,
            tool_calls=target.tool_calls,
            retrieved=target.retrieved,
            extras=target.extras,
        )

    async def _score(self, scorer: Scorer, ctx: ScoreContext) -> tuple[ScoreRow, Score | None]:
        with tracing.evaluator_span(None, scorer.name, scorer.options.type) as span:
            try:
                score = await scorer.score(ctx)
            except Exception as exc:  # a scorer crash is an error result, never a fail or a 0
                kind = getattr(exc, "kind", "scorer_error")
                detail: dict[str, Any] = {"kind": kind}
                raw = getattr(exc, "raw", None)
                if raw is not None:
                    detail["raw"] = raw
                # A failed judgment still cost tokens: keep what the scorer measured.
                detail.update(getattr(exc, "details", None) or {})
                span.set_error(str(exc), kind)
                return ScoreRow(
                    scorer.name, "error", None, f"{type(exc).__name__}: {exc}", detail
                ), None
            span.set_score(score.value, score.passed, score.reason)
        return ScoreRow(
            scorer.name,
            "pass" if score.passed else "fail",
            score.value,
            score.reason,
            score.details,
        ), score


def _detail(target: TargetResult) -> dict[str, Any]:
    return {
        "messages": target.messages,
        "tool_calls": target.tool_calls,
        "retrieved": target.retrieved,
        "calls": [
            {
                "model": c.model,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cost_usd": c.cost_usd,
                "latency_ms": round(c.latency_ms, 3),
                "cached": c.cached,
                "attempts": c.attempts,
                "finish_reason": c.finish_reason,
            }
            for c in target.calls
        ],
        "extras": target.extras or None,
    }


def _wilson_low(k: int, n: int) -> float:
    """Lower bound of the 95% Wilson interval of k errors in n settled results."""
    return wilson_interval(k, n)[0] or 0.0


def worker_processes(options: RunOptions, suite: Suite, pending: int) -> int:
    """Processes sharing a run of `pending` items: as asked, else `workers.auto_workers`."""
    local = any(is_local(model.id) for model in suite.models)
    return options.workers or workers_mod.auto_workers(pending, local)
