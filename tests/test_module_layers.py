"""The package's modules form layers: no module imports, at its top or inside a function, one
that imports it back, directly or through others; the recipes' rooms by stage (common < data <
run < report < launch < compare) import only their own room and those below it, the report never
reaches the modules that build training commands, only compare imports a launcher, and no module
calls another's main() (docs/architecture.md)."""

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


RECIPES = "fairseq_normmatters.recipes"
ROOMS = ("common", "data", "run", "report", "launch", "compare")  # lowest first
#: the modules that build and start fairseq-train commands, which the report must not depend on
COMMAND_BUILDERS = {f"{RECIPES}.run.{name}" for name in ("command", "train", "runs", "one_run", "preflight")}


def room_of(module: str):
    """The room of a recipes module (common, data, run, report, launch, compare), else None."""
    parts = module.split(".")
    return parts[2] if module.startswith(RECIPES + ".") and parts[2] in ROOMS else None


def reachable(graph: dict, module: str) -> set:
    """Every module `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_graph_sees_the_imports_it_must_judge():
    graph = import_graph()
    assert {f"{RECIPES}.launch.local", f"{RECIPES}.launch.slurm.launcher"} <= graph[f"{RECIPES}.compare"]
    assert f"{RECIPES}.report.verdict" in graph[f"{RECIPES}.launch.progress"]
    assert "fairseq_normmatters" in graph[f"{RECIPES}.common"]  # `from .. import install_fairseq_plugin`, in a function
    assert f"{RECIPES}.run.evaluate" in graph[f"{RECIPES}.run.one_run"]  # imported inside a function
    assert all(room_of(module) for module in graph if module.startswith(RECIPES + "."))  # every module in a room


def test_each_room_imports_only_its_own_and_those_below():
    graph = import_graph()
    upward = [f"{module} -> {target}" for module, targets in graph.items() if room_of(module)
              for target in targets if room_of(target) and ROOMS.index(room_of(target)) > ROOMS.index(room_of(module))]
    assert upward == []


def test_the_report_never_reaches_the_command_builders():
    graph = import_graph()
    reached = {module: reachable(graph, module) & COMMAND_BUILDERS for module in graph if room_of(module) == "report"}
    assert reached and not any(reached.values()), reached


def test_only_compare_imports_a_launcher():
    graph = import_graph()
    importers = {module for module, targets in graph.items() for target in targets
                 if room_of(target) == "launch" and room_of(module) != "launch"}
    assert importers == {f"{RECIPES}.compare"}


def calls_of_another_main(path: Path) -> list:
    """`from M import main` (any alias) or `M.main(...)` where M is a module of the package: a
    stage calling another's command line instead of a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "main" for alias in node.names) and (
                node.level or (node.module or "").startswith("fairseq_normmatters")):
            found.append(f"{path.name}:{node.lineno} imports main from {'.' * node.level}{node.module}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "main" \
                and isinstance(node.func.value, ast.Name):
            found.append(f"{path.name}:{node.lineno} calls {node.func.value.id}.main()")
    return found


def test_no_module_calls_another_modules_main():
    assert [call for path in sorted(PACKAGE.rglob("*.py")) for call in calls_of_another_main(path)] == []


def test_a_call_of_another_main_is_found(tmp_path):
    source = tmp_path / "stage.py"
    source.write_text("from .collect import main as collect\nimport x\nx.main(['a'])\n")
    assert calls_of_another_main(source) == ["stage.py:1 imports main from .collect", "stage.py:3 calls x.main()"]


def test_a_cycle_is_found_where_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_the_report_and_prepare_start_without_torch():
    """collect_results.py and prepare read files and never build a norm: importing them imports
    no torch (1.3 s and more a process; the configurations name their narrow formats themselves)."""
    import subprocess
    import sys
    code = ("import sys, fairseq_normmatters.recipes.report.collect, fairseq_normmatters.recipes.data.prepare; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_configurations_narrow_formats_are_the_norms_own():
    from fairseq_normmatters.accumulation import ACCUMULATE_FORMATS, FLOAT32
    from fairseq_normmatters.recipes.run.configs import NARROW_FORMATS
    assert set(NARROW_FORMATS) == set(ACCUMULATE_FORMATS) - {FLOAT32}
