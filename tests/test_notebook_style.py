"""Every notebook tells its story the same way and keeps its code short (issue 15).

The skeleton: a title-only first cell; a markdown cell with the question and the method; exactly one cell
tagged ``parameters``; a markdown "Reading" cell. The code: no ``def`` (functions live in histo_utils, with
tests), no code cell over 30 lines (the parameters cell is a list of declarations, one per parameter, and is
exempt), all notebooks together under 1,300 lines of code, stored without outputs.
"""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CELL_LINES = 30
MAX_TOTAL_LINES = 1300


def _code_lines(cell) -> int:
    return len(cell.source.splitlines())


def _read(path):
    return nbformat.read(path, as_version=4)


def test_all_ten_notebooks_are_checked():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(10)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_story_skeleton(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and len(first.source.strip().splitlines()) == 1 \
        and first.source.startswith("# "), f"{path.name}: the first cell must be the title only ('# NN · ...')"
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any("**Question" in s and "**Method" in s for s in markdown), \
        f"{path.name}: needs a markdown cell with **Question.** and **Method.**"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters' (found {len(tagged)})"
    assert nb.cells[tagged[0]].cell_type == "code"
    assert any(re.match(r"#+ Reading", s) for s in markdown), f"{path.name}: needs a '## Reading' markdown cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_typed_literals_with_help(path):
    nb = _read(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for line in cell.source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^\w+(: (\w+|\"[\w\[\], ]+\"))? = .+  # \S", line), f"{path.name}: parameter line without a # help: {line}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_is_short_and_defines_nothing(path):
    nb = _read(path)
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        assert not re.search(r"^\s*(async\s+)?def\s|^\s*class\s", c.source, re.M), \
            f"{path.name} cell {i}: functions and classes belong in histo_utils (with tests)"
        assert _code_lines(c) <= MAX_CELL_LINES or "parameters" in c.metadata.get("tags", []), \
            f"{path.name} cell {i}: {_code_lines(c)} lines of code, at most {MAX_CELL_LINES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = _read(path)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name} cell {i} has outputs: strip them"


def test_total_notebook_code():
    total = sum(_code_lines(c) for p in NOTEBOOKS for c in _read(p).cells if c.cell_type == "code")
    assert total < MAX_TOTAL_LINES, f"{total} lines of code in the notebooks, fewer than {MAX_TOTAL_LINES} wanted"
