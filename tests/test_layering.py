"""The repo's modules stand in layers: each imports only from its own layer or below (imports
inside functions count), there is no import cycle among them (nor among the files of a package),
no re-export kept alive by `noqa: F401`, no import of another module's private name, and no
library file over 400 lines."""
import ast
import re
from pathlib import Path

from config import REPO_ROOT

# From the bottom: a module may import from its own layer and the layers below it.
LAYERS = [
    ["utils"],
    ["config"],
    ["sampling", "proposals", "model", "losses"],
    ["eval"],                                               # package
    ["features"],                                           # package
    ["dataset", "synthetic_data"],
    ["engine"],                                             # package
    ["main_THUMOS", "main_ActivityNet", "predict", "extract_features", "ablate"],   # entry points
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}
PACKAGES = ("engine", "eval", "features")
MAX_LINES = 400


def repo_modules():
    """Top-level module name -> source files: each root *.py, and each package (folder with
    __init__.py) as one node made of all its files."""
    modules = {path.stem: [path] for path in REPO_ROOT.glob("*.py")}
    for init in REPO_ROOT.glob("*/__init__.py"):
        modules[init.parent.name] = sorted(init.parent.glob("*.py"))
    return modules


def library_files():
    return sorted(path for paths in repo_modules().values() for path in paths)


def imports(path):
    """(line, dotted name) of every import in a file, at any depth (functions, classes, try
    blocks); `from a import b` gives a.b, which is the module a.b where that is a file."""
    found = []
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


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
    return {name: sorted((set().union(*(imported_names(p) for p in paths)) & set(modules))
                         - {name})
            for name, paths in modules.items()}


def file_module(path):
    """Dotted module name of a library file: config, engine.training, engine (its __init__)."""
    rel = Path(path).relative_to(REPO_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def file_graph():
    """Library file -> the library files it imports (dotted names), package files included."""
    files = {file_module(path): path for path in library_files()}
    graph = {}
    for name, path in files.items():
        targets = set()
        for _, dotted in imports(path):
            parts = dotted.split(".")
            while parts and ".".join(parts) not in files:         # a.b.name -> the module a.b
                parts.pop()
            if parts:
                targets.add(".".join(parts))
        graph[name] = sorted(targets - {name})
    return graph


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


def layer_violations(modules, layer_of, root=REPO_ROOT):
    """["file:line imports X (layer a above layer b)"] for every import of a higher layer."""
    bad = []
    for name, paths in modules.items():
        for path in paths:
            for line, dotted in imports(path):
                target = dotted.split(".")[0]
                if target in layer_of and target != name and layer_of[target] > layer_of[name]:
                    bad.append(f"{Path(path).relative_to(root)}:{line} imports {dotted} "
                               f"(layer {layer_of[target]} above {name}'s {layer_of[name]})")
    return bad


# ----------------------------------------------------------------------------- the checkers
def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_imports_inside_functions_are_counted(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\ndef f():\n    from refinement import Refinement\n"
                    "    import eval.proposals\n")
    assert imported_names(path) == {"os", "refinement", "eval"}
    assert imports(path) == [(1, "os"), (3, "refinement.Refinement"), (4, "eval.proposals")]


def test_layer_check_finds_an_import_from_above(tmp_path):
    (tmp_path / "low.py").write_text("import os\ndef f():\n    from high import g\n")
    (tmp_path / "high.py").write_text("from low import f\n")
    modules = {"low": [tmp_path / "low.py"], "high": [tmp_path / "high.py"]}
    assert layer_violations(modules, {"low": 0, "high": 1}, tmp_path) == [
        "low.py:3 imports high.g (layer 1 above low's 0)"]
    assert layer_violations(modules, {"low": 0, "high": 0}, tmp_path) == []


# ----------------------------------------------------------------------------- the repository
def test_every_module_has_a_layer():
    modules = set(repo_modules())
    assert modules == set(LAYER_OF), (f"not in LAYERS: {sorted(modules - set(LAYER_OF))}; "
                                      f"gone: {sorted(set(LAYER_OF) - modules)}")


def test_modules_import_only_their_layer_and_below():
    bad = layer_violations(repo_modules(), LAYER_OF)
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_repo_modules_have_no_import_cycle():
    graph = import_graph()
    assert {"engine", "eval", "features", "utils"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    files = file_graph()
    assert find_cycle(files) is None, f"import cycle: {' -> '.join(find_cycle(files))}"
    # the run machinery: passes -> training -> run, not back
    assert "engine.passes" in files["engine.training"] and "engine.training" in files["engine.run"]
    assert "engine.training" not in files["engine.passes"]
    assert "engine.run" not in files["engine.passes"] + files["engine.training"]


def test_no_noqa_reexports_in_library_code():
    found = [f"{path.relative_to(REPO_ROOT)}:{number}"
             for path in library_files()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"noqa:[^#]*\bF401\b", line)]
    assert not found, "re-exports kept by noqa: F401 (import from the defining module):\n" + \
        "\n".join(found)


def test_no_private_name_imported_across_modules():
    modules = set(repo_modules())
    found = []
    for path in library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in modules):
                found += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} from {node.module} "
                          f"import {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.endswith("__")]
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def test_no_library_file_over_400_lines():
    long = [f"{path.relative_to(REPO_ROOT)}: {count} lines"
            for path in library_files()
            if (count := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, f"library files over {MAX_LINES} lines:\n" + "\n".join(long)
