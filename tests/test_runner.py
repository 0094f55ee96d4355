"""The papermill runner: profile validation, failures, skipping unchanged work."""
import ast
import json

import nbformat
import pytest
import yaml
from conftest import write_toy_notebook
from histo_utils import run




@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Two tiny notebooks: 00 writes a file from its parameter, 01 reads it."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_make.ipynb", 'out_dir: str = "x"  # output\nvalue: int = 1  # a number\n',
        "from pathlib import Path\nd = Path(out_dir) / '00_make'\nd.mkdir(parents=True, exist_ok=True)\n"
        "(d / 'v.txt').write_text(str(value))\n(Path(out_dir) / 'count00').open('a').write('x')\n")
    write_toy_notebook(nbdir / "01_use.ipynb", 'out_dir: str = "x"  # output\nfail: bool = False  # raise on purpose\n',
        "from pathlib import Path\nd = Path(out_dir) / '01_use'\nd.mkdir(parents=True, exist_ok=True)\n"
        "v = int((Path(out_dir) / '00_make' / 'v.txt').read_text())\n"
        "if fail:\n    raise ValueError(f'planted failure {v}')\n"
        "(Path(out_dir) / 'count01').open('a').write('x')\n")
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)

    def profile(data):
        p = tmp_path / "p.yaml"
        p.write_text(yaml.safe_dump(data))
        return run.load_profile(p, notebooks_dir=nbdir)
    return tmp_path, profile


def test_unknown_key_stops_before_anything_runs(toy):
    tmp, profile = toy
    with pytest.raises(run.ProfileError, match=r"parameter 'valeu' is not declared by notebook '00_make'"):
        profile({"notebooks": {"00_make": {"valeu": 3}, "01_use": {}}})
    with pytest.raises(run.ProfileError, match="common parameter 'sed' is declared by none"):
        profile({"common": {"sed": 1}, "notebooks": {"00_make": {}}})
    with pytest.raises(run.ProfileError, match="names notebook '07'"):
        profile({"notebooks": {"07": {}}})
    with pytest.raises(run.ProfileError, match="set by the runner"):
        profile({"notebooks": {"00": {"out_dir": "/elsewhere"}}})
    assert not (tmp / "out").exists()


def test_run_skip_and_rerun_on_change(toy):
    tmp, profile = toy
    out = tmp / "out"
    prof = profile({"notebooks": {"00": {"value": 5}, "01": {}}})
    recs = run.run_profile(prof, out)
    assert [r["status"] for r in recs] == ["ran", "ran"]
    assert (out / "00_make" / "v.txt").read_text() == "5"
    assert (out / "notebooks" / "00_make.ipynb").exists()
    recs = run.run_profile(prof, out)
    assert [r["status"] for r in recs] == ["skipped", "skipped"]
    # a changed parameter of 00 reruns 00 and, through its fingerprint, 01
    prof = profile({"notebooks": {"00": {"value": 6}, "01": {}}})
    assert [r["status"] for r in run.run_profile(prof, out)] == ["ran", "ran"]
    assert (out / "count00").read_text() == "xx" and (out / "count01").read_text() == "xx"
    # --only 01 with nothing changed: skipped; --force reruns
    assert [r["status"] for r in run.run_profile(prof, out, only=["01"])] == ["skipped"]
    assert [r["status"] for r in run.run_profile(prof, out, only=["01"], force=True)] == ["ran"]
    # a deleted output folder is not 'unchanged'
    import shutil
    shutil.rmtree(out / "01_use")
    assert [r["status"] for r in run.run_profile(prof, out, only=["01"])] == ["ran"]


def test_only_needs_upstream_results(toy):
    tmp, profile = toy
    prof = profile({"notebooks": {"00": {}, "01": {}}})
    with pytest.raises(run.ProfileError, match="Run it first"):
        run.run_profile(prof, tmp / "fresh", only=["01"])


