"""Client calls for artifacts, their bytes (whole, a byte range, or streamed to a file),
lineage, and the objects a project refers to by sha256."""

from __future__ import annotations

from pathlib import Path

import httpx

from treadle.client.transport import Transport, raise_for, segment, unreachable
from treadle.store.records import ArtifactRecord, Lineage, RunOutput


class ArtifactsApi(Transport):
    def get_artifact(self, artifact_id: str) -> ArtifactRecord:
        """An artifact by id or unique prefix."""
        return self._get(ArtifactRecord, self._artifact(artifact_id))

    def lineage(self, artifact_id: str) -> Lineage:
        """The step runs that produced and consumed the artifact."""
        return self._get(Lineage, self._artifact(artifact_id, "/lineage"))

    def artifact_bytes(
        self, artifact_id: str, start: int | None = None, end: int | None = None
    ) -> bytes:
        """The artifact's bytes, checked against its sha256; or bytes `start` to `end`
        (inclusive, as in an HTTP Range) of them."""
        return self._bytes(self._artifact(artifact_id, "/content"), start, end)

    def download_artifact(self, artifact_id: str, target: str | Path) -> Path:
        """Stream the artifact's bytes into the file `target`, checked against its sha256."""
        return self._download(self._artifact(artifact_id, "/content"), Path(target))

    def run_artifacts(self, run_id: str) -> list[ArtifactRecord]:
        """What the run's steps produced (or reused from the cache)."""
        return self._get(list[ArtifactRecord], self._run(run_id, "/artifacts"))

    def run_outputs(self, run_id: str) -> list[RunOutput]:
        """What the run's steps produced, each with its step run and output name."""
        return self._get(list[RunOutput], self._run(run_id, "/outputs"))

    def step_outputs(self, step_run_id: str) -> dict[str, ArtifactRecord]:
        return self._get(dict[str, ArtifactRecord], self._step(step_run_id, "/outputs"))

    def step_input_ids(self, step_run_id: str) -> list[str]:
        """The ids of the artifacts a step run read."""
        return self._get(list[str], self._step(step_run_id, "/inputs"))

    def object_bytes(self, sha: str, start: int | None = None, end: int | None = None) -> bytes:
        """An object the project refers to (artifact bytes, a model manifest, a step log),
        checked against `sha`; or a byte range of it."""
        return self._bytes(self._object(sha), start, end, sha=sha)

    def download_object(self, sha: str, target: str | Path) -> Path:
        return self._download(self._object(sha), Path(target), sha=sha)

    def has_object(self, sha: str) -> bool:
        """Whether the project refers to the object."""
        try:
            response = self._http.get(self._object(sha), headers={"range": "bytes=0-0"})
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if response.status_code == 404:
            return False
        if response.status_code in (200, 206, 416):  # 416: it exists, and is empty
            return True
        raise_for(response, token=self._has_token)
        return False

    def _artifact(self, artifact_id: str, path: str = "") -> str:
        return self._in_project(f"/artifacts/{segment(artifact_id)}{path}")

    def _object(self, sha: str) -> str:
        return self._in_project(f"/objects/{segment(sha)}")
