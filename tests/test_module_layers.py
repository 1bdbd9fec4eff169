"""The package's modules form layers: no module imports, at its top or inside a function, one
that imports it back, directly or through others (compare.py -> the launchers local.py and
slurm.py -> runs.py and table.py -> the rest)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fairseq_normmatters"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set) -> set:
    """The package's modules that `path` imports anywhere in its text: `import a.b`, `from a
    import b` (b a module, else a's __init__) and relative forms."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in modules else source)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict) -> list:
    """Each cycle of `graph` found by a depth-first search, as the list of its modules."""
    found, state = [], {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "closed"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_graph_sees_the_imports_it_must_judge():
    graph = import_graph()
    recipes = "fairseq_normmatters.recipes"
    assert {f"{recipes}.local", f"{recipes}.slurm", f"{recipes}.runs"} <= graph[f"{recipes}.compare"]
    assert {f"{recipes}.runs", f"{recipes}.table"} <= graph[f"{recipes}.slurm"]
    assert "fairseq_normmatters" in graph[f"{recipes}"]  # `from .. import install_fairseq_plugin`, in a function
    assert f"{recipes}.evaluate" in graph[f"{recipes}.one_run"]  # imported inside main()


def test_a_cycle_is_found_where_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []
