"""Bad input to the GTEx readers and the slide handling (issue 28): read right, or refused naming the input and
the fix, at the first step that can see it.

#1 read counts beside no TPM file; #3 AGE in years; #7 a duplicated gene Name; #9 a trailing tab on every GCT
line; #8 SMTSISCH blank for every sample; #12 a slide the process may not read; #15 a DICOM whole-slide image.
"""
from __future__ import annotations

import builtins
import gzip
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from conftest import fixture_file
from histo_utils import confounders, gtex, io, slides, tiling
from histo_utils.slides import SlideError

#: GTEx v8's expression files, as the portal names them
TPM = "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz"
READS = "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_reads.gct.gz"
MEDIAN = "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_median_tpm.gct.gz"


# --------------------------------------------------------------------------
# #1 the read counts are never read as TPM
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v8_download(tiny_cohort, tmp_path_factory):
    """The tiny cohort as GTEx v8 ships it: TPM, read counts and median TPM side by side."""
    from histo_utils.synthetic.formats import write_gtex_v8_download

    src, _ = tiny_cohort
    out = tmp_path_factory.mktemp("v8_download")
    write_gtex_v8_download(src, out, seed=4, n_six_part=1, n_whole_blood=1, n_cultured=1, n_dna_rows=1)
    return out


def _data_dir(v8_download: Path, dest: Path, *, expression: dict[str, str]) -> Path:
    """A data folder with the annotation tables of the v8 download and the expression files
    ``{name in the new folder: v8 file it is a copy of}`` (an empty slides/ folder: only names are located)."""
    dest.mkdir()
    (dest / "slides").mkdir()
    for f in v8_download.glob("*DS.txt"):
        shutil.copy(f, dest / f.name)
    for name, src in expression.items():
        shutil.copy(v8_download / src, dest / name)
    return dest


def test_read_counts_without_tpm_are_refused_naming_the_tpm_file(v8_download, tmp_path):
    d = _data_dir(v8_download, tmp_path / "reads_only", expression={READS: READS})
    with pytest.raises(FileNotFoundError) as e:
        gtex.locate_gtex_files(d)
    msg = str(e.value)
    assert f"'{READS}' holds read counts" in msg and "not TPM" in msg
    assert f"Download GTEx's gene TPM table, {TPM}" in msg and str(d) in msg


def test_unnamed_gct_chosen_by_content(v8_download, tmp_path, caplog):
    # the read counts renamed: refused by their values (whole numbers), whatever the name
    d = _data_dir(v8_download, tmp_path / "counts", expression={"expression.gct.gz": READS})
    with pytest.raises(FileNotFoundError, match=r"'expression\.gct\.gz' holds read counts \(every value of its "
                                                r"first genes is a whole number\)"):
        gtex.locate_gtex_files(d)
    assert gtex.expression_values_kind(d / "expression.gct.gz") == "counts"
    # the TPM renamed: the only GCT, values with decimals, taken (and said so)
    d = _data_dir(v8_download, tmp_path / "tpm", expression={"expression.gct.gz": TPM, READS: READS})
    with caplog.at_level(logging.INFO, logger="histo_utils.gtex"):
        assert gtex.locate_gtex_files(d).expression.name == "expression.gct.gz"
    assert "not read counts" in caplog.text
    assert gtex.expression_values_kind(d / "expression.gct.gz") == "tpm"
    # the median TPM per tissue alone is not the sample table either
    d = _data_dir(v8_download, tmp_path / "median", expression={MEDIAN: MEDIAN})
    with pytest.raises(FileNotFoundError, match="median TPM per tissue"):
        gtex.locate_gtex_files(d)
    # two unnamed GCTs: which is TPM is not guessed
    d = _data_dir(v8_download, tmp_path / "two", expression={"a.gct.gz": TPM, "b.gct.gz": TPM})
    with pytest.raises(ValueError, match="several other GCT files"):
        gtex.locate_gtex_files(d)
    # as downloaded (all three): the TPM by its name
    d = _data_dir(v8_download, tmp_path / "all", expression={TPM: TPM, READS: READS, MEDIAN: MEDIAN})
    assert gtex.locate_gtex_files(d).expression.name == TPM


