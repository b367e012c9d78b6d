"""Run a suite as `evals run` does: load and validate it, open the store and tracing, run it
(new, or resumed), record its versions; and a worker process's share of a run.

Nothing is written to the store until every input has been validated. The engine itself (what
runs each (case, model, epoch), scores and stores it) is `harness.runner.Runner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tracing
from harness import gcpolicy
from harness import workers as workers_mod
from harness.artifacts import prompt_resolver
from harness.errors import ConfigError
from harness.model_checks import check_model, remember_checked_models
from harness.providers import ChatRequest, ModelClient, cache_key, cache_use
from harness.run_versions import record_run_versions, suite_content
from harness.runner import (
    NO_MODEL,
    Progress,
    Runner,
    RunOptions,
    RunOutcome,
    new_run_id,
    worker_processes,
)
from harness.store import Store
from harness.suite import Selection, Suite, load_suite
from harness.targets import ChatTarget, merged_params

CALL_SAMPLE = 16  # items per model whose cache entries say whether a run will call models
CACHED_ENOUGH = 0.9  # share of them in the response cache for a run judged not to call models


def load_for_run(
    suite_path: Path,
    *,
    project_dir: Path,
    store_path: Path,
    options: RunOptions,
    model_ids: list[str] | None,
    check_cases: bool = True,
    on_loaded: Callable[[Suite], None] | None = None,
) -> Suite:
    """Load and validate a suite, check its models, and prepare its target (e.g. open a rag
    index). Writes nothing to the run store. A worker process passes `check_cases=False`;
    `on_loaded(suite)` runs between loading the suite and checking its models."""
    suite = load_suite(
        suite_path,
        project_dir=project_dir,
        selection=options.selection,
        model_ids=model_ids,
        resolve_prompt=prompt_resolver(store_path, project_dir),
        check_cases=check_cases,
    )
    if on_loaded is not None:
        on_loaded(suite)
    for index, model in enumerate(suite.models):
        try:
            check_model(model, where=f"models[{index}]", checks_dir=store_path.parent)
        except ConfigError as exc:
            loc: tuple[str | int, ...] = (
                ("models", index) if index < len(suite.config.models) else ()
            )
            raise suite.doc.error(exc.message, loc) from None
    prepare = getattr(suite.target, "prepare", None)
    if prepare is not None:  # e.g. open (or build) a rag target's index, now that all is valid
        prepare(store_dir=store_path.parent, chroma_url=options.chroma_url)
    return suite


def _setup_tracing(options: RunOptions, store: Store, project: str) -> Any:
    """The run's tracing pipeline in this process, or None with tracing off. Its spans are
    written by `store`'s own commits, with the results (the process's one writer): span
    writes of their own held the file's write lock that result commits then waited for."""
    if not options.trace:
        return None
    handle = tracing.setup(
        store=store.path,
        otlp_endpoint=options.otlp_endpoint,
        capture_content=options.capture_content,
        project_name=project,
    )
    handle.hand_span_rows_to(store.add_span_rows)
    return handle


def _finish_tracing(handle: Any, store: Store) -> None:
    """Write every span of this process: all ended so far handed to `store` and written by it
    (so a trace's spans stored first are labelled by the later ones), then, written by the
    span store itself from now on, any that end after."""
    try:
        handle.force_flush()
        handle.hand_span_rows_to(None)
        store.flush()
    finally:
        handle.shutdown()  # no more rows for the store after it, whatever happened


def run_worker_process(suite: Suite, spec: workers_mod.WorkerSpec, queues: dict[str, Any]) -> None:
    """A worker process's share of a run (see harness.workers): same store, same run id."""
    store = Store.open(spec.store_path)
    handle = _setup_tracing(spec.options, store, suite.name)
    runner = Runner(suite, store, spec.options, run_id=spec.run_id, resume=True, worker_spec=spec)
    runner._shared = True

    async def main() -> None:
        with tracing.use_tracer(handle.tracer("evals-harness") if handle else None):
            await runner.run_shared(queues)

    try:
        with gcpolicy.for_run():
            asyncio.run(main())
    finally:
        try:
            if handle is not None:
                _finish_tracing(handle, store)
                # Only this process knows its counters: leave them for the parent's summary.
                key = _tracing_counts_key(spec.run_id, spec.parent_pid) + str(os.getpid())
                tracing.save_counts(spec.store_path, key, handle.counts())
        finally:
            store.close()


def _start_early(
    suite: Suite, options: RunOptions, spec: workers_mod.WorkerSpec
) -> workers_mod.EarlyStart | None:
    """Start a new run's worker processes as soon as its suite is loaded, before its models
    are checked: their fork server imports litellm (~2 s) while the parent does the same, and
    each child loads the suite, instead of after. None when the run will not use them (one
    process, or a target that prepares an index, which the parent must build first)."""
    if options.workers == 1 or hasattr(suite.target, "prepare"):
        return None
    repeat = options.repeat or suite.config.repeat
    pending = len(suite.cases) * repeat * max(1, len(suite.models))
    processes = worker_processes(options, suite, pending)
    if processes < 2 or pending < 2:
        return None
    labels = [model.label for model in suite.models] or [NO_MODEL]
    calls = expects_model_calls(suite, options, spec.store_path)
    return workers_mod.start_early(spec, labels, processes, preload_litellm=calls)


