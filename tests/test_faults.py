"""Fault injection: bad input and interrupted runs (issue 17).

Each case reproduces, on small files, a fault a user met (a hard kill, a
damaged download, a misspelt profile, a dark-field slide, ...) and checks the
message that now names the file, the value and the fix, or that the run
survives it. The kill-and-rerun tests at the end are marked ``slow``.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_toy_notebook
from histo_utils import data, gtex, io, products, tiling
from histo_utils.slides import write_aperio_svs


# --------------------------------------------------------------------------
# case 1: temporary files of a killed write; case 9: links and other files in slides/
# --------------------------------------------------------------------------
def _tiny_svs(path: Path, rgb: np.ndarray | None = None) -> Path:
    if rgb is None:
        rgb = np.full((600, 600, 3), 240, np.uint8)
        rgb[150:450, 150:450] = (150, 60, 120)  # an H&E-like block on glass
    return write_aperio_svs(path, rgb, mpp=2.0, objective_power=5, downsamples=(1,))


def test_atomic_temp_names_are_hidden_and_end_in_tmp(tmp_path):
    dest = tmp_path / "GTEX-A-0001.svs"
    with io.atomic_path(dest) as tmp:
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        assert tmp.suffix != ".svs" and io.is_temporary(tmp)
        tmp.write_bytes(b"x")
        left = tmp
    assert dest.read_bytes() == b"x" and not left.exists()
    assert not io.is_temporary(dest)


def test_writers_that_chose_format_by_suffix_still_write_it(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.5], "b": ["x", "y"]})
    io.write_table(df, tmp_path / "t.tsv.gz")
    with gzip.open(tmp_path / "t.tsv.gz", "rt") as fh:  # really gzip, though the temporary name ended in .tmp
        assert fh.readline().strip() == "a\tb"
    pd.testing.assert_frame_equal(io.read_table(tmp_path / "t.tsv.gz"), df)
    io.write_table(df, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(io.read_table(tmp_path / "t.parquet"), df)


def test_list_slides_ignores_temp_files_of_a_killed_write(tmp_path):
    _tiny_svs(tmp_path / "GTEX-A-0001.svs")
    # what a hard kill in the middle of two slide writes leaves (old and new temporary names)
    (tmp_path / ".GTEX-A-0002.svs.k3j2h1.tmp").write_bytes(b"II*\x00half a slide")
    (tmp_path / ".GTEX-A-0003.svs.9f8e7d.tmp").write_bytes(b"II*\x00half a slide")
    (tmp_path / ".GTEX-A-0004.abc123.tmp.svs").write_bytes(b"II*\x00half a slide")
    df = tiling.list_slides(tmp_path)
    assert list(df.image_id) == ["GTEX-A-0001"]
    assert len(df.attrs["unusable"]) == 0


def test_list_slides_reports_dangling_links_and_unsupported_files(tmp_path):
    _tiny_svs(tmp_path / "GTEX-A-0001.svs")
    (tmp_path / "GTEX-A-0002.svs").symlink_to(tmp_path / "elsewhere" / "GTEX-A-0002.svs")
    (tmp_path / "GTEX-A-0003.dcm").write_bytes(b"DICM")
    df = tiling.list_slides(tmp_path)
    assert list(df.image_id) == ["GTEX-A-0001"]
    un = df.attrs["unusable"].set_index("image_id")
    assert set(un.index) == {"GTEX-A-0002", "GTEX-A-0003"}
    assert "symbolic link" in un.loc["GTEX-A-0002", "error"] and "does not exist" in un.loc["GTEX-A-0002", "error"]
    assert "'.dcm'" in un.loc["GTEX-A-0003", "error"]
    # and they reach the slide table of tile_slides, by name, with the others
    _, report = tiling.tile_slides(df, params=tiling.TilingParams(tile_px=(64,), target_mpp=2.0, mask_mpp=8.0,
                                                                  min_object_um2=0, fill_holes_um2=0),
                                   cache_dir=tmp_path / "cache", workers=1, progress=False)
    rep = report.set_index("image_id")
    assert rep.loc["GTEX-A-0001", "status"] == "ok"
    assert (rep.loc[["GTEX-A-0002", "GTEX-A-0003"], "status"] == "error").all()
    assert (rep.loc[["GTEX-A-0002", "GTEX-A-0003"], "stage"] == "listing").all()


def test_read_table_round_trips_floats_to_the_last_bit(tmp_path):
    x = np.random.default_rng(0).normal(size=5000)
    io.write_table(pd.DataFrame({"x": x}), tmp_path / "x.tsv")
    back = io.read_table(tmp_path / "x.tsv").x.to_numpy()
    assert np.array_equal(back, x)


# --------------------------------------------------------------------------
# case 5: the GCT reader
# --------------------------------------------------------------------------
def _gct(path: Path, header: list[str], rows: list[list[str]], *, compress: bool | None = None) -> Path:
    text = "#1.2\n" + f"{len(rows)}\t{len(header)}\n" + "\t".join(["Name", "Description", *header]) + "\n"
    text += "".join("\t".join(r) + "\n" for r in rows)
    compress = path.suffix == ".gz" if compress is None else compress
    if compress:
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


GOOD = [["G1.1", "A", "1.5", "2", "3"], ["G2.1", "B", "0", "4.25", "1e-3"]]


def test_gct_good_file_reads(tmp_path):
    df = io.read_gct(_gct(tmp_path / "e.gct.gz", ["S1", "S2", "S3"], GOOD))
    assert df.shape == (2, 3) and df.loc["G2.1", "S2"] == 4.25
    assert io.read_gct_samples(tmp_path / "e.gct.gz") == ["S1", "S2", "S3"]


def test_gct_duplicate_sample_columns_refused(tmp_path):
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S1"], GOOD)
    with pytest.raises(ValueError, match=r"e\.gct' has 1 sample ID\(s\) on several columns: \['S1'\]"):
        io.read_gct(p)
    with pytest.raises(ValueError, match="several columns"):
        io.read_gct(p, samples=["S1"])
    with pytest.raises(ValueError, match="several columns"):
        io.read_gct_samples(p)


@pytest.mark.parametrize("cell", ["", "NA"])
def test_gct_missing_value_refused_with_gene_and_sample(tmp_path, cell):
    rows = [GOOD[0], ["G2.1", "B", "0", cell, "1"]]
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], rows)
    with pytest.raises(ValueError, match=r"e\.gct'.*gene 'G2\.1', sample 'S2'"):
        io.read_gct(p)


def test_gct_short_row_refused(tmp_path):
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], [GOOD[0], ["G2.1", "B", "0", "1"]])
    with pytest.raises(ValueError, match=r"gene 'G2\.1', sample 'S3'"):
        io.read_gct(p)
    with pytest.raises(ValueError, match=r"row of gene 'G2\.1' \(line 5\) has 2 values for 3 samples"):
        io.check_gct(p, cache=False)


def test_gct_non_numeric_value_named(tmp_path):
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], [GOOD[0], ["G2.1", "B", "0", "abc", "1"]])
    with pytest.raises(ValueError, match=r"e\.gct': value 'abc' of gene 'G2\.1', sample 'S2' is not a number"):
        io.read_gct(p)


def test_gct_gzip_name_mismatch_named(tmp_path):
    gz_named_plain = _gct(tmp_path / "a.gct", ["S1", "S2", "S3"], GOOD, compress=True)
    with pytest.raises(ValueError, match=r"a\.gct' is gzip-compressed but its name does not end in \.gz"):
        io.read_gct(gz_named_plain)
    plain_named_gz = _gct(tmp_path / "b.gct.gz", ["S1", "S2", "S3"], GOOD, compress=False)
    with pytest.raises(ValueError, match=r"b\.gct\.gz' is named \.gz but is not gzip-compressed"):
        io.read_gct_samples(plain_named_gz)


def test_gct_truncated_gzip_found_by_the_join_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTO_UTILS_CACHE", str(tmp_path / "cache"))
    rows = [[f"G{i}.1", f"g{i}", *(f"{v:.3f}" for v in np.random.default_rng(i).random(40))] for i in range(300)]
    p = _gct(tmp_path / "e.gct.gz", [f"S{j}" for j in range(40)], rows)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # an interrupted download
    # notebook 01 reads only the sample IDs: that call must already fail, naming the file
    with pytest.raises(ValueError, match=r"e\.gct\.gz' is a truncated or damaged gzip file"):
        io.read_gct_samples(p)
    with pytest.raises(ValueError, match="truncated or damaged gzip"):
        io.read_gct(p)


def test_gct_check_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTO_UTILS_CACHE", str(tmp_path / "cache"))
    p = _gct(tmp_path / "e.gct.gz", ["S1", "S2", "S3"], GOOD)
    assert io.check_gct(p) == 2
    assert (tmp_path / "cache" / "gct_checks.json").exists()
    calls = []
    monkeypatch.setattr(io, "_open_text", lambda *a: calls.append(a) or open(os.devnull))
    assert io.check_gct(p) == 2 and not calls  # cached: not read again
    os.utime(p, ns=(1, 1))  # a changed file is checked again
    with pytest.raises(ValueError):
        io.check_gct(p)  # (the stub opener returns an empty file, which is not GCT)
    assert calls


# --------------------------------------------------------------------------
# case 6: profiles
# --------------------------------------------------------------------------
@pytest.fixture
def toy_notebooks(tmp_path, monkeypatch):
    from histo_utils import run

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_make.ipynb",
        'out_dir: str = "x"  # output\nepochs: int = 2  # a count\ntile_sizes_px: list = [512]  # sizes\n'
        'lr: float = 0.1  # a rate\nname: str = "a"  # a name\nassume_mpp: "Optional[float]" = None  # opt\n'
        'loose = None  # no annotation\n',
        "from pathlib import Path\nd = Path(out_dir) / '00_make'\nd.mkdir(parents=True, exist_ok=True)\n"
        "(d / 'v.txt').write_text(str(epochs))\n")
    monkeypatch.setattr(run, "NOTEBOOKS_DIR", nbdir)
    return nbdir


def _load(tmp_path, nbdir, text: str):
    from histo_utils import run

    p = tmp_path / "prof.yaml"
    p.write_text(textwrap.dedent(text))
    return run.load_profile(p, notebooks_dir=nbdir)


@pytest.mark.parametrize("line, message", [
    ('epochs: "eight"', r"parameter 'epochs' of notebook '00_make' must be int .*got str 'eight'"),
    ('tile_sizes_px: "256"', r"parameter 'tile_sizes_px' of notebook '00_make' must be list .*got str '256'.* "
                             r"YAML list"),
    ('assume_mpp: "0.5"', r"parameter 'assume_mpp' of notebook '00_make' must be Optional\[float\] .*got str '0.5'"),
    ('epochs: true', r"'epochs' .* must be int .*got bool True"),
    ('lr: [1]', r"'lr' .* must be float"),
])
def test_profile_types_checked_against_the_parameters_cell(tmp_path, toy_notebooks, line, message):
    from histo_utils import run

    with pytest.raises(run.ProfileError, match=message):
        _load(tmp_path, toy_notebooks, f"notebooks:\n  00_make:\n    {line}\n")


def test_profile_good_types_accepted(tmp_path, toy_notebooks):
    prof = _load(tmp_path, toy_notebooks, """\
        notebooks:
          00_make: {epochs: 3, tile_sizes_px: [256], lr: 1, name: b, assume_mpp: 0.5, loose: "anything"}
        """)
    assert prof.notebooks["00_make"]["lr"] == 1
    _load(tmp_path, toy_notebooks, "notebooks:\n  00_make: {assume_mpp: null}\n")


def test_profile_typo_gets_the_closest_name(tmp_path, toy_notebooks):
    from histo_utils import run

    with pytest.raises(run.ProfileError, match=r"parameter 'epoch' is not declared .*Did you mean 'epochs'\?"):
        _load(tmp_path, toy_notebooks, "notebooks:\n  00_make: {epoch: 3}\n")
    with pytest.raises(run.ProfileError, match=r"unknown section\(s\) \['notebook'\].*Did you mean 'notebooks'\?"):
        _load(tmp_path, toy_notebooks, "notebook:\n  00_make: {}\n")


def test_profile_yaml_error_names_file_and_line(tmp_path, toy_notebooks):
    from histo_utils import run

    with pytest.raises(run.ProfileError, match=r"prof\.yaml' is not valid YAML at line 4, column 7: "
                                               r"expected ',' or '\]', but got ':' \(while parsing a flow sequence "
                                               r"that starts on line 3\)"):
        _load(tmp_path, toy_notebooks, "notebooks:\n  00_make:\n    epochs: [3\n    lr: 0.1\n")


def test_profile_duplicate_key_refused(tmp_path, toy_notebooks):
    from histo_utils import run

    with pytest.raises(run.ProfileError, match=r"line 4.*found the key 'epochs' twice \(first on line 3\)"):
        _load(tmp_path, toy_notebooks, "notebooks:\n  00_make:\n    epochs: 3\n    epochs: 4\n")


def test_profile_that_is_not_a_mapping(tmp_path, toy_notebooks):
    from histo_utils import run

    with pytest.raises(run.ProfileError, match=r"must be a mapping with the sections 'common' and 'notebooks'.*"
                                               r"holds a str: 'hello'"):
        _load(tmp_path, toy_notebooks, "hello\n")


# --------------------------------------------------------------------------
# case 3: two runners, executed notebooks, skipping
# --------------------------------------------------------------------------
def test_second_runner_on_the_same_out_stops_naming_the_holder(tmp_path):
    from histo_utils import run

    out = tmp_path / "out"
    out.mkdir()
    with run.output_lock(out):
        holder = os.getpid()
        # a second runner is another process: flock conflicts between open file descriptions
        import subprocess
        import sys
        code = (f"from histo_utils import run; from pathlib import Path\n"
                f"try:\n    run.output_lock(Path({str(out)!r})).__enter__()\n"
                f"except run.OutputLocked as e:\n    print(e)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(run.__file__).parents[1])})
        assert f"is in use by another runner (PID {holder}" in r.stdout, r.stdout + r.stderr
        assert f"kill {holder}" in r.stdout


def test_stale_lock_of_a_dead_runner_is_taken_over(tmp_path, caplog):
    import json
    import subprocess

    from histo_utils import run

    out = tmp_path / "out"
    (out / ".runner").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".runner" / "lock").write_text(json.dumps({"pid": dead.pid, "started": "earlier"}))
    with caplog.at_level("WARNING"), run.output_lock(out):
        assert json.loads((out / ".runner" / "lock").read_text())["pid"] == os.getpid()
    assert f"from runner PID {dead.pid} (no longer running" in caplog.text


def test_skip_needs_a_complete_executed_notebook(tmp_path, toy_notebooks):
    from histo_utils import run

    prof = _load(tmp_path, toy_notebooks, "notebooks:\n  00_make: {epochs: 5}\n")
    out = tmp_path / "out"
    assert [r["status"] for r in run.run_profile(prof, out)] == ["ran"]
    executed = out / "notebooks" / "00_make.ipynb"
    assert not list((out / "notebooks").glob(".*"))  # written under a temporary name, then renamed
    assert [r["status"] for r in run.run_profile(prof, out)] == ["skipped"]
    # two writers left invalid JSON: not 'unchanged', run again
    executed.write_text(executed.read_text()[:-40])
    assert [r["status"] for r in run.run_profile(prof, out)] == ["ran"]
    assert [r["status"] for r in run.run_profile(prof, out)] == ["skipped"]
    # a temporary copy left by a killed runner is removed by the next run
    (out / "notebooks" / ".00_make.ipynb.12345.tmp").write_text("{")
    (out / "00_make" / ".v.txt.abc.tmp").write_text("half")
    run.run_profile(prof, out)
    assert not [p for p in out.rglob(".*.tmp")]


# --------------------------------------------------------------------------
# case 4: SIGTERM stops the kernel's process pool
# --------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["", pytest.param("local", marks=pytest.mark.slow)])
def test_sigterm_stops_the_pool_workers(tmp_path, scheduler):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_toy_notebook(nbdir / "00_pool.ipynb", 'out_dir: str = "x"  # output\n',
        "import time\nfrom pathlib import Path\nfrom histo_utils.distributed import map_slides\n"
        "Path(out_dir, '00_pool').mkdir(parents=True, exist_ok=True)\nPath(out_dir, 'started').write_text('')\n"
        f"map_slides(time.sleep, {{'a': 300, 'b': 300}}, workers=2, progress=False, scheduler={scheduler!r})\n")
    (tmp_path / "p.yaml").write_text("notebooks:\n  00_pool: {}\n")
    out = tmp_path / "out"
    code = ("import sys; from pathlib import Path; from histo_utils import run\n"
            f"run.NOTEBOOKS_DIR = Path({str(nbdir)!r})\n"
            f"sys.exit(run.main(['--params', {str(tmp_path / 'p.yaml')!r}, '--out', {str(out)!r}, '--no-report']))")
    from histo_utils import run
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(run.__file__).parents[1])})
    try:
        t0 = time.time()
        while not (out / "started").exists() and time.time() - t0 < 120:
            time.sleep(0.2)
        kids: list = []
        while time.time() - t0 < 120:  # the kernel and its two pool workers
            kids = psutil.Process(proc.pid).children(recursive=True)
            if len(kids) >= 3:
                break
            time.sleep(0.2)
        assert len(kids) >= 3
        proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=60)
        _, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert proc.returncode == 128 + signal.SIGTERM
        assert "SIGTERM received: stopping 00_pool, its kernel and its worker processes (process pool, Dask " \
               "cluster)" in text
        assert "rerun the same command to resume" in text
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            p.kill()
        proc.kill()


# --------------------------------------------------------------------------
# case 2: dark-field / fluorescence slides
# --------------------------------------------------------------------------
def _fluorescence(h: int = 800, w: int = 800, seed: int = 0) -> np.ndarray:
    """A dark-field scan: black background, a section of dim autofluorescence with bright nuclei (DAPI-blue)."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 8, (h, w, 1), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    section = (yy - h / 2) ** 2 / (0.35 * h) ** 2 + (xx - w / 2) ** 2 / (0.3 * w) ** 2 < 1
    rgb[section] = (20, 60, 25)
    for cy, cx in rng.integers(0, min(h, w), (300, 2)):
        if section[cy, cx]:
            rgb[max(0, cy - 3):cy + 3, max(0, cx - 3):cx + 3] = (60, 90, 250)
    return rgb


