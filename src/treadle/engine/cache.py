"""Cache keys: a step's code and declared version, its resolved input hashes, its
parameters and its declared environment. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from treadle.dsl.graph import Node, canonical_hash
from treadle.engine.task import TaskInput


def input_fingerprint(value: TaskInput, item_hashes: Mapping[tuple[str, int], str]) -> Any:
    """What an input contributes to the key: content hashes for artifacts, values for
    constants. An item of a list artifact is identified by the item's own hash when the
    runner could compute it, so one changed item re-runs only its own fan-out step."""
    if value.artifact is not None:
        art = value.artifact
        if art.index is None:
            return {"sha256": art.sha256}
        return {"item": item_hashes.get((art.sha256, art.index), f"{art.sha256}[{art.index}]")}
    if value.items is not None:
        return [input_fingerprint(i, item_hashes) for i in value.items]
    return {"value": value.value}


def cache_key(
    node: Node,
    inputs: Mapping[str, TaskInput],
    item_hashes: Mapping[tuple[str, int], str] | None = None,
) -> str:
    hashes = item_hashes or {}
    return canonical_hash(
        {
            "code": node.code_hash,
            "step": node.step,
            "version": node.options.get("version"),
            "environment": sorted(node.options.get("environment") or []),
            "outputs": list(node.outputs),
            "inputs": {k: input_fingerprint(v, hashes) for k, v in sorted(inputs.items())},
        }
    )
