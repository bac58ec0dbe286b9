"""Every endpoint of a real `treadle serve` process, over HTTP: the three prediction
protocols (plain, MLflow scoring-server inputs, Open Inference Protocol), the health and
metadata endpoints, and the Prometheus metrics.

Predictions are compared with `treadle.load_model(...).predict` on the same rows, on
rows where v1 and v2 disagree, so a right answer also shows the right version answered.
One server (`--no-batch`, so each request is one predict call) is shared by the module.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import (
    FEATURES,
    MODEL,
    Server,
    client,
    expected,
    metric_samples,
    module_home,
    records,
    running,
    telling_rows,
)

pytestmark = pytest.mark.slow

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    server: Server
    http: httpx.Client
    rows: list[list[float]]
    v1: list[Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = module_home(tmp_path_factory, "protocols")
    with running(home, "serve", f"{MODEL}@champion", "--no-batch") as server:
        rows = telling_rows(home, 6)
        with client(server.url) as http:
            yield Served(home, server, http, rows, expected(home, 1, rows))


def assert_answer(response: httpx.Response, predictions: list[Any], version: int = 1) -> str:
    """A plain or MLflow answer: model, version and request id in body and headers."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == predictions
    assert body["model"] == MODEL
    assert body["version"] == version
    assert response.headers["x-model-name"] == MODEL
    assert response.headers["x-model-version"] == str(version)
    assert response.headers["x-request-id"] == body["request_id"]
    return str(body["request_id"])


# -- POST /predict --------------------------------------------------------------------


def test_predict_rows(served: Served) -> None:
    response = served.http.post("/predict", json={"rows": records(served.rows)})
    request_id = assert_answer(response, served.v1)
    assert HEX_ID.match(request_id), request_id


def test_predict_columns_and_data(served: Served) -> None:
    response = served.http.post("/predict", json={"columns": FEATURES, "data": served.rows})
    assert_answer(response, served.v1)


def test_predict_columns_in_another_order(served: Served) -> None:
    # clients build column lists from dicts and sets: the order must not matter
    order = list(reversed(FEATURES))
    data = [[dict(zip(FEATURES, row, strict=True))[c] for c in order] for row in served.rows]
    response = served.http.post("/predict", json={"columns": order, "data": data})
    assert_answer(response, served.v1)


def test_predict_integers_in_float_columns(served: Served) -> None:
    rows = [[int(v * 10) for v in row] for row in served.rows]
    response = served.http.post("/predict", json={"columns": FEATURES, "data": rows})
    assert_answer(response, expected(served.home, 1, rows))


# -- POST /invocations: the JSON shapes `mlflow models serve` accepts --------------------
# Built by hand from MLflow's documented scoring format (mlflow is not installed here).


def _columns(rows: list[list[float]]) -> dict[str, list[float]]:
    return {c: [row[j] for row in rows] for j, c in enumerate(FEATURES)}


def _pandas_split(rows: list[list[float]]) -> dict[str, Any]:
    """What `DataFrame.to_json(orient="split")` writes: the index comes along."""
    import pandas as pd

    split = json.loads(pd.DataFrame(rows, columns=FEATURES).to_json(orient="split"))
    assert "index" in split
    return {"dataframe_split": split}


MLFLOW_PAYLOADS: dict[str, Callable[[list[list[float]]], dict[str, Any]]] = {
    # pandas "split" orient with the index omitted, as MLflow's own client sends it
    "dataframe_split": lambda rows: {"dataframe_split": {"columns": FEATURES, "data": rows}},
    # the same with the index, as `DataFrame.to_json(orient="split")` writes it
    "dataframe_split_with_index": _pandas_split,
    "dataframe_records": lambda rows: {"dataframe_records": records(rows)},
    "instances_lists": lambda rows: {"instances": rows},
    "instances_dicts": lambda rows: {"instances": records(rows)},
    "inputs_columns": lambda rows: {"inputs": _columns(rows)},
    "inputs_lists": lambda rows: {"inputs": rows},
}