def test_dark_field_slide_refused_by_name(tmp_path):
    params = tiling.TilingParams(tile_px=(64,), target_mpp=2.0, mask_mpp=8.0, min_object_um2=0,
                                 fill_holes_um2=0)
    _tiny_svs(tmp_path / "slides" / "GTEX-A-0001.svs")  # brightfield
    _tiny_svs(tmp_path / "slides" / "GTEX-A-0002.svs", _fluorescence())
    tiles, report = tiling.tile_slides(tiling.list_slides(tmp_path / "slides"), params=params,
                                       cache_dir=tmp_path / "cache", workers=1, progress=False)
    rep = report.set_index("image_id")
    assert rep.loc["GTEX-A-0001", "status"] == "ok" and rep.loc["GTEX-A-0001", "n_tiles"] > 0
    assert rep.loc["GTEX-A-0002", "status"] == "error" and rep.loc["GTEX-A-0002", "stage"] == "brightfield"
    assert "Slide 'GTEX-A-0002.svs'" in rep.loc["GTEX-A-0002", "error"]
    assert "dark-field or fluorescence scan" in rep.loc["GTEX-A-0002", "error"]
    assert set(tiles.image_id) == {"GTEX-A-0001"}
    assert tiling.background_grey(_fluorescence()) < 0.1


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "boxes.tiff", "small.svs"])
def test_real_brightfield_fixtures_still_accepted(name):
    from conftest import fixture_file

    from histo_utils.slides import open_slide

    path = fixture_file(f"slides/{name}")
    slide = open_slide(path)
    try:
        thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
    finally:
        slide.close()
    tiling.check_brightfield(thumb, path)  # does not raise
    assert tiling.background_grey(thumb) > 0.8


