"""A run's graph laid out for an SVG drawn on the server: steps in columns by depth,
edges as curves from an output to the inputs that use it. Pure: spec and step runs in,
boxes and edges out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from treadle.store.records import StepRunRecord

WIDTH, HEIGHT, GAP_X, GAP_Y, PAD = 176, 56, 64, 22, 12
ARC = 18
"""How far above the boxes an edge that skips columns bends, per column skipped."""


@dataclasses.dataclass(frozen=True)
class Box:
    name: str
    x: int
    y: int
    state: str
    """A step state (SUCCEEDED, CACHED, FAILED…) or NOT_RUN."""
    cached: bool
    duration: float | None
    attempts: int
    step_run_id: str | None


@dataclasses.dataclass(frozen=True)
class Edge:
    path: str
    label: str


@dataclasses.dataclass(frozen=True)
class Drawing:
    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int


def _refs(binding: Any) -> Iterator[tuple[str, str]]:
    if isinstance(binding, Mapping):
        if "ref" in binding:
            node, output = binding["ref"]
            yield str(node), str(output)
        for item in binding.get("collect", ()):
            yield from _refs(item)


def layout(spec: Mapping[str, Any], steps: Sequence[StepRunRecord]) -> Drawing:
    nodes = [n for n in spec.get("nodes", []) if isinstance(n, Mapping)]
    names = [str(n["name"]) for n in nodes]
    upstream: dict[str, list[tuple[str, str]]] = {}
    for node in nodes:
        pairs = []
        for input_name, binding in (node.get("inputs") or {}).items():
            pairs += [(up, f"{output} → {input_name}") for up, output in _refs(binding)]
        upstream[str(node["name"])] = [(u, label) for u, label in pairs if u in names]
    depth: dict[str, int] = {}
    for name in names:  # the spec lists nodes in a topological order
        depth[name] = 1 + max((depth.get(u, 0) for u, _ in upstream[name]), default=-1)
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth[name], []).append(name)
    latest: dict[str, StepRunRecord] = {}
    attempts: dict[str, int] = {}
    for step in steps:
        attempts[step.node] = attempts.get(step.node, 0) + 1
        if step.node not in latest or step.started_at >= latest[step.node].started_at:
            latest[step.node] = step
    skips = [depth[name] - depth[up] - 1 for name in names for up, _ in upstream[name]]
    top = PAD + ARC * max([s for s in skips if s > 0], default=0)
    place: dict[str, tuple[int, int]] = {}
    boxes = []
    for column, members in sorted(columns.items()):
        for row, name in enumerate(members):
            x, y = PAD + column * (WIDTH + GAP_X), top + row * (HEIGHT + GAP_Y)
            place[name] = (x, y)
            run = latest.get(name)
            boxes.append(
                Box(
                    name=name,
                    x=x,
                    y=y,
                    state=run.state.value if run else "NOT_RUN",
                    cached=bool(run and run.cached_from),
                    duration=run.duration if run else None,
                    attempts=attempts.get(name, 0),
                    step_run_id=run.id if run else None,
                )
            )
    edges = []
    for name in names:
        x2, y2 = place[name]
        for up, label in upstream[name]:
            x1, y1 = place[up]
            skipped = depth[name] - depth[up] - 1
            if skipped > 0:  # over the boxes between, from the top of one to the other
                sx, sy, ex, ey = x1 + WIDTH * 2 // 3, y1, x2 + WIDTH // 3, y2
                lift = min(sy, ey) - ARC * skipped - 4
                path = f"M{sx},{sy} C{sx},{lift} {ex},{lift} {ex},{ey}"
            else:
                sx, sy, ex, ey = x1 + WIDTH, y1 + HEIGHT // 2, x2, y2 + HEIGHT // 2
                bend = GAP_X // 2
                path = f"M{sx},{sy} C{sx + bend},{sy} {ex - bend},{ey} {ex},{ey}"
            edges.append(Edge(path, label))
    tallest = max((len(m) for m in columns.values()), default=0)
    width = PAD * 2 + len(columns) * WIDTH + max(len(columns) - 1, 0) * GAP_X
    height = top + PAD + tallest * HEIGHT + max(tallest - 1, 0) * GAP_Y
    return Drawing(boxes, edges, width, height)
