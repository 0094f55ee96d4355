"""The notebooks' own defaults are the CPU `default` profile: "Run All" in order works by hand."""
import ast
import shutil

import nbformat
import pytest
import yaml

from histo_utils import run

MANUAL = "../runs/manual"  # the notebooks' default out_dir, relative to notebooks/


def _defaults(path):
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, (ast.AnnAssign, ast.Assign)):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            out[target.id] = ast.literal_eval(node.value)
    return out


@pytest.mark.parametrize("path", sorted(run.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_notebook_defaults_are_the_default_profile(path):
    prof = yaml.safe_load((run.PARAMS_DIR / "default.yaml").read_text())
    defaults = _defaults(path)
    want = {k: v for k, v in (prof.get("common") or {}).items() if k in defaults}
    want.update(prof["notebooks"][path.stem] or {})
    want = {k: run._expand(v, MANUAL) for k, v in want.items()}
    differ = {k: (defaults[k], v) for k, v in want.items() if defaults[k] != v}
    assert not differ, f"{path.name}: notebook default != default.yaml: {differ}"
    assert defaults["out_dir"] == MANUAL  # every notebook writes to and reads from the same folder by hand


def test_chained_defaults_make_what_the_next_notebook_reads():
    d01, d02 = (_defaults(run.NOTEBOOKS_DIR / f"{s}.ipynb") for s in ("01_tiling", "02_training"))
    assert d02["train_tile_px"] in d01["tile_px"]
    assert set(d02["feature_tile_px"]) <= set(d01["tile_px"])
    d03, d09 = (_defaults(run.NOTEBOOKS_DIR / f"{s}.ipynb") for s in ("03_feature_correlation",
                                                                      "09_radiogenomic_network"))
    assert d03["tile_px"] in d02["feature_tile_px"] and d09["tile_px"] in d02["feature_tile_px"]


@pytest.mark.parametrize("stem,key,paper", [
    ("02_training", "epochs", 90), ("02_training", "optimizer", "sgd"), ("02_training", "input_px", 224),
    ("02_training", "max_train_tiles_per_slide", 0), ("02_training", "max_val_tiles_per_slide", 0),
    ("03_feature_correlation", "e_threshold", 10.0), ("06_gsea", "e_threshold", 10.0),
    ("09_radiogenomic_network", "saliency_permutations", 1000),
])
def test_gtex_profile_keeps_the_papers_settings(stem, key, paper):
    prof = yaml.safe_load((run.PARAMS_DIR / "gtex.yaml").read_text())
    assert prof["notebooks"][stem][key] == paper


@pytest.mark.parametrize("key,paper", [("arch", "inception_v3"), ("tile_px", 512), ("target_mpp", 0.5),
                                       ("input_px", 299), ("epochs", 30), ("batch_size", 32),
                                       ("lr_patience", 3), ("early_stop", 6), ("tiles_per_slide", 0),
                                       ("val_tiles_per_slide", 0)])
def test_tcga_profile_keeps_the_papers_settings(key, paper):
    prof = yaml.safe_load((run.PARAMS_DIR / "tcga.yaml").read_text())
    assert prof["notebooks"]["08_hti_survival"][key] == paper


@pytest.mark.slow
def test_two_notebooks_run_by_hand_with_their_own_defaults(tmp_path):
    """00 then 01 through papermill with no parameters, from a copy of notebooks/, as "Run All" would."""
    import pandas as pd
    import papermill

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for stem in ("00_synthetic_cohort", "01_tiling"):
        shutil.copy(run.NOTEBOOKS_DIR / f"{stem}.ipynb", nbdir)
        papermill.execute_notebook(str(nbdir / f"{stem}.ipynb"), str(tmp_path / f"{stem}.out.ipynb"),
                                   cwd=str(nbdir), progress_bar=False)
    out = tmp_path / "runs" / "manual"
    assert (out / "data" / "slides").is_dir() and (out / "01_tiling").is_dir()
    tiles = pd.read_parquet(next((out / "01_tiling").glob("tiles*.parquet")))
    d02 = _defaults(run.NOTEBOOKS_DIR / "02_training.ipynb")
    assert set(d02["feature_tile_px"]) | {d02["train_tile_px"]} <= set(tiles.tile_px.unique())
