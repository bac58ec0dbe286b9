"""Pipeline packages: one `.treadle` file holding what a pipeline version runs.

A package is a zip archive with `treadle.json` (the manifest) and the pipeline's source
files under `src/`. The manifest names the pipeline, its entry point, the sha256 of every
file, the locked requirements, the graph's spec and how it was built. The package's hash
covers what runs (name, entry, files, requirements), not when or where it was built, so
the same source builds the same version.

Reading checks everything before anything is used: member names (no traversal, links
or absolute paths), sizes, every file's sha256 and the hash itself.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from treadle.dsl import Pipeline
from treadle.dsl.graph import canonical_hash, to_spec
from treadle.dsl.pipeline import format_param
from treadle.dsl.typecheck import describe
from treadle.errors import InvalidInputError

FORMAT = 1
MANIFEST = "treadle.json"
SUFFIX = ".treadle"
SOURCE_PREFIX = "package:"
TARGETS_PREFIX = "targets/"
KFP_TARGET = "kfp/pipeline.yaml"
"""The Kubeflow Pipelines YAML that `treadle pipeline build --target kfp` adds."""
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)
"""What reading a damaged zip member raises (NotImplementedError: a compression method
the zipfile module does not have)."""
MAX_FILES = 2000
MAX_BYTES = 64 * 1024 * 1024
# folders never packaged: tooling, caches, environments and build output
SKIP_DIRS = {"__pycache__", "node_modules", "dist", "build", "site-packages"}
INCLUDE_SUFFIXES = {".py", ".txt", ".toml", ".yaml", ".yml", ".json", ".cfg", ".ini"}


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    hash: str
    entry: str
    """`relative/path.py:attribute` of the pipeline inside the package."""
    files: dict[str, str]
    requirements: list[str]
    spec: dict[str, Any]
    parameters: dict[str, dict[str, Any]]
    smoke: dict[str, str]
    build: dict[str, Any]
    executor: str | None = None
    """Where runs of this version execute on a server (`ray`…); None: the server's own."""
    targets: dict[str, str] = dataclasses.field(default_factory=dict)
    """Files compiled from the source for another platform (path -> sha256), stored under
    `targets/`. Derived from the source, so outside the hash like the spec; each is
    checked against its sha256 when the package is read."""

    @property
    def version(self) -> str:
        return self.hash[:12]

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}{SUFFIX}"

    def to_json(self) -> dict[str, Any]:
        out = {"format": FORMAT, **dataclasses.asdict(self)}
        if self.executor is None:
            del out["executor"]
        if not self.targets:
            del out["targets"]
        return out


@dataclasses.dataclass(frozen=True)
class Package:
    manifest: Manifest
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def content_hash(
    name: str,
    entry: str,
    files: Mapping[str, str],
    requirements: list[str],
    smoke: Mapping[str, str],
    executor: str | None = None,
) -> str:
    """What the version is: not when or where it was built, nor the spec (whose step
    references name the folder it was traced in). A chosen executor is part of it."""
    return canonical_hash(
        {
            "name": name,
            "entry": entry,
            "files": dict(files),
            "requirements": requirements,
            "smoke": dict(smoke),
            **({"executor": executor} if executor is not None else {}),
        }
    )


# ---------------------------------------------------------------- building


def _is_environment(path: Path) -> bool:
    return (path / "pyvenv.cfg").exists() or (path / "conda-meta").exists()


def collect_files(root: Path) -> dict[str, bytes]:
    """The source files of the folder a pipeline lives in: Python modules and the small
    text files they may read (requirements, configs), without caches, environments,
    hidden folders or build output."""
    found: dict[str, bytes] = {}
    total = 0
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in SKIP_DIRS and not _is_environment(here / d)
        )
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or path.suffix not in INCLUDE_SUFFIXES or path.is_symlink():
                continue
            data = path.read_bytes()
            total += len(data)
            if len(found) >= MAX_FILES or total > MAX_BYTES:
                raise InvalidInputError(
                    f"{root} holds more than {MAX_FILES} files or {MAX_BYTES >> 20} MB of source",
                    "keep the pipeline in a folder of its own",
                )
            found[path.relative_to(root).as_posix()] = data
    return found


def _imported_modules(files: Mapping[str, bytes]) -> set[str]:
    names: set[str] = set()
    for path, data in files.items():
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse(data, filename=path)
        except SyntaxError as exc:
            raise InvalidInputError(f"{path} does not parse: {exc}") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.partition(".")[0])
    return names


