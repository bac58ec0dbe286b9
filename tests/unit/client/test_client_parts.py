"""The client's pure parts: JSON back into records, refusals into treadle's errors, and
the settings that point the CLI at a server."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import httpx
import pytest

from treadle.client import Client
from treadle.client.decode import decode
from treadle.client.transport import raise_for
from treadle.config import load_settings
from treadle.errors import (
    AccessError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
    TreadleError,
)
from treadle.store.records import (
    ArtifactRecord,
    Lineage,
    LineageEntry,
    MetricRecord,
    RunRecord,
    StepRunRecord,
)
from treadle.types import RunState, StepState


def _step() -> StepRunRecord:
    return StepRunRecord("s1", "r1", "p1", "train", "train", 1, StepState.SUCCEEDED, 1.0, "k")


def _artifact() -> ArtifactRecord:
    return ArtifactRecord("a1", "p1", "model", "model", "skops", "X", "0" * 64, "u", 10, 2.0)


def _as_json(value: Any) -> Any:
    import dataclasses
    import enum
    import json

    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(o)

    return json.loads(json.dumps(value, default=default))


def test_nested_records_enums_and_optionals_come_back_equal() -> None:
    lineage = Lineage(_artifact(), [LineageEntry(_step(), "model")], [])
    assert decode(Lineage, _as_json(lineage)) == lineage
    run = RunRecord("r1", "p1", "e1", None, "n", RunState.FAILED, "u", "local", 2, 1.0, 1.5)
    assert decode(list[RunRecord], _as_json([run])) == [run]
    assert decode(dict[str, ArtifactRecord], {"m": _as_json(_artifact())}) == {"m": _artifact()}


def test_decoding_tolerates_newer_servers_and_json_numbers() -> None:
    data = _as_json(MetricRecord("r1", "loss", 2.0, 3, 4.0))
    data.update(value=2, timestamp=4, added_by_a_newer_server=True)
    decoded = decode(MetricRecord, data)
    assert decoded == MetricRecord("r1", "loss", 2.0, 3, 4.0)
    assert isinstance(decoded.value, float)
    del data["step_run_id"]  # an older server: the record's default
    assert decode(MetricRecord, data).step_run_id is None


def test_nan_and_infinity_sent_as_null_read_as_nan_but_optionals_stay_none() -> None:
    metric = decode(MetricRecord, {**_as_json(MetricRecord("r", "k", 0.0, 0, 1.0)), "value": None})
    assert math.isnan(metric.value) and metric.step_run_id is None
    assert math.isnan(decode(dict[str, float], {"auc": None})["auc"])
    assert decode(float | None, None) is None


def _response(status: int, body: Any = None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://127.0.0.1:9/api/v1/projects/default/runs")
    if text is not None:
        return httpx.Response(status, text=text, request=request)
    return httpx.Response(status, json=body, request=request)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, NotFoundError),
        (409, ConflictError),
        (400, InvalidInputError),
        (413, InvalidInputError),
        (415, InvalidInputError),
        (422, InvalidInputError),
        (503, StoreUnavailableError),
        (500, TreadleError),
    ],
)
def test_a_refusal_is_the_error_of_its_status_with_the_servers_words(
    status: int, kind: type[TreadleError]
) -> None:
    with pytest.raises(kind) as raised:
        raise_for(_response(status, {"error": "what went wrong", "hint": "what to do"}))
    assert type(raised.value) is kind
    assert (raised.value.message, raised.value.hint) == ("what went wrong", "what to do")


def test_401_and_403_say_to_check_the_token() -> None:
    with pytest.raises(AccessError) as unauthorized:
        raise_for(_response(401, {"error": "the token is not valid", "hint": "send one"}))
    assert unauthorized.value.message == "the token is not valid"
    assert "TREADLE_TOKEN" in unauthorized.value.hint
    with pytest.raises(AccessError) as missing:
        raise_for(_response(401, {"error": "this endpoint needs a token"}), token=False)
    assert "TREADLE_TOKEN is not set" in missing.value.message
    with pytest.raises(PermissionDeniedError) as forbidden:
        raise_for(_response(403, {"error": "this needs the editor role"}))
    assert "TREADLE_TOKEN" in forbidden.value.hint and forbidden.value.http_status == 403


def test_a_route_the_server_lacks_or_a_body_that_is_not_treadles_is_still_an_error() -> None:
    with pytest.raises(NotFoundError) as missing:
        raise_for(_response(404, {"detail": "Not Found"}))
    assert "/api/v1/projects/default/runs is not found" in missing.value.message
    assert "a treadle server" in missing.value.hint
    with pytest.raises(TreadleError, match="502"):
        raise_for(_response(502, text="<html>bad gateway</html>"))
    raise_for(_response(200, {}))  # success passes


def test_the_server_address_and_token_come_from_the_environment_or_the_config_file(
    tmp_path: Any,
) -> None:
    env = {"TREADLE_HOME": str(tmp_path)}
    assert (load_settings(env).url, load_settings(env).token) == (None, None)
    (tmp_path / "config.toml").write_text('url = "http://10.0.0.5:8080"\ntoken = "trd_file"\n')
    settings = load_settings({**env, "TREADLE_TOKEN": "trd_env"})
    assert (settings.url, settings.token) == ("http://10.0.0.5:8080", "trd_env")
    assert "trd_" not in repr(settings)


def test_a_client_needs_a_server_address_and_never_shows_its_token(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="not a server address"):
        Client("127.0.0.1:8080", "trd_x", project="default")
    client = Client("http://127.0.0.1:9/", "trd_secret", project="p")
    assert client.url == "http://127.0.0.1:9" and "trd_secret" not in repr(client)
    other = client.for_project("q")
    assert (other.project, client.project) == ("q", "p")
    client.close()


def test_importing_treadle_does_not_import_httpx() -> None:
    code = "import sys, treadle\nprint('httpx' in sys.modules)\nprint(treadle.Client.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "Client"]
