"""The stage graph: validation (missing dependencies, cycles named), order, and the ready set."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence


def suggest(name: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {match[0]!r}?" if match else ""


def missing_dependencies(graph: Mapping[str, Sequence[str]]) -> list[tuple[str, int, str, str]]:
    """(stage, index, missing dependency, hint) for each dependency that is not a stage."""
    return [
        (stage, i, dep, suggest(dep, graph))
        for stage, deps in graph.items()
        for i, dep in enumerate(deps)
        if dep not in graph
    ]


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a closed path ``[a, b, c, a]`` (a depends on b ...), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in colour:
                continue
            if colour[dep] == grey:
                return [*stack[stack.index(dep):], dep]
            if colour[dep] == white and (cycle := visit(dep)):
                return cycle
        stack.pop()
        colour[node] = black
        return None

    for node in graph:
        if colour[node] == white and (cycle := visit(node)):
            return cycle
    return None


def topological_order(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """Stages in an order where every stage follows its dependencies (stable: spec order)."""
    order: list[str] = []
    done: set[str] = set()
    pending = list(graph)
    while pending:
        progressed = False
        for node in list(pending):
            if all(dep in done for dep in graph[node]):
                order.append(node)
                done.add(node)
                pending.remove(node)
                progressed = True
        if not progressed:
            raise ValueError(f"the stage graph has a cycle: {' -> '.join(find_cycle(graph) or pending)}")
    return order


def ancestors(graph: Mapping[str, Sequence[str]], node: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(node, ()))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(graph.get(dep, ()))
    return seen


def descendants(graph: Mapping[str, Sequence[str]], node: str) -> set[str]:
    return {other for other in graph if node in ancestors(graph, other)}


def ready(
    graph: Mapping[str, Sequence[str]], *, succeeded: set[str], started: set[str]
) -> list[str]:
    """Stages not yet started whose dependencies all succeeded, in spec order."""
    return [
        node for node, deps in graph.items()
        if node not in started and all(dep in succeeded for dep in deps)
    ]
