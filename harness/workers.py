"""Worker processes that share one run's work, so a run uses every core (litellm's per-call CPU
cost, not the network, is what limits one process)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cases import Case
from harness.errors import ConfigError

# Work travels as (case_id, epoch) chunks; one None per process ends a model's queue.
Chunk = list[tuple[str, int]]
AUTO_MIN_ITEMS = 2_000


class LocalSource:
    """The work of one model in this process only."""

    def __init__(self, items: deque[tuple[Case, int]]) -> None:
        self.items = items

    async def take(self) -> tuple[Case, int] | None:
        return self.items.popleft() if self.items else None

    def remaining(self) -> int:
        return len(self.items)


class SharedSource:
    """The work of one model, shared with other processes through a multiprocessing queue:
    whoever is free takes the next chunk, so a slow-starting process never holds work back."""

    def __init__(self, queue: Any, cases: dict[str, Case]) -> None:
        self.queue = queue
        self.cases = cases
        self.buffer: deque[tuple[Case, int]] = deque()
        self.finished = False
        self._lock = asyncio.Lock()

    async def take(self) -> tuple[Case, int] | None:
        async with self._lock:  # one fetch at a time: each process gets exactly one sentinel
            while not self.buffer and not self.finished:
                chunk: Chunk | None = await asyncio.to_thread(self.queue.get)
                if chunk is None:
                    self.finished = True
                else:
                    self.buffer.extend((self.cases[case_id], epoch) for case_id, epoch in chunk)
            return self.buffer.popleft() if self.buffer else None

    def remaining(self) -> int:
        return len(self.buffer)


def chunk_size(pending: int, processes: int) -> int:
    """Small enough to balance the tail, large enough that queue traffic stays negligible."""
    return max(1, min(64, pending // (processes * 16) or 1))


def auto_workers(pending: int, local_model: bool) -> int:
    """Processes for a run: one more than the cores (at most 4) for big runs against remote
    providers, as each process's event loop then queues less of the others' work per call
    (10,000 calls on 2 cores: 3 processes ~1 s faster than 2, 4 no faster than 3); one
    otherwise (the bundled model already uses every core, and small runs do not repay a
    process start)."""
    cores = os.cpu_count() or 1
    if local_model or pending < AUTO_MIN_ITEMS or cores < 2:
        return 1
    return min(cores + 1, 4)


def fill_queues(
    context: Any,
    pending: dict[str, list[tuple[Case, int]]],
    processes: int,
    queues: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One queue per model (new, or the given ones) holding its pending items in chunks, then
    a sentinel per process."""
    queues = dict(queues or {})
    for label, items in pending.items():
        queue = queues.get(label) or context.Queue()
        size = chunk_size(len(items), processes)
        for start in range(0, len(items), size):
            queue.put([(case.id, epoch) for case, epoch in items[start : start + size]])
        for _ in range(processes):
            queue.put(None)
        queues[label] = queue
    return queues


@dataclass
class EarlyStart:
    """Children started before the run was validated, waiting for `spec.go` (`start_early`)."""

    context: Any
    spec: WorkerSpec
    queues: dict[str, Any]
    starting: Children
    taken: bool = False  # the run gave them its work (and joins them)

    @property
    def children(self) -> list[Any]:
        return self.starting.started()

    def cancel(self) -> None:
        """The run will not use them (it was refused, interrupted, or failed to start): stop
        them, without waiting for a start still in progress (`Children.cancel`). They have
        written nothing: a child opens the store only once told to go."""
        self.starting.cancel()
        for queue in self.queues.values():
            queue.cancel_join_thread()
            queue.close()


def start_early(
    spec: WorkerSpec, labels: list[str], processes: int, preload_litellm: bool = True
) -> EarlyStart:
    """Start `processes - 1` children for a run about to be validated, with empty queues."""
    context = worker_context(preload_litellm)
    spec.processes = processes
    spec.go = context.Event()
    queues = {label: context.Queue() for label in labels}
    return EarlyStart(context, spec, queues, Children(context, spec, queues, processes - 1))


class Children:
    """`count` worker processes taking work from `queues`, started in a thread: the fork
    server answers a first start only once it has imported what a worker needs (~2.5 s, in
    parallel with the parent's own imports), and the parent must not wait for it."""

    def __init__(self, context: Any, spec: WorkerSpec, queues: dict[str, Any], count: int):
        spec.environ = dict(os.environ)
        spec.parent_pid = os.getpid()
        self.processes = [
            context.Process(target=child_main, args=(spec, queues), daemon=True)
            for _ in range(count)
        ]
        self._started: list[Any] = []
        self._cancelled = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, name="start-workers", daemon=True)
        _CHILDREN.add(self)
        self._thread.start()

    def _start(self) -> None:
        try:
            with main_module_hidden(), run_signals_blocked():
                for child in self.processes:
                    if self._cancelled:
                        return
                    child.start()
                    with self._lock:
                        self._started.append(child)
                        cancelled = self._cancelled
                    if cancelled:  # cancelled while this start waited for the fork server
                        _stop(child)
                        return
        except Exception as exc:  # the others take every chunk (the sentinels come last)
            if not self._cancelled:
                sys.stderr.write(
                    f"evals: a worker process could not start ({exc}); going on without\n"
                )

    def cancel(self) -> None:
        """Start no more children and kill those started, without waiting ~2.5 s for the
        fork server's imports when a first start still waits for them: the fork server is
        killed instead (the next run starts a new one). Left to finish, it would fork that
        child after its parent quit (a Ctrl-C), and the child, whose queues went with the
        parent, would fail with a traceback."""
        with self._lock:
            self._cancelled = True
            started = list(self._started)
        for child in started:
            _stop(child)
        waiting_first = self._thread.is_alive() and not started
        if waiting_first and not any(other._running() for other in _CHILDREN if other is not self):
            _stop_fork_server()  # (it serves no other run of this process)
        self._thread.join(5)  # a later start is quick; the thread stops what it starts

    def _running(self) -> bool:
        """Whether a start is under way or a started child still runs."""
        return self._thread.is_alive() or any(_alive(child) for child in self._started)

    def started(self) -> list[Any]:
        """The processes that were started (waits until every start was tried)."""
        self._thread.join()
        return list(self._started)

    def signal(self, signum: int) -> None:
        """Send `signum` to each child started so far that still runs."""
        for child in self.processes:
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)


