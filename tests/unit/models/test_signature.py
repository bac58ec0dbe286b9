"""Signatures: what is inferred from an example, and the strict check that turns request
rows into model input (refusals must name the offending field)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from treadle.errors import InvalidInputError
from treadle.models.signature import ColumnSpec, Signature, SignatureError, infer_signature

MIXED = Signature(
    (
        ColumnSpec("age", "int64"),
        ColumnSpec("income", "float64", nullable=True),
        ColumnSpec("score", "float64"),
        ColumnSpec("member", "bool"),
        ColumnSpec("city", "string"),
        ColumnSpec("note", "string", nullable=True),
    )
)
NUMERIC = Signature((ColumnSpec("a", "float64"), ColumnSpec("b", "int64")))


def good_row() -> list[Any]:
    return [41, 52_000.5, 0.75, True, "Lyon", "vip"]


def refusal(sig: Signature, rows: list[Any], columns: list[Any] | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        sig.check_rows(rows, columns)
    return info.value


# -- inference --------------------------------------------------------------------------


def test_infer_from_dataframe_maps_dtypes_and_marks_nullable_where_example_has_nan() -> None:
    frame = pd.DataFrame(
        {
            "f64": [1.5, 2.5, 3.5],
            "f32": np.array([1.0, 2.0, 3.0], dtype=np.float32),
            "i64": np.array([1, 2, 3], dtype=np.int64),
            "i32": np.array([1, 2, 3], dtype=np.int32),
            "flag": [True, False, True],
            "name": ["a", "b", "c"],
            "gappy": [1.0, np.nan, 3.0],
            "maybe_name": ["x", None, "z"],
        }
    )
    sig = infer_signature(frame)
    assert [c.to_dict() for c in sig.inputs] == [
        {"name": "f64", "dtype": "float64", "nullable": False},
        {"name": "f32", "dtype": "float32", "nullable": False},
        {"name": "i64", "dtype": "int64", "nullable": False},
        {"name": "i32", "dtype": "int32", "nullable": False},
        {"name": "flag", "dtype": "bool", "nullable": False},
        {"name": "name", "dtype": "string", "nullable": False},
        {"name": "gappy", "dtype": "float64", "nullable": True},
        {"name": "maybe_name", "dtype": "string", "nullable": True},
    ]
    assert sig.outputs == ()
    assert not sig.numeric


def test_infer_from_2d_array_names_columns_by_position() -> None:
    sig = infer_signature(np.zeros((3, 4)))
    assert sig.columns == ["x0", "x1", "x2", "x3"]
    assert {c.dtype for c in sig.inputs} == {"float64"}
    assert sig.numeric


def test_infer_from_int_array_and_from_dict_of_columns() -> None:
    assert [c.dtype for c in infer_signature(np.ones((2, 2), dtype=np.int64)).inputs] == [
        "int64",
        "int64",
    ]
    sig = infer_signature({"height": [1.8, 1.6], "name": ["ann", "bob"], "ok": [True, False]})
    assert [(c.name, c.dtype) for c in sig.inputs] == [
        ("height", "float64"),
        ("name", "string"),
        ("ok", "bool"),
    ]


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2)), [[1.0, 2.0]], "a,b", 3])
def test_infer_refuses_what_is_not_a_table(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        infer_signature(bad)


def test_output_signature_from_labels_and_from_probabilities() -> None:
    example = pd.DataFrame({"a": [1.0, 2.0]})
    labels = infer_signature(example, np.array([0, 1], dtype=np.int64))
    assert [c.to_dict() for c in labels.outputs] == [
        {"name": "prediction", "dtype": "int64", "nullable": False}
    ]
    probabilities = infer_signature(example, np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert [(c.name, c.dtype) for c in probabilities.outputs] == [
        ("prediction_0", "float64"),
        ("prediction_1", "float64"),
    ]
    strings = infer_signature(example, np.array(["cat", "dog"]))
    assert strings.outputs[0].dtype == "string"


def test_signature_round_trips_through_dict_with_unicode_names() -> None:
    frame = pd.DataFrame({"température": [20.5, 21.0], "城市": ["京都", "大阪"], "😀": [1, 2]})
    sig = infer_signature(frame, np.array([1.0, 2.0]))
    again = Signature.from_dict(sig.to_dict())
    assert again == sig
    assert again.columns == ["température", "城市", "😀"]
    out = again.check_rows([[19.0, "東京", 3]])
    assert list(out.columns) == ["température", "城市", "😀"]
    with pytest.raises(SignatureError) as info:
        again.check_rows([[19.0, 5, 3]])
    assert info.value.field == "城市 (row 0)"


def test_infer_bool_column_with_missing_value_as_nullable_bool() -> None:
    sig = infer_signature(pd.DataFrame({"flag": [True, None, False]}))
    assert sig.inputs[0] == ColumnSpec("flag", "bool", nullable=True)


# -- checking rows ----------------------------------------------------------------------


def test_good_numeric_rows_become_a_float64_array() -> None:
    out = NUMERIC.check_rows([[1.5, 2], [3, 4], [-0.0, 0]])
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out, [[1.5, 2.0], [3.0, 4.0], [0.0, 0.0]])


def test_no_rows_give_an_empty_array_of_the_right_width() -> None:
    assert NUMERIC.check_rows([]).shape == (0, 2)


def test_good_mixed_rows_become_a_dataframe_with_float_numerics() -> None:
    rows = [good_row(), [30, None, 1, False, "Nice", None]]
    out = MIXED.check_rows(rows)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == MIXED.columns
    assert out["age"].dtype == np.float64
    assert out["score"].dtype == np.float64
    assert out["age"].tolist() == [41.0, 30.0]
    assert math.isnan(out["income"].iloc[1])
    assert out["member"].tolist() == [True, False]
    assert out["city"].tolist() == ["Lyon", "Nice"]
    assert pd.isna(out["note"].iloc[1])


@pytest.mark.parametrize(
    ("position", "value", "field", "words"),
    [
        (2, "0.5", "score (row 0)", "takes float64, got str"),
        (2, True, "score (row 0)", "takes float64, got bool"),
        (0, 41.5, "age (row 0)", "takes integers"),
        (0, True, "age (row 0)", "takes int64, got bool"),
        (0, "41", "age (row 0)", "takes int64, got str"),
        (3, 1, "member (row 0)", "takes bool, got int"),
        (3, "true", "member (row 0)", "takes bool, got str"),
        (4, 7, "city (row 0)", "takes string, got int"),
        (4, None, "city (row 0)", "missing or NaN"),
        (2, None, "score (row 0)", "missing or NaN"),
        (2, math.nan, "score (row 0)", "missing or NaN"),
        (2, math.inf, "score (row 0)", "infinite"),
        (2, -math.inf, "score (row 0)", "infinite"),
        (1, math.inf, "income (row 0)", "infinite"),
        (2, [1.0], "score (row 0)", "got list"),
        (2, {"v": 1.0}, "score (row 0)", "got dict"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_column_and_row(
    position: int, value: Any, field: str, words: str
) -> None:
    row = good_row()
    row[position] = value
    error = refusal(MIXED, [good_row(), good_row(), row])
    assert error.field == field.replace("row 0", "row 2")
    assert words in error.message
    assert "row 2" in error.message
    assert error.http_status == 400
    assert isinstance(error, InvalidInputError)


def test_nan_and_none_are_accepted_where_nullable() -> None:
    sig = Signature((ColumnSpec("x", "float64", nullable=True), ColumnSpec("y", "float64")))
    out = sig.check_rows([[math.nan, 1.0], [None, 2.0], [0.5, 3.0]])
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 0])
    assert out[2].tolist() == [0.5, 3.0]


def test_integral_float_is_accepted_where_int_is_expected() -> None:
    # JSON encoders may write 3 as 3.0; the value is still an integer
    assert NUMERIC.check_rows([[1.0, 3.0]]).tolist() == [[1.0, 3.0]]


def test_nan_is_accepted_in_a_nullable_int_column() -> None:
    sig = infer_signature(pd.DataFrame({"n": pd.array([1, None], dtype="Int64")}))
    assert sig.inputs[0] == ColumnSpec("n", "int64", nullable=True)
    assert sig.check_rows([[None]]).shape == (1, 1)
    assert np.isnan(sig.check_rows([[math.nan]])[0, 0])


@pytest.mark.parametrize("row", [[1.0], [1.0, 2, 3], [], (1.0, 2), {"a": 1.0, "b": 2}, "1,2"])
def test_a_row_of_the_wrong_length_or_kind_is_refused(row: Any) -> None:
    error = refusal(NUMERIC, [[0.0, 0], row])
    assert error.field == "data[1]"
    assert "the model takes 2" in error.message
    assert "a, b" in (error.hint or "")


# -- columns ----------------------------------------------------------------------------


def test_rows_in_another_column_order_are_reordered() -> None:
    sig = Signature((ColumnSpec("a", "float64"), ColumnSpec("b", "string")))
    out = sig.check_rows([["x", 1.0], ["y", 2.0]], columns=["b", "a"])
    assert list(out.columns) == ["a", "b"]
    assert out["a"].tolist() == [1.0, 2.0]
    assert out["b"].tolist() == ["x", "y"]
    # the value check runs after reordering: a str now lands in the float column
    error = refusal(sig, [[1.0, "x"]], columns=["b", "a"])
    assert error.field == "a (row 0)"


@pytest.mark.parametrize(
    ("columns", "field", "words"),
    [
        (["a"], "b", "missing column 'b'"),
        (["a", "b", "c"], "c", "unknown column 'c'"),
        (["a", "z"], "z", "unknown column 'z'"),
        (["a", "b", "a"], "a", "given twice"),
    ],
)
def test_bad_column_lists_are_refused_naming_the_column(
    columns: list[str], field: str, words: str
) -> None:
    error = refusal(NUMERIC, [[1.0] * len(columns)], columns=columns)
    assert error.field == field
    assert words in error.message


def test_unknown_column_hint_lists_what_the_model_takes() -> None:
    error = refusal(NUMERIC, [[1.0, 2, 3]], columns=["a", "b", "extra"])
    assert error.hint == "the model takes: a, b"


@pytest.mark.parametrize("row", [[1.0], [1.0, 2, 99.0]], ids=["short", "long"])
def test_wrong_row_length_is_refused_when_columns_are_reordered(row: list[Any]) -> None:
    error = refusal(NUMERIC, [row], columns=["b", "a"])
    assert error.field == "data[0]"


def test_rows_from_records_orders_values_by_the_signature() -> None:
    rows = MIXED.rows_from_records(
        [
            {
                "note": None,
                "city": "Lyon",
                "member": True,
                "score": 0.5,
                "income": 1.0,
                "age": 3,
            },
            dict(zip(MIXED.columns, good_row(), strict=True)),
        ]
    )
    assert rows == [[3, 1.0, 0.5, True, "Lyon", None], good_row()]
    assert isinstance(MIXED.check_rows(rows), pd.DataFrame)


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"a": 1.0}, "b", "missing column 'b'"),
        ({"a": 1.0, "b": 2, "c": 3}, "c", "unknown column 'c'"),
        ({"a": 1.0, "B": 2}, "B", "unknown column 'B'"),
    ],
)
def test_rows_from_records_refuses_bad_keys(record: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SignatureError) as info:
        NUMERIC.rows_from_records([{"a": 0.0, "b": 0}, record])
    assert info.value.field == field
    assert words in info.value.message


def test_rows_from_records_refuses_a_record_that_is_not_an_object() -> None:
    with pytest.raises(SignatureError) as info:
        NUMERIC.rows_from_records([{"a": 0.0, "b": 0}, [1.0, 2]])
    assert info.value.field == "rows[1]"
