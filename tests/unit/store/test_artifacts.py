"""The content-addressed object store: addressing, integrity checks, atomic writes."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from treadle.errors import CorruptArtifactError, InvalidInputError, NotFoundError
from treadle.store.artifacts import SCHEME, ArtifactStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "tmp").rglob("*") if p.is_file())


@pytest.fixture
def objects(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def test_put_bytes_then_get_bytes(objects: ArtifactStore) -> None:
    data = b"hello \x00 world" * 1000
    digest, size = objects.put_bytes(data)

    assert (digest, size) == (sha(data), len(data))
    assert objects.exists(digest)
    assert objects.get_bytes(digest) == data
    path = objects.root / "objects" / digest[:2] / digest
    assert path.read_bytes() == data
    assert tmp_files(objects.root) == []


def test_empty_object(objects: ArtifactStore) -> None:
    digest, size = objects.put_bytes(b"")
    assert size == 0
    assert objects.get_bytes(digest) == b""


def test_objects_are_written_read_only(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"immutable")
    mode = (objects.root / "objects" / digest[:2] / digest).stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_put_file_then_read_back(objects: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    src.write_bytes(data)

    digest, size = objects.put_file(src)

    assert (digest, size) == (sha(data), len(data))
    assert objects.get_bytes(digest) == data
    assert objects.verified_path(digest).read_bytes() == data
    assert tmp_files(objects.root) == []


def test_same_content_is_stored_once(objects: ArtifactStore, tmp_path: Path) -> None:
    data = b"same content"
    src = tmp_path / "same.txt"
    src.write_bytes(data)

    first = objects.put_bytes(data)
    second = objects.put_bytes(data)
    third = objects.put_file(src)
    with objects.writer() as (f, result):
        f.write(data)

    assert first == second == third == (sha(data), len(data))
    assert result == [sha(data)]
    assert object_files(objects.root) == [objects.root / "objects" / sha(data)[:2] / sha(data)]
    assert tmp_files(objects.root) == []


def test_writer_publishes_on_exit_and_reports_the_sha(objects: ArtifactStore) -> None:
    with objects.writer() as (f, result):
        f.write(b"part one, ")
        f.write(b"part two")
        assert result == []
        assert object_files(objects.root) == []
    assert result == [sha(b"part one, part two")]
    assert objects.get_bytes(result[0]) == b"part one, part two"


def test_writer_that_raises_leaves_nothing_behind(objects: ArtifactStore) -> None:
    with pytest.raises(RuntimeError), objects.writer() as (f, result):
        f.write(b"half")
        raise RuntimeError("step crashed")
    assert result == []
    assert object_files(objects.root) == []
    assert tmp_files(objects.root) == []


def _tamper(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def test_tampered_object_is_refused_on_read(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"the real bytes")
    _tamper(objects.root / "objects" / digest[:2] / digest, b"the fake bytes")

    with pytest.raises(CorruptArtifactError, match=digest[:12]):
        objects.get_bytes(digest)
    with pytest.raises(CorruptArtifactError):
        objects.verified_path(digest)


def test_truncated_object_is_refused_on_read(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"0123456789" * 100)
    _tamper(objects.root / "objects" / digest[:2] / digest, b"0123456789")
    with pytest.raises(CorruptArtifactError):
        objects.get_bytes(digest)


def test_missing_object_is_not_found(objects: ArtifactStore) -> None:
    missing = sha(b"never written")
    assert not objects.exists(missing)
    with pytest.raises(NotFoundError):
        objects.get_bytes(missing)
    with pytest.raises(NotFoundError):
        objects.verified_path(missing)


def test_uri_round_trip(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"x")
    uri = objects.uri(digest)
    assert uri == f"{SCHEME}:sha256:{digest}"
    assert objects.sha_of(uri) == digest
    assert objects.local_path(uri) == objects.root / "objects" / digest[:2] / digest


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/objects/aa/" + "a" * 64,
        "file:///etc/passwd",
        "sha256:" + "a" * 64,
        "treadle-object:md5:" + "a" * 32,
        f"{SCHEME}:sha256:" + "a" * 63,
        f"{SCHEME}:sha256:" + "a" * 65,
        f"{SCHEME}:sha256:" + "A" * 64,
        f"{SCHEME}:sha256:" + "g" * 64,
        f"{SCHEME}:sha256:../../../../etc/passwd" + "a" * 42,
        f"{SCHEME}:sha256:" + "a" * 62 + "/.",
        "",
    ],
)
def test_foreign_or_malformed_uris_are_invalid(objects: ArtifactStore, uri: str) -> None:
    with pytest.raises(InvalidInputError):
        objects.sha_of(uri)
    with pytest.raises(InvalidInputError):
        objects.local_path(uri)


@pytest.mark.parametrize(
    "bad_sha",
    ["", "abc", "a" * 63, "a" * 65, "A" * 64, "z" * 64, "../" + "a" * 61, "a" * 62 + "\n\n"],
)
def test_sha_that_is_not_64_lowercase_hex_is_invalid(objects: ArtifactStore, bad_sha: str) -> None:
    with pytest.raises(InvalidInputError):
        objects.get_bytes(bad_sha)
    with pytest.raises(InvalidInputError):
        objects.exists(bad_sha)
    with pytest.raises(InvalidInputError):
        objects.uri(bad_sha)
    with pytest.raises(InvalidInputError):
        objects.verified_path(bad_sha)


def test_local_path_stays_under_the_root(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"inside")
    path = objects.local_path(objects.uri(digest))
    assert objects.root in path.parents
    assert path.resolve() == path


def test_local_path_refuses_a_shard_symlinked_out_of_the_root(
    objects: ArtifactStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    digest = sha(b"planted")
    (outside / digest).write_bytes(b"planted")
    (objects.root / "objects" / digest[:2]).symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidInputError, match="escapes"):
        objects.local_path(objects.uri(digest))


def test_file_url_and_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_url = ArtifactStore(f"file://{tmp_path / 'a'}")
    digest, _ = by_url.put_bytes(b"via file url")
    assert (tmp_path / "a" / "objects" / digest[:2] / digest).read_bytes() == b"via file url"

    monkeypatch.chdir(tmp_path)
    relative = ArtifactStore("rel")
    assert relative.root == tmp_path / "rel"
    assert relative.root.is_absolute()


def test_memory_backend_put_and_get() -> None:
    root = f"memory://treadle-test-{uuid.uuid4().hex}"
    store = ArtifactStore(root)
    fs = fsspec.filesystem("memory")
    data = b"remote bytes" * 100
    src_digest, size = store.put_bytes(data)

    assert (src_digest, size) == (sha(data), len(data))
    assert store.exists(src_digest)
    assert store.get_bytes(src_digest) == data
    assert store.put_bytes(data) == (src_digest, size)
    assert fs.cat_file(f"{root}/objects/{src_digest[:2]}/{src_digest}") == data
    files = fs.find(root)
    assert len(files) == 1
    assert files[0].endswith(f"/objects/{src_digest[:2]}/{src_digest}")

    with store.writer() as (f, result):
        f.write(b"streamed")
    assert store.get_bytes(result[0]) == b"streamed"

    missing = sha(b"absent")
    assert not store.exists(missing)
    with pytest.raises(NotFoundError):
        store.get_bytes(missing)
    with pytest.raises(InvalidInputError):
        store.get_bytes("nothex")

    fs.pipe_file(f"{root}/objects/{src_digest[:2]}/{src_digest}", b"tampered")
    with pytest.raises(CorruptArtifactError):
        store.get_bytes(src_digest)


def test_memory_backend_verified_path_fetches_a_checked_copy() -> None:
    store = ArtifactStore(f"memory://treadle-test-{uuid.uuid4().hex}")
    data = uuid.uuid4().bytes * 10
    digest, _ = store.put_bytes(data)
    path = store.verified_path(digest)
    try:
        assert path.read_bytes() == data
    finally:
        path.unlink(missing_ok=True)


def test_memory_backend_verified_path_replaces_a_tampered_cached_copy() -> None:
    """A local copy of a remote object is re-hashed before use; a swapped one is fetched
    again from the store, never handed to the loader."""
    store = ArtifactStore(f"memory://treadle-test-{uuid.uuid4().hex}")
    data = uuid.uuid4().bytes * 10
    digest, _ = store.put_bytes(data)
    path = store.verified_path(digest)
    try:
        path.write_bytes(b"swapped by another local user")
        again = store.verified_path(digest)
        assert again.read_bytes() == data
    finally:
        path.unlink(missing_ok=True)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from treadle.store.artifacts import ArtifactStore

    store = ArtifactStore(sys.argv[1])
    chunk = b"x" * 65536
    with store.writer() as (f, result):
        for i in range(2000):
            f.write(chunk)
            f.flush()
            if i == 8:
                print("writing", flush=True)
            time.sleep(0.005)
    print("finished", result, flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_mid_write_leaves_no_object(objects: ArtifactStore) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(objects.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"writing\n", proc.stderr.read() if proc.stderr else line
        deadline = time.monotonic() + 10
        while not any(p.stat().st_size > 0 for p in tmp_files(objects.root)):
            assert time.monotonic() < deadline, "the writer never reached its temp file"
            time.sleep(0.01)
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    assert object_files(objects.root) == []
    leftovers = tmp_files(objects.root)
    assert len(leftovers) == 1
    partial = leftovers[0].read_bytes()
    assert 0 < len(partial) < 2000 * 65536
    full = b"x" * (2000 * 65536)
    for digest in (sha(partial), sha(full)):
        assert not objects.exists(digest)
        with pytest.raises(NotFoundError):
            objects.get_bytes(digest)

    fresh = ArtifactStore(str(objects.root))
    assert fresh.put_bytes(b"after the crash")[1] == len(b"after the crash")
    assert len(object_files(objects.root)) == 1
