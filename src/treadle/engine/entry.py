"""One step in a container: what a Kubeflow Pipelines pod runs.

    python -m treadle.cli.kfp_pod --executor-input '{{$}}' --task '<task JSON>' \\
        --job <pipeline job uuid> --job-name <pipeline job name>

The compiled YAML runs `treadle.cli.kfp_pod`, which records through a treadle server
when TREADLE_URL is set and otherwise calls this module's `main`; this module (also
runnable as `python -m treadle.engine.entry`, the same arguments) holds everything that
does not need the server's client: reading the executor input, running the step,
writing the outputs where KFP looks.

KFP fills in the executor input: the values of the task's parameters, and for every
input and output artifact a URI whose local path (`/gcs/…`, `/s3/…`, `/minio/…`, or
the path itself) the pod reads from or writes to. The task JSON, written by the
compiler, says which step to import and how each of its inputs is put together.

An artifact folder holds the value in treadle's own layout, the bytes a materializer
wrote under `objects/<sha[:2]>/<sha>`, next to `treadle-artifact.json` that names the
materializer, the hash and the step run that made it. Metrics outputs also become the
KFP Metrics artifact's metadata, so the KFP UI shows them.

The step runs through the same worker as on one machine, against the store that the
pod's settings name (TREADLE_DB_URL, TREADLE_ARTIFACT_URL): with the platform's
database, every step run, artifact, metric and lineage edge of the KFP run is recorded
under one treadle run; when that store cannot be opened the step still runs, in a
scratch home of its own, and a warning says what was not recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from treadle.config import Settings, load_settings
from treadle.dsl.pipeline import format_param
from treadle.engine.capture import routing
from treadle.engine.loader import import_step
from treadle.engine.task import ArtifactInput, StepResult, StepTask, TaskInput
from treadle.engine.worker import execute
from treadle.errors import InvalidInputError, NotFoundError, TreadleError
from treadle.store import Store, materializers, open_store
from treadle.store.records import ArtifactRecord, RunRecord, new_id
from treadle.tracking.heartbeat import Heartbeat
from treadle.types import RunState

MODULE = "treadle.engine.entry"
POD_MODULE = "treadle.cli.kfp_pod"
"""What the compiled YAML runs: this module's arguments, at the layer that may also talk
to a treadle server (`TREADLE_URL`)."""
METADATA = "treadle-artifact.json"
FORMAT = 1
INDEX_INPUT = "treadle_index"
"""The loop item of a fan-out over item numbers."""
ITEM_INPUT = "treadle_item"
"""The loop item of a fan-out over a list pipeline parameter."""
STATUS_INPUT = "status"
"""The final status the exit task of a KFP run is given."""
ITEMS_PREFIX = "treadle_items_"
"""Output parameter `treadle_items_<output>`: the item numbers of a list output, which a
fan-out over it iterates."""

log = logging.getLogger("treadle.kfp")

_REMOTE_MOUNTS = (("gs://", "/gcs/"), ("s3://", "/s3/"), ("minio://", "/minio/"))


def local_path(uri: str) -> Path:
    """Where a KFP pod finds the artifact at `uri` (the launcher's mount convention)."""
    for prefix, mount in _REMOTE_MOUNTS:
        if uri.startswith(prefix):
            return Path(mount + uri[len(prefix) :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return Path(uri)


def command(task: Mapping[str, Any], job: str, job_name: str, executor_input: str) -> list[str]:
    """The container argv after `python`: one place that both the compiler and this
    module read, so they cannot drift apart."""
    return [
        "-m",
        POD_MODULE,
        "--executor-input",
        executor_input,
        "--task",
        json.dumps(task, sort_keys=True, separators=(",", ":")),
        "--job",
        job,
        "--job-name",
        job_name,
    ]


def run_id_for(job: str) -> str:
    """The treadle run that a KFP pipeline job is recorded as (the same in every pod)."""
    return hashlib.sha256(f"kfp:{job}".encode()).hexdigest()[:32]


# ------------------------------------------------------------------ artifact folders


def write_artifact(
    folder: Path, store: Store, output: ArtifactInput, meta: Mapping[str, Any]
) -> None:
    """Put the object `output` names, from `store`, into a KFP output artifact folder."""
    if folder.exists() and not folder.is_dir():
        folder.unlink()
    target = folder / "objects" / output.sha256[:2] / output.sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(store.objects.get_bytes(output.sha256))
    (folder / METADATA).write_text(json.dumps({"format": FORMAT, **meta}, sort_keys=True))


def read_artifact(folder: Path) -> tuple[dict[str, Any], bytes]:
    """The metadata and the verified bytes of an artifact folder another step wrote."""
    try:
        meta = json.loads((folder / METADATA).read_text())
    except (OSError, ValueError) as exc:
        raise NotFoundError(
            f"{folder} is not an artifact a treadle step wrote: {exc}",
            "connect this input to the output of a step compiled by `treadle compile`",
        ) from None
    sha = str(meta.get("sha256", ""))
    try:
        data = (folder / "objects" / sha[:2] / sha).read_bytes()
    except OSError as exc:
        raise NotFoundError(f"artifact {folder} lost its object {sha[:12]}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise InvalidInputError(
            f"artifact {folder} is corrupt: its bytes do not hash to {sha[:12]}"
        )
    return meta, data


# ------------------------------------------------------------------ the executor input


@dataclasses.dataclass(frozen=True)
class ExecutorInput:
    """What KFP hands a task: parameter values, and artifact paths in and out."""

    params: dict[str, Any]
    inputs: dict[str, list[Path]]
    outputs: dict[str, Path]
    output_uris: dict[str, str]
    output_params: dict[str, Path]
    output_file: Path | None

    @classmethod
    def parse(cls, text: str) -> ExecutorInput:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"--executor-input is not JSON: {exc}") from None
        ins, outs = raw.get("inputs") or {}, raw.get("outputs") or {}
        inputs = {
            name: [local_path(a["uri"]) for a in entry.get("artifacts", [])]
            for name, entry in (ins.get("artifacts") or {}).items()
        }
        out_artifacts = {
            name: entry["artifacts"][0]["uri"]
            for name, entry in (outs.get("artifacts") or {}).items()
            if entry.get("artifacts")
        }
        return cls(
            params=dict(ins.get("parameterValues") or {}),
            inputs=inputs,
            outputs={name: local_path(uri) for name, uri in out_artifacts.items()},
            output_uris=out_artifacts,
            output_params={
                name: Path(entry["outputFile"])
                for name, entry in (outs.get("parameters") or {}).items()
            },
            output_file=Path(outs["outputFile"]) if outs.get("outputFile") else None,
        )


# ------------------------------------------------------------------ the store


def _scratch_settings(settings: Settings) -> Settings:
    home = Path(tempfile.mkdtemp(prefix="treadle-pod-"))
    return settings.replace(
        home=home, db_url=f"sqlite:///{home / 'treadle.db'}", artifact_url=str(home / "artifacts")
    )


def scratch_store(settings: Settings) -> Store:
    """A store in a scratch home of the pod's own: where a step runs when what it
    makes is recorded elsewhere (through a server) or nowhere."""
    return open_store(_scratch_settings(settings))


def open_pod_store(settings: Settings) -> tuple[Store, bool]:
    """The store the pod's settings name, and whether it records; a scratch home when it
    cannot be opened (the step still runs)."""
    try:
        return open_store(settings), True
    except Exception as exc:
        log.warning(
            "treadle: cannot open the store at %s (%s); this step runs in a scratch home "
            "and is not recorded in treadle. Give the pods TREADLE_DB_URL and "
            "TREADLE_ARTIFACT_URL of a store they can reach.",
            settings.db_url.partition("@")[2] or settings.db_url,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
    return scratch_store(settings), False


def ensure_run(store: Store, run_id: str, pipeline: str, job_name: str) -> RunRecord:
    """The treadle run of this KFP job, created by whichever pod comes first."""
    settings = store.settings
    project = store.projects.ensure_project(settings.project, settings.user)
    try:
        return store.runs.get_run(run_id, project.id)
    except NotFoundError:
        pass
    experiment = store.projects.ensure_experiment(project.id, settings.experiment, settings.user)
    now = time.time()
    record = RunRecord(
        id=run_id,
        project_id=project.id,
        experiment_id=experiment.id,
        pipeline_version_id=None,
        name=job_name or f"{pipeline}-kfp",
        state=RunState.RUNNING,
        created_by=settings.user,
        executor="kfp",
        attempt=1,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        cause={"kind": "kubeflow", "job": job_name, "pipeline": pipeline},
    )
    try:
        store.runs.create_run(record)
    except Exception:  # another pod of the same job created it meanwhile
        return store.runs.get_run(run_id, project.id)
    return record


def _import_artifact(
    store: Store, run: RunRecord, folder: Path
) -> tuple[dict[str, Any], ArtifactInput]:
    meta, data = read_artifact(folder)
    sha, _ = store.objects.put_bytes(data)
    artifact_id = str(meta.get("artifact_id") or new_id())
    try:
        store.artifacts.get_artifact(artifact_id, run.project_id)
    except NotFoundError:  # made by a pod that recorded elsewhere, or nowhere
        store.artifacts.add_artifact(
            ArtifactRecord(
                id=artifact_id,
                project_id=run.project_id,
                name=str(meta.get("name", "output")),
                kind=str(meta.get("kind", "value")),
                materializer=str(meta["materializer"]),
                python_type=str(meta.get("python_type", "")),
                sha256=sha,
                uri=store.objects.uri(sha),
                size=len(data),
                created_at=time.time(),
                run_id=run.id,
            )
        )
    return meta, ArtifactInput(artifact_id, sha, store.objects.uri(sha), str(meta["materializer"]))


# ------------------------------------------------------------------ inputs


class _Inputs:
    """Builds the step's inputs from the task's layout and the executor input."""

    def __init__(self, store: Store, run: RunRecord, given: ExecutorInput) -> None:
        self.store, self.run, self.given = store, run, given

    def _folder(self, name: str) -> Path:
        found = self.given.inputs.get(name) or []
        if len(found) != 1:
            raise InvalidInputError(f"the executor input has no artifact {name!r}")
        return found[0]

    def _param(self, name: str) -> Any:
        if name not in self.given.params:
            raise InvalidInputError(f"the executor input has no parameter {name!r}")
        return self.given.params[name]

    def index(self) -> int | None:
        if INDEX_INPUT in self.given.params:
            return int(self.given.params[INDEX_INPUT])
        return None

    def build(self, layout: Mapping[str, Any], index: int | None) -> TaskInput:
        if "artifact" in layout:
            _, art = _import_artifact(self.store, self.run, self._folder(layout["artifact"]))
            if layout.get("mapped"):
                art = dataclasses.replace(art, index=index)
            return TaskInput(artifact=art)
        if "artifacts" in layout:
            found = [
                _import_artifact(self.store, self.run, folder)
                for folder in self.given.inputs.get(layout["artifacts"], [])
            ]
            if all(meta.get("index") is not None for meta, _ in found):
                found.sort(key=lambda pair: int(pair[0]["index"]))
            return TaskInput(items=tuple(TaskInput(artifact=a) for _, a in found))
        if "param" in layout:
            return TaskInput(value=self._param(layout["param"]))
        if "item" in layout:
            return TaskInput(value=self._param(layout["item"]))
        if "collect" in layout:
            return TaskInput(items=tuple(self.build(item, index) for item in layout["collect"]))
        constant: Any = layout.get("value")
        if layout.get("mapped") and index is not None:
            constant = constant[index]
        return TaskInput(value=constant)

    def item_index(self, task: Mapping[str, Any]) -> int | None:
        """The number of this run of a fan-out: the loop's item number, or where the loop
        item sits in the parameter list it came from."""
        index = self.index()
        if index is not None:
            return index
        for layout in task["inputs"].values():
            if "item" in layout and "of" in layout:
                whole = self._param(layout["of"])
                item = self._param(layout["item"])
                return whole.index(item) if item in whole else None
        return None


def _check_lengths(task: Mapping[str, Any], inputs: Mapping[str, TaskInput], store: Store) -> None:
    """A fan-out over several lists needs lists of one length (as on one machine)."""
    lengths: dict[str, int] = {}
    for name in task.get("mapped", []):
        value = inputs[name]
        if value.artifact is not None:
            art = value.artifact
            loaded = materializers.load(
                art.materializer, art.sha256, store.objects, allow_pickle=task["allow_pickle"]
            )
            lengths[name] = len(loaded)
        elif isinstance(task["inputs"][name].get("value"), list):
            lengths[name] = len(task["inputs"][name]["value"])
    if len(set(lengths.values())) > 1:
        raise InvalidInputError(
            f"step {task['node']!r} maps over lists of different lengths: "
            + ", ".join(f"{k}={v}" for k, v in lengths.items())
        )


# ------------------------------------------------------------------ running


class StepTimeout(Exception):
    """The step ran longer than its `timeout`."""


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """KFP has no per-task timeout, so the pod enforces the step's own."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise StepTimeout(f"ran longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _source(task: Mapping[str, Any]) -> str | None:
    """The step's source file in the image: relative paths are under the task's `root`
    (the image's working directory unless the compiler was told otherwise)."""
    source = task.get("source")
    if not source:
        return None
    path = Path(task.get("root") or ".") / source
    return str(path.resolve())


@dataclasses.dataclass(frozen=True)
class Ran:
    """One step run in a pod: what ran, how it went, and which item of a fan-out it was."""

    task: StepTask
    result: StepResult
    index: int | None


def pipeline_params(task: Mapping[str, Any], given: ExecutorInput) -> dict[str, str]:
    """The pipeline parameters this task was given, as `-p` would take them (the same
    values in every pod of a KFP run)."""
    found: dict[str, str] = {}
    for layout in task["inputs"].values():
        if "param" in layout and layout.get("pipeline_param") and layout["param"] in given.params:
            found[layout["pipeline_param"]] = format_param(given.params[layout["param"]])
        of = str(layout.get("of") or "")
        if "item" in layout and of.startswith("param_") and of in given.params:
            found[of[len("param_") :]] = format_param(given.params[of])
    return found


def execute_step(
    task: Mapping[str, Any], given: ExecutorInput, store: Store, run: RunRecord
) -> Ran:
    """Run one step (one item of a fan-out) of `run` against `store`, as the worker runs
    it on one machine; a failure of the step is in the result, not raised."""
    inputs = _Inputs(store, run, given)
    index = inputs.item_index(task) if task.get("mapped") else None
    built = {name: inputs.build(layout, index) for name, layout in task["inputs"].items()}
    if task.get("mapped"):
        _check_lengths(task, built, store)
    unit = task["node"] if index is None else f"{task['node']}[{index}]"
    source = _source(task)
    step = import_step(task["ref"], source)
    step_task = StepTask(
        run_id=run.id,
        project_id=run.project_id,
        step_run_id=new_id(),
        node=task["node"],
        unit=unit,
        step_name=task["step"],
        step_ref=task["ref"],
        source_file=source,
        attempt=1,
        inputs=built,
        outputs=tuple((name, kind) for name, kind in task["outputs"]),
        cache_key=None,
        allow_pickle=bool(task.get("allow_pickle")),
        settings=store.settings,
    )
    # routed, the step's prints reach its log in the store (`hand_on` shows them after)
    with Heartbeat(store, run.id), _deadline(task.get("timeout")), routing():
        result = execute(step_task, store, step)
    return Ran(step_task, result, index)


def hand_on(
    task: Mapping[str, Any],
    given: ExecutorInput,
    store: Store,
    ran: Ran,
    recorded: Mapping[str, ArtifactRecord] | None = None,
) -> int:
    """What every pod does once its step ran: show the step's log, and either say why
    it failed (1) or write its outputs where KFP looks (0). `recorded` are the
    artifacts a treadle server recorded for the outputs, by name: their ids go into the
    output folders, so the steps that read them link to what the server holds."""
    _echo_log(store, ran.task.step_run_id)
    if not ran.result.ok:
        sys.stderr.write(ran.result.error or ran.result.error_line or "the step failed\n")
        return 1
    _write_outputs(task, given, store, ran.task, ran.result.outputs, ran.index, recorded or {})
    return 0


def run_step(
    task: Mapping[str, Any],
    given: ExecutorInput,
    *,
    job: str,
    job_name: str,
    settings: Settings,
) -> int:
    """Run one step (one item of a fan-out) as a KFP task, recorded in the store the
    settings name; 0 when it succeeded."""
    store, recording = open_pod_store(settings)
    try:
        run = ensure_run(store, run_id_for(job), task["pipeline"], job_name)
        ran = execute_step(task, given, store, run)
        code = hand_on(task, given, store, ran)
        if code == 0 and not recording:
            log.warning("treadle: step %s ran but was not recorded in treadle", ran.task.unit)
        return code
    finally:
        store.close()


def _echo_log(store: Store, step_run_id: str) -> None:
    """What the step printed, which the worker keeps in the store, also in the pod's log
    (where KFP shows it)."""
    try:
        log_uri = store.runs.get_step(step_run_id).log_uri
        if log_uri:
            sys.stdout.write(store.objects.get_bytes(store.objects.sha_of(log_uri)).decode())
            sys.stdout.flush()
    except TreadleError as exc:
        log.warning("treadle: the step's log cannot be shown: %s", exc)


def _write_outputs(
    task: Mapping[str, Any],
    given: ExecutorInput,
    store: Store,
    step_task: StepTask,
    outputs: Mapping[str, ArtifactInput],
    index: int | None,
    recorded: Mapping[str, ArtifactRecord],
) -> None:
    executor_output: dict[str, Any] = {"artifacts": {}, "parameterValues": {}}
    for name, kind in task["outputs"]:
        art = outputs[name]
        kept = recorded.get(name)
        same = kept is not None and kept.sha256 == art.sha256
        meta = {
            "artifact_id": kept.id if kept is not None and same else art.artifact_id,
            "name": name,
            "sha256": art.sha256,
            "materializer": art.materializer,
            "kind": kind or _recorded_kind(store, art),
            "python_type": _recorded_type(store, art),
            "node": step_task.node,
            "unit": step_task.unit,
            "index": index,
            "run_id": step_task.run_id,
            "step_run_id": (
                kept.producer_step_run_id or step_task.step_run_id
                if kept is not None and same
                else step_task.step_run_id
            ),
        }
        kfp_name = task.get("kfp_outputs", {}).get(name, name)
        folder = given.outputs.get(kfp_name)
        if folder is None:
            raise InvalidInputError(f"the executor input has no output artifact {name!r}")
        write_artifact(folder, store, art, meta)
        metadata: dict[str, Any] = {"treadle": meta}
        if meta["kind"] == "metrics" and art.materializer == "json":
            value = json.loads(store.objects.get_bytes(art.sha256))
            if isinstance(value, dict):
                metadata = {
                    str(k): float(v)
                    for k, v in value.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
        executor_output["artifacts"][kfp_name] = {
            "artifacts": [
                {"name": kfp_name, "uri": given.output_uris[kfp_name], "metadata": metadata}
            ]
        }
    for name in task.get("items", []):
        art = outputs[name]
        value = materializers.load(
            art.materializer, art.sha256, store.objects, allow_pickle=step_task.allow_pickle
        )
        try:
            numbers = list(range(len(value)))
        except TypeError:
            raise InvalidInputError(
                f"step {task['node']!r} output {name!r} is a {type(value).__name__}; "
                "a step maps over it, so it must be a list"
            ) from None
        executor_output["parameterValues"][ITEMS_PREFIX + name] = numbers
        target = given.output_params.get(ITEMS_PREFIX + name)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(numbers))
    if given.output_file is not None:
        given.output_file.parent.mkdir(parents=True, exist_ok=True)
        given.output_file.write_text(json.dumps(executor_output))


def _recorded_kind(store: Store, art: ArtifactInput) -> str:
    try:
        return store.artifacts.get_artifact(art.artifact_id).kind
    except NotFoundError:
        return "value"


def _recorded_type(store: Store, art: ArtifactInput) -> str:
    try:
        return store.artifacts.get_artifact(art.artifact_id).python_type
    except NotFoundError:
        return ""


def final_state(given: ExecutorInput) -> tuple[RunState, str | None]:
    """How the KFP run ended, from the exit task's status input, and its error."""
    status = given.params.get(STATUS_INPUT) or {}
    state_text = str(status.get("state", "")).upper()
    state = RunState.SUCCEEDED if state_text == "SUCCEEDED" else RunState.FAILED
    if state_text in ("CANCELED", "CANCELLED", "CANCELING"):
        state = RunState.CANCELLED
    error = None
    if state is not RunState.SUCCEEDED:
        error = str((status.get("error") or {}).get("message") or state_text or "failed")
    return state, error


def finish_run(given: ExecutorInput, *, job: str, settings: Settings) -> int:
    """The exit task: set the treadle run of this KFP job to how the job ended."""
    state, error = final_state(given)
    store, recording = open_pod_store(settings)
    try:
        if not recording:
            return 0
        project = store.projects.ensure_project(settings.project, settings.user)
        try:
            store.runs.get_run(run_id_for(job), project.id)
        except NotFoundError:
            return 0  # no step recorded anything
        store.runs.set_run_state(run_id_for(job), state, at=time.time(), error=error)
        return 0
    finally:
        store.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The pod's arguments (the same for this module and `treadle.cli.kfp_pod`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--executor-input", required=True, help="KFP's executor input JSON.")
    parser.add_argument("--task", help="The task JSON the compiler wrote (omit with --finish).")
    parser.add_argument("--job", default="local", help="The KFP pipeline job uuid.")
    parser.add_argument("--job-name", default="", help="The KFP pipeline job name.")
    parser.add_argument("--pipeline", default="", help="The treadle pipeline (with --finish).")
    parser.add_argument("--finish", action="store_true", help="Record how the KFP run ended.")
    args = parser.parse_args(argv)
    if not args.finish and not args.task:
        parser.error("--task is required")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return args


def guarded(work: Callable[[], int]) -> int:
    """The pod's exit code for `work`: a treadle error is 2 with its message and hint, any
    other failure 1 with its traceback."""
    try:
        return work()
    except TreadleError as exc:
        sys.stderr.write(f"error: {exc.message}\n" + (f"  {exc.hint}\n" if exc.hint else ""))
        return 2
    except Exception:
        traceback.print_exc()
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()

    def work() -> int:
        given = ExecutorInput.parse(args.executor_input)
        if args.finish:
            return finish_run(given, job=args.job, settings=settings)
        task = json.loads(args.task)
        return run_step(task, given, job=args.job, job_name=args.job_name, settings=settings)

    return guarded(work)


if __name__ == "__main__":
    sys.exit(main())