# --------------------------------------------------------------------------
# case 8: no correlated gene in any annotation set
# --------------------------------------------------------------------------
def test_over_representation_without_hits_is_an_empty_table(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histo_utils import enrichment
    from histo_utils.plotting import save_figure

    universe = [f"G{i}" for i in range(200)]
    sets = {"TISSUE_A": [f"G{i}" for i in range(100, 120)], "TISSUE_B": [f"G{i}" for i in range(150, 170)]}
    ora = enrichment.over_representation(["G1", "G2", "G3"], universe, sets)
    assert ora.empty
    assert list(ora.columns) == ["term", "overlap", "set_in_universe", "odds_ratio", "p", "q", "genes"]
    assert ora[ora.term.str.startswith("PLANTED")].empty  # what 06 does next still works
    # with a hit, the same columns
    hit = enrichment.over_representation(["G1", "G101", "G102"], universe, sets)
    assert list(hit.columns) == list(ora.columns) and hit.term.iloc[0] == "TISSUE_A"
    # a figure of an empty result says so, with its (empty) table (06 draws no ORA figure: a scratch notebook)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="empty"):
        save_figure(fig, ora, tmp_path, "scratch", "ora")
    png = save_figure(fig, ora, tmp_path, "scratch", "ora", empty="no correlated gene is in any annotation set")
    assert png.exists() and fig.axes[0].texts[0].get_text().startswith("Nothing to plot: no correlated gene")
    assert list(pd.read_csv(png.with_suffix(".csv")).columns) == list(ora.columns)
    plt.close(fig)


# --------------------------------------------------------------------------
# case 9: SEX codes, the SMTSISCH hint, a join with no matching sample
# --------------------------------------------------------------------------
def test_unknown_sex_code_refused_blank_allowed(tmp_path):
    p = tmp_path / "GTEx_SubjectPhenotypesDS.txt"
    p.write_text("SUBJID\tSEX\tAGE\tDTHHRDY\nGTEX-A\t1\t60-69\t4\nGTEX-B\t3\t50-59\t0\nGTEX-C\t2\t20-29\t\n")
    with pytest.raises(ValueError, match=r"SubjectPhenotypesDS.txt': SEX must be 1 \(male\) or 2 \(female\).*"
                                         r"found \['3'\] for 1 subjects \(e.g. \['GTEX-B'\]\)"):
        gtex.read_subject_phenotypes(p)
    p.write_text("SUBJID\tSEX\tAGE\tDTHHRDY\nGTEX-A\t1\t60-69\t4\nGTEX-B\t\t50-59\t0\nGTEX-C\t2\t20-29\t\n")
    df = gtex.read_subject_phenotypes(p)
    assert df.SEX.isna().sum() == 1


def test_missing_ischemic_time_points_to_the_sample_attributes():
    from histo_utils import confounders as cf

    s = pd.DataFrame({"SMRIN": [7.0, 8.0], "SMCENTER": ["B1", "C1"], "AGE": ["20-29", "30-39"], "SEX": [1, 2]})
    with pytest.raises(ValueError, match=r"lacks confounder columns \['SMTSISCH'\] \(SMTSISCH from the sample "
                                         r"attributes \(\*SampleAttributesDS.txt"):
        cf.build_design(s)


def test_join_without_any_matching_sample_says_so():
    from histo_utils import gtex

    attrs = pd.DataFrame({"SAMPID": ["GTEX-A-0001-SM-1", "GTEX-B-0002-SM-2"], "SMTS": ["Liver", "Lung"]})
    with pytest.raises(ValueError, match=r"No slide pairs with an RNA sample: 2 slides \(e.g. \['GTEX-X-0001', "
                                         r"'GTEX-Y-0002'\]\), 2 expression samples"):
        gtex.join_images_to_samples(["GTEX-X-0001", "GTEX-Y-0002"], attrs, list(attrs.SAMPID))


# --------------------------------------------------------------------------
# case 7: a tile size that no slide can hold
# --------------------------------------------------------------------------
def test_tile_size_no_slide_holds_is_reported_and_stops_its_users(tmp_path, caplog):
    params = tiling.TilingParams(tile_px=(64, 512), target_mpp=2.0, mask_mpp=8.0, min_object_um2=0,
                                 fill_holes_um2=0)
    _tiny_svs(tmp_path / "slides" / "GTEX-A-0001.svs")  # 1.2 mm across, 0.6 mm of tissue: no 1 mm square
    d01 = products.outputs(tmp_path, "01_tiling")
    with caplog.at_level("INFO"):
        tiles, report = tiling.tile_slides(tiling.list_slides(tmp_path / "slides"), params=params,
                                           cache_dir=d01.per_slide, workers=1, progress=False)
    per = io.read_table(d01.tiles_per_size).set_index("tile_px")
    assert per.loc[64, "slides_tiled"] == 1 and per.loc[64, "tiles"] == len(tiles[tiles.tile_px == 64]) > 0
    assert per.loc[512, "slides_tiled"] == 0 and per.loc[512, "tiles"] == 0
    assert "TILE SIZE 512 px (1024 µm at 2 µm/px) GOT NO TILE" in caplog.text
    assert report.attrs["tiles_per_size"].equals(per.reset_index())
    # the notebook that needs the 512-px grid stops, naming the size and the parameters
    io.write_table(tiles, d01.tiles)
    io.write_table(pd.DataFrame({"image_id": ["GTEX-A-0001"]}), d01.samples)
    with pytest.raises(ValueError, match=r"Tile size 512 px has no tiles.*sizes with tiles: \[64\].*"
                                                    r"tile_px.*min_tissue.*feature_tile_px"):
        data.load_tiling(tmp_path, tile_sizes=[64, 512])
    assert len(data.load_tiling(tmp_path, tile_sizes=[64])[0]) == len(tiles)
    assert len(data.select_grid(tiles, 64)) == len(tiles)


# --------------------------------------------------------------------------
# SIGKILL of the runner (and of its workers) at seeded random moments, then a rerun
# --------------------------------------------------------------------------
TABLE_SUFFIXES = (".tsv", ".csv", ".parquet")


def _runner_cmd(profile: Path, out: Path, only: list[str]) -> list[str]:
    import sys

    return [sys.executable, "-m", "histo_utils.run", "--params", str(profile), "--out", str(out), "--only", *only,
            "--no-report"]


def _env() -> dict:
    from histo_utils import run

    return {**os.environ, "PYTHONPATH": str(Path(run.__file__).parents[1])}


def _kill_during(cmd: list[str], out: Path, stem: str, delay: float, *, whole_tree: bool) -> str:
    """Start the runner, SIGKILL it ``delay`` s after notebook ``stem`` started (its running copy exists).

    ``whole_tree``: kill the runner, its kernel and the kernel's workers at once (a machine's OOM killer);
    else the runner alone, and its kernel and workers must then end by themselves.
    Returns what the runner printed.
    """
    import signal
    import subprocess
    import time

    import psutil

    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        t0 = time.time()
        while proc.poll() is None and not list((out / "notebooks").glob(f".{stem}.ipynb.*.tmp")):
            time.sleep(0.1)
            assert time.time() - t0 < 300, f"{stem} did not start"
        time.sleep(delay)
        tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        if whole_tree:
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        text, _ = proc.communicate(timeout=60)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"processes left after killing the runner in {stem}: {[p.cmdline()[:3] for p in alive]}"
        return text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _snapshot(out: Path, patterns: list[str]) -> dict[str, int]:
    """Finished per-item results (slides, per-slide tiles, feature caches): path -> mtime."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for pat in patterns for p in out.glob(pat)
            if p.is_file() and not io.is_temporary(p)}


def _tables(out: Path, dirs: list[str]) -> dict[str, pd.DataFrame]:
    tabs = {}
    for d in dirs:
        for p in sorted((out / d).rglob("*")):
            if p.suffix in TABLE_SUFFIXES and not io.is_temporary(p) and "per_slide" not in p.parts:
                df = io.read_table(p)
                for c in df.columns[df.dtypes == object]:  # absolute paths differ between the two runs
                    df[c] = df[c].map(lambda v: v.replace(str(out), "<out>") if isinstance(v, str) else v)
                tabs[str(p.relative_to(out))] = df
    return tabs


def _assert_same_tables(out: Path, ref: Path, dirs: list[str]) -> None:
    a, b = _tables(out, dirs), _tables(ref, dirs)
    assert sorted(a) == sorted(b)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=k)


def _kill_sequence(profile: Path, out: Path, only: list[str], kills: list[tuple[str, float, bool]],
                   resumable: list[str]) -> list[str]:
    """Kill the runner once in each notebook of ``kills``, then rerun to the end; checks resumption."""
    import subprocess

    cmd = _runner_cmd(profile, out, only)
    logs = []
    for stem, delay, whole in kills:
        before = _snapshot(out, resumable)
        logs.append(_kill_during(cmd, out, stem, delay, whole_tree=whole))
        lock = out / ".runner" / "lock"
        assert lock.exists()  # left by the dead runner: the next one takes it over
        after = _snapshot(out, resumable)
        # finished per-item results of the earlier attempts were not redone
        assert {k: v for k, v in after.items() if k in before} == before, stem
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    logs.append(r.stdout + r.stderr)
    assert r.returncode == 0, logs[-1][-3000:]
    assert not [p for p in out.rglob(".*.tmp")], "temporary files left behind"
    return logs


@pytest.fixture(scope="module")
def reference_08(tmp_path_factory):
    """An uninterrupted run of notebook 08 on a small tumour cohort (the tiny profile's parameters, smaller)."""
    import subprocess

    d = tmp_path_factory.mktemp("ref08")
    profile = d / "p08.yaml"
    profile.write_text(PROFILE_08)
    out = d / "out"
    r = subprocess.run(_runner_cmd(profile, out, ["08"]), env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return profile, out


PROFILE_08 = """\
common: {seed: 0, workers: 2}
notebooks:
  08_hti_survival:
    tumour_dir: "{out}/tumour"
    n_patients: 24
    slide_um: [768.0, 512.0]
    test_fraction: 0.25
    val_fraction: 0.25
    ood_low: 0.3
    ood_high: 0.7
    tile_px: 64
    target_mpp: 2.0
    input_px: 32
    arch: compact
    n_splits: 2
    epochs: 1
    tiles_per_slide: 6
    n_boot: 5
    n_example_slides: 2
"""


@pytest.mark.slow
def test_sigkill_during_00_01_02_then_rerun_equals_an_uninterrupted_run(tiny_profile_run, tmp_path):
    ref = tiny_profile_run[0]
    rng = np.random.default_rng(17)
    out = tmp_path / "out"
    profile = Path(__file__).parents[1] / "params" / "tiny.yaml"
    kills = [("00_synthetic_cohort", float(rng.uniform(2, 8)), False),  # the runner alone: its kernel and pool end too
             ("01_tiling", float(rng.uniform(0.5, 3)), True),
             ("02_training", float(rng.uniform(3, 20)), True)]
    logs = _kill_sequence(profile, out, ["00", "01", "02"], kills,
                          resumable=["data/slides/*", "data/truth/masks/*", "01_tiling/per_slide/*/*",
                                     "02_training/feature_cache/*"])
    # each rerun skipped the notebooks that had finished
    assert "00_synthetic_cohort: unchanged since" in logs[2] and "01_tiling: unchanged since" in logs[3]
    _assert_same_tables(out, ref, ["00_synthetic_cohort", "01_tiling", "02_training", "data",
                                   "figures/00_synthetic_cohort", "figures/01_tiling", "figures/02_training"])


@pytest.mark.slow
def test_sigkill_during_08_then_rerun_equals_an_uninterrupted_run(reference_08, tmp_path):
    profile, ref = reference_08
    rng = np.random.default_rng(8)
    out = tmp_path / "out"
    kills = [("08_hti_survival", float(rng.uniform(5, 20)), True)]
    _kill_sequence(profile, out, ["08"], kills,
                   resumable=["tumour/slides/*", "08_hti_survival/tiles/*/*", "08_hti_survival/models/**/*.npy"])
    _assert_same_tables(out, ref, ["08_hti_survival", "tumour", "figures/08_hti_survival"])
