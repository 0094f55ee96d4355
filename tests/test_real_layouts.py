"""GTEx v8 as downloaded: the synthetic GTEx-like cohort written with every v8 file name and column.

The GTEx readers (in io today; moving to gtex) must read the v8 attribute table as GTEx writes it (raw
tab-separated text, free-text pathology notes with commas, quotes and semicolons, empty cells, DNA rows),
pick the TPM file and not the read counts beside it, and the slide-to-sample join must give the planted
pairs, with six-part (brain-style) sample IDs joined to their image and blood / cultured-cell samples
reported as expression without a slide.
"""
import gzip

import numpy as np
import pandas as pd
import pytest

from histo_utils import gtex, io, tiling
from histo_utils.synthetic.formats import GTEX_V8_ATTRIBUTE_COLUMNS, GTEX_V8_FILES, write_gtex_v8_download


def _reader(name):
    """A GTEx reader wherever it lives (io today, gtex after the move)."""
    return getattr(gtex, name, None) or getattr(io, name)


@pytest.fixture(scope="module")
def v8(tiny_cohort, tmp_path_factory):
    src, params = tiny_cohort
    out = tmp_path_factory.mktemp("gtex_v8")
    write_gtex_v8_download(src, out, seed=4, n_six_part=3, n_whole_blood=2, n_cultured=2, n_dna_rows=2)
    import json
    return out, json.loads((out / "truth" / "download.json").read_text())


