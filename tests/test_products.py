"""The declared outputs of the notebooks (histo_utils.products), and what the runner derives from them."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import write_toy_notebook  # noqa: E402

from histo_utils import data, plotting, products, run  # noqa: E402
from histo_utils.errors import HistoUtilsError, InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: file suffixes of products: a string literal ending so in a notebook names a file by hand
SUFFIXES = re.compile(r"\.(tsv|parquet|json|png|csv|pt|h5|h5ad)$")


def _code(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code")


# ---------------------------------------------------------------- the declarations
def test_every_notebook_is_declared_with_unique_keys_and_names():
    assert list(products.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for nb in products.NOTEBOOKS.values():
        names = [p.name for p in nb.files.values() if p.name]
        assert len(names) == len(set(names)), nb.stem
        for space, figures in ((nb.files, False), (nb.figures, True)):
            for key, p in space.items():
                assert p.key == key and p.notebook == nb.stem and p.kind in products.KINDS and p.description
                assert (p.kind == "figure") == figures
                assert p.when is None or p.when in run.declared_parameters(ROOT / "notebooks" / f"{nb.stem}.ipynb")
    with pytest.raises(InputError, match="output 'a' declared twice"):
        products.Notebook.declare("x", "x", products.table("a", "a.tsv", "one"), products.table("a", "b.tsv", "two"))
    with pytest.raises(InputError, match="file 'a.tsv' declared twice"):
        products.Notebook.declare("x", "x", products.table("a", "a.tsv", "one"), products.table("b", "a.tsv", "two"))
    with pytest.raises(InputError, match="figure 'f' declared twice"):
        products.Notebook.declare("x", "x", products.figure("f", "one"), products.figure("f", "two"))
    # a figure and a table may share a name: two name spaces (03's threshold grid is both)
    assert "threshold_grid" in products.NOTEBOOKS["03_feature_correlation"].files
    assert "threshold_grid" in products.NOTEBOOKS["03_feature_correlation"].figures


def test_paths_and_templates_resolve(tmp_path):
    out = products.outputs(tmp_path, "03_feature_correlation")
    assert out.pairs == tmp_path / "03_feature_correlation" / "pairs.parquet"
    assert out["pairs"] == out.pairs and out.figure("threshold_grid") == (
        tmp_path / "figures" / "03_feature_correlation" / "threshold_grid.png")
    assert not (tmp_path / "03_feature_correlation").exists()  # naming a path creates nothing
    assert out.folder.is_dir()  # ... the folder is made when asked for (a function writes into it)
    d05 = products.outputs(tmp_path, "05_confounder_regression")
    assert d05.residual_features(name="trained_256px") == (
        tmp_path / "05_confounder_regression" / "residual_features_trained_256px.parquet")
    assert products.outputs(tmp_path, "02_training").features(network="trained", tile_px=256).name == \
        data.FeatureKey("trained", 256).file_name == "features_trained_256px.parquet"
    assert products.outputs(tmp_path, "02_training").checkpoint(arch="vgg16") == (
        tmp_path / "02_training" / "checkpoints" / "vgg16" / "best.pt")
    for nb in products.NOTEBOOKS.values():
        for p in nb.files.values():
            if p.is_template:
                name = p.format(**{f: "x_1" for f in p.fields})
                assert p.pattern().match(name) and "{" not in name, (nb.stem, p.key)
                assert isinstance(products.outputs(tmp_path, nb.stem)[p.key], products.Template)
    with pytest.raises(InputError, match=r"is named 'residual_features_\{name\}.parquet': give name=\.\.\. "
                                         r"\(missing \['name'\]\) \(unknown \['key'\]\)"):
        d05.residual_features(key="trained_256px")
    with pytest.raises(InputError, match="cannot be part of a file name"):
        d05.residual_features(name="../x")
    with pytest.raises(InputError, match="is a template .* call it, e.g. out.residual_features\\(name=...\\)"):
        Path(d05.residual_features)
    with pytest.raises(products.ProductKeyError, match="parameter 'data_dir' names"):
        products.outputs(tmp_path, "00_synthetic_cohort").cohort


def test_a_misspelt_key_is_refused_with_the_notebook_the_key_and_the_declared_keys(tmp_path):
    out = products.outputs(tmp_path, "03_feature_correlation")
    with pytest.raises(products.ProductKeyError) as err:
        out.pair
    msg = str(err.value)
    assert msg.startswith("Notebook 03_feature_correlation declares no output 'pair' in histo_utils/products.py. "
                          "Did you mean 'pairs'? Declared: ['batch_norm_effect', ")
    assert isinstance(err.value, HistoUtilsError) and isinstance(err.value, KeyError)
    assert not hasattr(out, "pair")  # an AttributeError too: getattr/hasattr behave
    with pytest.raises(products.ProductKeyError, match=r"Notebook '03_feature_corelation' has no declared outputs.*"
                                                       r"Did you mean '03_feature_correlation'"):
        products.outputs(tmp_path, "03_feature_corelation")
    with pytest.raises(products.ProductKeyError, match="declares no output 'nope'"):
        products.reads("01_tiling:nope")
    with pytest.raises(InputError, match="write '<notebook>:<key>'"):
        products.reads("01_tiling")


def test_save_figure_refuses_a_figure_not_declared_for_its_notebook(tmp_path):
    fig, _ = plt.subplots()
    table = pd.DataFrame({"x": [1]})
    with pytest.raises(products.ProductKeyError, match=re.escape(
            "Figure 'x' is not declared for notebook 03_feature_correlation in histo_utils/products.py: "
            "declare it there")):
        plotting.save_figure(fig, table, tmp_path, "03_feature_correlation", "x")
    assert not (tmp_path / "figures" / "03_feature_correlation" / "x.png").exists()
    assert plotting.save_figure(fig, table, tmp_path, "03_feature_correlation", "threshold_grid").exists()
    assert plotting.save_figure(fig, table, tmp_path, "scratch", "x").exists()  # a notebook not declared here
    plt.close(fig)


def test_provenance_schema_is_what_notebook_02_writes_and_is_checked_on_reading(tmp_path):
    cell = next(c.source for c in nbformat.read(str(ROOT / "notebooks" / "02_training.ipynb"), as_version=4).cells
                if "provenance = {" in c.source)
    node = next(n for n in ast.walk(ast.parse(cell)) if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "provenance")
    assert [k.value for k in node.value.keys] == list(products.FEATURE_PROVENANCE)
    assert set(products.FEATURE_PROVENANCE_REQUIRED) <= set(products.FEATURE_PROVENANCE)
    d02 = products.outputs(tmp_path, "02_training")
    d02.provenance.parent.mkdir(parents=True)
    d02.provenance.write_text(json.dumps({"aggregation": "sum", "tables": {}, "arch": "vgg16"}))
    assert data.read_feature_provenance(tmp_path, keys=["arch"])["arch"] == "vgg16"
    with pytest.raises(InputError, match=re.escape(f"Feature provenance '{d02.provenance}' lacks ['classes', "
                                                   "'input_px']: rerun notebook 02_training")):
        data.read_feature_provenance(tmp_path, keys=["arch", "input_px", "classes"])
    with pytest.raises(KeyError, match="'clases'.* not declared"):
        data.read_feature_provenance(tmp_path, keys=["clases"])
    d02.provenance.write_text(json.dumps({"aggregation": "sum", "tables": {"features_x_256px.parquet": {"network": "x"}}}))
    with pytest.raises(InputError, match=r"Table 'features_x_256px.parquet' .* lacks \['tile_px'\]: rerun notebook"):
        data.feature_keys(tmp_path)


def test_readers_take_their_file_names_from_the_declarations():
    assert data.PROVENANCE_FILE == products.product("02_training", "provenance").name
    assert data.GROUPING_FILE == products.product("01_tiling", "tissue_grouping").name
    assert f"per_slide/{data.TILES_PER_SIZE}" == products.product("01_tiling", "tiles_per_size").name
    # a file declared inside a folder lies in a declared folder (tiling writes tiles_per_size into per_slide)
    for nb in products.NOTEBOOKS.values():
        for p in nb.files.values():
            if "/" in p.name:
                assert any(q.kind == "folder" and q.name == p.name.split("/")[0] for q in nb.files.values()), p
    assert [(rf.notebook, rf.file) for rf in run.REPORT_FILES] == [
        ("01_tiling", "slides.tsv"), ("01_tiling", "join_report.tsv"), ("08_hti_survival", "slides.tsv")]
    for rf in run.REPORT_FILES:  # the columns the console summary reads are declared
        p = products.product(rf.notebook, rf.key)
        assert {rf.column, rf.name, *([rf.count] if rf.count else [])} <= set(p.columns), rf
    assert run.NOTEBOOK_WRITES == {"00_synthetic_cohort": {"data_dir": None},
                                   "08_hti_survival": {"tumour_dir": "make_synthetic"}}


def test_every_function_of_the_catalogue_given_out_dir_declares_its_reads():
    import inspect

    from histo_utils import readings, store

    for mod in (data, store, readings, plotting):
        for name, fn in vars(mod).items():
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__ and not name.startswith("_") \
                    and "out_dir" in inspect.signature(fn).parameters:
                assert f"{mod.__name__}.{name}" in products.READS, f"{mod.__name__}.{name}: add @products.reads"


# ---------------------------------------------------------------- the notebooks name their outputs by key
def _literal_file_names(path: Path) -> list[str]:
    """String literals of a notebook's code that name a product file (data-folder inputs left out)."""
    tree = ast.parse(_code(path))
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        if text is None or not SUFFIXES.search(text.strip()) or isinstance(parents.get(node), ast.JoinedStr):
            continue
        parent = parents.get(node)
        base = ast.unparse(parent.left) if isinstance(parent, ast.BinOp) and parent.right is node else ""
        if re.match(r"(files\.\w+|truth_dir|data_dir|files\.truth_dir)$", base):  # the data folder's files
            continue
        found.append(ast.unparse(parent) if parent is not None else text)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_names_an_output_file_by_hand(path):
    assert _literal_file_names(path) == []
    code = _code(path)
    assert not re.search(r"\.parent\b", code), f"{path.name}: reach another notebook through products.outputs"
    assert "notebook_dir" not in code and not re.search(r"\bwork\b", code)
    tree = ast.parse(code)
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    for node in ast.walk(tree):  # a notebook's name appears only as NB = "..." or products.outputs(out_dir, "...")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"\d\d_\w+", node.value):
            parent = parents[node]
            ok = (isinstance(parent, ast.Assign) and ast.unparse(parent.targets[0]) == "NB") or (
                isinstance(parent, ast.Call) and ast.unparse(parent.func) == "products.outputs")
            assert ok, f"{path.name}: {ast.unparse(parent)}"


