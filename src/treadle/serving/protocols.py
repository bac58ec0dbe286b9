"""Request and response shapes of the three protocols a model server speaks.

| endpoint                      | request                                                    |
|-------------------------------|------------------------------------------------------------|
| POST /predict                 | {"rows": [{col: v}]} or {"columns": [...], "data": [[...]]} |
| POST /invocations (MLflow)    | dataframe_split, dataframe_records, instances, inputs      |
| POST /v2/models/{name}/infer  | Open Inference Protocol: one tensor per column, or one     |
|                               | [rows, columns] tensor                                     |

Each parser returns (columns or None, rows as lists); the signature check does the rest.
Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from treadle.models.signature import Signature, SignatureError

Parsed = tuple[list[str] | None, list[Any]]


def _bad(message: str, field: str, hint: str | None = None) -> SignatureError:
    return SignatureError(message, field, hint)


def _columns_data(body: dict[str, Any], where: str) -> Parsed:
    columns, data = body.get("columns"), body.get("data")
    if not isinstance(columns, list):
        raise _bad(f"{where}columns must be a list of column names", f"{where}columns")
    if not isinstance(data, list):
        raise _bad(f"{where}data must be a list of rows", f"{where}data")
    return [str(c) for c in columns], data


def parse_plain(body: Any, signature: Signature) -> Parsed:
    if not isinstance(body, dict):
        raise _bad(
            "the body must be a JSON object",
            "body",
            'send {"rows": [{...}]} or {"columns": [...], "data": [[...]]}',
        )
    if "rows" in body:
        rows = body["rows"]
        if not isinstance(rows, list):
            raise _bad("rows must be a list of objects", "rows")
        return None, signature.rows_from_records(rows)
    if "data" in body or "columns" in body:
        return _columns_data(body, "")
    raise _bad(
        "the body has neither rows nor columns/data",
        "rows",
        'send {"rows": [{...}]} or {"columns": [...], "data": [[...]]}',
    )


def parse_mlflow(body: Any, signature: Signature) -> Parsed:
    """MLflow scoring-server inputs."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", "body")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict):
            raise _bad("dataframe_split must be an object", "dataframe_split")
        return _columns_data(split, "dataframe_split.")
    if "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list):
            raise _bad("dataframe_records must be a list of objects", "dataframe_records")
        return None, signature.rows_from_records(records)
    for key in ("instances", "inputs"):
        if key in body:
            value = body[key]
            if isinstance(value, dict):  # {column: [values...]}
                signature.check_columns(list(value))
                columns = signature.columns
                lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
                if len(lengths) != 1 or -1 in lengths:
                    raise _bad(f"{key} columns must be lists of equal length", key)
                return None, [list(r) for r in zip(*(value[c] for c in columns), strict=True)]
            if not isinstance(value, list):
                raise _bad(f"{key} must be a list of rows or an object of columns", key)
            if value and isinstance(value[0], dict):
                return None, signature.rows_from_records(value)
            return None, value
    raise _bad(
        "the body has none of dataframe_split, dataframe_records, instances, inputs",
        "body",
        "see MLflow's scoring-server input formats",
    )


V2_TYPES = {
    "FP64",
    "FP32",
    "FP16",
    "INT64",
    "INT32",
    "INT16",
    "INT8",
    "UINT64",
    "UINT32",
    "UINT16",
    "UINT8",
    "BOOL",
    "BYTES",
}


def _v2_flat(tensor: dict[str, Any], i: int) -> tuple[list[Any], list[int]]:
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _bad(f"inputs[{i}].shape must be a list of sizes", f"inputs[{i}].shape")
    if tensor.get("datatype") not in V2_TYPES:
        raise _bad(
            f"inputs[{i}].datatype {tensor.get('datatype')!r} is not a V2 datatype",
            f"inputs[{i}].datatype",
            f"use one of {', '.join(sorted(V2_TYPES))}",
        )
    if not isinstance(data, list):
        raise _bad(f"inputs[{i}].data must be a list", f"inputs[{i}].data")
    if data and isinstance(data[0], list):  # nested (row-major) form is allowed too
        data = [v for row in data for v in (row if isinstance(row, list) else [row])]
    expected = 1
    for d in shape:
        expected *= d
    if len(data) != expected:
        raise _bad(f"inputs[{i}] has {len(data)} values for shape {shape}", f"inputs[{i}].data")
    return data, shape