# Every Children of this process, while referenced: the fork server is shared by them all.
_CHILDREN: weakref.WeakSet[Children] = weakref.WeakSet()


def _alive(child: Any) -> bool:
    """Whether a started child's process runs: `Process.is_alive()` reads the fork server's
    report, and says False for every child of a fork server that was killed."""
    if child.pid is None:
        return False
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
    except OSError:
        return child.is_alive()  # no /proc (or gone): multiprocessing's own answer
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop(child: Any) -> None:
    """Kill a started child, by its pid (see `_alive`), and wait for it a moment."""
    if _alive(child):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    child.join(5)


def _stop_fork_server() -> None:
    """Kill this process's multiprocessing fork server, if it runs (its pid is private to
    multiprocessing: without it, nothing is done)."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if isinstance(pid, int):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class WorkerSpec:
    """Everything a child needs to rebuild the parent's run exactly (all picklable)."""

    suite_path: Path
    project_dir: Path
    store_path: Path
    run_id: str
    options: Any
    model_ids: list[str] = field(default_factory=list)
    processes: int = 1
    # Set by a parent that started its children before validating the run (`start_early`):
    # a child loads the suite (its model check included), then waits for this event before
    # it opens the store or takes work.
    go: Any = None
    # The parent's environment and pid: a child is forked from the fork server, whose own
    # environment is the one the parent had when the server started.
    environ: dict[str, str] = field(default_factory=dict, repr=False)
    parent_pid: int = 0


def worker_context(preload_litellm: bool = True) -> Any:
    """Worker processes are forked from a fork server that imported the engine once, and
    litellm too for a run that will call models (`harness.worker_preload`): a third or fourth
    worker then costs no import of its own, which on two cores would delay every worker's
    start by ~1 s. A fork server is a fresh single-threaded process, so forking it is safe
    where forking the parent (threads, SQLite connections) is not. What it preloads is fixed
    when it starts, by a process's first run with workers. Spawn where there is no fork server
    (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    preload = "harness.worker_preload_litellm" if preload_litellm else "harness.worker_preload"
    context.set_forkserver_preload([preload])
    return context


# Signals meant for the run as a whole (Ctrl-C, a stop): the parent coordinates them.
RUN_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextmanager
def run_signals_blocked() -> Iterator[None]:
    """Processes started in this block (in this thread) start with `RUN_SIGNALS` blocked: a
    Ctrl-C in the first moments of the fork server, before `harness.worker_preload` ignores
    it, would otherwise kill it with a traceback. Workers unblock them (`child_main`)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    # Started here, the resource tracker would unblock SIGINT and SIGTERM in this thread.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, RUN_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """Processes spawned in this block do not run the parent's main module again (for
    `evals`, its console script: the whole CLI, ~0.1 s of imports before a child can take
    work). A child runs `child_main`, whose arguments refer to nothing in `__main__`."""
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:  # multiprocessing's spawn reads these two to run the module again in the child
        main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def exit_with_parent() -> None:
    """Quit as soon as the parent dies (kill -9): an orphan would go on calling the provider
    and writing results while the user resumes the run, so cases would run twice. Watched
    through multiprocessing's parent sentinel, which reports the parent's end whether the
    child was forked from the fork server (its parent process is then the fork server, which
    outlives the run's parent while any of its children lives) or spawned."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def child_main(spec: WorkerSpec, queues: dict[str, Any]) -> None:
    """Entry point of a worker process: rebuild the suite, then take work until none is left."""
    from harness.execute import load_for_run, run_worker_process

    # The parent coordinates Ctrl-C; SIGTERM (sent by the parent) stops taking new work. A
    # child forked from the fork server inherits its ignored (and blocked) SIGTERM and SIGHUP:
    # undo that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # started with them blocked (run_signals_blocked)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, RUN_SIGNALS)
    exit_with_parent()
    if spec.environ:  # forked from the fork server: take the parent's environment, over
        # what the fork server's imports added (e.g. tiktoken's cache directory)
        preload = sys.modules.get("harness.worker_preload_litellm")
        added = dict(getattr(preload, "ADDED_BY_IMPORT", {}))
        os.environ.clear()
        os.environ.update(added)
        os.environ.update(spec.environ)
    try:
        suite = load_for_run(
            spec.suite_path,
            project_dir=spec.project_dir,
            store_path=spec.store_path,
            options=spec.options,
            model_ids=spec.model_ids,
            check_cases=False,  # the parent rendered every case before starting the run
        )
    except ConfigError:
        if spec.go is None:
            raise
        os._exit(2)  # started early: the parent, validating the same run, reports the error
    if spec.go is not None:
        spec.go.wait()  # the parent validated the run and filled the queues (else: killed)
    run_worker_process(suite, spec, queues)
