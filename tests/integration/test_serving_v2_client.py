"""A real Open Inference Protocol client (Triton's `tritonclient.http`, which KServe users
also use) against a real `treadle serve` process: health and metadata calls, JSON
tensors, and the binary tensor data extension in both directions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from serving_support import FEATURES, MODEL, expected, module_home, running, telling_rows
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    home = module_home(tmp_path_factory, "v2client")
    with running(home, "serve", f"{MODEL}@champion", "--no-batch") as server:
        rows = telling_rows(home, 5)
        client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        yield client, (np.array(rows, dtype=np.float64), expected(home, 1, rows))
        client.close()


def test_health_and_metadata(triton: tuple[Any, Any]) -> None:
    client, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_one_matrix_tensor(triton: tuple[Any, Any], binary_in: bool, binary_out: bool) -> None:
    client, (X, want) = triton
    tensor = httpclient.InferInput("input", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput("prediction", binary_data=binary_out)]
    result = client.infer(MODEL, [tensor], outputs=outputs, request_id="req-7")
    assert result.as_numpy("prediction").tolist() == want
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == MODEL and response["model_version"] == "1"


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
def test_one_tensor_per_column(triton: tuple[Any, Any], binary_in: bool) -> None:
    client, (X, want) = triton
    tensors = []
    for i, name in enumerate(FEATURES):
        tensor = httpclient.InferInput(name, [len(X)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(X[:, i]), binary_data=binary_in)
        tensors.append(tensor)
    assert client.infer(MODEL, tensors).as_numpy("prediction").tolist() == want


def test_a_wrong_shape_is_a_client_error_naming_the_input(triton: tuple[Any, Any]) -> None:
    client, (X, _) = triton
    narrow = np.ascontiguousarray(X[:, :5])
    tensor = httpclient.InferInput("input", list(narrow.shape), "FP64")
    tensor.set_data_from_numpy(narrow)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor])
    assert caught.value.status() == "400"
    assert "inputs[0]" in str(caught.value)
