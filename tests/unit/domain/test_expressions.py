import pytest

from kubeline.domain import expressions

CTX = {"inputs": {"day": "mon", "n": 3}, "stages": {"fetch": {"body": {"items": [{"id": 7}]}}},
       "run": {"id": "r1", "pipeline": "p", "trigger": "manual"}}


def test_whole_value_keeps_its_type():
    assert expressions.render("${stages.fetch.outputs.body}", CTX) == {"items": [{"id": 7}]}
    assert expressions.render("${inputs.n}", CTX) == 3


def test_embedded_values_are_rendered_into_strings():
    assert expressions.render("day=${inputs.day} n=${inputs.n}", CTX) == "day=mon n=3"
    assert expressions.render({"a": ["${stages.fetch.outputs.body.items[0].id}"]}, CTX) == {"a": [7]}


def test_escape():
    assert expressions.render("cost: $${inputs.day}", CTX) == "cost: ${inputs.day}"


def test_missing_values_say_where():
    with pytest.raises(expressions.ExpressionError, match=r"stages.fetch.outputs.body has no 'nope'"):
        expressions.render("${stages.fetch.outputs.body.nope}", CTX)
    with pytest.raises(expressions.ExpressionError, match="stage 'other' has no outputs"):
        expressions.render("${stages.other.outputs}", CTX)


@pytest.mark.parametrize("text", ["${inputs}", "${stages.a}", "${stages.a.result}", "${foo.bar}", "${inputs.a b}"])
def test_bad_expressions(text):
    with pytest.raises(expressions.ExpressionError, match="is not an expression"):
        expressions.references(text)


def test_references_are_found_everywhere():
    refs = expressions.references({"x": ["${inputs.a}", {"y": "${stages.s.outputs.k}"}]})
    assert [(r.root, r.stage, r.path) for r in refs] == [("inputs", None, ("a",)), ("stages", "s", ("k",))]
