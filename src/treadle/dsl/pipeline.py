"""`@pipeline`: a Python function whose body wires steps together.

The body is traced with the actual parameter values, so ordinary Python (loops,
conditions on parameters) shapes the graph. Tracing happens once at definition time
when every parameter has a default, so a type mismatch, a cycle or a missing input is
an error as soon as the module is imported.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from treadle.dsl import context
from treadle.dsl.building import Traced, trace
from treadle.dsl.typecheck import accepts_literal, describe, split_annotated
from treadle.errors import DefinitionError, InvalidInputError

P = ParamSpec("P")
R = TypeVar("R")

Runner = Callable[["Pipeline[Any, Any]", dict[str, Any]], Any]


def format_param(value: Any) -> str:
    """A parameter as the user would type it after `-p key=`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _parse_scalar(text: str, tp: Any, key: str) -> Any:
    base, _ = split_annotated(tp)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(base)
        if text.lower() in ("none", "null") and type(None) in arms:
            return None
        errors = []
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _parse_scalar(text, arm, key)
            except InvalidInputError as exc:
                errors.append(exc)
        raise errors[0] if errors else InvalidInputError(f"parameter {key!r}: bad value")
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is str:
            return text
        value = json.loads(text)
    except ValueError:
        if base in (Any, inspect.Parameter.empty):
            return text
        raise InvalidInputError(
            f"parameter {key!r} expects {describe(tp)}, got {text!r}",
            f"give it as -p {key}=<{describe(tp)}>",
        ) from None
    if not accepts_literal(value, tp):
        raise InvalidInputError(f"parameter {key!r} expects {describe(tp)}, got {text!r}")
    return value


class Pipeline(Generic[P, R]):
    """A pipeline. Calling it runs it (returning a Run handle) with the runner that the
    public `treadle.pipeline` decorator attaches; `build(**params)` only traces it."""

    def __init__(
        self,
        fn: Callable[P, R],
        name: str,
        runner: Runner | None,
        smoke: Mapping[str, Any] | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.runner = runner
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise DefinitionError(
                f"cannot resolve annotations of pipeline {name!r}: {exc}"
            ) from exc
        self.param_types = {p: hints.get(p, Any) for p in self.signature.parameters}
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        self.smoke: dict[str, Any] = self.resolve_params(dict(smoke or {})) if smoke else {}
        """Parameters for the quick run `treadle pipeline build` and `test` make: small
        data, few iterations. Checked like any parameters, when the pipeline is defined."""
        if all(p.default is not p.empty for p in self.signature.parameters.values()):
            self.build()  # definition-time validation

    @property
    def defaults(self) -> dict[str, Any]:
        return {
            k: p.default for k, p in self.signature.parameters.items() if p.default is not p.empty
        }

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, unknown or missing names and wrong types refused."""
        known = self.signature.parameters
        unknown = [k for k in params if k not in known]
        if unknown:
            raise InvalidInputError(
                f"pipeline {self.name!r} has no parameter {unknown[0]!r}",
                f"its parameters are: {', '.join(known) or '(none)'}",
            )
        resolved = {**self.defaults, **params}
        missing = [k for k in known if k not in resolved]
        if missing:
            raise InvalidInputError(
                f"pipeline {self.name!r} needs parameter {missing[0]!r}",
                f"give it with -p {missing[0]}=...",
            )
        for key, value in params.items():
            if not accepts_literal(value, self.param_types[key]):
                raise InvalidInputError(
                    f"parameter {key!r} expects {describe(self.param_types[key])}, "
                    f"got {type(value).__name__} {value!r}"
                )
        return {k: resolved[k] for k in known}

    def parse_params(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """Typed values from `-p key=value` strings, by the parameters' annotations."""
        known = self.signature.parameters
        for key in raw:
            if key not in known:
                raise InvalidInputError(
                    f"pipeline {self.name!r} has no parameter {key!r}",
                    f"its parameters are: {', '.join(known) or '(none)'}",
                )
        return {k: _parse_scalar(v, self.param_types[k], k) for k, v in raw.items()}

    def build(self, **params: Any) -> Traced:
        """Trace the body with these parameters (defaults for the rest)."""
        return trace(self.name, self.fn, (), self.resolve_params(params))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        if context.current() is not None:
            return self.fn(*args, **kwargs)  # a sub-pipeline: its steps join the caller's
        if args:
            raise InvalidInputError(
                f"call pipeline {self.name!r} with keyword parameters", f"e.g. {self.name}(c=0.5)"
            )
        if self.runner is None:
            raise DefinitionError(f"pipeline {self.name!r} has no runner attached")
        return self.runner(self, dict(kwargs))

    def __repr__(self) -> str:
        return f"<pipeline {self.name} ({self.ref})>"


@overload
def pipeline(fn: Callable[P, R], /) -> Pipeline[P, R]: ...
@overload
def pipeline(
    *,
    name: str | None = ...,
    runner: Runner | None = ...,
    smoke: Mapping[str, Any] | None = ...,
) -> Callable[[Callable[P, R]], Pipeline[P, R]]: ...


def pipeline(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    runner: Runner | None = None,
    smoke: Mapping[str, Any] | None = None,
) -> Pipeline[P, R] | Callable[[Callable[P, R]], Pipeline[P, R]]:
    """Make a function a pipeline. Its parameters are the pipeline's parameters;
    `smoke` gives the ones a smoke run uses (`treadle pipeline build` and `test`)."""

    def wrap(f: Callable[P, R]) -> Pipeline[P, R]:
        return Pipeline(f, name or f.__name__, runner, smoke)

    return wrap(fn) if fn is not None else wrap
