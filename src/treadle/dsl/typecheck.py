"""Type compatibility between a step's output annotation and the next step's input.

Deliberately forgiving: `Any`, a missing annotation or a type it cannot reason about
passes; what it rejects is a clear mismatch such as a DataFrame into an `int`, or a
`Metrics` artifact where a `Model` is expected.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from treadle.types import ArtifactKind

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)


def split_annotated(tp: Any) -> tuple[Any, ArtifactKind | None]:
    """`Annotated[X, ArtifactKind.MODEL]` -> (X, MODEL); anything else -> (tp, None)."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        kind = next((e for e in extras if isinstance(e, ArtifactKind)), None)
        return base, kind
    return tp, None


def describe(tp: Any) -> str:
    base, kind = split_annotated(tp)
    if kind is not None:
        return kind.value.capitalize()
    if isinstance(base, type):
        return base.__qualname__
    return str(base).replace("typing.", "")


def _is_any(tp: Any) -> bool:
    return tp is Any or tp is None or tp is typing.Any or isinstance(tp, typing.TypeVar)


def compatible(produced: Any, expected: Any) -> bool:
    """Can a value annotated `produced` be passed where `expected` is annotated?"""
    produced, p_kind = split_annotated(produced)
    expected, e_kind = split_annotated(expected)
    if p_kind is not None and e_kind is not None and p_kind != e_kind:
        return False
    if _is_any(produced) or _is_any(expected):
        return True
    if typing.get_origin(expected) in _UNION_TYPES:
        return any(compatible(produced, arm) for arm in typing.get_args(expected))
    if typing.get_origin(produced) in _UNION_TYPES:
        return all(compatible(arm, expected) for arm in typing.get_args(produced))
    p_origin = typing.get_origin(produced) or produced
    e_origin = typing.get_origin(expected) or expected
    if not (isinstance(p_origin, type) and isinstance(e_origin, type)):
        return True
    if e_origin is float and p_origin is int:
        return True
    if not issubclass(p_origin, e_origin):
        return False
    p_args, e_args = typing.get_args(produced), typing.get_args(expected)
    if p_args and e_args and len(p_args) == len(e_args) and p_origin in (list, set, frozenset):
        return compatible(p_args[0], e_args[0])
    return True


def list_item_type(tp: Any) -> Any:
    """`list[X]` -> X; for an unparameterised or non-list type, Any."""
    base, _ = split_annotated(tp)
    if typing.get_origin(base) in (list, tuple, typing.Sequence) and typing.get_args(base):
        return typing.get_args(base)[0]
    return Any


def is_list_like(tp: Any) -> bool:
    base, _ = split_annotated(tp)
    if _is_any(base):
        return True
    origin = typing.get_origin(base) or base
    return (isinstance(origin, type) and origin in (list, tuple)) or origin is typing.Sequence


def accepts_literal(value: Any, expected: Any) -> bool:
    """Does a constant fit an input annotation? (only checks plain classes)"""
    base, _ = split_annotated(expected)
    if _is_any(base):
        return True
    if typing.get_origin(base) in _UNION_TYPES:
        return any(accepts_literal(value, arm) for arm in typing.get_args(base))
    origin = typing.get_origin(base) or base
    if value is None:
        return origin is type(None)
    if not isinstance(origin, type):
        return True
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return True
    if origin is int and isinstance(value, bool):
        return False
    if not isinstance(value, origin):
        return False
    return _items_accepted(value, origin, typing.get_args(base))


def _items_accepted(value: Any, origin: type, args: tuple[Any, ...]) -> bool:
    if origin in (list, set, frozenset) and args:
        return all(accepts_literal(item, args[0]) for item in value)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(accepts_literal(item, args[0]) for item in value)
        return len(args) == len(value) and all(
            accepts_literal(item, arm) for item, arm in zip(value, args, strict=True)
        )
    if origin is dict and len(args) == 2:
        return all(
            accepts_literal(k, args[0]) and accepts_literal(v, args[1]) for k, v in value.items()
        )
    return True
