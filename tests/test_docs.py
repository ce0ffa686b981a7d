"""The documentation's pointers into the code and into docs/method.md resolve.

- every `file.py:name` / `file.py:Class.method` in README.md and docs/*.md names a file of the
  repository that defines that name (read with ast, nothing imported);
- every `docs/method.md §N` (also `§N-M`, `§N, §M`, `§N/§M`) in the repository's .py and .md files,
  and every `§N` inside docs/method.md, names a section of docs/method.md;
- links from README.md and docs/*.md to repository files point at files that exist.
"""
import ast
import re

import pytest

from config import REPO_ROOT as REPO

METHOD = REPO / "docs" / "method.md"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_DIRS = {"data", "checkpoints", "saved_model", "node_modules", "__pycache__"}

CODE_REF = re.compile(r"(?<![\w/.])((?:[A-Za-z_][\w-]*/)*[A-Za-z_]\w*\.py)"
                      r":([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
METHOD_REF = re.compile(r"docs/method\.md\s*"
                        r"((?:§\s*\d+(?:\s*[-–]\s*§?\d+)?(?:\s*(?:,|/|and)\s*(?=§))?)+)")
SECTION_REF = re.compile(r"§\s*(\d+)(?:\s*[-–]\s*§?(\d+))?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_files(suffixes):
    """Tracked-looking files: everything under the repo except hidden, data and output folders."""
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO)
        if path.suffix in suffixes and path.is_file() and not any(
                part.startswith(".") or part in SKIP_DIRS for part in rel.parts[:-1]):
            yield path


def method_sections():
    """{N: title} of the '## N. Title' headings of docs/method.md."""
    return {int(m.group(1)): m.group(2).strip()
            for m in re.finditer(r"^## (\d+)\. (.+)$", METHOD.read_text(), flags=re.M)}


def defined_names(tree):
    """Top-level name -> node (functions, classes, assigned names)."""
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def resolves(path, dotted):
    """True when `dotted` (name or Class.attr...) is defined in the python file `path`."""
    node = ast.parse(path.read_text())
    for part in dotted.split("."):
        names = defined_names(node) if isinstance(node, (ast.Module, ast.ClassDef)) else {}
        if part not in names:
            return False
        node = names[part]
    return True


def code_references():
    refs = []
    for doc in DOC_FILES:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in CODE_REF.finditer(line):
                refs.append((f"{doc.relative_to(REPO)}:{number}", match.group(1), match.group(2)))
    return refs


def test_docs_name_code_that_exists():
    refs = code_references()
    assert len(refs) > 50, "the method page should point into the code"    # the regex still matches
    missing = [f"{where}: {file}:{name}" for where, file, name in refs
               if not (REPO / file).is_file() or not resolves(REPO / file, name)]
    assert not missing, "documented functions that do not exist:\n" + "\n".join(missing)


def test_resolver_rejects_wrong_names(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("X = 1\nclass A:\n    y = 2\n    def f(self):\n        pass\n"
                      "def g():\n    pass\n")
    assert all(resolves(module, name) for name in ("X", "A", "A.f", "A.y", "g"))
    assert not any(resolves(module, name) for name in ("A.g", "f", "g.x", "B"))
    found = CODE_REF.findall("see `eval/proposals.py:video_proposals` and "
                             "model.py:ASMLoc.forward, not a.pyc:x")
    assert found == [("eval/proposals.py", "video_proposals"), ("model.py", "ASMLoc.forward")]


def section_numbers(text):
    """Section numbers named by the `docs/method.md §...` references in text (ranges expanded)."""
    numbers = []
    for ref in METHOD_REF.finditer(text):
        for start, stop in SECTION_REF.findall(ref.group(1)):
            numbers.extend(range(int(start), int(stop or start) + 1))
    return numbers


def test_section_reference_parser():
    text = "docs/method.md §3-5 and docs/method.md §7, §14 for T == 1; docs/method.md §7/§9"
    assert section_numbers(text) == [3, 4, 5, 7, 14, 7, 9]


def test_method_page_has_numbered_sections():
    sections = method_sections()
    assert sorted(sections) == list(range(1, len(sections) + 1)) and len(sections) >= 15
    for number, title in sections.items():
        body = METHOD.read_text().split(f"## {number}. {title}", 1)[1].split("\n## ", 1)[0]
        assert len(body.split()) > 40, f"section {number} ({title}) is nearly empty"


def test_method_references_name_existing_sections():
    sections = method_sections()
    bad, count = [], 0
    for path in repository_files({".py", ".md"}):
        text = path.read_text(errors="replace")
        numbers = section_numbers(text)
        if path == METHOD:
            numbers += [int(n) for n in re.findall(r"§\s*(\d+)", text)]
        count += len(numbers)
        bad += [f"{path.relative_to(REPO)}: §{n}" for n in numbers if n not in sections]
    assert count > 30, "the code should point into docs/method.md"
    assert not bad, "references to sections docs/method.md does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files(doc):
    missing = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue                                   # web links and in-page anchors
        if not (doc.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to missing files: {missing}"