@pytest.mark.parametrize("shape", sorted(MLFLOW_PAYLOADS))
def test_invocations_accepts_mlflow_inputs(served: Served, shape: str) -> None:
    payload = MLFLOW_PAYLOADS[shape](served.rows)
    response = served.http.post(
        "/invocations",
        content=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )
    assert_answer(response, served.v1)


def test_invocations_one_row_per_format_agree(served: Served) -> None:
    """A single row, the commonest MLflow call, in every format: one same answer."""
    one = served.rows[:1]
    answers = {
        shape: served.http.post("/invocations", json=build(one)).json().get("predictions")
        for shape, build in MLFLOW_PAYLOADS.items()
    }
    assert set(map(json.dumps, answers.values())) == {json.dumps(served.v1[:1])}, answers


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/json;"]
)
def test_invocations_json_content_types(served: Served, content_type: str) -> None:
    response = served.http.post(
        "/invocations",
        content=json.dumps({"dataframe_split": {"columns": FEATURES, "data": served.rows}}),
        headers={"content-type": content_type},
    )
    assert_answer(response, served.v1)


# -- POST /v2/models/NAME/infer (Open Inference Protocol) ---------------------------------


def assert_v2_answer(response: httpx.Response, predictions: list[Any], version: int = 1) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == str(version)
    assert response.headers["x-model-version"] == str(version)
    assert response.headers["x-request-id"] == body["id"]
    (output,) = body["outputs"]
    assert output["name"] == "prediction"
    assert output["shape"] == [len(predictions)]
    assert output["datatype"] == "INT64"
    assert output["data"] == predictions
    return str(body["id"])


def test_v2_one_tensor_per_column(served: Served) -> None:
    n = len(served.rows)
    inputs = [
        {"name": c, "shape": [n], "datatype": "FP64", "data": values}
        for c, values in _columns(served.rows).items()
    ]
    response = served.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": inputs})
    assert_v2_answer(response, served.v1)


def test_v2_column_tensors_in_any_order_and_shape_n_by_1(served: Served) -> None:
    n = len(served.rows)
    inputs = [
        {"name": c, "shape": [n, 1], "datatype": "FP64", "data": [[v] for v in values]}
        for c, values in reversed(_columns(served.rows).items())
    ]
    response = served.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": inputs})
    assert_v2_answer(response, served.v1)


def test_v2_one_matrix_tensor(served: Served) -> None:
    flat = [v for row in served.rows for v in row]
    tensor = {"name": "input-0", "shape": [len(served.rows), 20], "datatype": "FP64", "data": flat}
    response = served.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
    assert_v2_answer(response, served.v1)


def test_v2_matrix_tensor_with_nested_data(served: Served) -> None:
    tensor = {"name": "x", "shape": [len(served.rows), 20], "datatype": "FP64", "data": served.rows}
    response = served.http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
    assert_v2_answer(response, served.v1)


def test_v2_versioned_path(served: Served) -> None:
    tensor = {"name": "x", "shape": [len(served.rows), 20], "datatype": "FP64", "data": served.rows}
    response = served.http.post(f"/v2/models/{MODEL}/versions/1/infer", json={"inputs": [tensor]})
    assert_v2_answer(response, served.v1)


