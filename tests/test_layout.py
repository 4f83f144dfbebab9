"""The package's import graph has no cycles, lazy (function-level) imports included."""

import ast
from pathlib import Path

import world_models

PACKAGE = Path(world_models.__file__).parent


def module_files() -> dict[str, Path]:
    """Dotted module name (``dream.evolve``) -> its file (no ``__init__``)."""
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its source."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "world_models" or node.module.startswith(
                    "world_models."
                ):
                    base = node.module.removeprefix("world_models").lstrip(".")
                    for alias in node.names:  # a module, or a name in a module
                        full = f"{base}.{alias.name}".lstrip(".")
                        targets.add(full if full in files else base)
            elif isinstance(node, ast.Import):
                targets |= {
                    alias.name.removeprefix("world_models.")
                    for alias in node.names
                    if alias.name.startswith("world_models.")
                }
        graph[name] = (targets & files.keys()) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert graph["dream.evolve"] >= {"dream.rollout", "config"}  # the graph is read
    assert cycles(graph) == []


def test_modules_live_in_the_folder_of_their_link():
    """The flat package of old is gone: beside the shared helpers, every module sits
    in the folder of its link in the chain (docs/design.md, "The map")."""
    shared = {"agent", "checkpoint", "cli", "config", "config_sections", "envs",
              "export", "files", "logs", "presets", "run_directory", "run_models",
              "seeds", "stats"}
    folders = {"data", "models", "training", "dream", "evaluation", "pipeline", "rl"}
    for name in module_files():
        assert name in shared or name.split(".")[0] in folders, name


MAX_MODULE_LINES = 320  # "a few hundred lines" (DEVELOPERS.md), with a little slack
LINE_LENGTH = 88  # pyproject.toml's [tool.ruff] line-length


def test_every_module_stays_short():
    """A module past a few hundred lines mixes concerns: split it by concept."""
    long = {
        name: lines
        for name, path in module_files().items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_python_line_fits_the_line_length():
    root = PACKAGE.parents[1]
    folders = [root / name for name in ("src", "tests", "scripts", "benchmarks")]
    files = [*root.glob("*.py"), *(f for d in folders for f in d.rglob("*.py"))]
    assert len(files) > 50  # the tree is read
    too_long = [
        f"{path.relative_to(root)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if len(line) > LINE_LENGTH
    ]
    assert too_long == []
