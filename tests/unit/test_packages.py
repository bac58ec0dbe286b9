"""Pipeline packages: what goes in, what the version hash covers, and how reading refuses
a package that was changed or crafted after it was built."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import stat
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from treadle.dsl import Pipeline
from treadle.engine import find_pipeline, version_pipeline
from treadle.errors import InvalidInputError
from treadle.packaging import (
    Package,
    build_package,
    parse_source,
    read_package,
    source_of,
    unpack,
    write_package,
)
from treadle.packaging.package import MANIFEST, collect_files, locked_requirements
from treadle.store import Store

FLOW = """
import json
import os.path

import numpy as np

from treadle import pipeline, step

VALUE = {value}


@step
def make(n: int) -> int:
    return int(np.arange(n).sum()) + VALUE


@step
def describe(total: int) -> str:
    return json.dumps({{"total": total, "here": os.path.basename(__file__)}})


@pipeline
def packed(n: int = 3) -> None:
    describe(make(n))
"""


_DISTRIBUTIONS = functools.cache(importlib.metadata.packages_distributions)


@pytest.fixture(autouse=True)
def _forget_loaded_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`find_pipeline` imports each file once per process and puts its folder on
    sys.path; take both back so tests cannot see each other's files. The installed
    distributions do not change during the tests: scan them once, not per build."""
    monkeypatch.setattr(importlib.metadata, "packages_distributions", _DISTRIBUTIONS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("treadle_user_"):
            del sys.modules[name]


def write_flow(folder: Path, value: int = 1, name: str = "flow.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(FLOW.format(value=value))
    return path


def load(path: Path) -> tuple[Pipeline[Any, Any], str]:
    found, source = find_pipeline(str(path))
    assert source is not None
    return found, source


def built(folder: Path, value: int = 1) -> Package:
    return build_package(*load(write_flow(folder, value)))


def rewrite(
    data: bytes,
    change: Callable[[zipfile.ZipInfo, bytes], list[tuple[zipfile.ZipInfo, bytes]]],
) -> bytes:
    """The archive again, each member passed through `change` (which may drop it,
    alter it or add members next to it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            for new_info, new_data in change(info, src.read(info)):
                dst.writestr(new_info, new_data)
    return out.getvalue()


def member(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    return info


def with_extra(data: bytes, info: zipfile.ZipInfo, content: bytes = b"x = 1\n") -> bytes:
    def add(old: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        kept = [(old, body)]
        return [*kept, (info, content)] if old.filename == MANIFEST else kept

    return rewrite(data, add)


def with_manifest(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    def change(old: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        if old.filename != MANIFEST:
            return [(old, body)]
        raw = json.loads(body)
        edit(raw)
        return [(old, json.dumps(raw).encode())]

    return rewrite(data, change)


def refused(data: bytes, *words: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        read_package(data)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


# -- building -------------------------------------------------------------------------


def test_the_same_source_builds_the_same_version(tmp_path: Path) -> None:
    found, source = load(write_flow(tmp_path / "a"))
    first = build_package(found, source)
    second = build_package(found, source)
    assert first.manifest.hash == second.manifest.hash
    assert first.manifest.version == second.manifest.version == first.manifest.hash[:12]
    assert first.manifest.filename == f"packed-{first.manifest.version}.treadle"
    # when it was built is recorded, but it is not part of what the version is
    assert first.manifest.build["time"] != second.manifest.build["time"]
    assert first.data != second.data
    # nor is where: the same files in another folder are the same version
    assert built(tmp_path / "elsewhere").manifest.hash == first.manifest.hash


def test_the_manifest_describes_what_runs(tmp_path: Path) -> None:
    package = built(tmp_path / "a")
    manifest = package.manifest
    assert manifest.name == "packed"
    assert manifest.entry == "flow.py:packed"
    assert manifest.files == {
        "flow.py": hashlib.sha256((tmp_path / "a" / "flow.py").read_bytes()).hexdigest()
    }
    assert manifest.parameters == {"n": {"type": "int", "default": "3"}}
    assert [n["name"] for n in manifest.spec["nodes"]] == ["make", "describe"]
    assert manifest.build["treadle"] == importlib.metadata.version("treadle")
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        assert archive.namelist() == [MANIFEST, "src/flow.py"]
        assert json.loads(archive.read(MANIFEST))["hash"] == manifest.hash


def test_a_pipeline_without_defaults_is_packaged_without_its_graph(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(
        "from treadle import pipeline, step\n\n\n@step\ndef one(n: int) -> int:\n"
        "    return n\n\n\n@pipeline\ndef needs_n(n: int) -> None:\n    one(n)\n"
    )
    found, source = load(tmp_path / "flow.py")
    assert build_package(found, source).manifest.spec == {}
    smoked = build_package(found, source, smoke={"n": "2"})
    assert smoked.manifest.smoke == {"n": "2"}
    assert [n["name"] for n in smoked.manifest.spec["nodes"]] == ["one"]


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda root: write_flow(root, value=2), id="the entry file"),
        pytest.param(lambda root: (root / "helpers.py").write_text("A = 2\n"), id="a helper"),
        pytest.param(lambda root: (root / "extra.py").write_text("B = 1\n"), id="a new module"),
        pytest.param(lambda root: (root / "helpers.py").unlink(), id="a removed module"),
        pytest.param(lambda root: (root / "conf.yaml").write_text("c: 2\n"), id="a config"),
    ],
)
def test_changing_a_source_file_changes_the_version(
    tmp_path: Path, edit: Callable[[Path], object]
) -> None:
    root = tmp_path / "a"
    found, source = load(write_flow(root))
    (root / "helpers.py").write_text("A = 1\n")
    (root / "conf.yaml").write_text("c: 1\n")
    before = build_package(found, source).manifest
    edit(root)
    after = build_package(found, source).manifest
    assert after.hash != before.hash
    assert after.version != before.version


def test_caches_environments_hidden_folders_and_build_output_are_left_out(
    tmp_path: Path,
) -> None:
    root = tmp_path / "a"
    found, source = load(write_flow(root))
    before = build_package(found, source).manifest
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "util.py").write_text("U = 1\n")
    junk = {
        ".git/hooks/pre-commit.py": "x",
        ".hidden.py": "x",
        "__pycache__/flow.cpython-311.py": "x",
        "lib/__pycache__/util.py": "x",
        "env/pyvenv.cfg": "home = /usr\n",
        "env/lib/site.py": "x",
        "conda/conda-meta/history.json": "{}",
        "conda/thing.py": "x",
        "node_modules/pkg/index.json": "{}",
        "dist/old.py": "x",
        "build/lib/old.py": "x",
        "data.csv": "a,b\n1,2\n",
        "model.pkl": "\x80",
        "notes.md": "# notes",
    }
    for rel, text in junk.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "linked.py").symlink_to(root / "lib" / "util.py")
    files = collect_files(root)
    assert sorted(files) == ["flow.py", "lib/__init__.py", "lib/util.py"]
    # none of those count towards the version: only lib/ was added
    with_junk = build_package(found, source).manifest
    assert sorted(with_junk.files) == ["flow.py", "lib/__init__.py", "lib/util.py"]
    shutil.rmtree(root / "lib")
    assert build_package(found, source).manifest.hash == before.hash


def test_requirements_pin_imported_distributions_and_treadle(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_flow(root)
    (root / "helpers.py").write_text("import sklearn.linear_model\nfrom numpy import linalg\n")
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("import collections, subprocess\n")
    (root / "flow2.py").write_text("import helpers\nfrom lib import thing\nfrom . import x\n")
    found, source = load(root / "flow.py")
    pins = build_package(found, source).manifest.requirements
    version = importlib.metadata.version
    assert pins == sorted(
        [
            f"numpy=={version('numpy')}",
            f"scikit-learn=={version('scikit-learn')}",
            f"treadle=={version('treadle')}",
        ]
    )


def test_requirements_leave_out_stdlib_and_local_modules() -> None:
    files = {
        "flow.py": b"import os, sys, json\nimport numpy.linalg\nimport helpers\nimport pkg.sub\n",
        "helpers.py": b"from typing import Any\n",
        "pkg/__init__.py": b"",
        "pkg/sub.py": b"from pkg import other\n",
    }
    pins = locked_requirements(files)
    assert [p.partition("==")[0] for p in pins] == ["numpy", "treadle"]


def test_a_requirements_txt_is_included(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_flow(root)
    (root / "requirements.txt").write_text(
        "# what the steps need beyond their imports\n\nlightgbm==4.3.0\n  pyarrow>=14  \n"
    )
    found, source = load(root / "flow.py")
    manifest = build_package(found, source).manifest
    assert "lightgbm==4.3.0" in manifest.requirements
    assert "pyarrow>=14" in manifest.requirements
    assert not any(r.startswith("#") or not r for r in manifest.requirements)
    assert "requirements.txt" in manifest.files
    assert manifest.requirements == sorted(manifest.requirements)


def test_an_inline_comment_in_requirements_txt_is_not_part_of_the_pin() -> None:
    pins = locked_requirements({"requirements.txt": b"lightgbm==4.3.0  # for the ranker\n"})
    assert "lightgbm==4.3.0" in pins


def test_a_source_file_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    found, source = load(write_flow(tmp_path / "a"))
    (tmp_path / "a" / "broken.py").write_text("def (:\n")
    with pytest.raises(InvalidInputError, match=r"broken\.py does not parse"):
        build_package(found, source)


# -- writing --------------------------------------------------------------------------


def test_write_package_is_atomic_and_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = built(tmp_path / "a")
    out = tmp_path / "out"
    written = write_package(package, out)
    assert written == out / package.manifest.filename
    assert written.read_bytes() == package.data
    assert write_package(package, out) == written
    assert sorted(os.listdir(out)) == [package.manifest.filename]
    assert read_package(written.read_bytes()).manifest == package.manifest

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_package(built(tmp_path / "b", value=2), out)
    assert sorted(os.listdir(out)) == [package.manifest.filename]


# -- reading --------------------------------------------------------------------------


def test_a_built_package_reads_back_whole(tmp_path: Path) -> None:
    package = built(tmp_path / "a")
    again = read_package(package.data)
    assert again.manifest == package.manifest
    assert again.sha256 == hashlib.sha256(package.data).hexdigest()
    assert source_of(again) == f"package:{again.sha256}:flow.py:packed"
    assert parse_source(source_of(again)) == (again.sha256, "flow.py:packed")
    assert parse_source(str(tmp_path / "a" / "flow.py")) is None


def test_a_file_changed_after_build_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data

    def alter(info: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        if info.filename == "src/flow.py":
            body = body.replace(b"VALUE = 1", b"VALUE = 666")
        return [(info, body)]

    refused(rewrite(data, alter), "do not match its manifest", "'flow.py'", "build it again")


def test_a_file_added_or_removed_after_build_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data
    refused(with_extra(data, member("src/sneaky.py")), "do not match its manifest", "sneaky.py")

    def drop(info: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [] if info.filename == "src/flow.py" else [(info, body)]

    refused(rewrite(data, drop), "do not match its manifest", "flow.py")


def test_an_edited_manifest_hash_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data

    def edit(raw: dict[str, Any]) -> None:
        raw["hash"] = "0" * 64

    refused(with_manifest(data, edit), "hash does not match its content")


def test_an_edited_manifest_requirement_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data

    def edit(raw: dict[str, Any]) -> None:
        raw["requirements"].append("evil==1.0")

    refused(with_manifest(data, edit), "hash does not match its content")


def test_a_file_changed_with_its_manifest_sha_but_not_the_hash_is_refused(
    tmp_path: Path,
) -> None:
    data = built(tmp_path / "a").data
    evil = b"VALUE = 666\n"

    def alter(info: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        if info.filename == "src/flow.py":
            return [(info, evil)]
        if info.filename == MANIFEST:
            raw = json.loads(body)
            raw["files"]["flow.py"] = hashlib.sha256(evil).hexdigest()
            return [(info, json.dumps(raw).encode())]
        return [(info, body)]

    refused(rewrite(data, alter), "hash does not match its content")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.py", ("'../evil.py'", "leaves the package")),
        ("src/../../evil.py", ("'src/../../evil.py'", "leaves the package")),
        ("/etc/x", ("'/etc/x'", "not a relative POSIX path")),
        ("..\\x", ("not a relative POSIX path",)),
        ("src\\..\\..\\x.py", ("not a relative POSIX path",)),
        ("C:/windows/x.py", ("not a relative POSIX path",)),
        ("notes.txt", ("'notes.txt'", "outside src/")),
    ],
)
def test_a_member_outside_the_package_is_refused(
    tmp_path: Path, name: str, words: tuple[str, ...]
) -> None:
    refused(with_extra(built(tmp_path / "a").data, member(name)), *words)


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data
    link = member("src/link.py", stat.S_IFLNK | 0o777)
    refused(with_extra(data, link, b"/etc/passwd"), "'src/link.py'", "not a plain file")


def test_a_folder_member_is_refused(tmp_path: Path) -> None:
    data = built(tmp_path / "a").data
    refused(with_extra(data, member("src/pkg/", stat.S_IFDIR | 0o755), b""), "not a plain file")


def test_bytes_that_are_not_a_zip_are_refused(tmp_path: Path) -> None:
    refused(b"print('hello')\n", "not a zip archive")
    refused(b"", "not a zip archive")
    refused(built(tmp_path / "a").data[:200], "not a zip archive")


def test_a_package_without_a_manifest_is_refused(tmp_path: Path) -> None:
    def drop(info: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [] if info.filename == MANIFEST else [(info, body)]

    refused(rewrite(built(tmp_path / "a").data, drop), "no treadle.json")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda raw: raw.update(format=99), ("format is not 1",)),
        (lambda raw: raw.pop("files"), ("'files'",)),
        (lambda raw: raw.update(name=""), ("'name'",)),
        (lambda raw: raw.update(requirements="numpy"), ("'requirements'",)),
        (lambda raw: raw.update(entry="missing.py:packed"), ("'missing.py:packed'", "no file")),
        (lambda raw: raw.update(entry="flow.py:"), ("'flow.py:'", "no file")),
    ],
    ids=["format", "no files", "no name", "requirements", "missing entry file", "no attr"],
)
def test_a_malformed_manifest_is_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], words: tuple[str, ...]
) -> None:
    refused(with_manifest(built(tmp_path / "a").data, edit), *words)


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    def garble(info: zipfile.ZipInfo, body: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [(info, b"{not json" if info.filename == MANIFEST else body)]

    refused(rewrite(built(tmp_path / "a").data, garble), "treadle.json is not JSON")


def _corrupt_member_data(data: bytes, name: str) -> bytes:
    """The archive with one bit of a member's compressed bytes flipped: its listing is
    intact, its content is not."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    broken = bytearray(data)
    broken[start + info.compress_size // 2] ^= 0x01
    return bytes(broken)


def test_a_member_with_damaged_bytes_is_refused(tmp_path: Path) -> None:
    refused(_corrupt_member_data(built(tmp_path / "a").data, "src/flow.py"))


def test_a_manifest_with_non_string_file_hashes_is_refused(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["files"]["flow.py"] = ["not", "a", "sha"]

    refused(with_manifest(built(tmp_path / "a").data, edit), "'files'", "'flow.py'")


# -- unpacking ------------------------------------------------------------------------


def test_unpack_writes_exactly_the_files_once(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write_flow(root)
    (root / "lib").mkdir()
    (root / "lib" / "util.py").write_text("U = 1\n")
    package = read_package(build_package(*load(root / "flow.py")).data)
    packages = tmp_path / "packages"
    folder = unpack(package, packages)
    assert folder == packages / package.manifest.hash
    assert os.listdir(packages) == [package.manifest.hash]  # no staging folder left
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == ["flow.py", "lib/util.py"]
    for rel, sha in package.manifest.files.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == sha

    # a folder that is there is complete: the second unpack does not write again
    mark = folder / "lib" / "util.py"
    mark.write_text("touched after unpacking\n")
    before = mark.stat().st_mtime_ns
    assert unpack(package, packages) == folder
    assert mark.read_text() == "touched after unpacking\n"
    assert mark.stat().st_mtime_ns == before
    assert os.listdir(packages) == [package.manifest.hash]


def test_unpack_keeps_versions_apart(tmp_path: Path) -> None:
    first, second = built(tmp_path / "a"), built(tmp_path / "b", value=2)
    packages = tmp_path / "packages"
    one, two = unpack(first, packages), unpack(second, packages)
    assert one != two
    assert "VALUE = 1" in (one / "flow.py").read_text()
    assert "VALUE = 2" in (two / "flow.py").read_text()


# -- loading a deployed version -------------------------------------------------------


def _deploy(store: Store, package: Package) -> Any:
    store.objects.put_bytes(package.data)
    project = store.projects.ensure_project(store.settings.project, store.settings.user)
    _, version = store.pipelines.ensure_version(
        project.id,
        package.manifest.name,
        package.manifest.hash,
        package.manifest.spec,
        source_of(package),
    )
    return version


def test_a_package_version_loads_from_its_unpacked_copy(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "work"
    package = built(root)
    version = _deploy(store, package)
    assert version.source.startswith("package:")
    # the working copy moves on; the version keeps running what was sent
    write_flow(root, value=2)
    found, source = version_pipeline(store, version)
    folder = store.settings.home / "packages" / package.manifest.hash
    assert source == str(folder / "flow.py")
    assert found.name == "packed"
    assert found.fn.__globals__["VALUE"] == 1
    # a damaged unpacked copy (its entry file gone) is unpacked again from the store
    (folder / "flow.py").unlink()
    (folder / "flow.py").parent.rmdir()
    again, _ = version_pipeline(store, version)
    assert (folder / "flow.py").is_file()
    assert again.name == "packed"


HELPER_FLOW = """
from pkghelper_{tag} import VALUE
from treadle import pipeline, step


@step
def make() -> int:
    return VALUE


@pipeline
def helped() -> None:
    make()
"""


def test_each_version_runs_its_own_helper_modules(store: Store, tmp_path: Path) -> None:
    tag = tmp_path.name.replace("-", "_")
    root = tmp_path / "work"
    root.mkdir()
    (root / "flow.py").write_text(HELPER_FLOW.format(tag=tag))
    (root / f"pkghelper_{tag}.py").write_text("VALUE = 1\n")
    found, source = load(root / "flow.py")
    versions = []
    for value in (1, 2):
        (root / f"pkghelper_{tag}.py").write_text(f"VALUE = {value}\n")
        versions.append(_deploy(store, build_package(found, source)))
    # the working copy's helper is imported already, as a server's own files may be;
    # each version still gets the helper it was built with, in either order
    try:
        loaded = [version_pipeline(store, v)[0] for v in (*versions, *reversed(versions))]
    finally:
        sys.modules.pop(f"pkghelper_{tag}", None)
    assert [p.fn.__globals__["VALUE"] for p in loaded] == [1, 2, 2, 1]
    assert [p.fn.__globals__["make"].fn() for p in loaded] == [1, 2, 2, 1]
