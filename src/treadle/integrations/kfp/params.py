"""Which pipeline parameters can stay parameters on Kubeflow.

A treadle pipeline body runs with the parameters' values, so a parameter may shape the
graph (a loop count, a condition) or be transformed before a step sees it. On KFP a
pipeline parameter is only known when a run starts, after the graph is fixed. So each
parameter is probed: the body is traced again with that parameter changed. When the
graph keeps its shape and the only differences are step inputs that take the new value
as it is, those inputs are wired to a KFP pipeline parameter. Otherwise the parameter
is fixed at compile time, and the compiler says so.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from treadle.dsl import Pipeline, Traced
from treadle.dsl.graph import Collect, Literal, Ref
from treadle.dsl.typecheck import split_annotated

KFP_TYPES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "dict",
}


@dataclasses.dataclass(frozen=True)
class Probed:
    """The graph traced with the compile-time values, which step inputs read a pipeline
    parameter as it is, and why the other parameters are fixed."""

    traced: Traced
    values: dict[str, Any]
    runtime: dict[str, type]
    """Parameters that stay KFP pipeline parameters, with their Python type."""
    bindings: dict[tuple[str, str], str]
    """(node, input) -> the parameter it reads."""
    fixed: dict[str, str]
    """Parameter -> why it is fixed at compile time."""


def base_type(annotation: Any, value: Any) -> type | None:
    """The plain type a parameter has on KFP: from its annotation (without Optional or
    Annotated), else from its value; None when KFP has no such type."""
    base, _ = split_annotated(annotation)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(base) if a is not type(None)]
        base = arms[0] if len(arms) == 1 else Any
        origin = typing.get_origin(base)
    base = origin or base
    if base in (tuple, typing.Sequence):
        base = list
    if isinstance(base, type) and base in KFP_TYPES:
        return base
    if value is not None and type(value) in KFP_TYPES:
        return type(value)
    return None


def _changed(value: Any, kind: type) -> Any:
    if kind is bool:
        return not value
    if kind is int:
        return (value or 0) + 1
    if kind is float:
        return (value or 0.0) + 1.5
    if kind is str:
        return (value or "") + "~"
    if kind is list and value:
        return [*value, value[0]]
    if kind is dict and value:
        key, item = next(iter(value.items()))
        return {**value, f"{key}~": item}
    return None


def _shape(traced: Traced) -> list[Any]:
    def binding(b: Any) -> Any:
        if isinstance(b, Ref):
            return ("ref", b.node, b.output)
        if isinstance(b, Collect):
            return ("collect", tuple(binding(i) for i in b.items))
        return "literal"

    return [
        (n.name, n.ref, n.mapped, tuple((k, binding(v)) for k, v in n.inputs.items()))
        for n in traced.graph
    ]


def _literals(traced: Traced) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for node in traced.graph:
        for name, b in node.inputs.items():
            if isinstance(b, Literal):
                out[(node.name, name)] = b.value
            elif isinstance(b, Collect):
                out[(node.name, name)] = [
                    i.value if isinstance(i, Literal) else None for i in b.items
                ]
    return out


def probe(pipeline: Pipeline[Any, Any], params: Mapping[str, Any]) -> Probed:
    """Trace `pipeline` with `params` (defaults for the rest) and probe each parameter."""
    values = pipeline.resolve_params(params)
    traced = pipeline.build(**values)
    shape, literals = _shape(traced), _literals(traced)
    runtime: dict[str, type] = {}
    bindings: dict[tuple[str, str], str] = {}
    fixed: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            fixed[name] = "its value is None, which KFP parameters cannot hold"
            continue
        kind = base_type(pipeline.param_types[name], value)
        if kind is None:
            fixed[name] = f"KFP has no parameter type for {type(value).__name__}"
            continue
        other = _changed(value, kind)
        if other is None:
            fixed[name] = "its value is empty, so it cannot be probed"
            continue
        try:
            again = pipeline.build(**{**values, name: other})
        except Exception:
            fixed[name] = "the pipeline body refuses another value (it checks or uses it)"
            continue
        if _shape(again) != shape:
            fixed[name] = "it shapes the graph (steps or their wiring change with it)"
            continue
        moved = {k: v for k, v in _literals(again).items() if literals.get(k) != v}
        if not moved:
            fixed[name] = "no step reads it as it is"
            continue
        if any(v != other or literals[k] != value for k, v in moved.items()):
            fixed[name] = "the body computes step inputs from it"
            continue
        runtime[name] = kind
        for key in moved:
            bindings[key] = name
    return Probed(traced, values, runtime, bindings, fixed)
