"""Finding user code: a pipeline in a file or module, a step by its import reference."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from treadle.dsl import Pipeline, Step
from treadle.errors import DefinitionError, NotFoundError
from treadle.packaging import parse_source, read_package, unpack
from treadle.store.records import PipelineVersionRecord


def _module_name_for(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"treadle_user_{path.stem}_{digest}"


def load_file(path: Path, module_name: str | None = None) -> ModuleType:
    """Import a Python file as a module (once per process), with its folder importable."""
    path = path.resolve()
    name = module_name or _module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise NotFoundError(f"no pipeline file {path}", "check the path")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NotFoundError(f"cannot import {path}", "is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def find_pipeline(target: str) -> tuple[Pipeline[Any, Any], str | None]:
    """`path/to/file.py`, `path/to/file.py:name` or `package.module:name` -> the pipeline
    and the file it came from."""
    location, _, attr = target.partition(":")
    if location.endswith(".py") or Path(location).is_file():
        path = Path(location)
        if not path.is_file():
            raise NotFoundError(f"no pipeline file {location}", "check the path")
        module = load_file(path)
        source: str | None = str(path.resolve())
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise NotFoundError(
                f"cannot import {location!r}: {exc}",
                "give a path to a .py file or an importable module",
            ) from exc
        source = getattr(module, "__file__", None)
    pipelines = {k: v for k, v in vars(module).items() if isinstance(v, Pipeline)}
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Pipeline):
            raise NotFoundError(
                f"{location} has no pipeline named {attr!r}",
                f"pipelines there: {', '.join(sorted(pipelines)) or 'none'}",
            )
        return found, source
    own = {k: v for k, v in pipelines.items() if v.fn.__module__ == module.__name__}
    candidates = own or pipelines
    if len(candidates) == 1:
        return next(iter(candidates.values())), source
    if not candidates:
        raise NotFoundError(
            f"{location} defines no @pipeline", "decorate the pipeline function with @pipeline"
        )
    raise DefinitionError(
        f"{location} defines several pipelines: {', '.join(sorted(candidates))}",
        f"name one: {location}:{sorted(candidates)[0]}",
    )


def import_step(ref: str, source_file: str | None) -> Step[Any, Any]:
    """The step at `module:qualname`; when the module is a file that is not importable by
    name, it is loaded from `source_file` under the same name."""
    module_name, _, qualname = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        if source_file and (module_name.startswith("treadle_user_") or module_name == "__main__"):
            module = load_file(
                Path(source_file), module_name=None if module_name == "__main__" else module_name
            )
        else:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                if not source_file:
                    raise
                module = load_file(Path(source_file), module_name=module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise NotFoundError(f"cannot find step {ref}", "was it renamed since the run started?")
    if isinstance(obj, Step):
        return obj
    raise NotFoundError(f"{ref} is not a @step")


def version_pipeline(store: Any, version: PipelineVersionRecord) -> tuple[Pipeline[Any, Any], str]:
    """The pipeline a recorded version runs, and the file it comes from. A version
    deployed as a package runs that package's code, unpacked once per version under the
    home's `packages/` folder, never a working copy."""
    located = parse_source(version.source)
    if located is None:
        pipeline, source = find_pipeline(version.source)
        return pipeline, source or version.source
    sha, entry = located
    folder = store.settings.home / "packages"
    entry_file, _, attr = entry.rpartition(":")
    unpacked = folder / version.hash
    if not (unpacked / entry_file).is_file():
        package = read_package(store.objects.get_bytes(sha))
        unpacked = unpack(package, folder)
    _own_modules_first(unpacked)
    pipeline, source = find_pipeline(f"{unpacked / entry_file}:{attr}")
    return pipeline, source or str(unpacked / entry_file)


def _own_modules_first(folder: Path) -> None:
    """Make `import helpers` in a package find the package's own `helpers`: its folder
    goes first on sys.path, and modules of those names that another folder (another
    version) provided are forgotten. Code already loaded keeps the modules it holds."""
    if _first_on_path.get(str(folder)) == len(sys.modules) and sys.path[0] == str(folder):
        return  # nothing was imported since this folder was put first
    local = {p.stem for p in folder.glob("*.py")} | {
        p.parent.name for p in folder.glob("*/__init__.py")
    }
    prefix = str(folder) + os.sep
    for name in list(sys.modules):
        if name.partition(".")[0] in local:
            where = getattr(sys.modules[name], "__file__", None) or ""
            if not where.startswith(prefix):
                del sys.modules[name]
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))
    _first_on_path[str(folder)] = len(sys.modules)


_first_on_path: dict[str, int] = {}
