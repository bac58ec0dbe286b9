"""Executors: where a step runs. Thin over concurrent.futures.

An executor gets a `StepTask` (plain data) and returns a future of a `StepResult`.
The worker records its own state changes, so the runner never assumes that the step
ran in its process; a Ray or Kubeflow executor implements the same three methods.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from treadle.dsl import Step
from treadle.engine import capture, worker
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
    """Daemon threads completing `concurrent.futures.Future`s, started only when no idle
    one is free and kept for the next run.

    Unlike ThreadPoolExecutor, whose threads the interpreter joins at exit, a thread
    stuck in a step that timed out here does not keep the process alive. Reusing the
    threads across runs also bounds the per-thread database connections they open.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def _loop(self) -> None:
        while True:
            future, fn, args = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue `fn(*args)`; an idle thread is reserved for it, or a new one started, so
        every submitted call runs at once (the runner bounds how many it submits)."""
        future: Future[Any] = Future()
        with self._lock:
            start = self._idle == 0
            if start:
                self._count += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(
                target=self._loop, name=f"{self._name}-{self._count}", daemon=True
            ).start()
        self._queue.put((future, fn, args))
        return future


_step_threads = DaemonPool("treadle-step")
_process_waiters = DaemonPool("treadle-proc")


class ThreadExecutor:
    """Steps run on a thread pool in this process (the default)."""

    name = "local"

    def __init__(self, store: Store, steps: dict[str, Step[Any, Any]]) -> None:
        self._store = store
        self._steps = steps

    def submit(self, task: StepTask) -> Future[StepResult]:
        return _step_threads.submit(worker.execute, task, self._store, self._steps.get(task.node))

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        # A thread cannot be stopped from outside; its late result is discarded because
        # the runner has already ended the step run.
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        """Threads are shared and kept; the runner has already collected every result."""


def _worker_main(conn: Any) -> None:
    """A worker process: execute tasks from the pipe until told to stop."""
    with capture.routing():
        _serve(conn)


def _serve(conn: Any) -> None:
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

    def __init__(self) -> None:
        import multiprocessing  # only this executor needs it; keep `treadle run` light

        methods = multiprocessing.get_all_start_methods()
        self._ctx: Any = multiprocessing.get_context(
            "forkserver" if "forkserver" in methods else "spawn"
        )
        if "forkserver" in methods:
            self._ctx.set_forkserver_preload(["treadle.engine.worker", "treadle.store"])
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
                recorded=False,
            )
        finally:
            with self._lock:
                self._busy.pop(task.step_run_id, None)
        with self._lock:
            self._idle.append(w)
        return result

    def submit(self, task: StepTask) -> Future[StepResult]:
        return _process_waiters.submit(self._run, task)

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
        for w in idle:
            w.stop(kill=False)


EXECUTORS = ("local", "process", "ray")


def make_executor(name: str, store: Store, steps: dict[str, Step[Any, Any]]) -> Executor:
    if name in ("local", "thread", "threads"):
        return ThreadExecutor(store, steps)
    if name in ("process", "processes"):
        return ProcessExecutor()
    if name == "ray":
        # Ray is an optional extra; only runs that ask for it import it
        from treadle.engine.ray_executor import RayExecutor

        return RayExecutor(store, steps)
    raise ConfigError(f"unknown executor {name!r}", f"choose one of: {', '.join(EXECUTORS)}")
