"""The pipeline graph: nodes, their input bindings, and pure helpers over them.

No I/O here: planning, validation and hashing work the same in a thread, a process,
a Ray worker or a Kubeflow pod.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from treadle.errors import DefinitionError


@dataclasses.dataclass(frozen=True)
class Ref:
    """The value of output `output` of node `node` (for a map node: the list of them)."""

    node: str
    output: str


@dataclasses.dataclass(frozen=True)
class Literal:
    """A constant given in the pipeline body (JSON-able)."""

    value: Any


@dataclasses.dataclass(frozen=True)
class Collect:
    """A list assembled from several bindings, e.g. `join([a, b, c])`."""

    items: tuple[Ref | Literal, ...]


Binding = Ref | Literal | Collect


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    step: str
    ref: str
    code_hash: str
    inputs: Mapping[str, Binding]
    outputs: tuple[str, ...]
    options: Mapping[str, Any]
    mapped: tuple[str, ...] = ()

    @property
    def is_map(self) -> bool:
        return bool(self.mapped)

    def upstream(self) -> Iterator[str]:
        for binding in self.inputs.values():
            yield from refs_of(binding)


def refs_of(binding: Binding) -> Iterator[str]:
    if isinstance(binding, Ref):
        yield binding.node
    elif isinstance(binding, Collect):
        for item in binding.items:
            if isinstance(item, Ref):
                yield item.node


@dataclasses.dataclass(frozen=True)
class Graph:
    name: str
    nodes: Mapping[str, Node]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def downstream(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {name: set() for name in self.nodes}
        for node in self:
            for up in node.upstream():
                out[up].add(node.name)
        return out


def check(graph: Graph) -> list[str]:
    """Validate references and acyclicity; return the nodes in a topological order."""
    for node in graph:
        for input_name, binding in node.inputs.items():
            for up in refs_of(binding):
                if up not in graph.nodes:
                    raise DefinitionError(
                        f"step {node.name!r} input {input_name!r} refers to unknown step {up!r}"
                    )
                for ref in _refs(binding):
                    if ref.node == up and ref.output not in graph.nodes[up].outputs:
                        raise DefinitionError(
                            f"step {node.name!r} input {input_name!r} refers to output "
                            f"{ref.output!r}, which step {up!r} does not have"
                        )
    return topological_order(graph)


def _refs(binding: Binding) -> Iterator[Ref]:
    if isinstance(binding, Ref):
        yield binding
    elif isinstance(binding, Collect):
        yield from (i for i in binding.items if isinstance(i, Ref))


def topological_order(graph: Graph) -> list[str]:
    """Kahn's algorithm, stable in definition order; a cycle is a DefinitionError."""
    indegree = {name: 0 for name in graph.nodes}
    for node in graph:
        indegree[node.name] = len(set(node.upstream()))
    downstream = graph.downstream()
    ready = [name for name, d in indegree.items() if d == 0]
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for nxt in sorted(downstream[name], key=list(graph.nodes).index):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(graph.nodes):
        stuck = [n for n in graph.nodes if n not in order]
        raise DefinitionError(
            f"pipeline {graph.name!r} has a cycle through steps {', '.join(map(repr, stuck))}",
            "a step cannot depend, directly or not, on its own output",
        )
    return order


def _binding_spec(binding: Binding, with_values: bool) -> Any:
    if isinstance(binding, Ref):
        return {"ref": [binding.node, binding.output]}
    if isinstance(binding, Literal):
        return {"literal": binding.value} if with_values else {"literal": True}
    return {"collect": [_binding_spec(i, with_values) for i in binding.items]}


def to_spec(graph: Graph, *, with_values: bool = False) -> dict[str, Any]:
    """A JSON-able description of the graph. Without values, literals are masked so
    that runs of the same code with other parameters share a pipeline version."""
    return {
        "name": graph.name,
        "nodes": [
            {
                "name": n.name,
                "step": n.step,
                "ref": n.ref,
                "code_hash": n.code_hash,
                "inputs": {k: _binding_spec(v, with_values) for k, v in n.inputs.items()},
                "outputs": list(n.outputs),
                "options": dict(n.options),
                "mapped": list(n.mapped),
            }
            for n in graph
        ],
    }


def canonical_hash(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def version_hash(graph: Graph) -> str:
    """The pipeline version: its structure, each step's code and options."""
    return canonical_hash(to_spec(graph))


def ready_nodes(graph: Graph, done: Iterable[str], started: Iterable[str]) -> list[str]:
    """Nodes not yet started whose upstream nodes are all done, in definition order."""
    done_set, started_set = set(done), set(started)
    return [
        n.name
        for n in graph
        if n.name not in started_set and all(u in done_set for u in n.upstream())
    ]


def blocked_by(graph: Graph, failed: Iterable[str]) -> set[str]:
    """Every node downstream of a failed one (they cannot run this time)."""
    downstream = graph.downstream()
    blocked: set[str] = set()
    stack = list(failed)
    while stack:
        for nxt in downstream[stack.pop()]:
            if nxt not in blocked:
                blocked.add(nxt)
                stack.append(nxt)
    return blocked