# --------------------------------------------------------------------------
# #3 AGE in years
# --------------------------------------------------------------------------
def test_age_in_years_becomes_gtex_brackets(tmp_path, caplog):
    real = fixture_file("gtex/GTEx_v7_Annotations_SubjectPhenotypesDS.txt")
    table = pd.read_csv(real, sep="\t", dtype=str, keep_default_na=False)
    low = table.AGE.str.split("-").str[0].astype(int)
    years = low + np.random.default_rng(0).integers(0, 10, len(table))  # an age within each donor's bracket
    p = tmp_path / "GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt"
    table.assign(AGE=years.astype(str)).to_csv(p, sep="\t", index=False)
    with caplog.at_level(logging.WARNING, logger="histo_utils.gtex"):
        df = gtex.read_subject_phenotypes(p)
    assert df.AGE.tolist() == table.AGE.tolist()  # the brackets GTEx gives, not 60 one-year levels
    assert df.AGE.nunique() == 6
    assert f"AGE of {len(table)} of {len(table)} subjects is in years" in caplog.text
    assert "converted to brackets" in caplog.text


def test_age_neither_bracket_nor_years_is_refused(tmp_path):
    p = tmp_path / "GTEx_SubjectPhenotypesDS.txt"
    p.write_text("SUBJID\tSEX\tAGE\tDTHHRDY\nGTEX-1117F\t2\t60-69\t4\nGTEX-111CU\t1\tsixty\t0\nGTEX-111FC\t1\t\t1\n")
    with pytest.raises(ValueError, match=r"AGE must be a GTEx bracket like '60-69' or an age in years \(0-120\); "
                                         r"found \['sixty'\] for 1 subjects"):
        gtex.read_subject_phenotypes(p)
    p.write_text("SUBJID\tSEX\tAGE\tDTHHRDY\nGTEX-1117F\t2\t60-69\t4\nGTEX-111FC\t1\t\t1\n")
    assert gtex.read_subject_phenotypes(p).AGE.tolist()[:1] == ["60-69"]  # brackets and blanks as they are


# --------------------------------------------------------------------------
# #7 a gene Name on two rows; #9 a trailing tab on every line
# --------------------------------------------------------------------------
def _cohort_gct_lines(tiny_cohort) -> list[str]:
    src, _ = tiny_cohort
    with gzip.open(next(src.glob("*gene_tpm.gct.gz")), "rt") as fh:
        return fh.read().splitlines()