def test_the_literal_scan_finds_a_file_named_by_hand(tmp_path):
    nb = tmp_path / "03_x.ipynb"
    write_toy_notebook(nb, 'out_dir = "x"  # out\n',
                       'io.write_table(t, out.folder / "pairs.parquet")\nt = io.read_table(files.truth_dir / "genes.tsv")\n'
                       'io.write_table(t, work / f"x_{name}.tsv")\n')
    assert _literal_file_names(nb) == ["out.folder / 'pairs.parquet'", "work / f'x_{name}.tsv'"]


# ---------------------------------------------------------------- what a notebook reads, derived
def _reads() -> dict[str, products.NotebookReads]:
    return {p.stem: products.notebook_reads(p) for p in NOTEBOOKS}


def test_derived_reads_are_complete_and_forward():
    reads = _reads()
    for stem, r in reads.items():
        assert r.unknown == [], f"{stem} calls {r.unknown} with out_dir: declare their reads (products.reads)"
        assert all(src < stem for src in r.reads), f"{stem} reads a later notebook: {r.reads}"
    edges = {(src, dst) for dst, r in reads.items() for src in r.reads}
    for a, b in [("03", "06"), ("03", "07"), ("05", "06"), ("01", "02"), ("02", "03"), ("04", "05"), ("00", "01"),
                 ("02", "07"), ("01", "09"), ("02", "09")]:
        assert any(s.startswith(a) and d.startswith(b) for s, d in edges), f"{a} -> {b} missing"
    assert reads["06_gsea"].reads["05_confounder_regression"] == [
        "designs", "residual_expression", "residual_features", "variance_by_confounder_genes"]
    assert reads["03_feature_correlation"].reads["02_training"] == [
        "accuracy", "features", "provenance", "layer_tracking"]
    assert reads["07_visualization"].reads["02_training"] == ["checkpoint", "features", "provenance"]


