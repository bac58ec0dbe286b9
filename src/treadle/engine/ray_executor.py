"""The Ray executor: each step attempt is a Ray task, on a cluster or a local Ray.

The task carries a `StepTask` (plain data) and runs `worker.execute` on a Ray worker,
which records the step's state changes itself, exactly as a thread or a worker process
does. The step's code is never pickled: the folder a step comes from (the unpacked
pipeline package of a deployed version, or the pipeline's folder for an ad-hoc run) is
zipped with the files a package would hold, uploaded to the cluster once per content,
and becomes the task's `runtime_env` working directory; the worker imports the step
from there by its reference.

Ray is an optional extra (`pip install 'treadle[ray]'`): nothing here imports it until
a run asks for this executor.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import site
import socket
import sys
import sysconfig
import threading
import time
import zipfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from treadle.config import Settings
from treadle.dsl import Step
from treadle.engine import capture, worker
from treadle.engine.task import StepResult, StepTask
from treadle.errors import ConfigError, DefinitionError, NotFoundError
from treadle.packaging.package import collect_files
from treadle.store import Store, shared_store
from treadle.types import StepState

CODE_MANIFEST = "treadle-code.json"
"""Written first in every code zip, so the zip never has a single top-level folder
(Ray would unwrap one, moving the files away from their import paths)."""
REPIN_SECONDS = 60.0
"""How often a run re-checks that its code is still on the cluster: Ray deletes
uploaded packages that no job uses, and a long step can outlast its pin."""
CANCEL_WAIT_SECONDS = 10.0
"""How long abandoning a task waits for Ray to confirm it is cancelled."""

_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(|[kKMGTP]i?)B?\s*")
_FACTORS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def memory_bytes(text: str | int | float, step: str) -> int:
    """A memory hint (`512Mi`, `2Gi`, `4G`, `1.5GiB` or a number of bytes) in bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        found = _MEMORY.fullmatch(str(text))
        if found is None:
            raise DefinitionError(
                f"step {step!r}: resources memory {text!r} is not a size",
                "write it like '512Mi', '2Gi' or '4G' (or a number of bytes)",
            )
        value, unit = float(found.group(1)), found.group(2)
    return int(value * _FACTORS[unit])


def ray_resources(step: Step[Any, Any]) -> dict[str, Any]:
    """The step's `resources` hints as Ray task options: num_cpus, num_gpus, memory.
    A step without hints takes Ray's default for a task (one CPU)."""
    hints = step.options.resources
    out: dict[str, Any] = {}
    for hint, key, value in (("cpu", "num_cpus", hints.cpu), ("gpu", "num_gpus", hints.gpu)):
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise DefinitionError(
                f"step {step.name!r}: resources {hint}={value!r} is not a count",
                f"give {hint} as a number, 0 or more (fractions allowed)",
            )
        out[key] = float(value)
    if hints.memory is not None:
        out["memory"] = memory_bytes(hints.memory, step.name)
    return out


# -- where a step's code comes from ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Located:
    """A step whose code travels with the run: the folder shipped as the working
    directory, the step's file inside it, and the reference the worker imports."""

    root: Path
    relative: str
    ref: str


@functools.cache
def _installed_prefixes() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return tuple(str(Path(p).resolve()) + os.sep for p in paths if p)


def locate(step: Step[Any, Any], packages: Path) -> Located | None:
    """Where `step`'s code is shipped from, or None when it is installed (treadle itself,
    site-packages) and the cluster's environment must provide it."""
    module_name = step.fn.__module__
    if module_name.partition(".")[0] == "treadle":
        return None
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        raise DefinitionError(
            f"step {step.name!r} comes from {module_name}, which has no file: Ray workers "
            "load steps from files",
            "define the step in a .py file next to the pipeline",
        )
    path = Path(file).resolve()
    if str(path).startswith(_installed_prefixes()):
        return None
    if path.is_relative_to(packages):
        # a deployed version: its whole unpacked package, so its own modules import
        root = packages / path.relative_to(packages).parts[0]
    elif module_name.startswith("treadle_user_") or module_name == "__main__":
        root = path.parent
    else:  # imported by name: the folder the name is importable from
        depth = module_name.count(".") + (path.name == "__init__.py")
        root = path.parents[depth]
    qualname = step.ref.partition(":")[2]
    # a script's `__main__` is the Ray worker's own on the other side: load it by file
    ref = f"treadle_user_{path.stem}_main:{qualname}" if module_name == "__main__" else step.ref
    return Located(root, path.relative_to(root).as_posix(), ref)


