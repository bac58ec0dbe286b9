"""Pure planning functions: cache keys, which steps are ready, what a failure blocks."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from treadle.dsl.graph import Collect, Graph, Literal, Node, Ref, blocked_by, ready_nodes
from treadle.engine.cache import cache_key
from treadle.engine.task import ArtifactInput, TaskInput


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _artifact(content: str, artifact_id: str = "a1", index: int | None = None) -> TaskInput:
    sha = _sha(content)
    return TaskInput(
        artifact=ArtifactInput(artifact_id, sha, f"treadle-object:sha256:{sha}", "json", index)
    )


def _node(**changes: Any) -> Node:
    base = Node(
        name="train",
        step="train",
        ref="pkg.mod:train",
        code_hash=_sha("def train(data, c): ..."),
        inputs={"data": Ref("load", "output"), "c": Literal(0.5)},
        outputs=("output",),
        options={"version": None, "environment": ["numpy>=1.24"], "retries": 0},
    )
    return dataclasses.replace(base, **changes)


def _inputs(data: str = "rows", c: Any = 0.5) -> dict[str, TaskInput]:
    return {"data": _artifact(data), "c": TaskInput(value=c)}


def _options(**changes: Any) -> dict[str, Any]:
    return {"version": None, "environment": ["numpy>=1.24"], "retries": 0, **changes}


def test_same_node_and_inputs_give_the_same_key() -> None:
    assert cache_key(_node(), _inputs()) == cache_key(_node(), _inputs())


def test_key_is_by_content_not_by_artifact_record() -> None:
    # The same bytes recorded twice (two artifact ids) are the same input.
    first = {"data": _artifact("rows", "id-1"), "c": TaskInput(value=0.5)}
    second = {"data": _artifact("rows", "id-2"), "c": TaskInput(value=0.5)}
    assert cache_key(_node(), first) == cache_key(_node(), second)


@pytest.mark.parametrize(
    ("node_changes", "inputs"),
    [
        ({"code_hash": _sha("def train(data, c): return 1")}, _inputs()),
        ({"options": _options(version="2")}, _inputs()),
        ({"options": _options(environment=["numpy>=2.0"])}, _inputs()),
        ({"options": _options(environment=["numpy>=1.24", "scipy"])}, _inputs()),
        ({"step": "train_v2"}, _inputs()),
        ({"outputs": ("model", "score")}, _inputs()),
        ({}, _inputs(data="other rows")),
        ({}, _inputs(c=0.25)),
        ({}, _inputs(c="0.5")),
        ({}, {**_inputs(), "extra": TaskInput(value=1)}),
    ],
    ids=[
        "code",
        "version",
        "environment",
        "environment-added",
        "step-name",
        "outputs",
        "input-sha",
        "literal",
        "literal-type",
        "extra-input",
    ],
)
def test_key_changes_with_what_the_result_depends_on(
    node_changes: dict[str, Any], inputs: dict[str, TaskInput]
) -> None:
    assert cache_key(_node(**node_changes), inputs) != cache_key(_node(), _inputs())


def test_key_ignores_options_that_do_not_change_the_result() -> None:
    changed = _node(
        options=_options(retries=5, timeout=30.0, retry_delay=0.1, resources={"cpu": 2})
    )
    assert cache_key(changed, _inputs()) == cache_key(_node(), _inputs())


def test_environment_order_does_not_matter() -> None:
    a = _node(options=_options(environment=["numpy>=1.24", "scipy>=1.10"]))
    b = _node(options=_options(environment=["scipy>=1.10", "numpy>=1.24"]))
    assert cache_key(a, _inputs()) == cache_key(b, _inputs())


def test_node_name_does_not_matter_only_the_step() -> None:
    # A renamed call site (train_2) of the same step with the same inputs is the same work.
    assert cache_key(_node(name="train_2"), _inputs()) == cache_key(_node(), _inputs())


def test_fan_out_item_is_keyed_by_its_own_hash() -> None:
    node = _node(mapped=("data",))
    old_list, new_list = _sha("[1,2,3]"), _sha("[1,2,9]")
    item_hashes = {
        (old_list, 0): _sha("1"),
        (new_list, 0): _sha("1"),
        (old_list, 2): _sha("3"),
        (new_list, 2): _sha("9"),
    }

    def item(list_content: str, index: int) -> dict[str, TaskInput]:
        return {"data": _artifact(list_content, index=index), "c": TaskInput(value=0.5)}

    # An unchanged item of a changed list keeps its key; the changed item does not.
    assert cache_key(node, item("[1,2,3]", 0), item_hashes) == cache_key(
        node, item("[1,2,9]", 0), item_hashes
    )
    assert cache_key(node, item("[1,2,3]", 2), item_hashes) != cache_key(
        node, item("[1,2,9]", 2), item_hashes
    )
    # Without an item hash, the list's hash and the index identify the item.
    assert cache_key(node, item("[1,2,3]", 0)) != cache_key(node, item("[1,2,9]", 0))
    assert cache_key(node, item("[1,2,3]", 0)) != cache_key(node, item("[1,2,3]", 1))


def test_joined_inputs_are_keyed_in_order() -> None:
    node = _node(inputs={"values": Collect((Ref("a", "output"), Ref("b", "output")))})

    def joined(*contents: str) -> dict[str, TaskInput]:
        return {"values": TaskInput(items=tuple(_artifact(c) for c in contents))}

    assert cache_key(node, joined("x", "y")) == cache_key(node, joined("x", "y"))
    assert cache_key(node, joined("x", "y")) != cache_key(node, joined("y", "x"))
    assert cache_key(node, joined("x", "y")) != cache_key(node, joined("x", "y", "z"))


# -- ready_nodes and blocked_by --------------------------------------------------------


def _plain(name: str, *upstream: str) -> Node:
    return Node(
        name=name,
        step=name,
        ref=f"hand_built:{name}",
        code_hash="0" * 64,
        inputs={f"from_{u}": Ref(u, "output") for u in upstream},
        outputs=("output",),
        options={},
    )


@pytest.fixture
def graph() -> Graph:
    """load -> clean -> train -> report, load -> profile, and an independent fetch;
    train also joins profile's output through a Collect."""
    train = dataclasses.replace(
        _plain("train", "clean"),
        inputs={
            "data": Ref("clean", "output"),
            "extras": Collect((Ref("profile", "output"), Literal(1))),
        },
    )
    return Graph(
        "plan",
        {
            "load": _plain("load"),
            "clean": _plain("clean", "load"),
            "profile": _plain("profile", "load"),
            "train": train,
            "report": _plain("report", "train"),
            "fetch": _plain("fetch"),
        },
    )


