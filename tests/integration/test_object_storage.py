"""Artifacts on fsspec URLs: `memory://`, and `s3://` on a real S3-compatible server
(moto's standalone server, a separate process on 127.0.0.1) reached through s3fs.

The endpoint and the credentials reach s3fs the standard way, from the environment the
AWS SDK reads (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); treadle
itself is only told the artifact URL. The last test runs a pipeline that registers a
model, then serves it, with TREADLE_ARTIFACT_URL=s3://bucket/prefix and nothing on disk.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pandas as pd
import pytest
from serving_support import REPO, free_port, running, treadle

import treadle as treadle_package
from treadle.config import load_settings
from treadle.errors import CorruptArtifactError, NotFoundError, StoreUnavailableError
from treadle.store import open_store
from treadle.store.artifacts import ArtifactStore

pytestmark = pytest.mark.slow

READY_SECONDS = 30.0
BUCKET = "treadle-artifacts"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _forget_s3_clients() -> None:
    """s3fs keeps one client per set of options; the next test module's endpoint differs."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server as a process of its own, with the AWS SDK's environment pointing
    at it (fake credentials) for this module and every process it starts."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    for _attempt in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_SECONDS
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{url}/moto-api/", timeout=1.0, trust_env=False).is_success
            except httpx.TransportError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        if ready:
            break
        proc.kill()
        proc.wait(10)
    else:
        raise AssertionError(f"moto's server did not start:\n{log.read_text()}")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**FAKE_AWS, "AWS_ENDPOINT_URL": url}.items():
            patch.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
            patch.delenv(key, raising=False)
        _forget_s3_clients()
        fsspec.filesystem("s3").mkdir(f"s3://{BUCKET}")
        try:
            yield url
        finally:
            _forget_s3_clients()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(params=["memory", "s3"])
def remote(request: pytest.FixtureRequest) -> ArtifactStore:
    """An empty store under a prefix of its own, on each remote backend."""
    if request.param == "memory":
        return ArtifactStore(f"memory://treadle-{uuid.uuid4().hex}")
    request.getfixturevalue("s3_endpoint")
    return ArtifactStore(f"s3://{BUCKET}/{uuid.uuid4().hex}")


def keys(store: ArtifactStore) -> list[str]:
    """Every key under the store's root, relative to it."""
    fs, root = fsspec.core.url_to_fs(store.url)
    fs.invalidate_cache()
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


def object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest}"


def tamper(store: ArtifactStore, digest: str, data: bytes) -> None:
    fsspec.filesystem(store.url.split("://", 1)[0]).pipe_file(
        f"{store.url}/{object_key(digest)}", data
    )


# -- the object store on each backend ---------------------------------------------------


def test_objects_round_trip_and_are_kept_once_by_content(remote: ArtifactStore) -> None:
    data = os.urandom(4096) + b"\x00 end"
    digest, size = remote.put_bytes(data)

    assert (digest, size) == (sha(data), len(data))
    assert remote.exists(digest)
    assert remote.get_bytes(digest) == data
    assert remote.put_bytes(data) == (digest, size)
    empty, zero = remote.put_bytes(b"")
    assert zero == 0 and remote.get_bytes(empty) == b""
    assert keys(remote) == sorted([object_key(digest), object_key(empty)])
    assert remote.uri(digest) == f"treadle-object:sha256:{digest}"
    assert remote.verified_path(digest).read_bytes() == data


def test_a_streamed_write_is_hashed_as_it_goes_and_leaves_no_temporary_key(
    remote: ArtifactStore, tmp_path: Path
) -> None:
    chunks = [os.urandom(256 * 1024) for _ in range(12)]
    with remote.writer() as (f, result):
        for chunk in chunks:
            f.write(chunk)
    whole = b"".join(chunks)
    assert result == [sha(whole)]
    assert remote.get_bytes(result[0]) == whole

    source = tmp_path / "file.bin"
    source.write_bytes(b"a file's bytes" * 1000)
    assert remote.put_file(source) == (sha(source.read_bytes()), source.stat().st_size)
    # the same bytes again: the temporary copy goes, the object stays one
    with remote.writer() as (f, again):
        f.write(whole)
    assert again == result
    assert keys(remote) == sorted([object_key(result[0]), object_key(sha(source.read_bytes()))])


def test_a_writer_that_raises_leaves_nothing_behind(remote: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="producer failed"), remote.writer() as (f, result):
        f.write(b"half of it")
        raise RuntimeError("producer failed")
    assert result == []
    assert keys(remote) == []