def code_zip(root: Path, must_hold: set[str]) -> bytes:
    """The files of `root` a pipeline package would hold, as a zip with fixed
    timestamps (the same code gives the same bytes, so it is uploaded once)."""
    files = collect_files(root)
    missing = sorted(must_hold - set(files))
    if missing:
        raise ConfigError(
            f"{root / missing[0]} defines a step but is not shipped to Ray workers "
            "(hidden or build folders are left out)",
            "move the step's module next to the pipeline",
        )
    listing = {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [(CODE_MANIFEST, json.dumps({"files": listing}, sort_keys=True).encode())]
        for name, data in [*entries, *sorted(files.items())]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


class _Shipment:
    """One code zip on the cluster, under a content-addressed URI."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.uri = f"gcs://_ray_pkg_{hashlib.sha256(data).hexdigest()[:40]}.zip"
        self.checked = 0.0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Upload unless the cluster holds it; pin it against Ray's clean-up."""
        with self._lock:
            if time.monotonic() - self.checked < REPIN_SECONDS:
                return
            # Ray's public API uploads local folders only for a whole job (ray.init);
            # per task it takes URIs, so the zip goes where Ray keeps its own uploads.
            try:
                from ray._private.runtime_env import packaging

                packaging.pin_runtime_env_uri(self.uri)
                exists = packaging.package_exists(self.uri)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    f"this Ray cannot take uploaded code the way treadle sends it: {exc}",
                    "use the Ray version treadle[ray] installs",
                ) from exc
            if not exists:
                packaging.upload_package_to_gcs(self.uri, self.data)
            self.checked = time.monotonic()


# -- the connection ---------------------------------------------------------------------

_connect_lock = threading.Lock()
_remote: list[Any] = []
"""`run_step` as a Ray remote function, made once per process."""


def connect(address: str | None) -> bool:
    """Connect this process to Ray once: to the cluster at `address`, or to a local Ray
    started here when no address is given. Returns True when the cluster is one this
    process started (so its size is all there is)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray, which is not installed",
            "pip install 'treadle[ray]'",
        ) from None
    with _connect_lock:
        if ray.is_initialized():
            return address is None
        common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                _reachable(address)
                ray.init(address=address, **common)
            else:
                ray.init(address="local", include_dashboard=False, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {address}: {exc}",
                "check --ray-address / RAY_ADDRESS (`auto` finds a cluster `ray start` "
                "began here); without one, a local Ray is started",
            ) from exc
    return address is None


def _reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nothing listens on: Ray itself keeps retrying for
    minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {exc}",
            "check --ray-address / RAY_ADDRESS and that the cluster is up (`ray status`)",
        ) from None


def _anchored(settings: Settings) -> Settings:
    """Settings whose local paths are absolute: a Ray worker runs in another folder."""
    changes: dict[str, Any] = {}
    if not settings.home.is_absolute():
        changes["home"] = settings.home.resolve()
    db = settings.db_url
    if db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        path = db.removeprefix("sqlite:///")
        if path and path != ":memory:":
            changes["db_url"] = f"sqlite:///{Path(path).resolve()}"
    if "://" not in settings.artifact_url and not Path(settings.artifact_url).is_absolute():
        changes["artifact_url"] = str(Path(settings.artifact_url).resolve())
    return settings.replace(**changes) if changes else settings


def _feasible(name: str, options: dict[str, Any], cluster: dict[str, float]) -> None:
    """Refuse a step no node of a local Ray can ever place (Ray would queue it forever)."""
    for key, resource, hint in (
        ("num_cpus", "CPU", "cpu"),
        ("num_gpus", "GPU", "gpu"),
        ("memory", "memory", "memory"),
    ):
        wanted = options.get(key)
        if wanted and wanted > cluster.get(resource, 0):
            raise ConfigError(
                f"step {name!r} asks for {hint}={wanted:g}, more than the local Ray has "
                f"({cluster.get(resource, 0):g})",
                "lower the step's resources, or give a cluster with --ray-address",
            )


# -- on the worker ----------------------------------------------------------------------


def run_step(task: StepTask) -> StepResult:
    """What a Ray task runs: one step attempt, recorded by the worker itself."""
    if task.source_file is not None and not os.path.isabs(task.source_file):
        # the shipped code (Ray's working directory) comes before any folder Ray adds
        # from the driver's machine
        here = os.getcwd()
        if not sys.path or sys.path[0] != here:
            sys.path.insert(0, here)
    with capture.routing():
        return worker.execute(task, shared_store(task.settings))


def _lost(task: StepTask, exc: BaseException) -> StepResult:
    """The step's Ray task ended without a result: its worker died, or Ray refused it."""
    said = str(exc).strip() or "no detail"
    line = f"the Ray task ended without a result: {type(exc).__name__}: {said.splitlines()[0]}"
    return StepResult(
        task.step_run_id,
        task.unit,
        ok=False,
        error=f"{line}\n{said}" if "\n" in said else line,
        error_line=line,
        recorded=False,
    )