def test_runner_needs_are_the_derived_reads_and_agree_with_the_old_metadata():
    needs = {p.stem: run.notebook_needs(p) for p in NOTEBOOKS}
    assert needs["08_hti_survival"] == []  # was histo_utils.needs: []
    assert needs["09_radiogenomic_network"] == ["00_synthetic_cohort", "01_tiling", "02_training"]  # was [00, 01, 02]
    assert needs["05_confounder_regression"] == ["00_synthetic_cohort", "01_tiling", "02_training",
                                                 "04_pca_cross_variance"]
    for p in NOTEBOOKS:
        assert "histo_utils" not in nbformat.read(str(p), as_version=4).metadata, "needs are derived, not declared"


def test_derivation_of_toy_notebooks(tmp_path):
    def toy(name, body, params='out_dir: str = "x"  # out\n'):
        path = tmp_path / f"{name}.ipynb"
        write_toy_notebook(path, params, body)
        return products.notebook_reads(path)

    imports = "from histo_utils import data, io, products\n"
    r = toy("10_0", "import histo_utils.data\nimport histo_utils.products as hp\n"
            "t = histo_utils.data.load_features(out_dir, 'trained_256px')\n"
            "x = hp.outputs(out_dir, '04_pca_cross_variance').shared_variance\n")
    assert r.reads == {"02_training": ["features"], "04_pca_cross_variance": ["shared_variance"]} and not r.unknown
    r = toy("10_a", imports + 'd03 = products.outputs(out_dir, "03_feature_correlation")\nx = io.read_table(d03.pairs)\n'
            'y = io.read_table(products.outputs(out_dir, "02_training").accuracy)\n')
    assert r.reads == {"03_feature_correlation": ["pairs"], "02_training": ["accuracy"]} and r.unknown == []
    r = toy("10_b", imports + 'NB = "10_b"\nd01 = products.outputs(out_dir, "01_tiling")\nf(d01)\n'
            "t, s = data.load_tiling(out_dir)\n")
    assert r.reads["01_tiling"] == list(products.NOTEBOOKS["01_tiling"].files)  # passed on whole: everything
    r = toy("10_c", imports + "from pathlib import Path\nx = Path(out_dir) / '01_tiling' / 'samples.tsv'\n"
            'c = io.read_table(f"{out_dir}/01_tiling/samples.tsv")\n')
    assert sorted(r.unknown) == ["Path", "histo_utils.io.read_table"]
    assert run.notebook_needs(tmp_path / "10_c.ipynb") is None  # unknown reads: every earlier notebook
    r = toy("10_d", imports + "t = data.tissue_of(s, 'SMTS', out_dir=out_dir)\n",
            params='out_dir: str = "x"  # out\ndata_dir: str = ""  # data\n')
    assert r.reads == {"01_tiling": ["tissue_grouping"], "00_synthetic_cohort": ["cohort"]}
    with pytest.raises(products.ProductKeyError, match="declares no output 'pair'"):
        toy("10_e", imports + 'x = products.outputs(out_dir, "03_feature_correlation").pair\n')
    with pytest.raises(run.ProfileError, match="10_e.ipynb.*declares no output 'pair'"):
        run.notebook_needs(tmp_path / "10_e.ipynb")


