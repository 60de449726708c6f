"""The tree shows the system: each package one layer, importing only from the layers below it,
and no import cycle between modules. Read from the code's own imports, lazy ones included (an
import inside a function is still a dependency)."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS = [
    ["recsys"],  # the base: config, errors, artifacts, data, logs, stubs
    ["features"],  # the activity definition, the Feast store, the stream into it
    ["towers", "localservices", "candidates"],
    ["catalog"],  # item changes on Kafka, for the servers and the index
    ["ranking"],  # the second stage: union, point-in-time features, the GBDT ranker
    ["evaluation"],
    ["training", "index"],
    ["serving"],
    ["benchmarks"],
    ["loadtest"],
    ["commands"],  # the CLI and demo, on top of everything
]
"""Bottom to top. A package may import its own layer's other packages only if listed in
``SIDEWAYS``: none are."""

SIDEWAYS: set[tuple[str, str]] = set()


def _packages() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name.rstrip("*") for name in include]


def _modules() -> dict[str, Path]:
    found = {}
    for package in _packages():
        for path in (REPO / package).rglob("*.py"):
            if "v1" in path.relative_to(REPO).parts:  # generated stubs
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules ``path`` imports: ``from a import b`` is ``a.b`` if that is a
    module, else ``a``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                yield name


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(path, modules)) - {name} for name, path in modules.items()}


def test_every_installed_package_has_a_layer() -> None:
    layered = [p for layer in LAYERS for p in layer]
    assert sorted(layered) == sorted(_packages())


def test_packages_import_only_from_the_layers_below() -> None:
    rank = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    wrong = set()
    for module, targets in _graph().items():
        here = module.split(".")[0]
        for target in targets:
            there = target.split(".")[0]
            if there == here or (here, there) in SIDEWAYS:
                continue
            if rank[there] >= rank[here]:
                wrong.add(f"{module} imports {target} ({here} is not above {there})")
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_base_imports_no_product_package() -> None:
    leaks = {
        f"{m} imports {t}"
        for m, targets in _graph().items()
        if m.split(".")[0] == "recsys"
        for t in targets
        if t.split(".")[0] != "recsys"
    }
    assert not leaks, leaks


APART = [
    ("features.online", ("features.stream", "features.backfill")),
    ("features.stream", ("features.online",)),
    ("serving", ("features.stream", "features.backfill")),
    ("features.store", ("features.stream", "features.online", "features.backfill")),
]
"""Within ``features/``, three times of day: the backfill (offline), the stream (events in)
and the online read (per request), on the definitions and the store they share. Neither of
the last two imports the other, and the server reads features only through the online read."""


def test_offline_stream_and_online_read_stay_apart() -> None:
    wrong = {
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for here, banned in APART
        if module == here or module.startswith(here + ".")
        for target in targets
        if any(target == b or target.startswith(b + ".") for b in banned)
    }
    assert not wrong, "\n".join(sorted(wrong))


MAX_MODULE_LINES = 400
"""One concept per module: past this, split it (TFRS's median module is ~160 lines)."""
TOOLING = {"localservices", "benchmarks"}
"""What runs the project on a machine and measures it, beside the product."""


def test_no_module_is_past_the_size_to_split_at() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_big, f"split these modules (over {MAX_MODULE_LINES} lines): {too_big}"


def test_the_biggest_package_is_product_code_not_tooling() -> None:
    sizes: dict[str, int] = {}
    for name, path in _modules().items():
        package = name.split(".")[0]
        sizes[package] = sizes.get(package, 0) + len(path.read_text().splitlines())
    biggest = max(sizes, key=lambda package: sizes[package])
    assert biggest not in TOOLING, sizes