# -- the executor -----------------------------------------------------------------------


@dataclasses.dataclass
class _Placement:
    call: Any
    """The remote function with this step's Ray options."""
    located: Located | None
    shipment: _Shipment | None


class RayExecutor:
    """Steps run as Ray tasks. Retries stay with the runner (Ray's are turned off), a
    timeout cancels the task and kills its worker, and resources hints become
    num_cpus / num_gpus / memory."""

    name = "ray"

    def __init__(self, store: Store, steps: dict[str, Step[Any, Any]]) -> None:
        settings = store.settings
        self._store = store
        self._settings = _anchored(settings)
        local = connect(settings.ray_address)
        import ray

        with _connect_lock:
            if not _remote:
                _remote.append(ray.remote(run_step))
        remote = _remote[0]
        cluster = ray.cluster_resources() if local else {}
        packages = (self._settings.home / "packages").resolve()
        located = {node: locate(step, packages) for node, step in steps.items()}
        shipments: dict[Path, _Shipment] = {}
        for root in sorted({loc.root for loc in located.values() if loc is not None}):
            held = {loc.relative for loc in located.values() if loc and loc.root == root}
            shipments[root] = _Shipment(code_zip(root, held))
        self._placements: dict[str, _Placement] = {}
        for node, step in steps.items():
            options = ray_resources(step)
            if local:
                _feasible(step.name, options, cluster)
            loc = located[node]
            shipment = shipments[loc.root] if loc is not None else None
            if shipment is not None:
                shipment.ensure()
                options["runtime_env"] = {"working_dir": shipment.uri}
            call = remote.options(name=node, max_retries=0, retry_exceptions=False, **options)
            self._placements[node] = _Placement(call, loc, shipment)
        self._running: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _prepared(self, task: StepTask) -> tuple[Any, StepTask]:
        placement = self._placements[task.node]
        sent = dataclasses.replace(task, settings=self._settings)
        if placement.shipment is not None and placement.located is not None:
            placement.shipment.ensure()
            sent = dataclasses.replace(
                sent, step_ref=placement.located.ref, source_file=placement.located.relative
            )
        return placement.call, sent

    def submit(self, task: StepTask) -> Future[StepResult]:
        call, sent = self._prepared(task)
        ref = call.remote(sent)
        future: Future[StepResult] = Future()
        with self._lock:
            self._running[task.step_run_id] = ref

        def finished(done: Future[StepResult]) -> None:
            with self._lock:
                self._running.pop(task.step_run_id, None)
            try:
                result = done.result()
            except BaseException as exc:
                result = _lost(task, exc)
            if future.set_running_or_notify_cancel():
                future.set_result(result)

        ref.future().add_done_callback(finished)
        return future

    def abandon(self, task: StepTask, future: Future[StepResult]) -> None:
        """Cancel the task (killing its worker if it runs). A task still queued in Ray
        has no step run yet: one is recorded RUNNING for the runner to end, so a
        timeout or an interrupt shows on the step as it does with local threads."""
        with self._lock:
            ref = self._running.pop(task.step_run_id, None)
        future.cancel()
        if ref is None:
            return
        import ray

        ray.cancel(ref, force=True)
        # once the reference resolves the worker is gone or never began: no race below
        ray.wait([ref], timeout=CANCEL_WAIT_SECONDS)
        try:
            self._store.runs.get_step(task.step_run_id)
        except NotFoundError:
            self._store.runs.start_step(task.step_run(StepState.RUNNING, time.time()))

    def shutdown(self, wait: bool = True) -> None:
        """The connection stays for the next run (starting Ray takes seconds); without
        `wait`, tasks still out are cancelled and their workers killed."""
        if wait:
            return
        with self._lock:
            refs = list(self._running.values())
            self._running.clear()
        if refs:
            import ray

            for ref in refs:
                ray.cancel(ref, force=True)
