"""Content-addressed artifact objects: `<root>/objects/<sha[:2]>/<sha>`.

A reader never sees a half-written object, even after `kill -9` mid-write:

- In a local folder (the default, served with the standard library) a write lands in
  `<root>/tmp/` and is renamed into place; a rename is atomic.
- On any other fsspec URL (`s3://`, `gs://`, `memory://`…, through fsspec, imported only
  then) bytes whose sha256 is known up front go to their final key in one PUT, which an
  object store makes visible whole or not at all. A streamed write goes to
  `<root>/tmp/<random>` first, is hashed as it is written, and is then copied to its
  final key (a server-side copy, itself atomic) and the temporary key deleted.

Every read checks the sha256. Paths are resolved only under the root. Where an object
store is and how to log in to it come from fsspec's and the cloud SDK's own settings
(for S3: `AWS_ENDPOINT_URL` or `FSSPEC_S3_ENDPOINT_URL`, and the usual AWS credentials),
never from a treadle setting.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, cast

from treadle.errors import (
    ConfigError,
    CorruptArtifactError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
    TreadleError,
)

SCHEME = "treadle-object"
_HEX = frozenset("0123456789abcdef")
# Object stores where a single PUT is visible whole or not at all: known bytes go
# straight to their final key there. Any other fsspec filesystem gets a temporary key
# and a move.
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})
_REMOTE_HINT = (
    "check the artifact URL (TREADLE_ARTIFACT_URL), that its bucket exists, and the "
    "store's endpoint and credentials (for S3: AWS_ENDPOINT_URL or FSSPEC_S3_ENDPOINT_URL, "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)


def check_sha(sha: str) -> str:
    if len(sha) != 64 or not set(sha) <= _HEX:
        raise InvalidInputError(f"{sha!r} is not a sha256 digest")
    return sha


def sha_of_uri(uri: str) -> str:
    """The sha256 an object URI names."""
    prefix = f"{SCHEME}:sha256:"
    if not uri.startswith(prefix):
        raise InvalidInputError(
            f"artifact URI {uri!r} is not one of this store's",
            f"artifact URIs look like {prefix}<64 hex digits>",
        )
    return check_sha(uri[len(prefix) :])


class ArtifactStore:
    """Immutable objects addressed by their sha256; the only writer of artifact bytes."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        self._local = protocol in ("file", "local")
        if self._local:
            self.root = Path(url.removeprefix("file://")).expanduser().resolve()
            try:
                (self.root / "tmp").mkdir(parents=True, exist_ok=True)
                (self.root / "objects").mkdir(exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(
                    f"cannot create artifact folder {self.root}: {exc}"
                ) from exc
            self._fs: Any = None
        else:
            try:
                import fsspec

                # storage options (endpoint, region, credentials) come from fsspec's config
                # (FSSPEC_<PROTOCOL>_<OPTION>, ~/.config/fsspec) and the SDK's environment
                self._fs = fsspec.filesystem(protocol)
            except (ImportError, ValueError) as exc:
                raise ConfigError(
                    f"no filesystem for artifact URL {url!r}: {exc}",
                    "install the fsspec backend for that scheme (e.g. s3fs for s3://)",
                ) from exc
            self._atomic_put = protocol in _ATOMIC_PUT
            self.root = Path("/")  # unused for remote stores

    # -- addressing -------------------------------------------------------------------

    def uri(self, sha: str) -> str:
        return f"{SCHEME}:sha256:{check_sha(sha)}"

    def _object_path(self, sha: str) -> str:
        sha = check_sha(sha)
        rel = f"objects/{sha[:2]}/{sha}"
        return str(self.root / rel) if self._local else f"{self.url}/{rel}"

    def sha_of(self, uri: str) -> str:
        return sha_of_uri(uri)

    def local_path(self, uri: str) -> Path:
        """The file behind `uri` on this machine (local stores only)."""
        if not self._local:
            raise ConfigError("this artifact store is not a local folder")
        path = Path(self._object_path(self.sha_of(uri))).resolve()
        if self.root not in path.parents:
            raise InvalidInputError(f"artifact path {path} escapes the store root {self.root}")
        return path

    # -- writing ----------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[tuple[IO[bytes], list[str]]]:
        """Write an object through a file; on exit it is hashed and moved into place.

        Yields the open file and a one-item list that receives the sha256 on success.
        """
        result: list[str] = []
        if self._local:
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f, result
                sha = _hash_file(tmp)
                self._publish_local(tmp, sha)
                result.append(sha)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            tmp = f"{self.url}/tmp/{uuid.uuid4().hex}"
            with self._remote():
                raw = self._fs.open(tmp, "wb")
            hashing = _HashingWriter(raw, self._remote)
            try:
                yield cast(IO[bytes], hashing), result
                with self._remote():
                    raw.close()
            except BaseException:
                with suppress(Exception):
                    raw.close()
                with suppress(Exception):
                    if self._fs.exists(tmp):
                        self._fs.rm(tmp)
                raise
            sha = hashing.hexdigest()
            final = self._object_path(sha)
            with self._remote():
                try:
                    if not self._fs.exists(final):
                        self._fs.copy(tmp, final)
                finally:
                    self._fs.rm(tmp)
            result.append(sha)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store `data`; returns (sha256, size)."""
        sha = hashlib.sha256(data).hexdigest()
        if self._local:
            final = self._object_path(sha)
            # an object that exists but no longer matches its address is replaced
            if not os.path.exists(final) or _hash_file(final) != sha:
                fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    self._publish_local(tmp, sha)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        elif self._atomic_put:
            final = self._object_path(sha)
            with self._remote():
                # an object that is there with the wrong size is replaced; a full check of
                # its bytes is left to every read
                if not self._fs.exists(final) or self._fs.size(final) != len(data):
                    self._fs.pipe_file(final, data)
        else:
            with self.writer() as (f, _):
                f.write(data)
        return sha, len(data)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        with self.writer() as (f, result), open(path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
        return result[0], os.path.getsize(path)

    def _publish_local(self, tmp: str, sha: str) -> None:
        final = self._object_path(sha)
        if os.path.exists(final) and _hash_file(final) == sha:
            return  # the same content is already there; objects are immutable
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)

    @contextmanager
    def _remote(self) -> Iterator[None]:
        """Say which store failed, and what to check, when an object store cannot be
        reached or refuses; a missing object stays a FileNotFoundError for the caller,
        unless what is missing is the bucket itself."""
        try:
            yield
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise StoreUnavailableError(
                    f"artifact store {self.url} is unavailable: {exc}", _REMOTE_HINT
                ) from exc
            raise
        except TreadleError:
            raise
        except Exception as exc:  # botocore, aiohttp, gcsfs... each has its own tree
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise StoreUnavailableError(
                f"artifact store {self.url} is unavailable: {type(exc).__name__}: {first}",
                _REMOTE_HINT,
            ) from exc

    # -- reading ----------------------------------------------------------------------

    def exists(self, sha: str) -> bool:
        path = self._object_path(sha)
        if self._local:
            return os.path.exists(path)
        with self._remote():
            return bool(self._fs.exists(path))

    def get_bytes(self, sha: str) -> bytes:
        """The object's bytes, checked against `sha`."""
        path = self._object_path(sha)
        try:
            if self._local:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                with self._remote():
                    data = self._fs.cat_file(path)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"artifact object {sha[:12]} is missing from {self.url}",
                "re-run the step that produced it with --no-cache",
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise CorruptArtifactError(
                f"artifact object {path} is corrupt: its bytes hash to {actual[:12]}, "
                f"not {sha[:12]}"
            )
        return bytes(data)

    def verified_path(self, sha: str) -> Path:
        """A local file holding the object, checked against `sha` (for loaders that want
        a path, such as Parquet and skops). Remote objects are fetched to a cache."""
        if self._local:
            path = Path(self._object_path(sha))
            if not path.exists():
                raise NotFoundError(
                    f"artifact object {sha[:12]} is missing from {self.url}",
                    "re-run the step that produced it with --no-cache",
                )
            actual = _hash_file(str(path))
            if actual != sha:
                raise CorruptArtifactError(
                    f"artifact object {path} is corrupt: its bytes hash to {actual[:12]}, "
                    f"not {sha[:12]}"
                )
            return path
        # a private cache per user; a copy found there is trusted only after re-hashing it
        cache = Path(tempfile.gettempdir()) / f"treadle-objects-{os.getuid()}"
        cache.mkdir(mode=0o700, exist_ok=True)
        target = cache / sha
        if target.exists() and _hash_file(str(target)) == sha:
            return target
        data = self.get_bytes(sha)
        tmp = cache / f"{sha}.{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _HashingWriter:
    """A binary file that hashes what passes through it on the way to `raw`."""

    def __init__(self, raw: IO[bytes], guard: Callable[[], AbstractContextManager[None]]) -> None:
        self._raw = raw
        self._guard = guard
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        with self._guard():  # a failed upload of a full block shows here
            return int(self._raw.write(data))

    def flush(self) -> None:
        with self._guard():
            self._raw.flush()

    def tell(self) -> int:
        return int(self._raw.tell())

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