def parse_v2(body: Any, signature: Signature) -> Parsed:
    """Open Inference Protocol (KServe V2) request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise _bad("a V2 request needs a non-empty inputs list", "inputs")
    tensors = body["inputs"]
    for i, t in enumerate(tensors):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(f"inputs[{i}] needs a name", f"inputs[{i}].name")
    width = len(signature.inputs)
    if len(tensors) == 1 and tensors[0]["name"] not in signature.columns:
        data, shape = _v2_flat(tensors[0], 0)
        if len(shape) != 2 or shape[1] != width:
            raise _bad(
                f"inputs[0] has shape {shape}; the model takes [rows, {width}]",
                "inputs[0].shape",
                f"send one tensor of shape [N, {width}] or one tensor per column",
            )
        return None, [data[r * width : (r + 1) * width] for r in range(shape[0])]
    names = [t["name"] for t in tensors]
    signature.check_columns(names)
    columns: dict[str, list[Any]] = {}
    rows_count = None
    for i, t in enumerate(tensors):
        data, shape = _v2_flat(t, i)
        if (len(shape) == 2 and shape[1] != 1) or len(shape) > 2:
            raise _bad(
                f"inputs[{i}] ({t['name']}) must have shape [N] or [N, 1]", f"inputs[{i}].shape"
            )
        if rows_count is None:
            rows_count = shape[0]
        elif shape[0] != rows_count:
            raise _bad(
                f"inputs[{i}] ({t['name']}) has {shape[0]} rows, not {rows_count}",
                f"inputs[{i}].shape",
            )
        columns[t["name"]] = data
    order = signature.columns
    return None, [list(r) for r in zip(*(columns[c] for c in order), strict=True)]


def _v2_datatype(values: Sequence[Any]) -> str:
    sample = values[0] if values else 0.0
    if isinstance(sample, bool):
        return "BOOL"
    if isinstance(sample, int):
        return "INT64"
    if isinstance(sample, float):
        return "FP64"
    return "BYTES"


def v2_response(name: str, version: int, request_id: str, predictions: list[Any]) -> dict[str, Any]:
    if predictions and isinstance(predictions[0], list):
        flat = [v for row in predictions for v in row]
        shape = [len(predictions), len(predictions[0])]
    else:
        flat, shape = predictions, [len(predictions)]
    return {
        "model_name": name,
        "model_version": str(version),
        "id": request_id,
        "outputs": [
            {"name": "prediction", "shape": shape, "datatype": _v2_datatype(flat), "data": flat}
        ],
    }


def v2_metadata(
    name: str, versions: list[int], flavor: str, signature: Signature
) -> dict[str, Any]:
    v2type = {
        "float64": "FP64",
        "float32": "FP32",
        "int64": "INT64",
        "int32": "INT32",
        "bool": "BOOL",
        "string": "BYTES",
    }
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": f"treadle-{flavor}",
        "inputs": [
            {"name": c.name, "datatype": v2type.get(c.dtype, "BYTES"), "shape": [-1]}
            for c in signature.inputs
        ],
        "outputs": [
            {"name": c.name, "datatype": v2type.get(c.dtype, "BYTES"), "shape": [-1]}
            for c in signature.outputs
        ],
    }


# -- the binary tensor data extension (what Triton's and KServe's clients send) --------

NUMPY_DTYPES = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
    "BOOL": "?",
}


def split_binary(body: bytes, header_length: bytes) -> tuple[bytes, bytes]:
    """Split a request into its JSON header and the raw tensor bytes after it."""
    text = header_length.decode("latin-1").strip()
    if not text.isdigit() or int(text) > len(body):
        raise _bad(
            f"Inference-Header-Content-Length {text!r} does not fit a body of {len(body)} bytes",
            "inference-header-content-length",
        )
    n = int(text)
    return body[:n], body[n:]


def _decode_bytes(chunk: bytes, i: int) -> list[str]:
    out, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise _bad(f"inputs[{i}] BYTES data is cut short", f"inputs[{i}]")
        size = int.from_bytes(chunk[offset : offset + 4], "little")
        offset += 4
        out.append(chunk[offset : offset + size].decode("utf-8", errors="replace"))
        offset += size
    return out


def inline_binary(payload: Any, raw: bytes) -> None:
    """Turn inputs sent as raw bytes (`parameters.binary_data_size`) into `data` lists."""
    import numpy as np

    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise _bad("a V2 request needs an inputs list", "inputs")
    offset = 0
    for i, tensor in enumerate(payload["inputs"]):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        size = params["binary_data_size"]
        if not isinstance(size, int) or size < 0 or offset + size > len(raw):
            raise _bad(
                f"inputs[{i}].parameters.binary_data_size does not fit the body",
                f"inputs[{i}].parameters.binary_data_size",
            )
        chunk = raw[offset : offset + size]
        offset += size
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            tensor["data"] = _decode_bytes(chunk, i)
        elif datatype in NUMPY_DTYPES:
            dtype = np.dtype(NUMPY_DTYPES[datatype])
            if size % dtype.itemsize:
                raise _bad(
                    f"inputs[{i}] has {size} bytes, not a whole number of {datatype}",
                    f"inputs[{i}].parameters.binary_data_size",
                )
            tensor["data"] = np.frombuffer(chunk, dtype).tolist()
        else:
            raise _bad(
                f"inputs[{i}].datatype {datatype!r} is not a V2 datatype", f"inputs[{i}].datatype"
            )
    if offset != len(raw):
        raise _bad(f"{len(raw) - offset} bytes after the last binary input", "body")


def wants_binary_output(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    params = payload.get("parameters")
    if isinstance(params, dict) and params.get("binary_data_output"):
        return True
    outputs = payload.get("outputs")
    return isinstance(outputs, list) and any(
        isinstance(o, dict)
        and isinstance(o.get("parameters"), dict)
        and o["parameters"].get("binary_data")
        for o in outputs
    )


def v2_binary_response(
    name: str, version: int, request_id: str, predictions: list[Any]
) -> tuple[dict[str, Any], bytes]:
    """The response header and the raw bytes of the prediction tensor."""
    import numpy as np

    response = v2_response(name, version, request_id, predictions)
    output = response["outputs"][0]
    kind = output["datatype"]
    if kind == "BYTES":
        raw = b"".join(
            len(b).to_bytes(4, "little") + b for b in (str(v).encode() for v in output["data"])
        )
    else:
        raw = np.asarray(output["data"], dtype=NUMPY_DTYPES[kind]).tobytes()
    del output["data"]
    output["parameters"] = {"binary_data_size": len(raw)}
    return response, raw
