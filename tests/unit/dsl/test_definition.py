"""Definition-time validation: a badly wired pipeline fails when it is defined, with a
message that names the steps and inputs involved."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Optional

import pytest

from treadle import pipeline, step, unmapped
from treadle.dsl import Node, OutputHandle
from treadle.dsl.graph import Graph, Literal, Ref, check, to_spec, topological_order, version_hash
from treadle.engine.loader import load_file
from treadle.errors import DefinitionError, InvalidInputError

# -- steps shared by the tests below -------------------------------------------------


@step
def make_text() -> str:
    return "seven"


@step
def make_int() -> int:
    return 7


@step
def make_ints(n: int = 3) -> list[int]:
    return list(range(n))


@step
def make_strs() -> list[str]:
    return ["a", "b"]


@step
def use_int(x: int) -> int:
    return x + 1


@step
def use_list(values: list[int]) -> int:
    return sum(values)


@step
def pair() -> tuple[int, str]:
    return 1, "one"


class Halves(NamedTuple):
    low: list[int]
    high: list[int]


@step
def halves(values: list[int]) -> Halves:
    mid = len(values) // 2
    return Halves(values[:mid], values[mid:])


@step
def add(a: int, b: int = 10) -> int:
    return a + b


def _definition_error(body: Callable[[], None]) -> DefinitionError:
    """Define a pipeline around `body`; its definition must fail."""
    with pytest.raises(DefinitionError) as info:
        pipeline(body)
    return info.value


# -- wiring errors ---------------------------------------------------------------------


def test_type_mismatch_between_steps_names_both_steps_and_the_input() -> None:
    def body() -> None:
        use_int(make_text())

    err = _definition_error(body)
    text = str(err)
    assert "'use_int'" in text
    assert "'make_text'" in text
    assert "'x'" in text
    assert "int" in text and "str" in text


def test_compatible_types_define_fine() -> None:
    # int fits a float input, and a list[int] fits list[int]: no error, a checked graph.
    @step
    def halve(x: float) -> float:
        return x / 2

    @pipeline
    def fine() -> None:
        halve(make_int())
        use_list(make_ints())

    graph = fine.build().graph
    assert graph.nodes["halve"].inputs["x"] == Ref("make_int", "output")
    assert set(graph.nodes) == {"make_int", "halve", "make_ints", "use_list"}


def test_missing_input_names_step_and_input() -> None:
    def body() -> None:
        use_int()  # type: ignore[call-arg]

    err = _definition_error(body)
    assert "'use_int'" in err.message
    assert "'x'" in err.message
    assert "x=" in err.hint


def test_default_of_a_step_input_is_used_when_not_passed() -> None:
    @pipeline
    def with_default() -> None:
        add(make_int())

    node = with_default.build().graph.nodes["add"]
    assert node.inputs["b"] == Literal(10)
    assert node.inputs["a"] == Ref("make_int", "output")


def test_constant_of_the_wrong_type_is_refused() -> None:
    def body() -> None:
        use_int("three")  # type: ignore[arg-type]

    err = _definition_error(body)
    assert "'use_int'" in err.message and "'x'" in err.message
    assert "'three'" in err.message


def test_bool_constant_is_not_an_int() -> None:
    def body() -> None:
        use_int(True)

    assert "'x'" in _definition_error(body).message


def test_non_json_constant_is_refused() -> None:
    def body() -> None:
        use_int(object())  # type: ignore[arg-type]

    err = _definition_error(body)
    assert "JSON" in err.message
    assert "'x'" in err.message


def test_unknown_keyword_of_a_step_is_an_error() -> None:
    def body() -> None:
        use_int(x=1, y=2)  # type: ignore[call-arg]

    assert "'use_int'" in _definition_error(body).message


def test_step_with_var_args_is_refused() -> None:
    def takes_many(*values: int) -> int:
        return sum(values)

    with pytest.raises(DefinitionError, match="takes_many"):
        step(takes_many)


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"retries": -1}, "retries"), ({"timeout": 0}, "timeout")]
)
def test_bad_step_options_are_refused(kwargs: dict[str, Any], word: str) -> None:
    def fn() -> int:
        return 1

    with pytest.raises(DefinitionError, match=word):
        step(**kwargs)(fn)


# -- parameters ------------------------------------------------------------------------


@pipeline
def typed_params(
    count: int = 1,
    rate: float = 0.5,
    flag: bool = False,
    label: str = "x",
    sizes: list[int] = [1, 2],  # noqa: B006 - a pipeline default is only read, never mutated
    limit: Optional[int] = None,
) -> None:
    use_int(count)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("count", "3", 3),
        ("count", "-2", -2),
        ("rate", "0.25", 0.25),
        ("rate", "2", 2.0),
        ("flag", "true", True),
        ("flag", "yes", True),
        ("flag", "0", False),
        ("flag", "off", False),
        ("label", "hello world", "hello world"),
        ("label", "42", "42"),
        ("sizes", "[3, 4, 5]", [3, 4, 5]),
        ("sizes", "[]", []),
        ("limit", "none", None),
        ("limit", "null", None),
        ("limit", "8", 8),
    ],
)
def test_parse_params_types_each_value(key: str, text: str, expected: Any) -> None:
    parsed = typed_params.parse_params({key: text})
    assert parsed == {key: expected}
    assert type(parsed[key]) is type(expected)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("count", "abc"),
        ("count", "1.5"),
        ("count", "true"),
        ("rate", "fast"),
        ("flag", "maybe"),
        ("flag", "2"),
        ("sizes", "5"),
        ("sizes", "not json"),
        ("sizes", '{"a": 1}'),
        ("limit", "lots"),
    ],
)
def test_parse_params_refuses_wrong_types(key: str, text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        typed_params.parse_params({key: text})
    assert repr(key) in info.value.message
    assert not isinstance(info.value, DefinitionError)


def test_parse_params_refuses_list_items_of_the_wrong_type() -> None:
    with pytest.raises(InvalidInputError):
        typed_params.parse_params({"sizes": '["a", "b"]'})


def test_parse_params_refuses_unknown_parameter_and_lists_known_ones() -> None:
    with pytest.raises(InvalidInputError) as info:
        typed_params.parse_params({"cuont": "3"})
    assert "'cuont'" in info.value.message
    for name in ("count", "rate", "flag", "label", "sizes", "limit"):
        assert name in info.value.hint


def test_build_refuses_wrong_typed_and_unknown_parameters() -> None:
    with pytest.raises(InvalidInputError, match="'count'"):
        typed_params.build(count="three")
    with pytest.raises(InvalidInputError, match="'nope'"):
        typed_params.build(nope=1)


def test_pipeline_without_defaults_is_traced_only_when_built() -> None:
    traced: list[int] = []

    @pipeline
    def needs(n: int) -> None:
        traced.append(n)
        use_int(n)

    assert traced == []  # a parameter without default: nothing to trace with yet
    with pytest.raises(InvalidInputError, match="'n'"):
        needs.build()
    assert needs.build(n=4).graph.nodes["use_int"].inputs["x"] == Literal(4)
    assert traced == [4]


def test_pipeline_with_defaults_is_traced_at_definition() -> None:
    traced: list[int] = []

    @pipeline
    def eager(n: int = 2) -> None:
        traced.append(n)
        use_int(n)

    assert traced == [2]
    assert isinstance(eager.build(n=3).graph.nodes["use_int"], Node)


# -- cycles and references ---------------------------------------------------------------


def _node(name: str, *upstream: str) -> Node:
    return Node(
        name=name,
        step=name,
        ref=f"hand_built:{name}",
        code_hash="0" * 64,
        inputs={f"from_{u}": Ref(u, "output") for u in upstream},
        outputs=("output",),
        options={},
    )


def test_topological_order_of_an_acyclic_graph() -> None:
    graph = Graph(
        "dag",
        {
            "c": _node("c", "a", "b"),
            "a": _node("a"),
            "b": _node("b", "a"),
            "d": _node("d"),
        },
    )
    order = topological_order(graph)
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("a") < order.index("b") < order.index("c")


def test_cycle_is_a_definition_error_naming_the_steps_in_it() -> None:
    graph = Graph(
        "loop",
        {
            "free": _node("free"),
            "a": _node("a", "c"),
            "b": _node("b", "a"),
            "c": _node("c", "b"),
        },
    )
    with pytest.raises(DefinitionError) as info:
        topological_order(graph)
    message = info.value.message
    assert "'loop'" in message
    for name in ("'a'", "'b'", "'c'"):
        assert name in message
    assert "'free'" not in message


def test_self_loop_is_a_cycle() -> None:
    with pytest.raises(DefinitionError, match="cycle"):
        topological_order(Graph("self", {"a": _node("a", "a")}))


def test_check_refuses_unknown_step_and_unknown_output() -> None:
    with pytest.raises(DefinitionError, match="unknown step 'ghost'"):
        check(Graph("g", {"a": _node("a", "ghost")}))
    bad_output = Node(
        name="b",
        step="b",
        ref="hand_built:b",
        code_hash="0" * 64,
        inputs={"x": Ref("a", "nope")},
        outputs=("output",),
        options={},
    )
    with pytest.raises(DefinitionError, match="'nope'"):
        check(Graph("g", {"a": _node("a"), "b": bad_output}))


# -- multi-output steps ------------------------------------------------------------------


def test_tuple_return_gives_one_output_per_item() -> None:
    seen: list[Any] = []

    @pipeline
    def two() -> None:
        number, word = pair()
        seen.extend([number, word])
        use_int(number)

    graph = two.build().graph
    assert graph.nodes["pair"].outputs == ("output_0", "output_1")
    assert [(h.node, h.output) for h in seen[:2]] == [("pair", "output_0"), ("pair", "output_1")]
    assert all(isinstance(h, OutputHandle) for h in seen)
    assert graph.nodes["use_int"].inputs["x"] == Ref("pair", "output_0")


def test_tuple_outputs_are_type_checked_one_by_one() -> None:
    def body() -> None:
        _, word = pair()
        use_int(word)

    err = _definition_error(body)
    assert "'output_1'" in err.message
    assert "'pair'" in err.message and "'use_int'" in err.message


def test_named_tuple_return_gives_named_outputs() -> None:
    @pipeline
    def parts() -> None:
        low, high = halves(make_ints())
        use_list(high)
        use_list(low)

    graph = parts.build().graph
    assert graph.nodes["halves"].outputs == ("low", "high")
    assert graph.nodes["use_list"].inputs["values"] == Ref("halves", "high")
    assert graph.nodes["use_list_2"].inputs["values"] == Ref("halves", "low")


def test_named_tuple_output_types_are_checked() -> None:
    def body() -> None:
        _, high = halves(make_ints())
        use_int(high)

    err = _definition_error(body)
    assert "'high'" in err.message and "'halves'" in err.message


def test_repeated_calls_of_a_step_get_distinct_node_names() -> None:
    @pipeline
    def thrice() -> None:
        use_int(1)
        use_int(2)
        use_int(3)

    assert list(thrice.build().graph.nodes) == ["use_int", "use_int_2", "use_int_3"]


# -- map and join ----------------------------------------------------------------------


def test_map_over_a_list_output_and_join_into_a_list_input() -> None:
    @pipeline
    def fan() -> None:
        use_list(use_int.map(x=make_ints()))

    graph = fan.build().graph
    assert graph.nodes["use_int"].mapped == ("x",)
    assert graph.nodes["use_int"].inputs["x"] == Ref("make_ints", "output")
    assert graph.nodes["use_list"].inputs["values"] == Ref("use_int", "output")
    assert graph.nodes["use_list"].mapped == ()


def test_map_over_a_literal_list_and_unmapped_list() -> None:
    @step
    def offset(x: int, extra: list[int]) -> int:
        return x + sum(extra)

    @pipeline
    def fan() -> None:
        offset.map(x=[1, 2, 3], extra=unmapped([10, 20]))

    node = fan.build().graph.nodes["offset"]
    assert node.mapped == ("x",)
    assert node.inputs["x"] == Literal([1, 2, 3])
    assert node.inputs["extra"] == Literal([10, 20])


def test_map_over_a_non_list_output_is_an_error() -> None:
    def body() -> None:
        use_int.map(x=make_int())

    err = _definition_error(body)
    assert "'make_int'" in err.message
    assert "not a list" in err.message


def test_map_item_type_is_checked() -> None:
    def body() -> None:
        use_int.map(x=make_strs())

    err = _definition_error(body)
    assert "'make_strs'" in err.message and "'x'" in err.message


def test_map_over_literal_items_of_the_wrong_type_is_an_error() -> None:
    def body() -> None:
        use_int.map(x=[1, "two"])

    assert "'two'" in _definition_error(body).message


def test_join_into_a_non_list_input_is_an_error() -> None:
    def body() -> None:
        use_int(use_int.map(x=[1, 2]))

    err = _definition_error(body)
    assert "mapped" in err.message
    assert "'x'" in err.message
    assert "list[" in err.hint


def test_map_with_nothing_to_fan_out_over_is_an_error() -> None:
    def body() -> None:
        use_list.map(values=unmapped([1, 2]))

    assert "nothing to fan out" in _definition_error(body).message


def test_mapping_over_a_mapped_output_is_an_error() -> None:
    def body() -> None:
        use_int.map(x=use_int.map(x=[1, 2]))

    assert "mapped output" in _definition_error(body).message


# -- handles are not values ------------------------------------------------------------

_MISUSES: dict[str, Callable[[Any], Any]] = {
    "if": lambda h: 1 if h else 0,
    "for": lambda h: [v for v in h],
    "len": lambda h: len(h),
    "index": lambda h: h[0],
    "less": lambda h: h < 3,
    "greater": lambda h: h > 3,
    "add": lambda h: h + 1,
    "equal": lambda h: 1 if h == 3 else 0,
    "not-equal": lambda h: 1 if h != 3 else 0,
    "less-or-equal": lambda h: h <= 3,
    "greater-or-equal": lambda h: h >= 3,
    "subtract": lambda h: h - 1,
    "multiply": lambda h: h * 2,
    "divide": lambda h: h / 2,
}


@pytest.mark.parametrize("misuse", list(_MISUSES))
def test_handle_used_in_python_control_flow_is_a_definition_error(misuse: str) -> None:
    def body() -> None:
        _MISUSES[misuse](make_int())

    err = _definition_error(body)
    assert "'make_int'" in err.message
    assert "pipeline runs" in err.message


def test_step_outside_a_pipeline_is_the_plain_function() -> None:
    assert add(2, 3) == 5
    assert add(a=1) == 11
    assert use_list([1, 2, 3]) == 6
    assert halves([1, 2, 3, 4]) == Halves([1, 2], [3, 4])


def test_map_outside_a_pipeline_is_an_error() -> None:
    with pytest.raises(DefinitionError, match="only works inside a @pipeline"):
        use_int.map(x=[1, 2])


def test_pipeline_called_inside_a_pipeline_adds_its_steps() -> None:
    @pipeline
    def inner(n: int = 1) -> None:
        use_int(n)

    @pipeline
    def outer() -> None:
        inner(n=5)
        make_int()

    graph = outer.build().graph
    assert graph.nodes["use_int"].inputs["x"] == Literal(5)
    assert set(graph.nodes) == {"use_int", "make_int"}


# -- versions ------------------------------------------------------------------------


def test_version_hash_ignores_parameter_values() -> None:
    @pipeline
    def versioned(n: int = 3, factor: int = 2) -> None:
        use_int(add(n, factor))

    first = versioned.build(n=1, factor=1).graph
    second = versioned.build(n=99, factor=-5).graph
    assert version_hash(first) == version_hash(second)
    # the values themselves do differ: only the version masks them
    assert to_spec(first, with_values=True) != to_spec(second, with_values=True)


def test_version_hash_changes_with_the_graph_structure() -> None:
    @pipeline
    def shape(extra: bool = False) -> None:
        value = make_int()
        if extra:
            value = use_int(value)
        use_int(value)

    assert version_hash(shape.build(extra=False).graph) != version_hash(
        shape.build(extra=True).graph
    )


_FLOW = """
from treadle import pipeline, step


@step
def double(x: int) -> int:
    return x * {factor}


@pipeline
def flow(x: int = 1) -> None:
    double(x)
"""


def _load_flow(path: Path, factor: str) -> Any:
    path.write_text(_FLOW.format(factor=factor))
    name = "treadle_test_versioned_flow"
    sys.modules.pop(name, None)
    try:
        return load_file(path, module_name=name).flow
    finally:
        sys.modules.pop(name, None)


def test_version_hash_changes_when_a_step_changes_code(tmp_path: Path) -> None:
    path = tmp_path / "flow.py"
    original = version_hash(_load_flow(path, "2").build().graph)
    again = version_hash(_load_flow(path, "2").build().graph)
    changed = version_hash(_load_flow(path, "2 + 1").build().graph)
    assert original == again
    assert changed != original