def test_every_read_checks_the_sha(remote: ArtifactStore) -> None:
    data = os.urandom(2048)
    digest, _ = remote.put_bytes(data)
    tamper(remote, digest, b"swapped bytes")

    with pytest.raises(CorruptArtifactError, match=digest[:12]):
        remote.get_bytes(digest)
    # a loader that wants a local file gets none: the copy is checked before it is kept
    with pytest.raises(CorruptArtifactError):
        remote.verified_path(digest)
    missing = sha(os.urandom(32))
    assert not remote.exists(missing)
    with pytest.raises(NotFoundError, match=missing[:12]):
        remote.get_bytes(missing)


def test_no_reader_ever_sees_a_half_written_object(remote: ArtifactStore) -> None:
    """A reader polling the store while a writer streams never finds an object under its
    final key whose bytes do not hash to that key."""
    chunks = [os.urandom(128 * 1024) for _ in range(24)]
    seen: list[str] = []
    bad: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for key in keys(remote):
                if key.startswith("objects/"):
                    name = key.rsplit("/", 1)[1]
                    try:
                        remote.get_bytes(name)
                        seen.append(name)
                    except CorruptArtifactError as exc:
                        bad.append(str(exc))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with remote.writer() as (f, result):
            for chunk in chunks:
                f.write(chunk)
                time.sleep(0.01)
        time.sleep(0.2)
    finally:
        done.set()
        watcher.join(30)
    assert bad == []
    assert set(seen) <= {result[0]}
    assert remote.get_bytes(result[0]) == b"".join(chunks)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from treadle.store.artifacts import ArtifactStore

    store = ArtifactStore(sys.argv[1])
    with store.writer() as (f, result):
        for i in range(2000):
            f.write(b"x" * 65536)
            if i == 8:
                print("writing", flush=True)
            time.sleep(0.005)
    """
)


def test_a_writer_killed_mid_write_leaves_no_object_in_s3(s3_endpoint: str) -> None:
    store = ArtifactStore(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, store.url], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.kill()
        proc.wait(10)
    assert [k for k in keys(store) if k.startswith("objects/")] == []


def test_a_missing_bucket_is_an_unavailable_store_with_a_hint(s3_endpoint: str) -> None:
    store = ArtifactStore(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/prefix")
    with pytest.raises(StoreUnavailableError, match="no-such-bucket") as caught:
        store.put_bytes(b"anything")
    assert "AWS_ENDPOINT_URL" in caught.value.hint
    with pytest.raises(StoreUnavailableError):
        store.get_bytes(sha(b"anything"))


# -- a pipeline, the registry and a model server on S3 ------------------------------------


def test_a_pipeline_registers_a_model_on_s3_and_a_model_server_loads_it(
    s3_endpoint: str, tmp_path: Path, make_home: Callable[..., Path]
) -> None:
    home = make_home(tmp_path / "home")
    home.mkdir(exist_ok=True)
    prefix = f"s3://{BUCKET}/e2e-{uuid.uuid4().hex[:8]}"
    # the helpers start processes without any TREADLE_* variable; the home's file says it
    with (home / "config.toml").open("a") as config:
        config.write(f'artifact_url = "{prefix}"\n')

    result = treadle(
        home,
        "run",
        str(REPO / "tests" / "resources" / "reg_pipeline.py"),
        "-p",
        "model_name=s3-model",
        timeout=180,
    )
    assert result.returncode == 0, str(result)
    assert "SUCCEEDED" in result.stdout, str(result)
    assert not (home / "artifacts").exists(), "an artifact was written to the local disk"

    settings = load_settings({"TREADLE_HOME": str(home), "TREADLE_USER": "srv-tests"})
    assert settings.artifact_url == prefix
    store = open_store(settings)
    try:
        project = store.projects.ensure_project(settings.project, settings.user)
        model = store.models.get_model(project.id, "s3-model")
        (version,) = store.models.list_versions(model.id)
        # the manifest and every file of the model are objects in the bucket
        assert store.objects.exists(version.manifest_sha)
        stored = keys(store.objects)
        assert object_key(version.manifest_sha) in stored
        assert len(stored) >= 4 and all(k.startswith("objects/") for k in stored)
        loaded = treadle_package.load_model("s3-model@1", store=store)
    finally:
        store.close()

    rows = [{f"f{i}": float(i - 1) * 0.5 + r for i in range(4)} for r in (-1.0, 0.0, 2.0)]
    want = [int(v) for v in loaded.predict(pd.DataFrame(rows))]
    with running(home, "serve", "s3-model@1") as server:
        answer = httpx.post(
            f"{server.url}/predict", json={"rows": rows}, timeout=30, trust_env=False
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert (body["model"], body["version"]) == ("s3-model", 1)
    assert [int(v) for v in body["predictions"]] == want
