"""The model server: a plain ASGI callable, kept lean because every microsecond on this
path is paid once per request.

Endpoints: POST /predict, POST /invocations (MLflow), POST /v2/models/{name}/infer
(Open Inference Protocol); GET /v2/health/live, /v2/health/ready, /v2/models/{name},
/v2/models/{name}/ready, /v2, /ping, /metrics. Every prediction response names the
model, the version that answered and the request id, in the body and in headers.
A request that does not fit gets a 4xx naming the field; a model that raises gets a
500 for that request; neither stops the server.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.metadata
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from treadle.errors import InvalidInputError, TreadleError
from treadle.models.signature import SignatureError
from treadle.serving import protocols
from treadle.serving.batching import MicroBatcher
from treadle.serving.feedback import FeedbackError, FeedbackLog, Recent, check_label
from treadle.serving.metrics import ServerMetrics
from treadle.serving.predlog import PredictionLog
from treadle.serving.traffic import Router, Target

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
PARSERS = {
    "predict": protocols.parse_plain,
    "invocations": protocols.parse_mlflow,
    "v2": protocols.parse_v2,
}


@dataclasses.dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 100_000


@dataclasses.dataclass(frozen=True)
class Batching:
    enabled: bool = False
    max_batch: int = 256
    max_wait_ms: float = 0.0


class HTTPError(Exception):
    def __init__(
        self, status: int, message: str, field: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.hint = status, message, field, hint


@dataclasses.dataclass(frozen=True)
class _State:
    router: Router
    batchers: dict[str, MicroBatcher]


class ModelServer:
    def __init__(
        self,
        name: str,
        *,
        metrics: ServerMetrics | None = None,
        predictions: PredictionLog | None = None,
        feedback: FeedbackLog | None = None,
        batching: Batching = Batching(),
        limits: Limits = Limits(),
        on_startup: Callable[[ModelServer], Awaitable[None]] | None = None,
        on_shutdown: Callable[[ModelServer], Awaitable[None]] | None = None,
        max_shadow_queue: int = 10_000,
    ) -> None:
        self.name = name
        self.metrics = metrics or ServerMetrics()
        self.predictions = predictions
        self.feedback = feedback
        self.recent = Recent()
        self.batching = batching
        self.limits = limits
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.state: _State | None = None
        self.shadow_dropped = 0
        self._shadow_queue: collections.deque[tuple[Target, list[str] | None, list[Any], str]] = (
            collections.deque()
        )
        self._max_shadow = max_shadow_queue
        self._shadow_wake = threading.Event()
        threading.Thread(target=self._shadow_loop, name="treadle-shadow", daemon=True).start()

    # -- revisions --------------------------------------------------------------------

    def swap(self, router: Router) -> None:
        """Put a loaded, warmed router in service. Requests already running finish on the
        one they started with; new ones take this one."""
        batchers = {}
        if self.batching.enabled:
            for t in router.answering:
                batchers[t.spec.version_id] = MicroBatcher(
                    t.model.predict,
                    max_batch=self.batching.max_batch,
                    max_wait_ms=self.batching.max_wait_ms,
                    on_batch=self.metrics.batch_counter(self.name, t.spec.version),
                )
        self.state = _State(router, batchers)
        self.metrics.swaps.inc()

    @property
    def ready(self) -> bool:
        return self.state is not None

    # -- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup is not None:
                        await self.on_startup(self)
                except Exception as exc:
                    text = exc.message if isinstance(exc, TreadleError) else repr(exc)
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    await self.on_shutdown(self)
                if self.predictions is not None:
                    self.predictions.close()
                if self.feedback is not None:
                    self.feedback.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST":
            if path == "/predict":
                await self._predict(scope, receive, send, "predict", None)
            elif path == "/invocations":
                await self._predict(scope, receive, send, "invocations", None)
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                await self._predict(scope, receive, send, "v2", path[len("/v2/models/") : -6])
            elif path == "/feedback":
                await self._feedback(scope, receive, send)
            else:
                await self._error(send, HTTPError(404, f"no endpoint POST {path}", "path"))
            return
        if method not in ("GET", "HEAD"):
            await self._error(send, HTTPError(405, f"{method} is not allowed here", "method"))
            return
        await self._get(path, send)

    async def _get(self, path: str, send: Send) -> None:
        state = self.state
        if path in ("/predict", "/invocations") or (
            path.startswith("/v2/models/") and path.endswith("/infer")
        ):
            await self._error(
                send, HTTPError(405, f"{path} takes POST, not GET", "method", "send it with POST")
            )
            return
        if path == "/metrics":
            if self.predictions is not None:
                self.metrics.queue_depth.set(self.predictions.depth)
                self.metrics.log_dropped.set(self.predictions.dropped)
            self.metrics.shadow_dropped.set(self.shadow_dropped)
            await _respond(
                send, 200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        elif path in ("/v2/health/live", "/ping", "/health"):
            await _respond(send, 200, b'{"live":true}', JSON_HEADERS)
        elif path == "/v2/health/ready":
            await _respond(
                send,
                200 if state else 503,
                orjson.dumps({"ready": state is not None}),
                JSON_HEADERS,
            )
        elif path == "/v2":
            await _respond(
                send,
                200,
                orjson.dumps({"name": "treadle", "version": _version(), "extensions": []}),
                JSON_HEADERS,
            )
        elif path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :]
            name, _, tail = rest.partition("/")
            if name != self.name:
                await self._error(
                    send,
                    HTTPError(
                        404, f"no model {name!r} here", "name", f"this server serves {self.name!r}"
                    ),
                )
            elif state is None:
                await self._error(send, HTTPError(503, "the model is not loaded yet"))
            elif tail == "ready":
                await _respond(send, 200, orjson.dumps({"name": name, "ready": True}), JSON_HEADERS)
            elif tail == "":
                primary = state.router.primary
                meta = protocols.v2_metadata(
                    self.name, state.router.versions(), primary.manifest.flavor, primary.signature
                )
                meta["revision"] = state.router.revision
                meta["signature"] = primary.signature.to_dict()
                await _respond(send, 200, orjson.dumps(meta), JSON_HEADERS)
            else:
                await self._error(send, HTTPError(404, f"no endpoint GET {path}", "path"))
        else:
            await self._error(send, HTTPError(404, f"no endpoint GET {path}", "path"))

    async def _read_body(self, scope: Scope, receive: Receive, binary: bool = False) -> bytes:
        limit = self.limits.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-type" and b"json" not in value and not binary:
                raise HTTPError(
                    415,
                    f"content type {value.decode(errors='replace')!r} is not JSON",
                    "content-type",
                    "send application/json",
                )
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise HTTPError(
                    413,
                    f"the body is {int(value)} bytes; the limit is {limit}",
                    "body",
                    "send fewer rows per request",
                )
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(
                    413,
                    f"the body is over the limit of {limit} bytes",
                    "body",
                    "send fewer rows per request",
                )
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, v2_path: str | None
    ) -> None:
        started = time.perf_counter()
        state = self.state
        request_id = ""
        header_length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id" and 0 < len(value) <= 128:
                request_id = value.decode("latin-1")
            elif key == b"inference-header-content-length" and endpoint == "v2":
                header_length = value
        request_id = request_id or uuid.uuid4().hex
        target = None
        try:
            if state is None:
                raise HTTPError(503, "the model is not loaded yet", None, "retry shortly")
            target = self._route(state.router, v2_path)
            body = await self._read_body(scope, receive, binary=header_length is not None)
            if header_length is not None:  # JSON header, then raw tensor bytes
                head, raw = protocols.split_binary(body, header_length)
                payload = _loads(head)
                protocols.inline_binary(payload, raw)
            else:
                payload = _loads(body)
            if endpoint == "v2" and isinstance(payload, dict):
                given = payload.get("id")
                if isinstance(given, str) and 0 < len(given) <= 128:
                    request_id = given  # the protocol returns the request's own id
            columns, rows = PARSERS[endpoint](payload, target.signature)
            if not rows:
                raise HTTPError(400, "the request has no rows", "rows")
            if len(rows) > self.limits.max_rows:
                raise HTTPError(
                    413,
                    f"{len(rows)} rows is over the limit of {self.limits.max_rows}",
                    "rows",
                    "split the request",
                )
            X = target.signature.check_rows(rows, columns)
            batcher = state.batchers.get(target.spec.version_id)
            if batcher is not None:
                predictions = await batcher.submit(X)
            else:
                predictions = target.model.predict(X)
                self.metrics.batch_counter(self.name, target.spec.version)(len(X))
            out = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
            if len(out) != len(rows):
                raise HTTPError(
                    500, f"the model returned {len(out)} predictions for {len(rows)} rows"
                )
        except HTTPError as exc:
            await self._fail(send, exc, endpoint, target, request_id, started)
            return
        except SignatureError as exc:
            await self._fail(
                send,
                HTTPError(400, exc.message, exc.field, exc.hint),
                endpoint,
                target,
                request_id,
                started,
            )
            return
        except InvalidInputError as exc:
            await self._fail(
                send,
                HTTPError(400, exc.message, None, exc.hint),
                endpoint,
                target,
                request_id,
                started,
            )
            return
        except Exception as exc:  # the model itself failed on this input
            await self._fail(
                send,
                HTTPError(500, f"the model failed: {type(exc).__name__}: {exc}"),
                endpoint,
                target,
                request_id,
                started,
            )
            return
        version = target.spec.version
        if endpoint == "v2" and protocols.wants_binary_output(payload):
            head_json, raw = protocols.v2_binary_response(self.name, version, request_id, out)
            head_bytes = orjson.dumps(head_json)
            headers = _headers(self.name, version, request_id)
            headers[0] = (b"content-type", b"application/octet-stream")
            headers.append((b"inference-header-content-length", b"%d" % len(head_bytes)))
            await _respond(send, 200, head_bytes + raw, headers)
            self._after(state, target, endpoint, started, request_id, columns, rows, out)
            return
        if endpoint == "v2":
            response = protocols.v2_response(self.name, version, request_id, out)
        else:
            response = {
                "model": self.name,
                "version": version,
                "request_id": request_id,
                "predictions": out,
            }
        await _respond(
            send,
            200,
            orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY),
            _headers(self.name, version, request_id),
        )
        self._after(state, target, endpoint, started, request_id, columns, rows, out)

    def _after(
        self,
        state: _State,
        target: Target,
        endpoint: str,
        started: float,
        request_id: str,
        columns: list[str] | None,
        rows: list[Any],
        out: list[Any],
    ) -> None:
        """After answering: metrics, the prediction log, copies for shadows."""
        version = target.spec.version
        elapsed = time.perf_counter() - started
        self.metrics.observe(self.name, version, endpoint, 200, elapsed)
        self.recent.add(request_id, version, len(rows))
        if self.predictions is not None:
            self.predictions.append(
                request_id,
                self.name,
                version,
                elapsed * 1000,
                columns or target.signature.columns,
                rows,
                out,
                target.signature.dtypes,
            )
        if state.router.shadows:
            self._mirror(state.router, columns, rows, request_id)

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`{"request_id": ..., "label": ...}` (with `"row": i` for one row of a request
        of several), `{"request_id": ..., "labels": [...]}` (one per row), or
        `{"feedback": [...]}` of either: the true labels of answered requests."""
        try:
            if self.feedback is None:
                raise HTTPError(
                    409, "this server keeps no feedback", "feedback", "serve with logging on"
                )
            try:
                body = orjson.loads(await self._read_body(scope, receive))
            except orjson.JSONDecodeError:
                raise HTTPError(400, "the body is not JSON", "body") from None
            items = body.get("feedback") if isinstance(body, dict) else None
            listed = items is not None
            if items is None:
                items = [body]
            if not isinstance(items, list) or not items or len(items) > 100_000:
                raise HTTPError(422, "feedback must be a list of 1 to 100,000 items", "feedback")
            state = self.state
            dtype = state.router.primary.signature.dtypes.get("prediction") if state else None
            accepted = [
                self._check_feedback(item, f"feedback[{i}]." if listed else "", dtype)
                for i, item in enumerate(items)
            ]
        except HTTPError as error:
            await self._error(send, error)
            return
        except FeedbackError as error:
            await self._error(send, HTTPError(error.status, error.message, error.field, error.hint))
            return
        count = 0
        for request_id, version, labels in accepted:
            for row, label in labels:
                self.feedback.append(request_id, row, version, label)
                count += 1
        await _respond(send, 202, orjson.dumps({"accepted": count}), JSON_HEADERS)

    def _check_feedback(
        self, item: Any, where: str, dtype: str | None
    ) -> tuple[str, int, list[tuple[int, Any]]]:
        if not isinstance(item, dict):
            raise HTTPError(422, f"{where or 'the body'} must be an object", where or "body")
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise HTTPError(422, f"{where}request_id is missing", f"{where}request_id")
        known = self.recent.get(request_id)
        if known is None:
            raise HTTPError(
                404,
                f"no request {request_id!r} was answered here recently",
                f"{where}request_id",
                "send the x-request-id (or request_id) the prediction's answer carried",
            )
        version, rows = known
        if "labels" in item:
            labels = item["labels"]
            if not isinstance(labels, list) or len(labels) != rows:
                raise HTTPError(
                    422, f"{where}labels must be a list of {rows} (one per row)", f"{where}labels"
                )
            pairs = list(enumerate(labels))
        else:
            row = item.get("row", 0)
            if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < rows:
                raise HTTPError(422, f"{where}row must be between 0 and {rows - 1}", f"{where}row")
            pairs = [(row, item.get("label"))]
        checked = [(r, check_label(v, dtype, f"{where}label")) for r, v in pairs]
        return request_id, version, checked

    def _route(self, router: Router, v2_path: str | None) -> Target:
        if v2_path is None:
            return router.choose()
        name, _, rest = v2_path.partition("/")
        if name != self.name:
            raise HTTPError(
                404, f"no model {name!r} here", "name", f"this server serves {self.name!r}"
            )
        if rest.startswith("versions/"):
            wanted = rest[len("versions/") :]
            for t in router.answering + router.shadows:
                if str(t.spec.version) == wanted:
                    return t
            raise HTTPError(
                404,
                f"version {wanted} of {self.name!r} is not served here",
                "version",
                f"served versions: {router.versions()}",
            )
        return router.choose()

    async def _fail(
        self,
        send: Send,
        error: HTTPError,
        endpoint: str,
        target: Target | None,
        request_id: str,
        started: float,
    ) -> None:
        version = target.spec.version if target is not None else 0
        await self._error(send, error, request_id, version)
        self.metrics.observe(
            self.name, version, endpoint, error.status, time.perf_counter() - started
        )

    async def _error(
        self, send: Send, error: HTTPError, request_id: str = "", version: int = 0
    ) -> None:
        body: dict[str, Any] = {"error": error.message}
        if error.field:
            body["field"] = error.field
        if error.hint:
            body["hint"] = error.hint
        if request_id:
            body["request_id"] = request_id
        body["model"] = self.name
        await _respond(
            send,
            error.status,
            orjson.dumps(body),
            _headers(self.name, version, request_id) if request_id else JSON_HEADERS,
        )

    # -- shadows ----------------------------------------------------------------------

    def _mirror(
        self, router: Router, columns: list[str] | None, rows: list[Any], request_id: str
    ) -> None:
        for shadow in router.shadows:
            if len(self._shadow_queue) >= self._max_shadow:
                self.shadow_dropped += 1
                continue
            self._shadow_queue.append((shadow, columns, rows, request_id))
        self._shadow_wake.set()

    def _shadow_loop(self) -> None:
        """Answer shadow copies off the request path; their results are only logged."""
        while True:
            self._shadow_wake.wait()
            self._shadow_wake.clear()
            while self._shadow_queue:
                target, columns, rows, request_id = self._shadow_queue.popleft()
                started = time.perf_counter()
                status = 200
                try:
                    X = target.signature.check_rows(rows, columns)
                    raw = target.model.predict(X)
                    out = raw.tolist() if hasattr(raw, "tolist") else list(raw)
                    if self.predictions is not None:
                        self.predictions.append(
                            request_id,
                            self.name,
                            target.spec.version,
                            (time.perf_counter() - started) * 1000,
                            columns or target.signature.columns,
                            rows,
                            out,
                            target.signature.dtypes,
                        )
                except Exception:  # a failing shadow must never reach the caller
                    status = 500
                self.metrics.observe(
                    self.name, target.spec.version, "shadow", status, time.perf_counter() - started
                )


def _headers(name: str, version: int, request_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"x-request-id", request_id.encode("latin-1")),
        (b"x-model-name", name.encode()),
        (b"x-model-version", str(version).encode()),
    ]


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # the standard library also reads NaN and Infinity, which the check then names
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}", "body") from None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    try:
        return importlib.metadata.version("treadle")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
