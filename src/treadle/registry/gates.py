"""Promotion gates: conditions on metrics such as `accuracy >= 0.9` or
`auc >= champion.auc - 0.01`, checked before an alias moves.

A bare name is a metric of the candidate version; `champion.NAME` (or the target
alias's own name, e.g. `production.NAME`) is a metric of the version that holds the
target alias now. Only numbers, metric names, + - * / and one comparison are allowed:
the text is parsed, never executed.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from treadle.errors import ConflictError, InvalidInputError

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.GtE: operator.ge,
    ast.Gt: operator.gt,
    ast.LtE: operator.le,
    ast.Lt: operator.lt,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_SYMBOL = {ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Lt: "<", ast.Eq: "==", ast.NotEq: "!="}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class GateFailedError(ConflictError):
    """A promotion was refused: a gate condition does not hold."""


class _NoIncumbent(Exception):
    """The condition refers to the current holder of the alias, and there is none."""


@dataclasses.dataclass(frozen=True)
class GateResult:
    condition: str
    passed: bool
    detail: str


def parse(condition: str) -> ast.Compare:
    try:
        tree = ast.parse(condition.strip(), mode="eval").body
    except SyntaxError:
        raise InvalidInputError(
            f"cannot read the gate condition {condition!r}",
            "write it like `accuracy >= 0.9` or `auc >= champion.auc - 0.01`",
        ) from None
    if not isinstance(tree, ast.Compare) or len(tree.ops) != 1:
        raise InvalidInputError(
            f"gate condition {condition!r} must be one comparison", "e.g. `accuracy >= 0.9`"
        )
    for node in ast.walk(tree):
        allowed = (
            ast.Compare,
            ast.BinOp,
            ast.UnaryOp,
            ast.USub,
            ast.UAdd,
            ast.Constant,
            ast.Name,
            ast.Attribute,
            ast.Load,
            *_COMPARE,
            *_ARITH,
        )
        if not isinstance(node, allowed):
            raise InvalidInputError(
                f"gate condition {condition!r} uses {type(node).__name__}, which gates do not "
                "allow",
                "use metric names, numbers, + - * / and one comparison",
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise InvalidInputError(f"gate condition {condition!r}: only numbers are constants")
    return tree


def _value(
    node: ast.expr,
    candidate: Mapping[str, float],
    incumbent: Mapping[str, float] | None,
    incumbent_names: set[str],
) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in candidate:
            raise InvalidInputError(
                f"the candidate has no metric {node.id!r}",
                f"its metrics are: {', '.join(sorted(candidate)) or 'none'}",
            )
        return float(candidate[node.id])
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id not in incumbent_names:
            raise InvalidInputError(
                f"{node.value.id}.{node.attr}: only {' or '.join(sorted(incumbent_names))}."
                "METRIC refers to another version"
            )
        if incumbent is None:
            raise _NoIncumbent
        if node.attr not in incumbent:
            raise InvalidInputError(f"the current {node.value.id} has no metric {node.attr!r}")
        return float(incumbent[node.attr])
    if isinstance(node, ast.UnaryOp):
        inner = _value(node.operand, candidate, incumbent, incumbent_names)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left = _value(node.left, candidate, incumbent, incumbent_names)
        right = _value(node.right, candidate, incumbent, incumbent_names)
        try:
            return float(_ARITH[type(node.op)](left, right))
        except ZeroDivisionError:
            raise InvalidInputError(
                f"the gate divides by zero in {ast.unparse(node)!r}",
                "guard the condition or compare without dividing",
            ) from None
    raise InvalidInputError(f"unsupported expression {ast.unparse(node)!r}")


def evaluate(
    conditions: Sequence[str],
    candidate: Mapping[str, float],
    incumbent: Mapping[str, float] | None,
    target_alias: str = "champion",
) -> list[GateResult]:
    """Check every condition. A condition about the incumbent passes when there is none
    (the first version to take an alias has nothing to beat)."""
    names = {"champion", target_alias}
    results = []
    for text in conditions:
        tree = parse(text)
        sides: list[float | None] = []
        for side in (tree.left, tree.comparators[0]):
            try:  # both sides are read, so a misspelt metric is found either way
                sides.append(_value(side, candidate, incumbent, names))
            except _NoIncumbent:
                sides.append(None)
        left, right = sides
        if left is None or right is None:
            results.append(GateResult(text, True, f"no current {target_alias} to compare with"))
            continue
        passed = _COMPARE[type(tree.ops[0])](left, right)
        symbol = _SYMBOL[type(tree.ops[0])]
        results.append(GateResult(text, bool(passed), f"{left:.6g} {symbol} {right:.6g}"))
    return results


def require(results: Sequence[GateResult], what: str) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        raise GateFailedError(
            f"{what} refused: gate `{first.condition}` failed ({first.detail})"
            + (f", and {len(failed) - 1} more" if len(failed) > 1 else ""),
            "improve the model, or change the gate if it no longer reflects what you need",
        )