def expects_model_calls(suite: Suite, options: RunOptions, store_path: Path) -> bool:
    """Whether a run's workers will call models, judged from a sample of its first epoch's
    items: False when the response cache already answers (nearly) all of them. Worker
    processes then start without litellm, which they would not use: a cached re-run of
    10,000 items was ~1.3 s slower when a fork server imported litellm for its workers.
    Either answer gives the same results; only the start-up differs."""
    if not isinstance(suite.target, ChatTarget) or not suite.models or not suite.cases:
        return True
    if options.cache_mode in ("off", "refresh") or not store_path.is_file():
        return True
    try:
        keys = _sampled_cache_keys(suite, suite.target, options)
    except Exception:  # e.g. a case that does not render: the run's own checks report it
        return True
    if keys is None:
        return True
    try:
        uri = f"{store_path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            keys = sorted(set(keys))  # the same request twice is one entry
            marks = ",".join("?" * len(keys))
            found = db.execute(
                f"SELECT COUNT(*) FROM response_cache WHERE key IN ({marks})", keys
            ).fetchone()[0]
    except sqlite3.Error:
        return True
    return found < len(keys) * CACHED_ENOUGH


def _sampled_cache_keys(suite: Suite, target: ChatTarget, options: RunOptions) -> list[str] | None:
    """Response-cache keys of a sample of the run's first-epoch requests (`CALL_SAMPLE` per
    model); None when one of them would not be read from the cache at all."""
    step = max(1, len(suite.cases) // CALL_SAMPLE)
    keys = []
    for model in suite.models:
        client = ModelClient(model, cache_mode=options.cache_mode)
        for case in suite.cases[::step][:CALL_SAMPLE]:
            request = ChatRequest(
                messages=target.prompt.render(case),
                params=merged_params(target.prompt, client),
                epoch=0,
                **target.prompt.request_options(),
            )
            if not cache_use(options.cache_mode, request)[0]:
                return None
            keys.append(cache_key(model, request))
    return keys


def _tracing_counts_key(run_id: str, parent_pid: int) -> str:
    """Prefix of the keys under which a run's worker processes save their tracing counters."""
    return f"run {run_id} parent {parent_pid} worker "


def execute(
    suite_path: Path | None,
    *,
    project_dir: Path,
    store_path: Path,
    options: RunOptions,
    model_ids: list[str] | None = None,
    resume: str | None = None,
    on_start: Callable[[Runner], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    install_signals: Callable[[Callable[[], None], Callable[[], int]], None] | None = None,
) -> RunOutcome:
    """Load, validate, then run a suite (or resume a run). Nothing is written to the store
    until every input has been validated."""
    run_id: str | None = None
    if resume is not None:
        with Store.open(store_path, create=False) as db:
            previous = db.get_run(resume)
        run_id = previous["id"]
        manifest = previous["manifest"]
        if suite_path is None:
            suite_path = project_dir / manifest["suite"]["path"]
        selection = manifest["dataset"].get("selection") or {}
        shard = selection.get("shard")
        options.selection = Selection(
            limit=selection.get("limit"),
            sample=selection.get("sample"),
            seed=selection.get("seed"),
            filters=list(selection.get("filters") or []),
            shard=(int(shard[0]), int(shard[1])) if shard else None,
        )
        options.repeat = options.repeat or manifest.get("repeat")
        if options.max_error_rate is None:  # the limit the run started with
            options.max_error_rate = manifest.get("max_error_rate")
        model_ids = model_ids or [m.get("name") or m["id"] for m in manifest.get("models", [])]
    if suite_path is None:
        raise ConfigError("give a suite file (e.g. evalsets/demo.yaml) or --resume RUN")
    run_id = run_id or new_run_id()
    early: workers_mod.EarlyStart | None = None

    def spec_for(loaded: Suite) -> workers_mod.WorkerSpec:
        assert suite_path is not None and run_id is not None
        return workers_mod.WorkerSpec(
            suite_path=suite_path,
            project_dir=project_dir,
            store_path=store_path,
            run_id=run_id,
            options=options,
            model_ids=[m.label for m in loaded.models],
        )

    def start_children_early(loaded: Suite) -> None:
        nonlocal early
        if resume is None:
            early = _start_early(loaded, options, spec_for(loaded))

    try:
        suite = load_for_run(
            suite_path,
            project_dir=project_dir,
            store_path=store_path,
            options=options,
            model_ids=model_ids,
            on_loaded=start_children_early,
        )
        store = Store.open(store_path)
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    try:
        remember_checked_models(suite.models, store_path.parent)
        handle = _setup_tracing(options, store, suite.name)
        runner = Runner(
            suite, store, options, on_progress=on_progress, run_id=run_id, resume=resume is not None
        )
        runner.worker_spec = early.spec if early is not None else spec_for(suite)
        runner.early = early
        if on_start:
            on_start(runner)

        async def main() -> RunOutcome:
            if install_signals:
                install_signals(runner.request_stop, runner.save_now)
            with tracing.use_tracer(handle.tracer("evals-harness") if handle else None):
                return await runner.run()

        refused = False
        try:
            with gcpolicy.for_run():
                outcome = asyncio.run(main())
        except ConfigError:
            refused = True  # e.g. a resume whose inputs changed: nothing ran, nothing to record
            raise
        finally:
            if not refused:
                record_run_versions(
                    store,
                    runner.run_id,
                    project_dir=project_dir,
                    suite=suite_content(suite.config),
                    prompt_ref=suite.config.prompt,
                )
            if handle is not None:
                _finish_tracing(handle, store)  # every span written before the run is reported
        if handle is not None:
            counts = handle.counts()  # plus the worker processes' own (joined by now)
            workers = tracing.take_counts(
                store_path, _tracing_counts_key(outcome.run_id, os.getpid())
            )
            outcome.summary["tracing"] = {name: counts[name] + workers[name] for name in counts}
            store.update_run(outcome.run_id, summary=outcome.summary)
        return outcome
    finally:
        if early is not None and not early.taken:  # started early, the run never started
            early.cancel()
        store.close()
