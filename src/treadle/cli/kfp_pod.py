"""What a Kubeflow Pipelines pod runs (the compiled YAML names this module):

    python -m treadle.cli.kfp_pod --executor-input '{{$}}' --task '<task JSON>' \\
        --job <pipeline job uuid> --job-name <pipeline job name>

The arguments are `treadle.engine.entry`'s. Without TREADLE_URL the pod does exactly
what that module does: it records into the store TREADLE_DB_URL and
TREADLE_ARTIFACT_URL name. With TREADLE_URL (and TREADLE_TOKEN, TREADLE_PROJECT) the
server wins: the step runs against a scratch store of the pod's own, as the worker runs
it on one machine, and then the pod sends the server what it ran, through the API:

1. the run of the KFP job (`POST …/external/runs`, one run per job uuid), renewed
   while the step runs;
2. the bytes of its outputs, and of inputs the server has not heard of;
3. the finished step run with its outputs, the artifacts it read, metrics, params and
   log; the output folders KFP hands on then carry the server's artifact ids, so the
   next step's lineage links to them.

The exit task sets the run's final state the same way. When the server cannot be
reached or refuses, the pod says so on stderr and the step still succeeds with its
outputs written: the KFP run goes on without treadle hearing of this step.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from treadle.client import Client
from treadle.client.external import object_proof
from treadle.config import Settings, load_settings
from treadle.engine import entry
from treadle.errors import NotFoundError, TreadleError
from treadle.store import Store
from treadle.store.records import ArtifactRecord, RunRecord
from treadle.types import RunState

log = logging.getLogger("treadle.kfp")

RENEW_SECONDS = 600.0
"""How often a running step renews its run's lease on the server (an hour long)."""


def _warn(what: str, exc: BaseException) -> None:
    message = exc.message if isinstance(exc, TreadleError) else f"{type(exc).__name__}: {exc}"
    hint = exc.hint if isinstance(exc, TreadleError) else ""
    log.warning(
        "treadle: %s is not recorded on the treadle server: %s%s",
        what,
        message,
        f" ({hint})" if hint else "",
    )


class _Lease:
    """Renews the run's lease on the server while the step runs (a long step outlasts
    it otherwise); a failed renewal is retried at the next one."""

    def __init__(self, renew: Callable[[], object]) -> None:
        self._renew = renew
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="treadle-lease", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self._renew()
            except Exception:
                continue

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()


class Recorder:
    """The treadle server a pod reports to, and the run of its KFP job there."""

    def __init__(self, client: Client, run: RunRecord) -> None:
        self.client = client
        self.run = run

    @classmethod
    def connect(
        cls, settings: Settings, job: str, pipeline: str, job_name: str, params: Mapping[str, str]
    ) -> Recorder | None:
        """The run of `job` on the server TREADLE_URL names; None (and a warning) when
        the server cannot be reached or refuses."""
        try:
            client = Client(settings.url, settings.token, project=settings.project)
        except TreadleError as exc:
            _warn(f"KFP job {job}", exc)
            return None
        try:
            run = client.external_run(job, pipeline, name=job_name or None, params=params)
        except Exception as exc:
            client.close()
            _warn(f"KFP job {job}", exc)
            return None
        return cls(client, run)

    def renew(self) -> None:
        cause = self.run.cause or {}
        self.client.external_run(str(cause.get("external_id")), str(cause.get("pipeline")))

    def push(self, store: Store, ran: entry.Ran) -> dict[str, ArtifactRecord] | None:
        """Send the step run `ran` recorded in `store`; the server's artifacts of its
        outputs by name, or None (and a warning) when it could not be recorded."""
        try:
            return self._push(store, ran)
        except Exception as exc:
            _warn(f"step {ran.task.unit}", exc)
            return None

    def _push(self, store: Store, ran: entry.Ran) -> dict[str, ArtifactRecord]:
        step_run_id = ran.task.step_run_id
        step = store.runs.get_step(step_run_id)
        outputs = store.artifacts.step_outputs(step_run_id)
        inputs = {
            name: [store.artifacts.get_artifact(a.artifact_id) for a in value.artifacts()]
            for name, value in ran.task.inputs.items()
            if value.artifacts()
        }
        proofs: dict[str, str] = {}

        def send(record: ArtifactRecord) -> None:
            if record.sha256 in proofs:
                return
            data = store.objects.get_bytes(record.sha256)
            self.client.upload_object(data)
            proofs[record.sha256] = object_proof(self.run.id, data)

        for record in outputs.values():
            send(record)
        for records in inputs.values():
            for record in records:
                if not self._knows(record):
                    send(record)
        log_text = ""
        if step.log_uri:
            log_text = store.objects.get_bytes(store.objects.sha_of(step.log_uri)).decode(
                errors="replace"
            )
        recorded = self.client.record_step(
            self.run.id,
            step,
            log=log_text,
            outputs=outputs,
            inputs=inputs,
            metrics=[
                m
                for m in store.tracking.metric_history(ran.task.run_id)
                if m.step_run_id == step_run_id
            ],
            params=store.tracking.get_params(ran.task.run_id),
            proofs=proofs,
        )
        return self.client.step_outputs(recorded.id)

    def _knows(self, record: ArtifactRecord) -> bool:
        try:
            return self.client.get_artifact(record.id).sha256 == record.sha256
        except NotFoundError:
            return False

    def finish(self, state: RunState, error: str | None) -> None:
        self.client.finish_external_run(self.run.id, state, error)

    def close(self) -> None:
        self.client.close()


def run_step(
    task: Mapping[str, Any],
    given: entry.ExecutorInput,
    *,
    job: str,
    job_name: str,
    settings: Settings,
) -> int:
    """Run one step in a scratch store and report it to the server; 0 when it succeeded
    (whether or not the server heard of it)."""
    recorder = Recorder.connect(
        settings, job, task["pipeline"], job_name, entry.pipeline_params(task, given)
    )
    store = entry.scratch_store(settings)
    try:
        run_id = recorder.run.id if recorder else entry.run_id_for(job)
        run = entry.ensure_run(store, run_id, task["pipeline"], job_name)
        if recorder is None:
            ran = entry.execute_step(task, given, store, run)
            return entry.hand_on(task, given, store, ran)
        with _Lease(recorder.renew):
            ran = entry.execute_step(task, given, store, run)
        recorded = recorder.push(store, ran)
        return entry.hand_on(task, given, store, ran, recorded)
    finally:
        store.close()
        if recorder is not None:
            recorder.close()


def finish_run(
    given: entry.ExecutorInput, *, job: str, job_name: str, pipeline: str, settings: Settings
) -> int:
    """The exit task: set the server's run of this KFP job to how the job ended (the run
    is made if no step recorded one, e.g. when KFP's cache answered every task)."""
    state, error = entry.final_state(given)
    recorder = Recorder.connect(settings, job, pipeline or "kfp", job_name, {})
    if recorder is None:
        return 0
    try:
        recorder.finish(state, error)
    except Exception as exc:
        _warn(f"how KFP job {job} ended", exc)
    finally:
        recorder.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = entry.parse_args(argv)
    settings = load_settings()
    if not settings.url:
        return entry.main(argv)

    def work() -> int:
        given = entry.ExecutorInput.parse(args.executor_input)
        if args.finish:
            return finish_run(
                given,
                job=args.job,
                job_name=args.job_name,
                pipeline=args.pipeline,
                settings=settings,
            )
        task = json.loads(args.task)
        return run_step(task, given, job=args.job, job_name=args.job_name, settings=settings)

    return entry.guarded(work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
