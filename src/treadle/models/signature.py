"""Model signatures: the input columns (name, dtype, nullable) a model expects, inferred
from an example, and the strict check that turns request rows into model input.

A request that does not fit gets an `InvalidInputError` naming the field: the column,
the row, and what was wrong. Checking one 20-column row costs a few microseconds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from treadle.errors import InvalidInputError

NUMERIC = ("float64", "float32", "int64", "int32")
DTYPES = (*NUMERIC, "bool", "string")


class SignatureError(InvalidInputError):
    """The request does not fit the model's signature; `field` names where."""

    http_status = 400

    def __init__(self, message: str, field: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.field = field


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}


def _dtype_name(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    if kind == "f":
        return "float32" if getattr(dtype, "itemsize", 8) == 4 else "float64"
    if kind in "iu":
        return "int32" if getattr(dtype, "itemsize", 8) <= 4 else "int64"
    if kind == "b":
        return "bool"
    return "string"


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.inputs]

    @functools.cached_property
    def dtypes(self) -> dict[str, str]:
        """Column -> dtype, and "prediction" -> the first output's dtype if declared."""
        out = {c.name: c.dtype for c in self.inputs}
        if len(self.outputs) == 1:
            out["prediction"] = self.outputs[0].dtype
        return out

    @property
    def numeric(self) -> bool:
        """All inputs numeric: the model gets one float array, no DataFrame."""
        return all(c.dtype in NUMERIC for c in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(ColumnSpec(**c) for c in data.get("inputs", [])),
            outputs=tuple(ColumnSpec(**c) for c in data.get("outputs", [])),
        )

    # -- checking requests ------------------------------------------------------------

    def check_columns(self, columns: Sequence[Any]) -> None:
        expected = self.columns
        if list(columns) == expected:
            return
        known = set(expected)
        for name in columns:
            if name not in known:
                raise SignatureError(
                    f"unknown column {name!r}",
                    str(name),
                    f"the model takes: {', '.join(expected)}",
                )
        given = set(columns)
        for name in expected:
            if name not in given:
                raise SignatureError(f"missing column {name!r}", name)
        if len(given) != len(columns):
            dup = next(c for c in columns if list(columns).count(c) > 1)
            raise SignatureError(f"column {dup!r} is given twice", str(dup))

    def rows_from_records(self, records: Sequence[Any]) -> list[list[Any]]:
        """`[{col: value}, ...]` -> rows in signature order, columns checked."""
        expected = self.columns
        out = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise SignatureError(f"row {i} is not an object", f"rows[{i}]")
            if len(record) != len(expected) or any(k not in record for k in expected):
                self.check_columns(list(record))
            out.append([record[k] for k in expected])
        return out

    def check_rows(self, rows: Sequence[Any], columns: Sequence[Any] | None = None) -> Any:
        """Validate rows (lists of values, in `columns` order or the signature's) and return
        the model input: a float64 array for all-numeric signatures, else a DataFrame."""
        if columns is not None and list(columns) != self.columns:
            self.check_columns(columns)
            order = [list(columns).index(c) for c in self.columns]
            width = len(order)
            rows = [
                [row[j] for j in order] if isinstance(row, list) and len(row) == width else row
                for row in rows
            ]
        width = len(self.inputs)
        specs = self.inputs
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise SignatureError(
                    f"row {i} has {got} values; the model takes {width}",
                    f"data[{i}]",
                    f"give the columns in this order: {', '.join(self.columns)}",
                )
            for j, value in enumerate(row):
                t = type(value)
                spec = specs[j]
                if t is float:
                    if spec.dtype in NUMERIC and (
                        (spec.nullable and math.isnan(value))
                        or (
                            math.isfinite(value)
                            and not (spec.dtype.startswith("int") and not value.is_integer())
                        )
                    ):
                        continue
                elif t is int:
                    if spec.dtype in NUMERIC:
                        continue
                elif value is None:
                    if spec.nullable:
                        continue
                elif t is bool:
                    if spec.dtype == "bool":
                        continue
                elif t is str and spec.dtype == "string":
                    continue
                _refuse(spec, value, i)
        return self._to_input(rows)

    def _to_input(self, rows: Sequence[list[Any]]) -> Any:
        import numpy as np

        if self.numeric:
            array = np.array(rows, dtype=np.float64)
            return array.reshape(len(rows), len(self.inputs))
        import pandas as pd

        frame = pd.DataFrame(list(rows), columns=self.columns)
        for spec in self.inputs:
            if spec.dtype in NUMERIC:
                frame[spec.name] = frame[spec.name].astype("float64")
        return frame


def _refuse(spec: ColumnSpec, value: Any, row: int) -> None:
    field = f"{spec.name} (row {row})"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise SignatureError(f"column {spec.name!r} may not be missing or NaN (row {row})", field)
    if isinstance(value, float) and math.isinf(value):
        raise SignatureError(f"column {spec.name!r} may not be infinite (row {row})", field)
    if isinstance(value, float) and spec.dtype.startswith("int"):
        raise SignatureError(
            f"column {spec.name!r} takes integers, got {value!r} (row {row})", field
        )
    raise SignatureError(
        f"column {spec.name!r} takes {spec.dtype}, got {type(value).__name__} {value!r:.40} "
        f"(row {row})",
        field,
    )


def _column_dtype(column: Any) -> str:
    """A column's dtype; an object column of booleans with gaps is still bool."""
    if getattr(column.dtype, "kind", "O") == "O":
        present = column.dropna()
        if len(present) and all(isinstance(v, bool) for v in present):
            return "bool"
    return _dtype_name(column.dtype)


def infer_signature(example: Any, output: Any = None) -> Signature:
    """The signature of a model from an input example: a DataFrame (columns, dtypes,
    and nullable where the example has missing values), a 2-D array, or a dict of
    columns; `output` is an example of what the model returns."""
    import numpy as np
    import pandas as pd

    if isinstance(example, Mapping):
        example = pd.DataFrame(dict(example))
    if isinstance(example, np.ndarray):
        if example.ndim != 2:
            raise InvalidInputError("an array input_example must be 2-D (rows by features)")
        example = pd.DataFrame(example, columns=[f"x{i}" for i in range(example.shape[1])])
    if not isinstance(example, pd.DataFrame):
        raise InvalidInputError(
            f"cannot infer a signature from a {type(example).__name__}",
            "give input_example as a pandas DataFrame, a 2-D numpy array or a dict of columns",
        )
    inputs = tuple(
        ColumnSpec(str(name), _column_dtype(example[name]), bool(example[name].isna().any()))
        for name in example.columns
    )
    outputs: tuple[ColumnSpec, ...] = ()
    if output is not None:
        out = np.asarray(output)
        if out.ndim <= 1:
            outputs = (ColumnSpec("prediction", _dtype_name(out.dtype)),)
        else:
            outputs = tuple(
                ColumnSpec(f"prediction_{i}", _dtype_name(out.dtype)) for i in range(out.shape[1])
            )
    return Signature(inputs, outputs)
