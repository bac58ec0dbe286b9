"""Executors: where a step runs. Thin over concurrent.futures.

An executor gets a `StepTask` (plain data) and returns a future of a `StepResult`.
The worker records its own state changes, so the runner never assumes that the step
ran in its process; a Ray or Kubeflow executor implements the same three methods.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ThreadPoolExecutor
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


class ThreadExecutor:
    """Steps run on a thread pool in this process (the default)."""

    name = "local"

    def __init__(
        self, store: Store, steps: dict[str, Step[Any, Any]], max_workers: int | None = None
    ) -> None:
        self._store = store
        self._steps = steps
        self._pool = ThreadPoolExecutor(max_workers or default_workers(), "treadle-step")

    def submit(self, task: StepTask) -> Future[StepResult]:
        return self._pool.submit(worker.execute, task, self._store, self._steps.get(task.node))

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        # A thread cannot be stopped from outside; its late result is discarded because
        # the runner has already ended the step run.
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def _child_main(task: StepTask, conn: Any) -> None:
    store = shared_store(task.settings)
    try:
        result = worker.execute(task, store)
    finally:
        store.close()
    conn.send(result)
    conn.close()


class ProcessExecutor:
    """Each step attempt runs in its own process (forked from a preloaded server), so a
    crash cannot take the run down and a timeout can kill it."""

    name = "process"

    def __init__(self, max_workers: int | None = None) -> None:
        methods = multiprocessing.get_all_start_methods()
        self._ctx: Any = multiprocessing.get_context(
            "forkserver" if "forkserver" in methods else "spawn"
        )
        if "forkserver" in methods:
            self._ctx.set_forkserver_preload(["treadle.engine.worker", "treadle.store"])
        self._pool = ThreadPoolExecutor(max_workers or default_workers(), "treadle-proc")
        self._procs: dict[str, Any] = {}

    def _run(self, task: StepTask) -> StepResult:
        receiver, sender = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child_main, args=(task, sender), daemon=True, name=f"treadle-{task.unit}"
        )
        self._procs[task.step_run_id] = proc
        proc.start()
        sender.close()
        try:
            result: StepResult = receiver.recv()
        except EOFError:
            proc.join()
            return StepResult(
                task.step_run_id,
                task.unit,
                ok=False,
                error=f"the step's process exited with code {proc.exitcode} before reporting",
                error_line=f"process exited with code {proc.exitcode}",
            )
        finally:
            receiver.close()
            self._procs.pop(task.step_run_id, None)
        proc.join()
        return result

    def submit(self, task: StepTask) -> Future[StepResult]:
        return self._pool.submit(self._run, task)

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        proc = self._procs.get(task.step_run_id)
        if proc is not None and proc.is_alive():
            proc.kill()
        future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        if not wait:
            for proc in list(self._procs.values()):
                if proc.is_alive():
                    proc.kill()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


EXECUTORS = ("local", "process")


def make_executor(
    name: str, store: Store, steps: dict[str, Step[Any, Any]], max_workers: int | None = None
) -> Executor:
    if name in ("local", "thread", "threads"):
        return ThreadExecutor(store, steps, max_workers)
    if name in ("process", "processes"):
        return ProcessExecutor(max_workers)
    raise ConfigError(f"unknown executor {name!r}", f"choose one of: {', '.join(EXECUTORS)}")