# ---------------------------------------------------------------- ARCHITECTURE.md
def test_architecture_data_flow_is_the_generated_one():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    m = re.search(r"<!-- data-flow:start -->\n(.*?)<!-- data-flow:end -->", text, re.S)
    assert m, "ARCHITECTURE.md needs the markers <!-- data-flow:start --> and <!-- data-flow:end -->"
    flow = products.data_flow()
    assert m.group(1) == f"```\n{flow}\n```\n", (
        "ARCHITECTURE.md's data flow differs from histo_utils.products.data_flow(); paste it between the markers:\n"
        + flow)
    for line in flow.splitlines():
        assert re.fullmatch(r"\d\d_\w+ → \d\d_\w+: [\w (),]+", line), line
    assert "03_feature_correlation → 06_gsea: expression_floor, pairs" in flow


def test_reads_read_from_the_source_are_the_decorators_and_load_no_heavy_module():
    """The runner derives inputs from the modules' source (no torch/matplotlib in the runner at start)."""
    code = ("import glob, sys; from pathlib import Path; from histo_utils import products\n"
            "[products.notebook_reads(Path(p)) for p in sorted(glob.glob('notebooks/*.ipynb'))]\n"
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    import importlib
    for module in ("histo_utils.data", "histo_utils.store", "histo_utils.readings", "histo_utils.plotting",
                   "histo_utils.radiogenomics", "histo_utils.correlation"):
        static = products._source_reads(module)
        importlib.import_module(module)
        decorated = {k.rpartition(".")[2]: v for k, v in products.READS.items() if k.rpartition(".")[0] == module}
        assert decorated and {k: v for k, v in static.items() if v is not None} == decorated, module