def locked_requirements(files: Mapping[str, bytes]) -> list[str]:
    """`name==version` of every installed distribution the source imports (and treadle),
    plus the lines of a `requirements.txt` shipped with it."""
    local = {PurePosixPath(p).parts[0].removesuffix(".py") for p in files}
    wanted = _imported_modules(files) - set(sys.stdlib_module_names) - local
    wanted.add("treadle")
    by_module = importlib.metadata.packages_distributions()
    pins: set[str] = set()
    for module in wanted:
        for dist in by_module.get(module, []):
            try:
                pins.add(f"{dist.lower()}=={importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                continue
    declared = files.get("requirements.txt", b"").decode(errors="replace").splitlines()
    for line in declared:
        requirement = line.partition(" #")[0].partition("\t#")[0].strip()
        if requirement and not requirement.startswith("#"):
            pins.add(requirement)
    return sorted(pins)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build_metadata(root: Path) -> dict[str, Any]:
    commit = _git(root, "rev-parse", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--", ".")) if commit else None
    return {
        "time": time.time(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "treadle": importlib.metadata.version("treadle"),
    }


def _parameters(pipeline: Pipeline[Any, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, param in pipeline.signature.parameters.items():
        entry: dict[str, Any] = {"type": describe(pipeline.param_types[key])}
        if param.default is not param.empty:
            entry["default"] = format_param(param.default)
        out[key] = entry
    return out


def build_package(
    pipeline: Pipeline[Any, Any],
    source_file: str | os.PathLike[str],
    smoke: Mapping[str, str] | None = None,
    executor: str | None = None,
    targets: Mapping[str, bytes] | None = None,
) -> Package:
    """Package `pipeline`, defined in `source_file`, with the folder that file is in;
    `executor` is where a server runs the version (default: the server's own)."""
    path = Path(source_file).resolve()
    root = path.parent
    files = collect_files(root)
    entry_file = path.relative_to(root).as_posix()
    if entry_file not in files:
        raise InvalidInputError(f"{path} is not a Python source file that can be packaged")
    attr = pipeline.fn.__qualname__
    entry = f"{entry_file}:{attr}"
    shas = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    requirements = locked_requirements(files)
    smoke_params = (
        {k: str(v) for k, v in smoke.items()}
        if smoke is not None
        else {k: format_param(v) for k, v in pipeline.smoke.items()}
    )
    try:
        spec = to_spec(pipeline.build(**pipeline.parse_params(smoke_params)).graph)
    except InvalidInputError:
        spec = {}  # parameters without defaults: the graph is known once they are given
    manifest = Manifest(
        name=pipeline.name,
        hash=content_hash(pipeline.name, entry, shas, requirements, smoke_params, executor),
        entry=entry,
        files=shas,
        requirements=requirements,
        spec=spec,
        parameters=_parameters(pipeline),
        smoke=smoke_params,
        build=build_metadata(root),
        executor=executor,
        targets={k: hashlib.sha256(v).hexdigest() for k, v in (targets or {}).items()},
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_member(MANIFEST), json.dumps(manifest.to_json(), indent=2))
        for rel in sorted(files):
            archive.writestr(_member(f"src/{rel}"), files[rel])
        for rel, data in sorted((targets or {}).items()):
            archive.writestr(_member(f"{TARGETS_PREFIX}{_safe_relative(rel)}"), data)
    return Package(manifest, buffer.getvalue())


def target_file(package: Package, name: str) -> bytes | None:
    """A file compiled into the package for another platform (e.g. KFP_TARGET), or None."""
    if name not in package.manifest.targets:
        return None
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        return archive.read(f"{TARGETS_PREFIX}{name}")


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def write_package(package: Package, folder: str | os.PathLike[str]) -> Path:
    """Write the package into `folder` as NAME-VERSION.treadle, atomically."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    target = out / package.manifest.filename
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(package.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# ---------------------------------------------------------------- reading


def _safe_relative(name: str) -> str:
    """A member path as it will be written under the unpack folder, or an error."""
    if "\\" in name or name.startswith("/") or ":" in name or "\x00" in name:
        raise InvalidInputError(f"package member {name!r} is not a relative POSIX path")
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", ".", "") for p in parts):
        raise InvalidInputError(f"package member {name!r} leaves the package")
    return "/".join(parts)


def _text_field(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"package manifest field {key!r} is missing or not a string")
    return value


def _mapping(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return dict(value) if isinstance(value, dict) else {}


def read_package(data: bytes) -> Package:
    """The package in `data`, checked: a tampered or malformed package is refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInputError(
            "this is not a treadle package (not a zip archive)",
            "build one with `treadle pipeline build FILE`",
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_FILES + 1 or sum(i.file_size for i in infos) > MAX_BYTES:
            raise InvalidInputError(f"the package is over {MAX_FILES} files or {MAX_BYTES} bytes")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode) or info.is_dir():
                raise InvalidInputError(f"package member {info.filename!r} is not a plain file")
            members[_safe_relative(info.filename)] = info
        if MANIFEST not in members:
            raise InvalidInputError(
                f"the package has no {MANIFEST}", "build it with `treadle pipeline build FILE`"
            )
        try:
            raw = json.loads(archive.read(members.pop(MANIFEST)))
        except (ValueError, *UNREADABLE):
            raise InvalidInputError(f"the package's {MANIFEST} is not JSON") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InvalidInputError(f"the package's format is not {FORMAT}")
        files = raw.get("files")
        if not isinstance(files, dict):
            raise InvalidInputError("package manifest field 'files' is missing")
        for path, sha in files.items():
            if not isinstance(sha, str):
                raise InvalidInputError(
                    f"package manifest field 'files' gives {path!r} no sha256 digest"
                )
        targets = _mapping(raw, "targets")
        stored = {}
        for name, info in members.items():
            if name.startswith(TARGETS_PREFIX):
                _check_target(archive, info, name.removeprefix(TARGETS_PREFIX), targets)
                continue
            if not name.startswith("src/"):
                raise InvalidInputError(f"package member {name!r} is outside src/")
            try:
                content = archive.read(info)
            except UNREADABLE as exc:
                raise InvalidInputError(
                    f"package member {name!r} cannot be read: {exc}",
                    "the file is damaged: build it again",
                ) from None
            stored[name.removeprefix("src/")] = hashlib.sha256(content).hexdigest()
    if stored != files:
        changed = sorted(set(stored.items()) ^ set(files.items()))
        raise InvalidInputError(
            f"the package's files do not match its manifest ({changed[0][0]!r} differs)",
            "it was changed after it was built: build it again",
        )
    requirements = raw.get("requirements")
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise InvalidInputError("package manifest field 'requirements' is not a list of strings")
    name, entry = _text_field(raw, "name"), _text_field(raw, "entry")
    entry_file, _, attr = entry.rpartition(":")
    if entry_file not in files or not attr:
        raise InvalidInputError(f"the package's entry {entry!r} names no file in it")
    smoke = {str(k): str(v) for k, v in _mapping(raw, "smoke").items()}
    executor = raw.get("executor")
    if executor is not None and (not isinstance(executor, str) or not executor):
        raise InvalidInputError("package manifest field 'executor' is not a name")
    expected = content_hash(name, entry, files, requirements, smoke, executor)
    if raw.get("hash") != expected:
        raise InvalidInputError(
            "the package's hash does not match its content",
            "it was changed after it was built: build it again",
        )
    manifest = Manifest(
        name=name,
        hash=expected,
        entry=entry,
        files=dict(files),
        requirements=list(requirements),
        spec=_mapping(raw, "spec"),
        parameters=_mapping(raw, "parameters"),
        smoke=smoke,
        build=_mapping(raw, "build"),
        executor=executor,
        targets={str(k): str(v) for k, v in targets.items()},
    )
    return Package(manifest, data)


def _check_target(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, targets: Mapping[str, Any]
) -> None:
    try:
        content = archive.read(info)
    except UNREADABLE as exc:
        raise InvalidInputError(f"package member {info.filename!r} cannot be read: {exc}") from None
    if targets.get(name) != hashlib.sha256(content).hexdigest():
        raise InvalidInputError(
            f"package member {info.filename!r} does not match its manifest",
            "it was changed after it was built: build it again",
        )


def unpack(package: Package, root: str | os.PathLike[str]) -> Path:
    """The package's source under `root/HASH`, written once and atomically: a folder
    that exists there is complete."""
    target = Path(root) / package.manifest.hash
    if target.is_dir():
        return target
    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
            for rel in package.manifest.files:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(archive.read(f"src/{rel}"))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def source_of(package: Package) -> str:
    """What a pipeline version records as its source: the package object and its entry."""
    return f"{SOURCE_PREFIX}{package.sha256}:{package.manifest.entry}"


def parse_source(source: str) -> tuple[str, str] | None:
    """(package sha256, entry) of a version's source, or None if it is not a package."""
    if not source.startswith(SOURCE_PREFIX):
        return None
    sha, _, entry = source.removeprefix(SOURCE_PREFIX).partition(":")
    return sha, entry
