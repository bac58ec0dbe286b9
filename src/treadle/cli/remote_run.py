"""`treadle run` against a server: the pipeline's folder goes up as a package, the run
executes there, and the terminal follows it as it would a local run.

The package is the one `treadle pipeline build` writes (without its smoke run), so the
server runs exactly the code that was sent, unpacked per version, never a working copy.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from treadle.cli import common
from treadle.cli.progress import Progress
from treadle.engine import Event
from treadle.errors import ConflictError
from treadle.packaging import build_package
from treadle.store.records import RunRecord, StepRunRecord
from treadle.tracking import Run
from treadle.tracking.run import latest_attempts
from treadle.types import StepState

if TYPE_CHECKING:
    from treadle.client import Client
    from treadle.dsl import Pipeline

POLL_SECONDS = 0.25
RESTART_SECONDS = 60

_KIND = {
    StepState.RUNNING: "step_started",
    StepState.SUCCEEDED: "step_finished",
    StepState.CACHED: "step_cached",
    StepState.FAILED: "step_failed",
    StepState.SKIPPED: "step_skipped",
}


def submit(
    pipeline: Pipeline[Any, Any],
    source: str,
    params: dict[str, str],
    *,
    experiment: str | None,
    name: str | None,
    executor: str | None,
    workers: int | None,
    use_cache: bool,
) -> RunRecord:
    """Package the pipeline, register the package on the server and start a run of it."""
    client = common.client()
    # a run from a working copy does not change what scheduled runs execute
    deployed = client.deploy_package(build_package(pipeline, source).data, current=False)
    return client.submit_run(
        pipeline.name,
        params,
        experiment=experiment,
        name=name,
        version=deployed.version.id,
        executor=executor,
        workers=workers,
        use_cache=use_cache,
    )


class Follower:
    """Turns what the server records about a run into the events `Progress` draws."""

    def __init__(self, client: Client, run: RunRecord, sink: Progress, total: int) -> None:
        self.client = client
        self.run = run
        self.sink = sink
        self.total = total
        self.seen: dict[str, tuple[str, int]] = {}

    def poll(self) -> RunRecord:
        self.run = self.client.get_run(self.run.id)
        for step in latest_attempts(self.client.list_steps(self.run.id)).values():
            self._emit(step)
        return self.run

    def _emit(self, step: StepRunRecord) -> None:
        if step.state not in _KIND:
            return
        kind = _KIND[step.state]
        if kind == "step_failed" and not self.run.state.finished:
            kind = "step_retrying"  # the run goes on: another attempt may follow
        before = self.seen.get(step.node)
        if before == (kind, step.attempt):
            return
        self.seen[step.node] = (kind, step.attempt)
        self.total = max(self.total, len(self.seen))
        if before is None and kind in ("step_finished", "step_failed", "step_retrying"):
            # it finished between two polls: show it start first, so its row has a time
            self.sink(Event("step_started", self.run.id, step.node, step.node, total=self.total))
        message = step.error
        if step.state is StepState.CACHED and step.cached_from:
            message = self.client.get_step(step.cached_from).run_id
        self.sink(
            Event(
                kind,
                self.run.id,
                step.node,
                step.node,
                attempt=step.attempt,
                duration=step.duration,
                message=message,
                total=self.total,
            )
        )


def follow(
    run: RunRecord,
    progress: Progress,
    spec: dict[str, Any],
    *,
    resumed: bool = False,
    client: Client | None = None,
) -> Run:
    """Draw the run until it ends; Ctrl-C cancels it on the server. A `resumed` run is
    followed from its next attempt on (the server restarts it in the background)."""
    client = client or common.client()
    total = len(spec.get("nodes", []))
    progress(Event("run_started", run.id, message=run.name, total=total))
    follower = Follower(client, run, progress, total)
    try:
        deadline = time.monotonic() + RESTART_SECONDS
        while resumed and client.get_run(run.id).attempt <= run.attempt:
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"the server did not restart run {run.id[:8]} within {RESTART_SECONDS} s",
                    "look at `treadle runs show` and the server's log",
                )
            time.sleep(POLL_SECONDS / 5)
        while not follower.poll().state.finished:
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        client.cancel_run(run.id)
        while not client.get_run(run.id).state.finished:
            time.sleep(POLL_SECONDS)
        raise
    from treadle.client import remote_store

    store = remote_store(client, common.settings().replace(project=client.project))
    return Run(store, follower.run)  # type: ignore[arg-type]


def resume(run_id: str, progress: Progress) -> Run:
    """Resume a FAILED or CANCELLED run on the server and follow it."""
    client = common.client()
    before = client.get_run(run_id)
    client.resume_run(before.id)
    spec: dict[str, Any] = {}
    if before.pipeline_version_id:
        spec = client.get_pipeline_version(before.pipeline_version_id).spec
    return follow(before, progress, spec, resumed=True)