def test_duplicated_gene_name_refused_where_01_checks(tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTO_UTILS_CACHE", str(tmp_path / "cache"))
    lines = _cohort_gct_lines(tiny_cohort)
    first, second = lines[3].split("\t", 1)[0], lines[9].split("\t", 1)
    lines[9] = first + "\t" + second[1]  # the 7th gene's row now carries the 1st gene's Name
    p = tmp_path / "GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz"
    p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    want = rf"gene_tpm\.gct\.gz' has 1 gene Name\(s\) on several rows: \['{first}'\] \('{first}' on lines 4 and 10\)"
    with pytest.raises(io.GCTError, match=want) as e:
        io.read_gct_samples(p)  # notebook 01's check of the whole file
    assert "keep one row per Name" in str(e.value)
    with pytest.raises(io.GCTError, match=rf"has 1 gene Name\(s\) on several rows: \['{first}'\]"):
        io.read_gct(p)  # notebooks 02-09 read it


def test_gct_with_a_trailing_tab_on_every_line_reads_right(tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTO_UTILS_CACHE", str(tmp_path / "cache"))
    lines = _cohort_gct_lines(tiny_cohort)
    good = tmp_path / "good.gct"
    good.write_text("\n".join(lines) + "\n")
    tabbed = tmp_path / "tabbed.gct.gz"  # as some spreadsheet exports write it: a tab closes every line
    tabbed.write_bytes(gzip.compress("".join(f"{line}\t\r\n" for line in lines).encode()))
    assert io.check_gct(tabbed, cache=False) == len(lines) - 3
    assert io.read_gct_samples(tabbed) == io.read_gct_samples(good)
    pd.testing.assert_frame_equal(io.read_gct(tabbed), io.read_gct(good))
    pick = io.read_gct_samples(good)[::-2]
    pd.testing.assert_frame_equal(io.read_gct(tabbed, samples=pick, dtype="float32"),
                                  io.read_gct(good, samples=pick, dtype="float32"))


def test_gct_trailing_tab_on_some_lines_only_is_said_exactly(tmp_path):
    head = "#1.2\n2\t2\nName\tDescription\tS1\tS2"
    rows = ["G1.1\tA\t1.5\t2", "G2.1\tB\t0\t4.25"]
    p = tmp_path / "e.gct"
    p.write_text(head + "\t\n" + "\n".join(rows) + "\n")  # the header only
    msg = (r"e\.gct': the header \(line 3\) ends with a tab \(an empty last column\) but the row of gene 'G1\.1' "
           r"\(line 4\) does not\. Remove the trailing tab from every line, or from none\.")
    for check in (lambda: io.check_gct(p, cache=False), lambda: io.read_gct(p)):
        with pytest.raises(io.GCTError, match=msg):
            check()
    p.write_text(head + "\n" + "".join(r + "\t\n" for r in rows))  # the rows only
    msg = r"e\.gct': the row of gene 'G1\.1' \(line 4\) ends with a tab \(an empty extra column\) but the header"
    for check in (lambda: io.check_gct(p, cache=False), lambda: io.read_gct(p)):
        with pytest.raises(io.GCTError, match=msg):
            check()
    p.write_text("#1.2\n2\t3\nName\tDescription\tS1\t\tS2\n")  # an empty sample ID inside the header
    with pytest.raises(io.GCTError, match=r"header \(line 3\) has an empty sample ID in column 4 \(after 'S1'\)"):
        io.read_gct_samples(p, check=False)


# --------------------------------------------------------------------------
# #8 SMTSISCH blank for every sample
# --------------------------------------------------------------------------
def _covariates(n_per_tissue: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2 * n_per_tissue
    subjects = [f"GTEX-1{i:04X}" for i in range(n)]
    samples = pd.DataFrame({
        "SAMPID": [f"{s}-0226-SM-{i:05d}" for i, s in enumerate(subjects)], "subject_id": subjects,
        "SMTS": ["Liver"] * n_per_tissue + ["Lung"] * n_per_tissue, "SMTSISCH": np.nan,
        "SMRIN": rng.uniform(5, 9, n).round(1), "SMCENTER": rng.choice(["B1", "C1"], n)})
    phen = pd.DataFrame({"SUBJID": subjects, "AGE": rng.choice(["50-59", "60-69"], n),
                         "SEX": rng.choice([1, 2], n)}).set_index("SUBJID")
    return confounders.sample_covariates(samples, phen, samples.SAMPID)


def test_ischemic_time_blank_for_every_sample_is_named():
    s = _covariates()
    spec = confounders.confounder_spec(["log_ischemic_time", "RIN", "centre", "age", "sex"], columns=s.columns)
    msg = (r"Confounder 'log_ischemic_time': column SMTSISCH is blank for all 30 samples \(in the sample attributes "
           r"\(\*SampleAttributesDS\.txt, one row per sample\)\), so no sample can enter the regression\. Drop "
           r"'log_ischemic_time' from confounders, or fill SMTSISCH in that file\.")
    with pytest.raises(ValueError, match=msg):
        confounders.confounder_levels(s, spec)  # notebook 05's first step with the values and the terms
    with pytest.raises(ValueError, match=msg):
        confounders.build_designs(s, confounders=spec)
    # without the term, the same samples are fitted
    designs, _ = confounders.build_designs(s, confounders=confounders.confounder_spec(["RIN", "centre", "age"]))
    assert set(designs) == {"Liver", "Lung"}


def test_ischemic_time_blank_in_one_tissue_skips_it_saying_why():
    s = _covariates()
    s.loc[s.SMTS == "Lung", "SMTSISCH"] = np.random.default_rng(1).integers(60, 900, 15)
    designs, notes = confounders.build_designs(s)
    assert list(designs) == ["Lung"]
    liver = notes.set_index("tissue").loc["Liver"]
    assert liver.status == "skipped"
    assert ("SMTSISCH is blank for all its samples (drop 'log_ischemic_time' from confounders, or fill SMTSISCH)"
            in liver.note)


# --------------------------------------------------------------------------
# #12 a slide the process may not read
# --------------------------------------------------------------------------
def _unreadable(monkeypatch, path: Path, *, openslide_says: type[Exception]) -> None:
    """``path`` as a user without read permission sees it (tests run as root, who reads a chmod 000 file):
    Python's open raises PermissionError, and OpenSlide fails as it does then (checked as an unprivileged user:
    ``OpenSlideUnsupportedFormatError``, as for a file that is not a slide)."""
    real_open, real_slide = builtins.open, openslide.OpenSlide

    def fake_open(file, *a, **k):
        if Path(str(file)) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    class FakeSlide(real_slide):
        def __init__(self, filename):
            if Path(str(filename)) == path:
                raise openslide_says(*(["Unsupported or missing image file"] if openslide_says is not
                                       PermissionError else [13, "Permission denied", str(filename)]))
            super().__init__(filename)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(openslide, "OpenSlide", FakeSlide)


@pytest.mark.parametrize("openslide_says", [openslide.OpenSlideUnsupportedFormatError, PermissionError])
def test_unreadable_slide_reported_as_a_permission_problem(tmp_path, monkeypatch, openslide_says):
    p = tmp_path / "GTEX-1117F-0226.svs"
    shutil.copy(fixture_file("slides/small.svs"), p)
    _unreadable(monkeypatch, p, openslide_says=openslide_says)
    with pytest.raises(SlideError) as e:
        slides.open_slide(p)
    assert str(e.value) == (f"Slide 'GTEX-1117F-0226.svs' ({p}): the file cannot be read: permission denied. Fix "
                            f"its permissions (e.g. chmod a+r '{p}'), or run as a user allowed to read it.")
    assert e.value.stage == "open" and "download" not in str(e.value)
    # in notebook 01's slide table, by name, the other slides tiled
    other = tmp_path / "GTEX-111CU-1826.svs"
    shutil.copy(fixture_file("slides/small.svs"), other)
    _, report = tiling.tile_slides(tiling.list_slides(tmp_path), params=tiling.TilingParams(
        tile_px=(16,), target_mpp=0.5, mask_mpp=0.5, min_object_um2=0, fill_holes_um2=0),
        cache_dir=tmp_path / "cache", workers=1, progress=False)
    rep = report.set_index("image_id")
    assert rep.loc["GTEX-111CU-1826", "status"] == "ok"
    assert rep.loc["GTEX-1117F-0226", "stage"] == "open" and "permission denied" in rep.loc["GTEX-1117F-0226", "error"]


# --------------------------------------------------------------------------
# #15 DICOM whole-slide images
# --------------------------------------------------------------------------
def _element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    """One data element, explicit VR little endian (values padded to even length)."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", group, elem) + vr.encode()
    if vr in ("OB", "SQ"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def write_dicom_wsi_level(path: Path, rgb: np.ndarray, *, mpp: float, series: str, instance: str,
                          image_type: str = "ORIGINAL\\PRIMARY\\VOLUME\\NONE", tile: int = 64) -> Path:
    """One pyramid level of a DICOM WSI (VL Whole Slide Microscopy Image, TILED_FULL, uncompressed RGB frames),
    written byte by byte: the smallest file OpenSlide 4 reads as DICOM (no DICOM package needed)."""
    sop = b"1.2.840.10008.5.1.4.1.1.77.1.6"
    h, w, _ = rgb.shape
    rows, cols = -(-h // tile), -(-w // tile)
    padded = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    padded[:h, :w] = rgb
    frames = b"".join(padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile].tobytes()
                      for r in range(rows) for c in range(cols))
    u16, u32 = (lambda v: struct.pack("<H", v)), (lambda v: struct.pack("<I", v))
    meta = (_element(2, 1, "OB", b"\0\1") + _element(2, 2, "UI", sop) + _element(2, 3, "UI", instance.encode())
            + _element(2, 0x10, "UI", b"1.2.840.10008.1.2.1") + _element(2, 0x12, "UI", b"1.2.3.4"))
    spacing = f"{mpp / 1000:.6g}\\{mpp / 1000:.6g}".encode()  # mm, rows then columns
    shared = _item(_element(0x28, 0x9110, "SQ", _item(_element(0x28, 0x30, "DS", spacing))))
    data = (_element(8, 8, "CS", image_type.encode()) + _element(8, 0x16, "UI", sop)
            + _element(8, 0x18, "UI", instance.encode()) + _element(8, 0x60, "CS", b"SM")
            + _element(0x20, 0xD, "UI", series.encode() + b".1") + _element(0x20, 0xE, "UI", series.encode())
            + _element(0x20, 0x9311, "CS", b"TILED_FULL")
            + _element(0x28, 2, "US", u16(3)) + _element(0x28, 4, "CS", b"RGB") + _element(0x28, 6, "US", u16(0))
            + _element(0x28, 8, "IS", str(rows * cols).encode()) + _element(0x28, 0x10, "US", u16(tile))
            + _element(0x28, 0x11, "US", u16(tile)) + _element(0x28, 0x100, "US", u16(8))
            + _element(0x28, 0x101, "US", u16(8)) + _element(0x28, 0x102, "US", u16(7))
            + _element(0x28, 0x103, "US", u16(0)) + _element(0x48, 6, "UL", u32(w)) + _element(0x48, 7, "UL", u32(h))
            + _element(0x5200, 0x9229, "SQ", shared) + _element(0x7FE0, 0x10, "OB", frames))
    path.write_bytes(b"\0" * 128 + b"DICM" + _element(2, 0, "UL", u32(len(meta))) + meta + data)
    return path


def _tissue(h: int = 512, w: int = 640) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    rgb = np.full((h, w, 3), 242, np.uint8)
    blob = (yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2) ** 2 / (w / 3) ** 2 < 1
    rgb[blob] = (190, 90, 160)  # eosin-pink tissue on a white background
    return rgb


def test_dicom_wsi_folders_are_listed_and_tiled(tmp_path):
    sd = tmp_path / "slides"
    sd.mkdir()
    rgb = _tissue()
    folder = sd / "GTEX-1117F-0226"  # a DICOM WSI as converters write it: a folder of .dcm files, one per level
    folder.mkdir()
    series = "1.2.826.0.1.3680043.10.1"
    write_dicom_wsi_level(folder / "1.2.826.0.1.3680043.10.1.1.dcm", rgb, mpp=0.5, series=series,
                          instance=series + ".1")
    write_dicom_wsi_level(folder / "1.2.826.0.1.3680043.10.1.2.dcm", np.ascontiguousarray(rgb[::4, ::4]), mpp=2.0,
                          series=series, instance=series + ".2", image_type="DERIVED\\PRIMARY\\VOLUME\\RESAMPLED")
    write_dicom_wsi_level(sd / "GTEX-111CU-1826.dcm", rgb, mpp=0.5, series="1.2.826.0.1.3680043.10.2",
                          instance="1.2.826.0.1.3680043.10.2.1")  # a single-file DICOM slide
    shutil.copy(fixture_file("slides/small.svs"), sd / "GTEX-111FC-0226.svs")
    (sd / "GTEX-1128S-0126").mkdir()  # .dcm files, but no whole-slide image (e.g. a CT series)
    (sd / "GTEX-1128S-0126" / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (sd / "GTEX-ZZZZZ-0001").mkdir()  # an MRXS data folder: no .dcm, not a slide of its own
    (sd / "GTEX-ZZZZZ-0001" / "Slidedat.ini").write_text("[GENERAL]\n")

    df = tiling.list_slides(sd)
    assert list(df.image_id) == ["GTEX-1117F-0226", "GTEX-111CU-1826", "GTEX-111FC-0226"]
    paths = dict(zip(df.image_id, df.path))
    assert paths["GTEX-1117F-0226"] == str(folder / "1.2.826.0.1.3680043.10.1.1.dcm")  # the base level
    assert openslide.OpenSlide.detect_format(paths["GTEX-1117F-0226"]) == "dicom"
    un = df.attrs["unusable"].set_index("image_id")
    assert list(un.index) == ["GTEX-1128S-0126"]
    assert "none that OpenSlide reads as a DICOM whole-slide image" in un.loc["GTEX-1128S-0126", "error"]

    s = slides.open_slide(paths["GTEX-1117F-0226"])  # both levels of the folder, the scanner's mpp
    info = slides.slide_info(s, paths["GTEX-1117F-0226"])
    assert (info.vendor, info.width, info.height, info.level_count) == ("dicom", 640, 512, 2)
    assert info.mpp == pytest.approx(0.5) and info.mpp_source == "scanner"
    assert tuple(slides.read_region(s, paths["GTEX-1117F-0226"], (320, 256), 0, (1, 1))[0, 0]) == (190, 90, 160)
    s.close()
    params = tiling.TilingParams(tile_px=(32,), target_mpp=2.0, mask_mpp=8.0, min_object_um2=0,
                                 fill_holes_um2=0)
    tiles, report = tiling.tile_slides(df, params=params, cache_dir=tmp_path / "cache", workers=1, progress=False)
    rep = report.set_index("image_id")
    assert (rep.loc[["GTEX-1117F-0226", "GTEX-111CU-1826"], "status"] == "ok").all()
    assert rep.loc["GTEX-1128S-0126", "stage"] == "listing"
    assert (tiles.groupby("image_id").size()[["GTEX-1117F-0226", "GTEX-111CU-1826"]] > 0).all()
    assert (tiles[tiles.image_id == "GTEX-1117F-0226"].level == 1).all()  # read from the 2 um/px level file


def test_dicom_files_that_are_not_slides_are_refused_at_listing(tmp_path):
    shutil.copy(fixture_file("slides/small.svs"), tmp_path / "GTEX-111FC-0226.svs")
    (tmp_path / "GTEX-1128S-0126.dcm").write_bytes(b"\0" * 128 + b"DICM")
    df = tiling.list_slides(tmp_path)
    assert list(df.image_id) == ["GTEX-111FC-0226"]
    err = df.attrs["unusable"].set_index("image_id").loc["GTEX-1128S-0126", "error"]
    assert err.startswith("'GTEX-1128S-0126.dcm' (suffix '.dcm') is not a DICOM whole-slide image that OpenSlide "
                          "reads")
