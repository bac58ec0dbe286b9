"""Client calls for the model registry: models, versions, trust, aliases moved through
gates, promotion and the aliases' history."""

from __future__ import annotations

from collections.abc import Sequence

from treadle.client.schemas import AliasMove
from treadle.client.transport import Transport, segment
from treadle.store.records import (
    AliasEventRecord,
    AliasRecord,
    ModelVersionRecord,
    RegisteredModelRecord,
)


class ModelsApi(Transport):
    def list_models(self) -> list[RegisteredModelRecord]:
        return self._get(list[RegisteredModelRecord], self._in_project("/models"))

    def get_model(self, name: str) -> RegisteredModelRecord:
        return self._get(RegisteredModelRecord, self._model(name))

    def list_versions(self, name: str) -> list[ModelVersionRecord]:
        """Every version of the model, oldest first."""
        return self._get(list[ModelVersionRecord], self._model(name, "/versions"))

    def get_version(self, name: str, version: int) -> ModelVersionRecord:
        return self._get(ModelVersionRecord, self._model(name, f"/versions/{int(version)}"))

    def get_version_by_id(self, version_id: str) -> ModelVersionRecord:
        """A version by its id (what an alias record points at)."""
        return self._get(
            ModelVersionRecord, self._in_project(f"/model-versions/{segment(version_id)}")
        )

    def set_trusted(self, name: str, version: int, trusted: bool = True) -> ModelVersionRecord:
        """Mark a version trusted, or take the trust back (owners)."""
        return self._call(
            ModelVersionRecord,
            "PUT",
            self._model(name, f"/versions/{int(version)}/trust"),
            json={"trusted": trusted},
        )

    def list_aliases(self, name: str) -> list[AliasRecord]:
        return self._get(list[AliasRecord], self._model(name, "/aliases"))

    def get_alias(self, name: str, alias: str) -> AliasRecord:
        return self._get(AliasRecord, self._model(name, f"/aliases/{segment(alias)}"))

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        require: Sequence[str] = (),
        reason: str = "",
    ) -> AliasMove:
        """Point `alias` at `version` if every gate condition holds (e.g. `accuracy >= 0.9`);
        a refusal raises ConflictError naming the condition that failed."""
        return self._call(
            AliasMove,
            "PUT",
            self._model(name, f"/aliases/{segment(alias)}"),
            json={"version": int(version), "require": list(require), "reason": reason},
        )

    def delete_alias(self, name: str, alias: str, *, reason: str = "") -> None:
        self._send(
            "DELETE",
            self._model(name, f"/aliases/{segment(alias)}"),
            params={"reason": reason or None},
        )

    def promote(
        self, name: str, *, source: str, target: str, require: Sequence[str] = ()
    ) -> AliasMove:
        """Move alias `target` to the version `source` (an alias or a version number) points
        at, through the gate conditions; a refusal raises ConflictError naming the failed
        condition."""
        return self._call(
            AliasMove,
            "POST",
            self._model(name, "/promote"),
            json={"source": str(source), "target": target, "require": list(require)},
        )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Every move of the model's aliases (of one alias if given), oldest first."""
        return self._get(list[AliasEventRecord], self._model(name, "/alias-history"), alias=alias)

    def _model(self, name: str, path: str = "") -> str:
        return self._in_project(f"/models/{segment(name)}{path}")