def test_only_takes_commas_and_names_itself_when_wrong(toy):
    tmp, profile = toy
    prof = profile({"notebooks": {"00": {}, "01": {}}})
    assert run.split_only(["00,01"]) == run.split_only(["00", "01"]) == ["00", "01"]
    assert [r["notebook"] for r in run.run_profile(prof, tmp / "out", only=["00,01"])] == ["00_make", "01_use"]
    # a wrong --only value blames --only, not the profile file
    with pytest.raises(run.ProfileError, match=r"^--only \(with profile 'p.yaml'\) names notebook '0x'"):
        run.run_profile(prof, tmp / "out", only=["00,0x"])


def test_finish_runs_while_the_output_is_still_locked(toy):
    """Publishing and the report read the outputs: no other runner may start before they are done."""
    tmp, profile = toy
    prof = profile({"notebooks": {"00": {}, "01": {}}})
    seen = []

    def finish(records):
        with pytest.raises(run.OutputLocked):
            with run.output_lock(tmp / "out"):
                pass
        seen.append([r["status"] for r in records])

    run.run_profile(prof, tmp / "out", finish=finish)
    assert seen == [["ran", "ran"]]


def test_failing_notebook_named_with_cell_and_copy_kept(toy):
    tmp, profile = toy
    out = tmp / "out"
    prof = profile({"notebooks": {"00": {}, "01": {"fail": True}}})
    with pytest.raises(run.NotebookFailed) as e:
        run.run_profile(prof, out)
    msg = str(e.value)
    assert "'01_use' failed in cell" in msg and "planted failure 1" in msg and "raise ValueError" in msg
    assert (out / "notebooks" / "01_use.ipynb").exists()
    assert not (out / ".runner" / "01_use.json").exists()  # a failed notebook is never 'done'


def test_cli_exit_code_and_message(toy, capsys, caplog):
    tmp, _ = toy
    p = tmp / "bad.yaml"
    p.write_text("notebooks:\n  00_make: {valeu: 3}\n")
    assert run.main(["--params", str(p), "--out", str(tmp / "o")]) == 2
    assert "valeu" in caplog.text


