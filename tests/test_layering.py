"""The repo's modules stand in layers: no import cycle among them, counting imports inside
functions (engine -> refinement -> runner, not back)."""
import ast
from pathlib import Path

from conftest import REPO_ROOT


def repo_modules():
    """Top-level module name -> source files: each root *.py, and each package (folder with
    __init__.py) as one node made of all its files."""
    modules = {path.stem: [path] for path in REPO_ROOT.glob("*.py")}
    for init in REPO_ROOT.glob("*/__init__.py"):
        modules[init.parent.name] = sorted(init.parent.glob("*.py"))
    return modules


def imported_names(path):
    """Top-level names of every import in a file, at any depth (functions, classes, try blocks)."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_graph():
    modules = repo_modules()
    return {name: sorted((set().union(*(imported_names(p) for p in paths)) & set(modules)) - {name})
            for name, paths in modules.items()}


def find_cycle(graph):
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_imports_inside_functions_are_counted(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\ndef f():\n    from refinement import Refinement\n    import eval.proposals\n")
    assert imported_names(path) == {"os", "refinement", "eval"}


def test_repo_modules_have_no_import_cycle():
    graph = import_graph()
    assert {"engine", "refinement", "runner", "eval", "utils"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert "engine" in graph["refinement"] and "refinement" in graph["runner"]
    assert "refinement" not in graph["engine"] and "runner" not in graph["engine"] + graph["refinement"]
