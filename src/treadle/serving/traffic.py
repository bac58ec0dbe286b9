"""Traffic across the versions of a revision: weighted primaries (single or canary) and
shadows that see copies of requests but never answer them."""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Any

from treadle.errors import InvalidInputError
from treadle.models.format import Manifest
from treadle.models.signature import Signature
from treadle.registry import load_version
from treadle.store import Store
from treadle.store.records import ModelVersionRecord

ROLES = ("primary", "canary", "shadow")


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """One version in a revision: its role and share of the traffic."""

    version_id: str
    version: int
    role: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(
            str(data["version_id"]), int(data["version"]), str(data["role"]), float(data["weight"])
        )


def check_split(targets: Sequence[TargetSpec]) -> None:
    """The answering versions' weights must add up to 1; shadows weigh nothing."""
    answering = [t for t in targets if t.role != "shadow"]
    if not answering:
        raise InvalidInputError("a revision needs at least one version that answers")
    for t in targets:
        if t.role not in ROLES:
            raise InvalidInputError(f"unknown traffic role {t.role!r}", f"use {', '.join(ROLES)}")
        if not math.isfinite(t.weight) or t.weight < 0 or (t.role == "shadow" and t.weight != 0):
            raise InvalidInputError(f"version {t.version} has an invalid weight {t.weight}")
    total = sum(t.weight for t in answering)
    if abs(total - 1.0) > 1e-6:
        raise InvalidInputError(
            f"the traffic split adds up to {total * 100:.1f}%, not 100%",
            "give weights that sum to 1 (e.g. 0.9 and 0.1)",
        )


@dataclasses.dataclass
class Target:
    spec: TargetSpec
    record: ModelVersionRecord
    manifest: Manifest
    model: Any
    signature: Signature


class Router:
    """The versions in service and how requests are spread over them."""

    def __init__(self, name: str, revision: int | None, targets: list[Target]) -> None:
        check_split([t.spec for t in targets])
        self.name = name
        self.revision = revision
        self.targets = targets
        self.answering = [t for t in targets if t.spec.role != "shadow" and t.spec.weight > 0]
        self.shadows = [t for t in targets if t.spec.role == "shadow"]
        cumulative, total = [], 0.0
        for t in self.answering:
            total += t.spec.weight
            cumulative.append(total)
        self._cumulative = cumulative
        self._random = random.Random()
        self.primary = max(self.answering, key=lambda t: t.spec.weight)

    def choose(self) -> Target:
        if len(self.answering) == 1:
            return self.answering[0]
        i = bisect.bisect_right(self._cumulative, self._random.random() * self._cumulative[-1])
        return self.answering[min(i, len(self.answering) - 1)]

    def versions(self) -> list[int]:
        return [t.spec.version for t in self.targets]


def load_router(
    store: Store,
    name: str,
    revision: int | None,
    specs: Sequence[TargetSpec],
    cache: dict[str, tuple[Manifest, Any]] | None = None,
) -> Router:
    """Load (or take from `cache`) every version of a revision and warm it with its
    input example, so the first real request does not pay for loading."""
    check_split(specs)
    targets = []
    for spec in specs:
        record = store.models.get_version_by_id(spec.version_id)
        if cache is not None and spec.version_id in cache:
            manifest, model = cache[spec.version_id]
        else:
            manifest, model = load_version(store, record)
            if cache is not None:
                cache[spec.version_id] = (manifest, model)
        signature = manifest.model_signature
        if manifest.input_example and signature.inputs:
            rows = signature.rows_from_records(manifest.input_example)
            model.predict(signature.check_rows(rows))
        targets.append(Target(spec, record, manifest, model, signature))
    return Router(name, revision, targets)
