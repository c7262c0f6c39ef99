"""The package's shape: imports run one way (no cycles, function-level imports included),
``analysis`` reads MLflow and Optuna without the framework, and no file points outside the
repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "analysis")
#: What ``analysis`` may import from ``study``: leaf modules of names, which import nothing.
ANALYSIS_MAY_IMPORT = {"study.errors", "study.record.tags"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file (function bodies too),
    without a package's own ``__init__`` seen from inside it."""
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if not name or name == module:
                continue
            inside = module.startswith(name + ".") or (is_package and name.startswith(module + "."))
            if not inside:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_detection_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_analysis_reads_records_not_the_framework():
    graph = _graph()
    stray = {f"{module} -> {dep}" for module, deps in graph.items() if module.startswith("analysis")
             for dep in deps if dep.startswith("study") and dep not in ANALYSIS_MAY_IMPORT}
    assert not stray, sorted(stray)


def test_tags_module_imports_nothing():
    tree = ast.parse((ROOT / "study" / "record" / "tags.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("pattern", [r"PAPER\.md", r"DESIGN\.md", r"STYLE\.md", r"\.\./shared", r"\bissue \d+\b"])
def test_no_file_points_outside_the_repository(pattern):
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "*.toml", ".ci/run"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    hits = [f"{name}:{i}" for name in files if name != "tests/test_layout.py" and (ROOT / name).is_file()
            for i, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
            if re.search(pattern, line, re.IGNORECASE)]
    assert not hits, f"{pattern} in {hits[:10]} ({len(hits)} lines)"


def test_longest_function_in_study_is_under_120_lines():
    longest = max(((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}")
                   for path in (ROOT / "study").rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))), default=(0, ""))
    assert longest[0] < 120, longest