def test_v2_request_id_from_the_body_is_returned(served: Served) -> None:
    tensor = {"name": "x", "shape": [1, 20], "datatype": "FP64", "data": served.rows[0]}
    response = served.http.post(
        f"/v2/models/{MODEL}/infer", json={"id": "client-chosen-7", "inputs": [tensor]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "client-chosen-7"


# -- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/predict", "/invocations", f"/v2/models/{MODEL}/infer"])
def test_incoming_request_id_is_echoed(served: Served, endpoint: str) -> None:
    payload: dict[str, Any] = (
        {"inputs": [{"name": "x", "shape": [1, 20], "datatype": "FP64", "data": served.rows[0]}]}
        if endpoint.startswith("/v2")
        else {"dataframe_split": {"columns": FEATURES, "data": served.rows[:1]}}
        if endpoint == "/invocations"
        else {"rows": records(served.rows[:1])}
    )
    response = served.http.post(endpoint, json=payload, headers={"x-request-id": "trace-42.a"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "trace-42.a"
    body = response.json()
    assert body.get("request_id", body.get("id")) == "trace-42.a"


def test_generated_request_ids_are_unique(served: Served) -> None:
    ids = {
        served.http.post("/predict", json={"rows": records(served.rows[:1])}).headers[
            "x-request-id"
        ]
        for _ in range(20)
    }
    assert len(ids) == 20 and all(HEX_ID.match(i) for i in ids), ids


# -- health and metadata --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/health/live", "/ping"])
def test_liveness(served: Served, path: str) -> None:
    response = served.http.get(path)
    assert response.status_code == 200
    assert response.json() == {"live": True}


def test_readiness(served: Served) -> None:
    response = served.http.get("/v2/health/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True}
    model = served.http.get(f"/v2/models/{MODEL}/ready")
    assert model.status_code == 200
    assert model.json() == {"name": MODEL, "ready": True}


def test_model_metadata_carries_the_signature(served: Served) -> None:
    response = served.http.get(f"/v2/models/{MODEL}")
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "treadle-sklearn"
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [(c, "FP64") for c in FEATURES]
    assert [o["datatype"] for o in meta["outputs"]] == ["INT64"]
    signature = meta["signature"]
    assert [(c["name"], c["dtype"], c["nullable"]) for c in signature["inputs"]] == [
        (c, "float64", False) for c in FEATURES
    ]
    assert [c["dtype"] for c in signature["outputs"]] == ["int64"]


def test_server_metadata(served: Served) -> None:
    response = served.http.get("/v2")
    assert response.status_code == 200
    assert response.json()["name"] == "treadle"


# -- metrics --------------------------------------------------------------------------


def _requests_total(http: httpx.Client, endpoint: str, status: str) -> float:
    text = http.get("/metrics").text
    return sum(
        value
        for labels, value in metric_samples(text, "treadle_requests_total")
        if labels == {"model": MODEL, "version": "1", "endpoint": endpoint, "status": status}
    )


def test_metrics_count_requests_by_version_and_status(served: Served) -> None:
    ok_before = _requests_total(served.http, "predict", "200")
    bad_before = _requests_total(served.http, "predict", "400")
    for _ in range(7):
        assert served.http.post("/predict", json={"rows": records(served.rows)}).is_success
    for _ in range(3):
        bad = served.http.post("/predict", json={"rows": [{"f0": 1.0}]})
        assert bad.status_code == 400
    assert _requests_total(served.http, "predict", "200") == ok_before + 7
    assert _requests_total(served.http, "predict", "400") == bad_before + 3


def test_metrics_is_prometheus_text_with_a_latency_histogram(served: Served) -> None:
    served.http.post("/invocations", json={"instances": served.rows})
    response = served.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE treadle_request_latency_seconds histogram" in text
    buckets = [
        (labels["le"], value)
        for labels, value in metric_samples(text, "treadle_request_latency_seconds_bucket")
        if labels["version"] == "1" and labels["endpoint"] == "invocations"
    ]
    assert buckets and buckets[-1][0] == "+Inf"
    values = [v for _, v in buckets]
    assert values == sorted(values) and values[-1] >= 1
    (count,) = [
        v
        for labels, v in metric_samples(text, "treadle_request_latency_seconds_count")
        if labels["version"] == "1" and labels["endpoint"] == "invocations"
    ]
    assert count == values[-1]
    assert "# TYPE treadle_batch_rows histogram" in text
    swaps = metric_samples(text, "treadle_revision_swaps_total")
    assert swaps == [({}, 1.0)]
