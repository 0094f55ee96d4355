"""The house rules a test can check (ARCHITECTURE.md): one exception root, layers without import cycles, the\nmodule table true."""

from __future__ import annotations

import ast
import graphlib
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pandas as pd
import pytest

import histo_utils
from histo_utils import io, splits
from histo_utils.errors import HistoUtilsError

#: The one exception class allowed outside the root: a signal (SIGTERM/SIGINT), not a refusal.
SIGNALS = {"histo_utils.run.RunInterrupted"}


def _modules():
    for info in pkgutil.walk_packages(histo_utils.__path__, "histo_utils."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_exception_of_the_package_sits_under_one_root():
    found, stray = set(), []
    for mod in _modules():
        for name, obj in vars(mod).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("histo_utils")):
                qual = f"{obj.__module__}.{obj.__qualname__}"
                found.add(qual)
                if qual not in SIGNALS and not issubclass(obj, HistoUtilsError):
                    stray.append(qual)
    assert not stray, f"exception classes outside HistoUtilsError: {stray}"
    assert "histo_utils.data.EmptyGridError" in found and "histo_utils.io.GCTError" in found


@pytest.mark.parametrize("call, builtin", [
    (lambda: io.read_gct("/nonexistent/x.gct.gz"), FileNotFoundError),
    (lambda: splits.split_subjects(pd.DataFrame({"subject_id": ["a"], "SMTS": ["x"]}), fractions=(2, 0, 0)),
     ValueError),
])
def test_a_refusal_is_both_the_root_and_the_builtin_callers_already_catch(call, builtin):
    with pytest.raises(HistoUtilsError) as err:
        call()
    assert isinstance(err.value, builtin)


# --------------------------------------------------------------------------
# layers without cycles
# --------------------------------------------------------------------------
ARCHITECTURE = Path(histo_utils.__file__).parents[1] / "ARCHITECTURE.md"
PACKAGE = Path(histo_utils.__file__).parent


def _section(start: str, end: str) -> str:
    text = ARCHITECTURE.read_text()
    assert start in text and end in text, f"ARCHITECTURE.md needs the markers {start} and {end}"
    return text.split(start, 1)[1].split(end, 1)[0]


def _layers() -> dict[str, tuple[str, ...]]:
    """The layers of ARCHITECTURE.md's table, lowest first: layer -> modules (their backticked names)."""
    rows = [r for r in _section("<!-- layers:start -->", "<!-- layers:end -->").splitlines()
            if r.startswith("|") and not r.startswith("|---") and not r.startswith("| layer")]
    return {r.split("|")[1].strip(): tuple(re.findall(r"`(\w+)`", r.split("|")[2])) for r in rows}


def _package_modules() -> set[str]:
    """The package's own modules and sub-packages: ``io``, ``truth``, ``figures``, ... (``__init__`` left out)."""
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")}


LAYERS = _layers()


def test_every_module_is_in_exactly_one_layer_of_architecture_md():
    placed = [m for members in LAYERS.values() for m in members]
    assert len(placed) == len(set(placed)), f"modules in two layers: {sorted({m for m in placed if placed.count(m) > 1})}"
    assert set(placed) == _package_modules(), (
        f"ARCHITECTURE.md's layers miss {sorted(_package_modules() - set(placed))} and name modules that do not "
        f"exist: {sorted(set(placed) - _package_modules())}")


def test_architecture_md_module_table_names_every_module_once():
    text = ARCHITECTURE.read_text().split("## Which module owns which step", 1)[1].split("\n## ", 1)[0]
    owners = [re.findall(r"`(\w+)`", row.rsplit("|", 2)[-2]) for row in text.splitlines()
              if row.startswith("|") and not row.startswith("|---") and not row.startswith("| Step")]
    named = [m for o in owners for m in o]
    assert sorted(named) == sorted(_package_modules()), (
        f"module table: missing {sorted(_package_modules() - set(named))}, unknown {sorted(set(named) - _package_modules())}, "
        f"twice {sorted({m for m in named if named.count(m) > 1})}")


def _import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports, at module top or inside functions (``TYPE_CHECKING`` included)."""
    root = Path(histo_utils.__file__).parent
    names = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {n: set() for n in names}
    for name, path in names.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in names and t != name and not name.startswith(t + ".")}
    return graph


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for i, members in enumerate(LAYERS.values()):
        if part in members:
            return i
    raise AssertionError(f"module {module} is in no layer: add it to ARCHITECTURE.md's layer table and module table")


def test_no_import_cycle_counting_imports_inside_functions():
    try:
        tuple(graphlib.TopologicalSorter(_import_graph()).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    graph = _import_graph()
    upward = sorted(f"{a} ({list(LAYERS)[_layer(a)]}) -> {b} ({list(LAYERS)[_layer(b)]})"
                    for a, bs in graph.items() if a != "histo_utils" for b in bs if _layer(b) > _layer(a))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_package_imports_sit_at_module_top():
    """An import of a package module inside a function hides a dependency (and, before issue 29, cycles)."""
    inside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.relative_to(PACKAGE.parent)}:{n.lineno}" for n in ast.walk(fn)
                           if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("histo_utils"))]
    assert not inside, f"package imports inside functions: {inside}"
