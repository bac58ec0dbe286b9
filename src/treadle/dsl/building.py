"""Tracing a pipeline body: each step call becomes a node; handles stand for outputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from treadle.dsl import context
from treadle.dsl.graph import Binding, Collect, Graph, Literal, Node, Ref, check
from treadle.dsl.step import Step, unmapped
from treadle.dsl.typecheck import (
    accepts_literal,
    compatible,
    describe,
    is_list_like,
    list_item_type,
)
from treadle.errors import DefinitionError


class OutputHandle:
    """Stands for a step output while the pipeline body is traced; the value exists only
    when the pipeline runs."""

    __slots__ = ("annotation", "mapped", "node", "output")

    def __init__(self, node: str, output: str, annotation: Any, mapped: bool) -> None:
        self.node = node
        self.output = output
        self.annotation = annotation
        self.mapped = mapped

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise DefinitionError(
            f"the output of step {self.node!r} is only known when the pipeline runs",
            "pass it to another step instead of using it in the pipeline body",
        )

    __bool__ = __iter__ = __len__ = __getitem__ = __lt__ = __gt__ = __add__ = _refuse
    __le__ = __ge__ = __eq__ = __ne__ = __sub__ = __mul__ = __truediv__ = _refuse
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<output {self.node}.{self.output}{'[*]' if self.mapped else ''}>"


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class GraphBuilder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[str, Node] = {}
        self._steps: dict[str, Step[Any, Any]] = {}
        self._next: dict[str, int] = {}
        """The next suffix to try per step name, so naming n calls of one step is O(n)."""

    def steps(self) -> dict[str, Step[Any, Any]]:
        return dict(self._steps)

    def _unique(self, base: str) -> str:
        if base not in self.nodes:
            return base
        i = self._next.get(base, 2)
        while f"{base}_{i}" in self.nodes:
            i += 1
        self._next[base] = i + 1
        return f"{base}_{i}"

    def add_call(
        self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, mapped: bool
    ) -> Any:
        node_name = self._unique(step.name)
        try:
            bound = step.signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise DefinitionError(f"step {node_name!r}: {exc}") from None
        inputs: dict[str, Binding] = {}
        mapped_inputs: list[str] = []
        for pname, param in step.signature.parameters.items():
            expected = step.input_types[pname]
            if pname not in bound.arguments:
                if param.default is param.empty:
                    raise DefinitionError(
                        f"step {node_name!r} is missing input {pname!r}",
                        f"pass {pname}=... where the pipeline calls {step.name}()",
                    )
                value = param.default
            else:
                value = bound.arguments[pname]
            fan_out = (
                mapped
                and not isinstance(value, unmapped)
                and (isinstance(value, OutputHandle | list | tuple))
            )
            if isinstance(value, unmapped):
                value = value.value
            if fan_out:
                mapped_inputs.append(pname)
                inputs[pname] = self._bind_mapped(node_name, pname, value, expected)
            else:
                inputs[pname] = self._bind(node_name, pname, value, expected)
        if mapped and not mapped_inputs:
            raise DefinitionError(
                f"{step.name}.map(...) got nothing to fan out over",
                "pass a list or another step's list output",
            )
        node = Node(
            name=node_name,
            step=step.name,
            ref=step.ref,
            code_hash=step.code_hash,
            inputs=inputs,
            outputs=tuple(o.name for o in step.outputs),
            options=step.options_dict,
            mapped=tuple(mapped_inputs),
        )
        self.nodes[node_name] = node
        self._steps[node_name] = step
        handles = tuple(OutputHandle(node_name, o.name, o.annotation, mapped) for o in step.outputs)
        if not handles:
            return None
        if len(step.outputs) == 1 and step.outputs[0].name == "output":
            return handles[0]
        return handles

    def _bind(self, node: str, pname: str, value: Any, expected: Any) -> Binding:
        if isinstance(value, OutputHandle):
            return self._bind_handle(node, pname, value, expected)
        if isinstance(value, list | tuple) and any(isinstance(v, OutputHandle) for v in value):
            item_type = list_item_type(expected)
            items: list[Ref | Literal] = []
            for v in value:
                if isinstance(v, OutputHandle):
                    if v.mapped:
                        raise DefinitionError(
                            f"step {node!r} input {pname!r} mixes a mapped output into a list",
                            "pass the mapped output on its own",
                        )
                    items.append(self._bind_handle(node, pname, v, item_type))
                else:
                    items.append(self._literal(node, pname, v, Any))
            return Collect(tuple(items))
        return self._literal(node, pname, value, expected)

    def _bind_handle(self, node: str, pname: str, handle: OutputHandle, expected: Any) -> Ref:
        if handle.mapped:
            if not is_list_like(expected):
                raise DefinitionError(
                    f"step {node!r} input {pname!r} is {describe(expected)}, but "
                    f"{handle.node!r} is a mapped step whose outputs arrive as a list",
                    f"annotate {pname} as list[...]",
                )
            expected = list_item_type(expected)
        if not compatible(handle.annotation, expected):
            raise DefinitionError(
                f"step {node!r} input {pname!r} expects {describe(expected)}, but step "
                f"{handle.node!r} output {handle.output!r} is {describe(handle.annotation)}"
            )
        return Ref(handle.node, handle.output)

    def _bind_mapped(self, node: str, pname: str, value: Any, expected: Any) -> Binding:
        if isinstance(value, OutputHandle):
            if value.mapped:
                raise DefinitionError(
                    f"step {node!r} input {pname!r}: mapping over a mapped output is not supported",
                    "join it in a step first",
                )
            if not is_list_like(value.annotation):
                raise DefinitionError(
                    f"step {node!r} maps over {value.node!r} output {value.output!r}, which is "
                    f"{describe(value.annotation)}, not a list",
                    "annotate the producing step's return as list[...]",
                )
            if not compatible(list_item_type(value.annotation), expected):
                raise DefinitionError(
                    f"step {node!r} input {pname!r} expects {describe(expected)}, but the items "
                    f"of {value.node!r} output {value.output!r} are "
                    f"{describe(list_item_type(value.annotation))}"
                )
            return Ref(value.node, value.output)
        for item in value:
            if isinstance(item, OutputHandle):
                raise DefinitionError(
                    f"step {node!r} input {pname!r}: map over a list output, not a list of outputs"
                )
            self._literal(node, pname, item, expected)
        return Literal(list(value))

    def _literal(self, node: str, pname: str, value: Any, expected: Any) -> Literal:
        if not _json_able(value):
            raise DefinitionError(
                f"step {node!r} input {pname!r} got a {type(value).__name__} constant; "
                "constants must be JSON-able",
                "produce the value in a step and pass its output",
            )
        if not accepts_literal(value, expected):
            raise DefinitionError(
                f"step {node!r} input {pname!r} expects {describe(expected)}, got "
                f"{type(value).__name__} {value!r}"
            )
        return Literal(value)


@dataclasses.dataclass(frozen=True)
class Traced:
    """A traced pipeline body: the checked graph, the step behind each node, and what
    the body returned (handles of the pipeline's outputs, if any)."""

    graph: Graph
    steps: dict[str, Step[Any, Any]]
    returned: Any


def trace(name: str, body: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Traced:
    """Run a pipeline body with a fresh builder and check the graph it makes."""
    builder = GraphBuilder(name)
    token = context.activate(builder)
    try:
        returned = body(*args, **kwargs)
    finally:
        context.deactivate(token)
    graph = Graph(name, dict(builder.nodes))
    check(graph)
    return Traced(graph, builder.steps(), returned)