def test_ready_nodes_at_start_are_the_sources_in_definition_order(graph: Graph) -> None:
    assert ready_nodes(graph, done=[], started=[]) == ["load", "fetch"]


def test_ready_nodes_excludes_started_ones(graph: Graph) -> None:
    assert ready_nodes(graph, done=[], started=["load"]) == ["fetch"]
    assert ready_nodes(graph, done=["load"], started=["load", "fetch"]) == ["clean", "profile"]


def test_node_waits_for_every_upstream_including_collected_ones(graph: Graph) -> None:
    started = ["load", "fetch", "clean", "profile"]
    assert ready_nodes(graph, done=["load", "clean"], started=started) == []
    assert ready_nodes(graph, done=["load", "clean", "profile"], started=started) == ["train"]


def test_everything_done_leaves_nothing_ready(graph: Graph) -> None:
    names = list(graph.nodes)
    assert ready_nodes(graph, done=names, started=names) == []


def test_blocked_by_is_everything_downstream_of_a_failure(graph: Graph) -> None:
    assert blocked_by(graph, ["clean"]) == {"train", "report"}
    assert blocked_by(graph, ["profile"]) == {"train", "report"}
    assert blocked_by(graph, ["load"]) == {"clean", "profile", "train", "report"}
    assert blocked_by(graph, ["report"]) == set()
    assert blocked_by(graph, ["fetch"]) == set()
    assert blocked_by(graph, []) == set()
    assert blocked_by(graph, ["fetch", "clean"]) == {"train", "report"}
