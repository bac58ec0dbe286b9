"""Executors: where a step runs. Thin over concurrent.futures.

An executor gets a `StepTask` (plain data) and returns a future of a `StepResult`.
The worker records its own state changes, so the runner never assumes that the step
ran in its process; a Ray or Kubeflow executor implements the same three methods.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from treadle.dsl import Step
from treadle.engine import worker
from treadle.engine.task import StepResult, StepTask
from treadle.errors import ConfigError
from treadle.store import Store, shared_store


class Executor(Protocol):
    name: str

    def submit(self, task: StepTask) -> Future[StepResult]: ...

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        """Stop a task that ran past its timeout, as far as the executor can."""

    def shutdown(self, wait: bool = True) -> None: ...


def default_workers() -> int:
    return max(4, os.cpu_count() or 1)


class DaemonPool:
    """A fixed set of daemon threads completing `concurrent.futures.Future`s.

    Unlike ThreadPoolExecutor, whose threads the interpreter joins at exit, a thread
    stuck in a step that timed out here does not keep the process alive.
    """

    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        return future

    def shutdown(self, wait: bool) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class ThreadExecutor:
    """Steps run on a thread pool in this process (the default)."""

    name = "local"

    def __init__(
        self, store: Store, steps: dict[str, Step[Any, Any]], max_workers: int | None = None
    ) -> None:
        self._store = store
        self._steps = steps
        self._pool = DaemonPool(max_workers or default_workers(), "treadle-step")

    def submit(self, task: StepTask) -> Future[StepResult]:
        return self._pool.submit(worker.execute, task, self._store, self._steps.get(task.node))

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        # A thread cannot be stopped from outside; its late result is discarded because
        # the runner has already ended the step run.
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def _worker_main(conn: Any) -> None:
    """A worker process: execute tasks from the pipe until told to stop."""
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(worker.execute(task, shared_store(task.settings)))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main, args=(child,), daemon=True, name="treadle-worker"
        )
        self.proc.start()
        child.close()

    def stop(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(timeout=5)
        self.conn.close()


class ProcessExecutor:
    """Steps run in worker processes forked from a preloaded server: a crash cannot take
    the run down, a timeout kills the worker (a fresh one replaces it), and workers are
    reused so a step's imports are paid once per worker, not once per step."""

    name = "process"

    def __init__(self, max_workers: int | None = None) -> None:
        methods = multiprocessing.get_all_start_methods()
        self._ctx: Any = multiprocessing.get_context(
            "forkserver" if "forkserver" in methods else "spawn"
        )
        if "forkserver" in methods:
            self._ctx.set_forkserver_preload(["treadle.engine.worker", "treadle.store"])
        self._threads = DaemonPool(max_workers or default_workers(), "treadle-proc")
        self._idle: list[_Worker] = []
        self._busy: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def _checkout(self, task: StepTask) -> _Worker:
        with self._lock:
            found = self._idle.pop() if self._idle else None
        if found is None or not found.proc.is_alive():
            found = _Worker(self._ctx)
        with self._lock:
            self._busy[task.step_run_id] = found
        return found

    def _run(self, task: StepTask) -> StepResult:
        w = self._checkout(task)
        try:
            w.conn.send(task)
            result: StepResult = w.conn.recv()
        except (EOFError, OSError):
            w.stop(kill=True)
            return StepResult(
                task.step_run_id,
                task.unit,
                ok=False,
                error=f"the worker process ended with code {w.proc.exitcode} before reporting",
                error_line=f"worker process exited with code {w.proc.exitcode}",
            )
        finally:
            with self._lock:
                self._busy.pop(task.step_run_id, None)
        with self._lock:
            self._idle.append(w)
        return result

    def submit(self, task: StepTask) -> Future[StepResult]:
        return self._threads.submit(self._run, task)

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        with self._lock:
            w = self._busy.get(task.step_run_id)
        if w is not None and w.proc.is_alive():
            w.proc.kill()
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            busy, idle = list(self._busy.values()), list(self._idle)
            self._idle.clear()
        for w in busy:
            if not wait:
                w.proc.kill()
        self._threads.shutdown(wait=wait)
        for w in idle:
            w.stop(kill=False)


EXECUTORS = ("local", "process")


def make_executor(
    name: str, store: Store, steps: dict[str, Step[Any, Any]], max_workers: int | None = None
) -> Executor:
    if name in ("local", "thread", "threads"):
        return ThreadExecutor(store, steps, max_workers)
    if name in ("process", "processes"):
        return ProcessExecutor(max_workers)
    raise ConfigError(f"unknown executor {name!r}", f"choose one of: {', '.join(EXECUTORS)}")
