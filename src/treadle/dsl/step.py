"""`@step`: a typed Python function that treadle runs, caches, retries and records."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import textwrap
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from treadle.dsl import context
from treadle.dsl.typecheck import split_annotated
from treadle.errors import DefinitionError
from treadle.types import ArtifactKind

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Resources:
    """Hints for executors that place steps: Ray maps them to num_cpus/num_gpus/memory."""

    cpu: float | None = None
    gpu: float | None = None
    memory: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Everything about a step beyond the `@step` keywords."""

    cache: bool = True
    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    timeout: float | None = None
    resources: Resources = Resources()
    version: str | None = None
    environment: tuple[str, ...] = ()
    """Requirements the step declares (e.g. "scikit-learn>=1.4"); part of the cache key."""
    allow_pickle: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["resources"] = self.resources.as_dict()
        out["environment"] = list(self.environment)
        return out


@dataclasses.dataclass(frozen=True)
class Output:
    name: str
    annotation: Any

    @property
    def kind(self) -> ArtifactKind | None:
        return split_annotated(self.annotation)[1]


def _outputs_of(return_annotation: Any) -> tuple[Output, ...]:
    if return_annotation is inspect.Signature.empty:
        return (Output("output", Any),)
    if return_annotation is None or return_annotation is type(None):
        return ()
    base, _ = split_annotated(return_annotation)
    if isinstance(base, type) and issubclass(base, tuple) and hasattr(base, "_fields"):
        hints = typing.get_type_hints(base, include_extras=True)
        return tuple(Output(f, hints.get(f, Any)) for f in base._fields)
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if args and args[-1] is not Ellipsis:
            return tuple(Output(f"output_{i}", a) for i, a in enumerate(args))
    return (Output("output", return_annotation),)


def code_hash_of(fn: Callable[..., Any]) -> str:
    """Hash of the function's source (its bytecode where no source is available)."""
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = fn.__code__
        text = repr((code.co_code, code.co_consts, code.co_names))
    return hashlib.sha256(text.encode()).hexdigest()


def import_ref(fn: Callable[..., Any]) -> str:
    """`module:qualname`, the address a worker in another process imports the step by."""
    return f"{fn.__module__}:{fn.__qualname__}"


class Step(Generic[P, R]):
    """A step. Called inside a `@pipeline` body it adds a node and returns handles to its
    outputs; called anywhere else it is the plain function."""

    def __init__(self, fn: Callable[P, R], name: str, options: StepOptions) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.options = options
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise DefinitionError(
                f"cannot resolve the type annotations of step {name!r}: {exc}"
            ) from exc
        self.input_types = {
            p: hints.get(p, Any)
            for p, param in self.signature.parameters.items()
            if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        }
        for p, param in self.signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise DefinitionError(
                    f"step {name!r} takes *{p}; steps need named inputs", "name each input"
                )
        self.outputs = _outputs_of(hints.get("return", self.signature.return_annotation))
        self.ref = import_ref(fn)

    @functools.cached_property
    def options_dict(self) -> dict[str, Any]:
        """The options as recorded in the graph (computed once; nodes share it read-only)."""
        return self.options.as_dict()

    @functools.cached_property
    def code_hash(self) -> str:
        return code_hash_of(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from_builder = context.current()
        if from_builder is None:
            return self.fn(*args, **kwargs)
        return from_builder.add_call(self, args, kwargs, mapped=False)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        """Fan out: one step run per item of each list or upstream list output given.

        Scalars are passed to every run as they are; wrap a list in `unmapped(...)` to
        pass it whole. Passing the result to another step joins the runs' outputs into
        a list.
        """
        builder = context.current()
        if builder is None:
            raise DefinitionError(
                f"{self.name}.map(...) only works inside a @pipeline body",
                "call the function in a loop outside a pipeline",
            )
        return builder.add_call(self, args, kwargs, mapped=True)

    def configure(self, **changes: Any) -> Step[P, R]:
        """A copy with other options, e.g. `train.configure(retries=3)`."""
        name = changes.pop("name", self.name)
        return Step(self.fn, name, dataclasses.replace(self.options, **changes))

    def __repr__(self) -> str:
        return f"<step {self.name} ({self.ref})>"


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    name: str | None = ...,
    cache: bool | None = ...,
    retries: int | None = ...,
    timeout: float | None = ...,
    resources: Resources | Mapping[str, Any] | None = ...,
    version: str | None = ...,
    options: StepOptions | None = ...,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    cache: bool | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    resources: Resources | Mapping[str, Any] | None = None,
    version: str | None = None,
    options: StepOptions | None = None,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Make a function a pipeline step.

    Inputs and outputs are typed by the annotations; a return of `tuple[A, B]` or a
    NamedTuple gives several outputs. `cache` (default on) reuses outputs when code,
    inputs, params and environment are unchanged; `retries` re-runs a failing step
    with exponential backoff; `timeout` is in seconds; `version` is part of the cache
    key (bump it when a helper the step calls changes). Other settings go in `options`.
    """
    opts = options or StepOptions()
    changes: dict[str, Any] = {}
    if cache is not None:
        changes["cache"] = cache
    if retries is not None:
        if retries < 0:
            raise DefinitionError(f"retries must be 0 or more, got {retries}")
        changes["retries"] = retries
    if timeout is not None:
        if timeout <= 0:
            raise DefinitionError(f"timeout must be positive seconds, got {timeout}")
        changes["timeout"] = float(timeout)
    if resources is not None:
        changes["resources"] = (
            resources if isinstance(resources, Resources) else Resources(**dict(resources))
        )
    if version is not None:
        changes["version"] = str(version)
    opts = dataclasses.replace(opts, **changes)

    def wrap(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, name or f.__name__, opts)

    return wrap(fn) if fn is not None else wrap


@dataclasses.dataclass(frozen=True)
class unmapped:
    """Pass a list whole to every run of `step.map(...)` instead of fanning out over it."""

    value: Any