# ---------------------------------------------------------------- the real notebooks and profiles
def _strip_filter(path):
    """The git clean filter that strips this notebook when staged (make install's nbstripout), or None."""
    import subprocess

    def git(*a):
        r = subprocess.run(["git", *a], cwd=path.parent, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    if not git("check-attr", "filter", "--", path.name).endswith(": nbstripout"):
        return None
    cmd = git("config", "--get", "filter.nbstripout.clean")
    if not cmd:
        return None
    return lambda data: subprocess.run(cmd, shell=True, input=data, capture_output=True, check=True).stdout.decode()


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.mark.parametrize("path", sorted(run.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_stripped_and_parameters_parse(path):
    nb = nbformat.read(str(path), as_version=4)
    clean = _strip_filter(path)  # with make install's nbstripout filter, outputs never reach a commit
    committed = nbformat.reads(clean(path.read_bytes()), as_version=4) if clean else nb
    for c in committed.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: outputs committed"
    assert [c.id for c in committed.cells] == [c.id for c in nb.cells], "cell ids must survive stripping"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    cell = _parameters_cell(nb)
    assigned = {t.id for node in ast.parse(cell.source).body
                for t in ([node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", []))}
    declared = run.declared_parameters(path)
    assert set(declared) == assigned, "papermill could not parse every parameter line (an '=' in a comment?)"
    assert "out_dir" in declared
    for line in cell.source.splitlines():
        if line.strip():
            assert "#" in line, f"{path.name}: parameter line without a help comment: {line}"


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_profiles_cover_every_notebook(name):
    prof = run.load_profile(run.PARAMS_DIR / f"{name}.yaml")
    assert set(prof.notebooks) == set(run.available_notebooks())


def test_self_contained_notebook_runs_alone_and_ignores_others(toy):
    tmp, profile = toy
    nbdir = tmp / "notebooks"
    nb = nbformat.read(str(nbdir / "01_use.ipynb"), as_version=4)
    # 01 now makes its own input and opens only its own folder (notebook_dir reads nothing: products.reads()),
    # so the derivation finds no earlier notebook it reads; 00 opens its folder by hand: its reads are unknown
    nb.cells[1].source = ("from histo_utils.plotting import notebook_dir\nd = notebook_dir(out_dir, '01_use')\n"
                          "(d.parent / 'count01').open('a').write('x')\n")
    nbformat.write(nb, str(nbdir / "01_use.ipynb"))
    prof = profile({"notebooks": {"00": {"value": 1}, "01": {}}})
    out = tmp / "alone"
    assert [r["status"] for r in run.run_profile(prof, out, only=["01"])] == ["ran"]
    assert not (out / "count00").exists()
    # a change of notebook 00 does not make 01 stale
    run.run_profile(prof, out)
    prof2 = profile({"notebooks": {"00": {"value": 2}, "01": {}}})
    assert [r["status"] for r in run.run_profile(prof2, out)] == ["ran", "skipped"]
    assert run.notebook_needs(nbdir / "01_use.ipynb") == [] and run.notebook_needs(nbdir / "00_make.ipynb") is None


@pytest.mark.parametrize("name", ["gtex", "tcga"])
def test_real_data_profiles_declare_their_keys(name):
    prof = run.load_profile(run.PARAMS_DIR / f"{name}.yaml")  # raises on any undeclared key
    assert "00_synthetic_cohort" not in prof.notebooks
    if name == "tcga":
        assert list(prof.notebooks) == ["08_hti_survival"]
        assert prof.notebooks["08_hti_survival"]["make_synthetic"] is False
    else:
        assert "08_hti_survival" not in prof.notebooks and prof.common["data_dir"]


def test_smoke_scales_only_the_published_size_keys():
    """--smoke: every key it changes is in SMOKE_SCALE, capped (0 'all' -> the cap), and no method key moves."""
    import copy

    for name in ("gtex", "tcga", "default"):
        prof = run.load_profile(run.PARAMS_DIR / f"{name}.yaml")
        before = copy.deepcopy(prof.notebooks)
        changes = run.smoke_scale(prof)
        assert changes, name
        for c in changes:
            cap, zero_all = run.SMOKE_SCALE[c["notebook"]][c["key"]]
            assert c["smoke"] == (cap if c["profile"] == 0 and zero_all else min(c["profile"], cap))
            assert c["smoke"] < c["profile"] or (c["profile"] == 0 and zero_all)
            assert prof.notebooks[c["notebook"]][c["key"]] == c["smoke"]
        moved = {(nb, k) for nb, sec in prof.notebooks.items() for k in sec if before[nb].get(k) != sec[k]}
        assert moved == {(c["notebook"], c["key"]) for c in changes}
    prof = run.load_profile(run.PARAMS_DIR / "gtex.yaml")
    run.smoke_scale(prof)
    assert prof.notebooks["02_training"]["epochs"] == 1 and prof.notebooks["02_training"]["archs"][0] == "vgg16"
    assert prof.notebooks["02_training"]["max_feature_tiles_per_slide"] == 1  # the notebook's 0 (all) scaled
    assert prof.notebooks["05_confounder_regression"]["confounders"][-1] == "SMGEBTCH"
    assert run.describe_smoke([]).strip() == "(nothing to scale)"


def test_smoke_run_writes_its_scale_to_provenance(tmp_path):
    """The scaled keys are written to <out>/smoke.json and each notebook's stamp; a normal rerun removes the file."""
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "02_training.ipynb", 'out_dir = "x"\nepochs: int = 90\narchs: list = ["vgg16"]',
                       "import pathlib; pathlib.Path(out_dir, 'seen.txt').write_text(str(epochs))")
    p = tmp_path / "p.yaml"
    p.write_text("notebooks:\n  02_training: {archs: [vgg16, alexnet]}\n")
    prof = run.load_profile(p, notebooks_dir=nbdir)
    out = tmp_path / "out"
    run.run_profile(prof, out, smoke=True)
    assert (out / "seen.txt").read_text() == "1"
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["scaled"] == [{"notebook": "02_training", "key": "epochs", "profile": 90, "smoke": 1}]
    stamp = json.loads((out / ".runner" / "02_training.json").read_text())
    assert stamp["smoke"] == smoke["scaled"] and stamp["parameters"]["archs"] == ["vgg16", "alexnet"]
    run.run_profile(run.load_profile(p, notebooks_dir=nbdir), out)
    assert not (out / "smoke.json").exists() and (out / "seen.txt").read_text() == "90"
