"""Model references: `churn@champion` (an alias), `churn@3` (a version), `churn` (the
newest version)."""

from __future__ import annotations

import dataclasses

from treadle.errors import InvalidInputError, NotFoundError
from treadle.store.protocols import StoreView
from treadle.store.records import ModelVersionRecord, RegisteredModelRecord


@dataclasses.dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}@{self.version}" if self.version is not None else self.name


def parse_ref(text: str) -> ModelRef:
    name, sep, selector = text.strip().partition("@")
    if not name:
        raise InvalidInputError(f"{text!r} names no model", "write NAME, NAME@ALIAS or NAME@3")
    if not sep or selector in ("", "latest"):
        return ModelRef(name)
    if selector.isascii() and selector.isdigit():
        return ModelRef(name, version=int(selector))
    return ModelRef(name, alias=selector)


def resolve(
    store: StoreView, project_id: str, ref: ModelRef | str
) -> tuple[RegisteredModelRecord, ModelVersionRecord]:
    """The registered model and the version a reference points at now."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    model = store.models.get_model(project_id, ref.name)
    if ref.alias:
        alias = store.models.get_alias(model.id, ref.alias)
        return model, store.models.get_version_by_id(alias.version_id)
    if ref.version is not None:
        return model, store.models.get_version(model.id, ref.version)
    versions = store.models.list_versions(model.id)
    if not versions:
        raise NotFoundError(
            f"model {ref.name!r} has no versions yet",
            "register one with treadle.register_model(...)",
        )
    return model, versions[-1]
