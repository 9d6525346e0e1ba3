"""fedfort's packages import each other in one direction only: no cycle between them.

The graph is grimp's: every import statement of every module, including imports inside
functions and under ``if TYPE_CHECKING:``. A node is a subpackage (``fedfort.server``), a
top-level module (``fedfort.config``) or the root package itself (``fedfort``). The
import-linter contract in pyproject.toml (``lint-imports``) says which way each edge must go;
this test says there is no way around it, and names the imports that close a cycle.
docs/architecture.md draws the layers.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import grimp
import pytest

ROOT = "fedfort"

Graph = dict[str, set[str]]


def node_of(module: str) -> str:
    """The package-level node of ``module``: ``fedfort.server.engine`` -> ``fedfort.server``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: grimp.ImportGraph) -> tuple[Graph, dict[tuple[str, str], list[str]]]:
    """Edges between nodes, and for each edge the module imports behind it."""
    edges: Graph = {}
    witnesses: dict[tuple[str, str], list[str]] = {}
    for module in graph.modules:
        source = node_of(module)
        edges.setdefault(source, set())
        for imported in graph.find_modules_directly_imported_by(module):
            target = node_of(imported)
            if target == source:
                continue
            edges[source].add(target)
            witnesses.setdefault((source, target), []).append(f"{module} -> {imported}")
    return edges, witnesses


def strongly_connected(edges: Graph) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(edges: Graph, component: list[str], start: str) -> list[str]:
    """A shortest cycle through ``start`` inside ``component`` (which is strongly connected)."""
    inside = set(component)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(edges[node] & inside):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"{component} is not strongly connected")


def component_cycles(edges: Graph, component: list[str], limit: int = 6) -> list[list[str]]:
    """The shortest cycle through each node of ``component``, each once, shortest first."""
    seen: set[tuple[str, ...]] = set()
    cycles = []
    for start in component:
        cycle = shortest_cycle(edges, component, start)
        ring = cycle[:-1]
        pivot = ring.index(min(ring))
        key = tuple(ring[pivot:] + ring[:pivot])
        if key not in seen:
            seen.add(key)
            cycles.append([*key, key[0]])
    return sorted(cycles, key=lambda c: (len(c), c))[:limit]


def describe_cycles(edges: Graph, witnesses: dict[tuple[str, str], list[str]]) -> str:
    """Every group of nodes in a cycle, its shortest cycles and the imports that make their
    edges (empty: no cycle)."""
    lines = []
    for component in strongly_connected(edges):
        lines.append(f"nodes in a cycle: {', '.join(component)}")
        for cycle in component_cycles(edges, component):
            lines.append(f"  cycle {' -> '.join(cycle)}:")
            for source, target in pairwise(cycle):
                for witness in sorted(witnesses[(source, target)])[:3]:
                    lines.append(f"      {witness}")
    return "\n".join(lines)


def test_cycle_finder_names_a_planted_cycle() -> None:
    edges: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    witnesses = {
        ("a", "b"): ["a.x -> b.y"],
        ("b", "c"): ["b.y -> c.z"],
        ("c", "a"): ["c.z -> a.x"],
        ("d", "a"): ["d.w -> a.x"],
    }
    assert strongly_connected(edges) == [["a", "b", "c"]]
    text = describe_cycles(edges, witnesses)
    assert text.startswith("nodes in a cycle: a, b, c\n  cycle a -> b -> c -> a:")
    assert "c.z -> a.x" in text and "d.w" not in text
    assert describe_cycles({"a": {"b"}, "b": set()}, {("a", "b"): ["a -> b"]}) == ""


@pytest.fixture(scope="module")
def fedfort_graph() -> grimp.ImportGraph:
    return grimp.build_graph(ROOT, cache_dir=None)


def test_graph_counts_imports_inside_functions(fedfort_graph: grimp.ImportGraph) -> None:
    # fedfort.crypto.keystore.select imports the PKCS#11 store only inside open_keystore
    details = fedfort_graph.get_import_details(
        importer="fedfort.crypto.keystore.select",
        imported="fedfort.crypto.keystore.pkcs11_store",
    )
    assert details, "grimp no longer sees imports inside functions: this test would miss cycles"


def test_no_import_cycle_between_fedfort_packages(fedfort_graph: grimp.ImportGraph) -> None:
    edges, witnesses = package_graph(fedfort_graph)
    assert len(edges) > 20, f"the package graph of {ROOT} looks empty: {sorted(edges)}"
    cycles = describe_cycles(edges, witnesses)
    if cycles:
        pytest.fail(
            "fedfort's packages import each other in a cycle; move the shared code to the lower "
            "package or invert the dependency (docs/architecture.md, 'Layers'):\n" + cycles,
            pytrace=False,
        )