def _raw_rows(path):
    """The attribute table split by hand: GTEx's files are plain tab-separated text without quoting."""
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    return head, [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_v8_attribute_columns_and_files(v8):
    out, meta = v8
    assert len(GTEX_V8_ATTRIBUTE_COLUMNS) == 63 == len(set(GTEX_V8_ATTRIBUTE_COLUMNS))
    head, rows = _raw_rows(out / GTEX_V8_FILES["sample_attributes"])
    assert head == list(GTEX_V8_ATTRIBUTE_COLUMNS)
    assert all(len(r) == 63 for r in rows)
    notes = [r["SMPTHNTS"] for r in rows]
    assert any(n.startswith('"') for n in notes) and any("," in n and ";" in n for n in notes)
    assert any(n == "" for n in notes)
    assert {r["SMAFRZE"] for r in rows} >= {"RNASEQ", "WES"}
    files = _reader("locate_gtex_files")(out)
    assert files.expression.name == GTEX_V8_FILES["expression"]  # the TPM, not the read counts beside it
    assert files.sample_attributes.name == GTEX_V8_FILES["sample_attributes"]
    with gzip.open(out / GTEX_V8_FILES["reads"], "rt") as fh:
        assert fh.readline() == "#1.2\n"
    tpm_samples = io.read_gct_samples(files.expression)
    assert io.read_gct_samples(out / GTEX_V8_FILES["reads"]) == tpm_samples
    assert set(meta["without_slide"]) <= set(tpm_samples)
    assert set(meta["renamed_six_part"].values()) <= set(tpm_samples)
    assert all(len(s.split("-")) == 6 for s in meta["renamed_six_part"].values())


def test_v8_attributes_read_as_written(v8):
    """Every cell as GTEx wrote it, notes with their quotes, identifiers as text, empty cells missing."""
    out, meta = v8
    head, rows = _raw_rows(out / GTEX_V8_FILES["sample_attributes"])
    df = _reader("read_sample_attributes")(out / GTEX_V8_FILES["sample_attributes"])
    assert len(df) == len(rows) and list(df.columns) == head
    assert df.SAMPID.tolist() == [r["SAMPID"] for r in rows]
    got_notes = df.SMPTHNTS.fillna("").tolist()
    assert got_notes == [r["SMPTHNTS"] for r in rows]
    assert df.SMUBRID.tolist() == [r["SMUBRID"] for r in rows]  # leading zeros kept
    assert df.SMTSD.tolist() == [r["SMTSD"] for r in rows]
    isch = pd.to_numeric(pd.Series([r["SMTSISCH"] for r in rows]).replace("", np.nan))
    np.testing.assert_array_equal(df.SMTSISCH.to_numpy(float), isch.to_numpy(float))
    rin = pd.to_numeric(pd.Series([r["SMRIN"] for r in rows]).replace("", np.nan))
    np.testing.assert_array_equal(df.SMRIN.to_numpy(float), rin.to_numpy(float))
    assert df.loc[df.SMAFRZE == "WES", "SMMAPRT"].isna().all()


def test_v8_subjects(v8, tiny_cohort):
    out, _ = v8
    src, _ = tiny_cohort
    sub = _reader("read_subject_phenotypes")(out / GTEX_V8_FILES["subject_phenotypes"])
    assert list(sub.columns) == ["SUBJID", "SEX", "AGE", "DTHHRDY"]
    ref = io.read_table(next(src.glob("*SubjectPhenotypesDS.txt")))
    assert sub.SUBJID.tolist() == ref.SUBJID.tolist() and (sub.SEX == ref.SEX).all() and (sub.AGE == ref.AGE).all()
    assert sub.DTHHRDY.dtype == "Int64"
    assert (sub.DTHHRDY.isna() == ref.DTHHRDY.isna()).all()


def test_v8_join_gives_the_planted_pairs(v8):
    out, meta = v8
    files = _reader("locate_gtex_files")(out)
    attrs = _reader("read_sample_attributes")(files.sample_attributes)
    slides = tiling.list_slides(files.slides_dir)
    joined, report = gtex.join_images_to_samples(slides.image_id, attrs, io.read_gct_samples(files.expression))
    truth = io.read_table(out / "truth" / "samples.tsv", dtype={"duplicate_of": str}).fillna({"duplicate_of": ""})
    planted = truth[truth.has_slide & truth.has_rna & (truth.duplicate_of == "")]
    assert dict(zip(joined.image_id, joined.SAMPID)) == dict(zip(planted.image_id, planted.SAMPID))
    six = set(meta["renamed_six_part"].values())
    assert six & set(joined.SAMPID) == six & set(planted.SAMPID) and six & set(planted.SAMPID)
    assert set(meta["without_slide"]) <= set(report.samples_without_image)
    assert set(report.samples_without_image) == set(meta["without_slide"]) | set(
        truth[truth.has_rna & ~truth.has_slide].SAMPID)
    twins = truth[truth.duplicate_of != ""]
    dropped = report.duplicate_samples[~report.duplicate_samples.kept]
    assert set(dropped.SAMPID) == set(twins.SAMPID)
    # the joined rows carry the tissue and the confounders of the attribute table
    assert (joined.set_index("SAMPID").loc[planted.SAMPID, "SMTS"].to_numpy() == planted.SMTS.to_numpy()).all()


def test_notes_starting_with_a_quote(tmp_path):
    """Read with CSV quoting, a note that opens with a quote lost its quotes ('"Mild" autolysis' ->
    'Mild autolysis'), and one whose quote never closes swallowed the rest of the file (pandas: 'EOF inside
    string'). GTEx files are plain tab-separated text: the reader must not interpret quotes."""
    p = tmp_path / "GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt"
    p.write_text('SAMPID\tSMPTHNTS\tSMTS\tSMUBRID\n'
                 'GTEX-1117F-0226-SM-5GZZ7\t"Mild" autolysis; 2 pieces, trimmed\tLung\t0008952\n'
                 'GTEX-1117F-0326-SM-5EGHI\t"6 pieces, 1 x 0.5 cm\tLiver\t0002107\n'
                 'GTEX-1117F-0426-SM-5EGHJ\t\tSkin\t0004264\n')
    df = _reader("read_sample_attributes")(p)
    assert df.SMPTHNTS.tolist()[:2] == ['"Mild" autolysis; 2 pieces, trimmed', '"6 pieces, 1 x 0.5 cm']
    assert df.SMPTHNTS.isna().tolist() == [False, False, True]
    assert df.SMTS.tolist() == ["Lung", "Liver", "Skin"] and df.SMUBRID[0] == "0008952"
