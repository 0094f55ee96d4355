"""Shared test fixtures: the real-world fixture files and a tiny synthetic cohort."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HISTO_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def fixture_file(rel: str) -> Path:
    """A file of ../shared/fixtures, or skip the test saying why."""
    p = FIXTURES / rel
    if not p.exists():
        pytest.skip(f"real-world fixture {p} not present (../shared/fixtures is beside the repository in CI)")
    return p


def write_toy_notebook(path: Path, params_src: str, body_src: str) -> None:
    """A two-cell notebook: a ``parameters``-tagged cell and a body (toy notebooks for the runner's tests)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cell = new_code_cell(params_src)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, new_code_cell(body_src)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """A small synthetic cohort (4 tissues x 2 samples, 1 mm slides), made once per session."""
    from histo_utils.synthetic import CohortParams, make_cohort

    params = CohortParams(seed=7, tissues=("Thyroid", "Muscle", "Liver", "Adipose Tissue"), samples_per_tissue=3,
                          tissues_per_donor=2, n_genes=600, module_size=15, tissue_genes=15,
                          slide_width_um=1024.0, slide_height_um=1024.0)
    out = tmp_path_factory.mktemp("cohort")
    make_cohort(out, params, workers=2, progress=False)
    return out, params


@pytest.fixture(scope="session")
def tiny_profile_run(tmp_path_factory):
    """Every notebook on the tiny profile, uninterrupted, once per session (the notebook tests read it; the
    kill-and-rerun tests of test_faults compare their tables with it)."""
    from histo_utils import run

    out = tmp_path_factory.mktemp("tiny_run")
    prof = run.load_profile(run.PARAMS_DIR / "tiny.yaml")
    records = run.run_profile(prof, out, only=["00", "01", "02", "03", "04", "05", "06", "07", "08", "09"])
    return out, prof, records
