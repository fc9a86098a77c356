"""Rules of the code base that a reader relies on, checked on the source itself (no JAX).

- No function in `flax_style/` is longer than 80 lines (one job each, readable on a screen).
- `flax_style/` never imports `tests` or `benchmarks`: an installed package runs without them.
- Every model and loss default is written once: `64 * 64` (the relu3_1 and loss budgets) appears
  in the model config and in `configs/default.py` only.
- The repository is self-contained: no link or reference leaves it (docs/model.md describes the
  model), and every relative Markdown link resolves.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flax_style"
MAX_FUNCTION_LINES = 80


def _python_files(*folders: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_no_function_longer_than_80_lines():
    long = []
    for path in _python_files(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(ROOT)}:{node.name}"
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name} ({lines} lines)")
    assert not long, long


def test_package_imports_neither_tests_nor_benchmarks():
    found = []
    for path in _python_files(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in ("tests", "benchmarks")
            ]
    assert not found, found


def test_sample_budget_written_at_most_twice():
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _python_files(PACKAGE, ROOT / "configs")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "64 * 64" in line
    ]
    assert len(hits) <= 2, hits


def test_nothing_points_outside_the_repository():
    texts = {
        path: path.read_text()
        for pattern in ("**/*.py", "**/*.md", "**/*.sh")
        for path in ROOT.glob(pattern)
        if ".git" not in path.parts and "build" not in path.parts
    }
    outside = [
        f"{path.relative_to(ROOT)}: {match}"
        for path, text in texts.items()
        for match in re.findall(r"\.\./sh[a]red|S[P]EC\.md|\bS[P]EC \d", text)
    ]
    assert not outside, outside
    for path, text in texts.items():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)#]+)", text):
            if "://" not in target:
                resolved = (path.parent / target).resolve()
                assert resolved.is_relative_to(ROOT) and resolved.exists(), (path, target)
