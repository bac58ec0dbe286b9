"""JSON from the API back into the store's records: the server sends the very frozen
dataclasses the store returns, so their type hints say how to rebuild them."""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def decode(tp: Any, data: Any) -> Any:
    """`data` (parsed JSON) as an instance of `tp`: a record, a list or dict of them, an
    enum, or a plain value. Keys a newer server adds are ignored; missing ones take the
    record's defaults."""
    if tp is Any or tp is object:
        return data
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if data is None:
            return None
        kinds = [a for a in get_args(tp) if a is not type(None)]
        return decode(kinds[0], data) if len(kinds) == 1 else data
    if data is None:
        # JSON has no NaN or infinity: the server writes them as null
        return math.nan if tp is float else None
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return [decode(item, x) for x in data]
    if origin is dict:
        _, value = get_args(tp) or (Any, Any)
        return {str(k): decode(value, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(
            **{
                f.name: decode(hints[f.name], data[f.name])
                for f in dataclasses.fields(tp)
                if f.init and f.name in data
            }
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if tp is float and isinstance(data, int | float):
        return float(data)  # JSON writes 2.0 as 2
    return data
