"""Requests a real `treadle serve` process must refuse: each gets a 4xx JSON error whose
`field` names what was wrong, and the server answers a good request right after.

The body limit (8 MiB) cannot be raised from `treadle serve`, so the row limit
(100,000) is reached with bodies under it: rows of compact values, or empty rows that
are counted before they are checked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import (
    FEATURES,
    MODEL,
    Server,
    assert_error,
    client,
    expected,
    metric_samples,
    module_home,
    records,
    running,
    telling_rows,
)

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
LIMIT = 8 * 1024 * 1024
UNICODE = "ünïcødé_列🚀"


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    server: Server
    http: httpx.Client
    row: list[float]
    answer: list[Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = module_home(tmp_path_factory, "errors")
    with running(home, "serve", f"{MODEL}@champion", "--no-batch") as server:
        (row,) = telling_rows(home, 1, seed=3)
        with client(server.url) as http:
            yield Served(home, server, http, row, expected(home, 1, [row]))


@pytest.fixture
def still_serving(served: Served) -> Iterator[None]:
    """After the refused request, the same server answers a good one correctly."""
    yield
    response = served.http.post("/predict", json={"columns": FEATURES, "data": [served.row]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == served.answer


def post_raw(http: httpx.Client, path: str, body: bytes, **headers: str) -> httpx.Response:
    return http.post(path, content=body, headers={**JSON, **headers})


def with_value(row: list[float], column: int, token: str) -> str:
    """A columns/data body whose one value is written as a raw JSON token."""
    values = [json.dumps(v) for v in row]
    values[column] = token
    columns, data = json.dumps(FEATURES), ", ".join(values)
    return f'{{"columns": {columns}, "data": [[{data}]]}}'


# -- the body -------------------------------------------------------------------------


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(
    "body",
    [b'{"rows": [', b"{bad}", b"", b"\xff\xff\xff", b'{"rows": [{"f0": 1.0}]} trailing'],
    ids=["truncated", "not-json", "empty", "not-utf8", "trailing-garbage"],
)
def test_malformed_json(served: Served, body: bytes) -> None:
    response = post_raw(served.http, "/predict", body)
    assert_error(response, 400, "body", "not valid JSON")


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/csv", "application/x-www-form-urlencoded"]
)
def test_wrong_content_type(served: Served, content_type: str) -> None:
    body = json.dumps({"columns": FEATURES, "data": [served.row]}).encode()
    response = served.http.post("/predict", content=body, headers={"content-type": content_type})
    error = assert_error(response, 415, "content-type", content_type)
    assert "json" in error["hint"]


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("endpoint", ["/predict", "/invocations"])
def test_body_is_not_an_object(served: Served, endpoint: str) -> None:
    response = served.http.post(endpoint, json=[served.row])
    assert_error(response, 400, "body", "JSON object")


@pytest.mark.usefixtures("still_serving")
def test_ten_megabyte_body(served: Served) -> None:
    filler = b"0," * (5 * 1024 * 1024)
    body = b'{"columns": [], "data": [[' + filler + b"0]]}"
    assert len(body) > LIMIT
    response = post_raw(served.http, "/predict", body)
    assert_error(response, 413, "body", str(LIMIT))


@pytest.mark.usefixtures("still_serving")
def test_ten_megabyte_body_without_content_length(served: Served) -> None:
    # a chunked upload states no length: the limit must hold while reading
    def chunks() -> Iterator[bytes]:
        yield b'{"columns": [], "data": [['
        for _ in range(100):
            yield b"0," * 52_429
        yield b"0]]}"

    response = served.http.post("/predict", content=chunks(), headers=JSON)
    assert_error(response, 413, "body", str(LIMIT))


# -- the row limit --------------------------------------------------------------------


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("endpoint", ["/predict", "/invocations"])
def test_a_million_rows(served: Served, endpoint: str) -> None:
    rows = b",".join([b"[]"] * 1_000_000)
    if endpoint == "/predict":
        body = b'{"columns": %s, "data": [%s]}' % (json.dumps(FEATURES).encode(), rows)
    else:
        body = b'{"instances": [%s]}' % rows
    assert len(body) < LIMIT
    response = post_raw(served.http, endpoint, body)
    assert_error(response, 413, "rows", "1000000 rows", "100000")


@pytest.mark.usefixtures("still_serving")
def test_one_row_over_the_limit_of_full_rows(served: Served) -> None:
    row = "[" + ",".join("0" for _ in FEATURES) + "]"
    columns, data = json.dumps(FEATURES), ",".join([row] * 100_001)
    body = f'{{"columns": {columns}, "data": [{data}]}}'
    assert len(body) < LIMIT
    response = post_raw(served.http, "/predict", body.encode())
    assert_error(response, 413, "rows", "100001 rows")


@pytest.mark.usefixtures("still_serving")
def test_no_rows(served: Served) -> None:
    response = served.http.post("/predict", json={"columns": FEATURES, "data": []})
    assert_error(response, 400, "rows", "no rows")


# -- columns --------------------------------------------------------------------------


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("form", ["rows", "columns", "instances", "inputs", "v2"])
def test_unknown_unicode_column_is_named(served: Served, form: str) -> None:
    names = [*FEATURES[:-1], UNICODE]
    payload: dict[str, Any]
    path = "/predict"
    if form == "rows":
        payload = {"rows": [dict(zip(names, served.row, strict=True))]}
    elif form == "columns":
        payload = {"columns": names, "data": [served.row]}
    elif form in ("instances", "inputs"):
        path = "/invocations"
        record = dict(zip(names, served.row, strict=True))
        payload = (
            {form: [record]} if form == "instances" else {form: {k: [v] for k, v in record.items()}}
        )
    else:
        path = f"/v2/models/{MODEL}/infer"
        payload = {
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
                for n, v in zip(names, served.row, strict=True)
            ]
        }
    response = served.http.post(path, content=json.dumps(payload).encode(), headers=JSON)
    error = assert_error(response, 400, UNICODE, "unknown column", UNICODE)
    assert "f19" in error["hint"]


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("form", ["rows", "columns"])
def test_extra_column_is_named(served: Served, form: str) -> None:
    if form == "rows":
        payload: dict[str, Any] = {"rows": [{**records([served.row])[0], "extra": 1.0}]}
    else:
        payload = {"columns": [*FEATURES, "extra"], "data": [[*served.row, 1.0]]}
    assert_error(served.http.post("/predict", json=payload), 400, "extra", "unknown column")


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("form", ["rows", "columns", "dataframe_records", "v2"])
def test_missing_column_is_named(served: Served, form: str) -> None:
    record = records([served.row])[0]
    del record["f7"]
    path = "/predict"
    if form == "rows":
        payload: dict[str, Any] = {"rows": [record]}
    elif form == "columns":
        payload = {"columns": list(record), "data": [list(record.values())]}
    elif form == "dataframe_records":
        path, payload = "/invocations", {"dataframe_records": [record]}
    else:
        path = f"/v2/models/{MODEL}/infer"
        payload = {
            "inputs": [
                {"name": k, "shape": [1], "datatype": "FP64", "data": [v]}
                for k, v in record.items()
            ]
        }
    assert_error(served.http.post(path, json=payload), 400, "f7", "missing column")


@pytest.mark.usefixtures("still_serving")
def test_row_of_the_wrong_width(served: Served) -> None:
    payload = {"columns": FEATURES, "data": [served.row, served.row[:5]]}
    assert_error(served.http.post("/predict", json=payload), 400, "data[1]", "5 values")


@pytest.mark.usefixtures("still_serving")
def test_row_of_the_wrong_width_with_columns_reordered(served: Served) -> None:
    payload = {"columns": list(reversed(FEATURES)), "data": [served.row, served.row[:5]]}
    assert_error(served.http.post("/predict", json=payload), 400, "data[1]", "5 values")


# -- values ---------------------------------------------------------------------------


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(
    ("token", "fragment"),
    [("NaN", "NaN"), ("Infinity", "infinite"), ("-Infinity", "infinite"), ("null", "missing")],
)
def test_non_finite_value_in_a_non_nullable_column(
    served: Served, token: str, fragment: str
) -> None:
    response = post_raw(served.http, "/predict", with_value(served.row, 3, token).encode())
    assert_error(response, 400, "f3 (row 0)", fragment, "'f3'")


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("endpoint", ["/invocations", "v2"])
def test_nan_through_the_other_protocols(served: Served, endpoint: str) -> None:
    values = [json.dumps(v) for v in served.row]
    values[11] = "NaN"
    if endpoint == "v2":
        path = f"/v2/models/{MODEL}/infer"
        body = '{"inputs": [{"name": "x", "shape": [1, 20], "datatype": "FP64", "data": [%s]}]}'
    else:
        path, body = endpoint, '{"instances": [[%s]]}'
    response = post_raw(served.http, path, (body % ", ".join(values)).encode())
    assert_error(response, 400, "f11 (row 0)", "NaN")


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(("value", "kind"), [("1.5", "str"), (True, "bool"), ([1.0], "list")])
def test_value_of_the_wrong_type(served: Served, value: Any, kind: str) -> None:
    row: list[Any] = list(served.row)
    row[0] = value
    response = served.http.post("/predict", json={"columns": FEATURES, "data": [row]})
    assert_error(response, 400, "f0 (row 0)", "float64", kind)


# -- Open Inference Protocol tensors --------------------------------------------------


def _matrix(data: list[Any], shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


def _v2_cases(row: list[float]) -> list[tuple[str, dict[str, Any], str, str]]:
    columns = [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
        for c, v in zip(FEATURES, row, strict=True)
    ]
    ragged = [dict(t) for t in columns]
    ragged[5] = {"name": "f5", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}
    wide = [dict(t) for t in columns]
    wide[2] = {"name": "f2", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}
    return [
        ("matrix-too-narrow", _matrix(row[:19], [1, 19]), "inputs[0].shape", "[1, 19]"),
        ("matrix-3d", _matrix(row, [1, 20, 1]), "inputs[0].shape", "[rows, 20]"),
        ("shape-not-data", _matrix(row, [2, 20]), "inputs[0].data", "20 values"),
        ("shape-negative", _matrix(row, [-1, 20]), "inputs[0].shape", "sizes"),
        ("datatype-unknown", _matrix(row, [1, 20], "FLOAT"), "inputs[0].datatype", "FLOAT"),
        ("datatype-missing", _matrix(row, [1, 20], ""), "inputs[0].datatype", "V2 datatype"),
        ("bytes-in-fp64", _matrix(["a"] * 20, [1, 20], "BYTES"), "f0 (row 0)", "float64"),
        ("column-rows-differ", {"inputs": ragged}, "inputs[5].shape", "2 rows"),
        ("column-not-a-vector", {"inputs": wide}, "inputs[2].shape", "[N]"),
        ("no-inputs", {"inputs": []}, "inputs", "non-empty"),
        ("unnamed-tensor", {"inputs": [{"shape": [1], "data": [1]}]}, "inputs[0].name", "name"),
    ]


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("case", range(11), ids=[c[0] for c in _v2_cases([0.0] * 20)])
def test_wrong_v2_tensor(served: Served, case: int) -> None:
    _, payload, field, fragment = _v2_cases(served.row)[case]
    response = served.http.post(f"/v2/models/{MODEL}/infer", json=payload)
    assert_error(response, 400, field, fragment)


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("path", ["/v2/models/nosuch/infer", "/v2/models/nosuch/versions/1/infer"])
def test_unknown_model_in_the_v2_path(served: Served, path: str) -> None:
    response = served.http.post(path, json=_matrix(served.row, [1, 20]))
    error = assert_error(response, 404, "name", "nosuch")
    assert MODEL in error["hint"]


@pytest.mark.usefixtures("still_serving")
def test_unserved_version_in_the_v2_path(served: Served) -> None:
    response = served.http.post(
        f"/v2/models/{MODEL}/versions/2/infer", json=_matrix(served.row, [1, 20])
    )
    assert_error(response, 404, "version", "version 2")


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("path", ["/v2/models/nosuch", "/v2/models/nosuch/ready"])
def test_unknown_model_metadata(served: Served, path: str) -> None:
    assert_error(served.http.get(path), 404, "name", "nosuch")


# -- paths and methods ----------------------------------------------------------------


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/nope"),
        ("GET", "/nope"),
        ("POST", "/v2/health/readyz"),
        ("GET", "/v2/models/clf/x"),
    ],
)
def test_unknown_path(served: Served, method: str, path: str) -> None:
    response = served.http.request(method, path, json={} if method == "POST" else None)
    assert_error(response, 404, "path", path)


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/predict"), ("DELETE", "/invocations"), ("PATCH", f"/v2/models/{MODEL}/infer")],
)
def test_wrong_method(served: Served, method: str, path: str) -> None:
    response = served.http.request(method, path, json={})
    assert_error(response, 405, "method", method)


@pytest.mark.usefixtures("still_serving")
@pytest.mark.parametrize("path", ["/predict", "/invocations", f"/v2/models/{MODEL}/infer"])
def test_get_on_a_prediction_endpoint(served: Served, path: str) -> None:
    assert_error(served.http.get(path), 405, "method", "GET")


# -- afterwards -----------------------------------------------------------------------


def test_refusals_are_counted_by_status(served: Served) -> None:
    for _ in range(2):
        post_raw(served.http, "/predict", b"{bad")
    text = served.http.get("/metrics").text
    by_status: dict[str, float] = {}
    for labels, value in metric_samples(text, "treadle_requests_total"):
        by_status[labels["status"]] = by_status.get(labels["status"], 0) + value
    assert by_status.get("400", 0) >= 2
    assert by_status.get("413", 0) >= 1
    assert by_status.get("415", 0) >= 1
    assert by_status.get("200", 0) >= 1
