"""The model format: a folder with `treadle-model.json` beside the payload.

The manifest says the flavor, the signature, where the model came from (run, step run,
the hashes of its training data), its evaluation metrics, the reference profile for
monitoring, its requirements, and the sha256 of every file. In the artifact store each
file is an object and the manifest is one too; loading materialises the folder in a
local cache, checking every hash, and refuses a file that does not match.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from treadle.errors import CorruptArtifactError
from treadle.models.signature import Signature
from treadle.store.artifacts import ArtifactStore
from treadle.store.protocols import ObjectReader

MANIFEST = "treadle-model.json"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    flavor: str
    flavor_meta: dict[str, Any]
    signature: dict[str, Any]
    files: dict[str, str]
    """Relative path -> sha256 of each file of the model folder."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    run_id: str | None = None
    step_run_id: str | None = None
    data_hashes: list[str] = dataclasses.field(default_factory=list)
    profile: dict[str, Any] | None = None
    input_example: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    requirements: list[str] = dataclasses.field(default_factory=list)
    created_at: float = 0.0
    format_version: int = FORMAT_VERSION

    @property
    def model_signature(self) -> Signature:
        return Signature.from_dict(self.signature)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def store_folder(folder: Path, objects: ArtifactStore) -> dict[str, str]:
    """Put every file under `folder` into the object store; returns path -> sha256."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha, _ = objects.put_file(path)
        files[path.relative_to(folder).as_posix()] = sha
    return files


def save_manifest(manifest: Manifest, objects: ArtifactStore) -> str:
    sha, _ = objects.put_bytes(manifest.to_json())
    return sha


def read_manifest(manifest_sha: str, objects: ObjectReader) -> Manifest:
    return Manifest.from_json(objects.get_bytes(manifest_sha))


def materialize(manifest_sha: str, objects: ArtifactStore, cache: Path) -> tuple[Manifest, Path]:
    """The model folder in `cache/<manifest sha>`, every file checked against the
    manifest (and the manifest against its own hash)."""
    manifest = read_manifest(manifest_sha, objects)
    target = cache / manifest_sha
    if target.is_dir() and _intact(target, manifest):
        return manifest, target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".staging-"))
    try:
        for rel, sha in manifest.files.items():
            dest = (staging / rel).resolve()
            if staging.resolve() not in dest.parents:
                raise CorruptArtifactError(f"model file path {rel!r} escapes the model folder")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(objects.get_bytes(sha))
        (staging / MANIFEST).write_bytes(manifest.to_json())
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest, target


def _intact(folder: Path, manifest: Manifest) -> bool:
    import hashlib

    for rel, sha in manifest.files.items():
        path = folder / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            return False
    return True
