"""Fault injection: bad input and interrupted runs (issue 17).

Each case reproduces, on small files, a fault a user met (a hard kill, a
damaged download, a misspelt profile, a dark-field slide, ...) and checks the
message that now names the file, the value and the fix, or that the run
survives it. The kill-and-rerun tests at the end are marked ``slow``.
"""
from __future__ import annotations

import gzip
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histo_utils import io, tiling
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
    _, report = tiling.tile_slides(df, params=tiling.TilingParams(tile_sizes_px=(64,), target_mpp=2.0, mask_mpp=8.0,
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
    with pytest.raises(io.GCTError, match=r"e\.gct' has 1 sample IDs on several columns: \['S1'\]"):
        io.read_gct(p)
    with pytest.raises(io.GCTError, match="several columns"):
        io.read_gct(p, samples=["S1"])
    with pytest.raises(io.GCTError, match="several columns"):
        io.read_gct_samples(p)


@pytest.mark.parametrize("cell", ["", "NA"])
def test_gct_missing_value_refused_with_gene_and_sample(tmp_path, cell):
    rows = [GOOD[0], ["G2.1", "B", "0", cell, "1"]]
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], rows)
    with pytest.raises(io.GCTError, match=r"e\.gct'.*gene 'G2\.1', sample 'S2'"):
        io.read_gct(p)


def test_gct_short_row_refused(tmp_path):
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], [GOOD[0], ["G2.1", "B", "0", "1"]])
    with pytest.raises(io.GCTError, match=r"gene 'G2\.1', sample 'S3'"):
        io.read_gct(p)
    with pytest.raises(io.GCTError, match=r"row of gene 'G2\.1' \(line 5\) has 2 values for 3 samples"):
        io.check_gct(p, cache=False)


def test_gct_non_numeric_value_named(tmp_path):
    p = _gct(tmp_path / "e.gct", ["S1", "S2", "S3"], [GOOD[0], ["G2.1", "B", "0", "abc", "1"]])
    with pytest.raises(io.GCTError, match=r"e\.gct': value 'abc' of gene 'G2\.1', sample 'S2' is not a number"):
        io.read_gct(p)


def test_gct_gzip_name_mismatch_named(tmp_path):
    gz_named_plain = _gct(tmp_path / "a.gct", ["S1", "S2", "S3"], GOOD, compress=True)
    with pytest.raises(io.GCTError, match=r"a\.gct' is gzip-compressed but its name does not end in \.gz"):
        io.read_gct(gz_named_plain)
    plain_named_gz = _gct(tmp_path / "b.gct.gz", ["S1", "S2", "S3"], GOOD, compress=False)
    with pytest.raises(io.GCTError, match=r"b\.gct\.gz' is named \.gz but is not gzip-compressed"):
        io.read_gct_samples(plain_named_gz)


def test_gct_truncated_gzip_found_by_the_join_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTO_UTILS_CACHE", str(tmp_path / "cache"))
    rows = [[f"G{i}.1", f"g{i}", *(f"{v:.3f}" for v in np.random.default_rng(i).random(40))] for i in range(300)]
    p = _gct(tmp_path / "e.gct.gz", [f"S{j}" for j in range(40)], rows)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # an interrupted download
    # notebook 01 reads only the sample IDs: that call must already fail, naming the file
    with pytest.raises(io.GCTError, match=r"e\.gct\.gz' is a truncated or damaged gzip file"):
        io.read_gct_samples(p)
    with pytest.raises(io.GCTError, match="truncated or damaged gzip"):
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
    with pytest.raises(io.GCTError):
        io.check_gct(p)  # (the stub opener returns an empty file, which is not GCT)
    assert calls
