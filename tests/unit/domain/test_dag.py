import pytest

from kubeline.domain import dag


def test_cycle_is_named_as_a_closed_path():
    graph = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    cycle = dag.find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_no_cycle():
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_self_cycle():
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]


def test_topological_order_is_stable_and_raises_on_cycles():
    assert dag.topological_order({"c": ["a"], "a": [], "b": ["a"]}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle"):
        dag.topological_order({"a": ["b"], "b": ["a"]})


def test_missing_dependencies_suggest_names():
    assert dag.missing_dependencies({"load": [], "x": ["lode"]}) == [("x", 0, "lode", "did you mean 'load'?")]


def test_ready_set_and_ancestors():
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert dag.ready(graph, succeeded=set(), started=set()) == ["a"]
    assert dag.ready(graph, succeeded={"a"}, started={"a"}) == ["b", "c"]
    assert dag.ready(graph, succeeded={"a", "b"}, started={"a", "b", "c"}) == []
    assert dag.ancestors(graph, "d") == {"a", "b", "c"}
    assert dag.descendants(graph, "a") == {"b", "c", "d"}
