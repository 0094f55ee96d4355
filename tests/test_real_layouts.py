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


# --------------------------------------------------------------------------
# what real v8 has beyond the layout: Badea's merged tissues, shared batches, blanks, enough samples for nine
# confounders
# --------------------------------------------------------------------------
NINE = ["log_ischemic_time", "RIN", "centre", "age", "sex", "SMATSSCR", "DTHHRDY", "SMNABTCH", "SMGEBTCH"]
NINE_COLUMNS = ["SMTSISCH", "SMRIN", "SMCENTER", "AGE", "SEX", "SMATSSCR", "DTHHRDY", "SMNABTCH", "SMGEBTCH"]


@pytest.fixture(scope="module")
def v8_real(tiny_cohort, tmp_path_factory):
    """The tiny cohort with its muscle written as Badea's two heart tissues, and many blanks (a quarter)."""
    from histo_utils.synthetic.formats import GTEX_V8_MERGED

    src, _ = tiny_cohort
    out = tmp_path_factory.mktemp("gtex_v8_real")
    write_gtex_v8_download(src, out, seed=4, n_six_part=3, n_whole_blood=2, n_cultured=2, n_dna_rows=2,
                           merged=GTEX_V8_MERGED, blank_fraction=0.25)
    import json
    return out, json.loads((out / "truth" / "download.json").read_text())


@pytest.fixture(scope="module")
def v8_large(tmp_path_factory):
    """Three tissues of 48 samples (small slides), muscle written as the two heart tissues: 24 samples each."""
    from histo_utils.synthetic import CohortParams, make_cohort
    from histo_utils.synthetic.formats import GTEX_V8_MERGED

    params = CohortParams(seed=5, tissues=("Thyroid", "Muscle", "Liver"), samples_per_tissue=48, tissues_per_donor=2,
                          n_genes=300, module_size=10, tissue_genes=10, slide_width_um=256.0, slide_height_um=256.0)
    src = tmp_path_factory.mktemp("cohort_large")
    make_cohort(src, params, workers=2, progress=False)
    out = tmp_path_factory.mktemp("gtex_v8_large")
    write_gtex_v8_download(src, out, seed=2, merged=GTEX_V8_MERGED)
    return out


def test_v8_merged_tissues(v8, v8_real):
    """Muscle written as Badea's heart group: SMTS Heart, the two detailed tissues named as in badea_33, same IDs."""
    out, meta = v8_real
    attrs = _reader("read_sample_attributes")(out / GTEX_V8_FILES["sample_attributes"])
    plain = _reader("read_sample_attributes")(v8[0] / GTEX_V8_FILES["sample_attributes"])
    heart = gtex.TISSUE_MERGES["badea_33"]["Heart"]
    assert set(attrs.loc[attrs.SMTS == "Heart", "SMTSD"]) == set(heart)
    assert not attrs.SMTS.eq("Muscle").any() and not attrs.SMTSD.eq("Muscle - Skeletal").any()
    # one group of the merge is present with all its members: badea_33 merges something
    groups = gtex.tissue_merge("badea_33")
    assert [g for g, members in groups.items() if set(members) <= set(attrs.SMTSD)] == ["Heart"]
    # same sample IDs (site code and all) as without the merge; only the muscle rows' tissue labels differ
    assert attrs.SAMPID.tolist() == plain.SAMPID.tolist()
    was_muscle = plain.SMTS.eq("Muscle")
    assert (attrs.SMTS[was_muscle] == "Heart").all()
    assert set(attrs.SMUBRID[was_muscle]) == {"0006631", "0006566"}
    pd.testing.assert_frame_equal(attrs.loc[~was_muscle, ["SMTS", "SMTSD", "SMUBRID"]],
                                  plain.loc[~was_muscle, ["SMTS", "SMTSD", "SMUBRID"]])
    # an image's aliquots share its detailed tissue; the truth table carries the labels written
    img = attrs.SAMPID.map(gtex.image_id)
    assert attrs[attrs.SMTS == "Heart"].groupby(img).SMTSD.nunique().max() == 1
    truth = io.read_table(out / "truth" / "samples.tsv", dtype={"SMUBRID": str})
    both = truth.merge(attrs[["SAMPID", "SMTS", "SMTSD", "SMUBRID"]], on="SAMPID", suffixes=("", "_written"))
    assert len(both) == len(truth)
    for c in ("SMTS", "SMTSD", "SMUBRID"):
        assert (both[c] == both[f"{c}_written"]).all()
    assert set(meta["merged"]["Muscle"]["images"].values()) == set(heart)


def test_v8_merged_join(v8_real):
    """The join pairs the planted images with the merged labels; each heart tissue keeps its slides."""
    out, _ = v8_real
    files = _reader("locate_gtex_files")(out)
    attrs = _reader("read_sample_attributes")(files.sample_attributes)
    slides = tiling.list_slides(files.slides_dir)
    joined, _ = gtex.join_images_to_samples(slides.image_id, attrs, io.read_gct_samples(files.expression),
                                            label_column="SMTSD")
    truth = io.read_table(out / "truth" / "samples.tsv", dtype={"duplicate_of": str}).fillna({"duplicate_of": ""})
    planted = truth[truth.has_slide & truth.has_rna & (truth.duplicate_of == "")]
    assert dict(zip(joined.image_id, joined.SAMPID)) == dict(zip(planted.image_id, planted.SAMPID))
    assert set(gtex.TISSUE_MERGES["badea_33"]["Heart"]) <= set(joined.SMTSD)


def test_v8_median_tpm_columns_are_the_detailed_tissues_written(v8_real):
    out, _ = v8_real
    attrs = _reader("read_sample_attributes")(out / GTEX_V8_FILES["sample_attributes"])
    med = io.read_gct(out / GTEX_V8_FILES["median_tpm"])
    tpm_samples = set(io.read_gct_samples(out / GTEX_V8_FILES["expression"]))
    written = set(attrs.loc[attrs.SAMPID.isin(tpm_samples), "SMTSD"])
    assert set(med.columns) == written
    assert set(gtex.TISSUE_MERGES["badea_33"]["Heart"]) <= set(med.columns)
    assert "Muscle - Skeletal" not in med.columns
    assert gtex.read_median_tpm(out / GTEX_V8_FILES["median_tpm"], sorted(written)).shape[0] == len(written)


def test_v8_batches_shared_and_singletons(v8_large):
    """Within a tissue of 30+ RNA samples, most samples share a handful of batches of 5+; some are alone."""
    attrs = _reader("read_sample_attributes")(v8_large / GTEX_V8_FILES["sample_attributes"])
    rna = attrs[attrs.SMAFRZE == "RNASEQ"]
    big = [t for t, n in rna.SMTSD.value_counts().items() if n >= 30]
    assert len(big) == 2  # thyroid and liver (the heart tissues have about 24 each)
    for col in ("SMNABTCH", "SMGEBTCH"):
        assert rna[col].map(type).eq(str).all()  # identifiers read as text
        for t in big:
            size = rna.loc[rna.SMTSD == t, col].value_counts()
            shared = size[size >= 5]
            assert 2 <= len(shared) <= 6 and shared.sum() >= 0.8 * size.sum(), (col, t, size.tolist())
            assert (size == 1).any(), (col, t, size.tolist())
        # every detailed tissue of 3+ RNA samples has a shared batch (2+ samples) and a batch of one
        per = rna[rna.groupby("SMTSD").SAMPID.transform("size") >= 3].groupby(["SMTSD", col]).size()
        assert (per.groupby(level=0).max() >= 2).all() and (per.groupby(level=0).min() == 1).all()
    # the two batch columns are drawn apart: not the same grouping
    assert rna.groupby("SMNABTCH").SMGEBTCH.nunique().max() > 1


def test_v8_blanks_in_autolysis_and_hardy(v8_real):
    """Blank SMATSSCR (autolysis 0-3) and DTHHRDY (Hardy 0-4) cells are written empty and read as missing."""
    out, meta = v8_real
    head, rows = _raw_rows(out / GTEX_V8_FILES["sample_attributes"])
    attrs = _reader("read_sample_attributes")(out / GTEX_V8_FILES["sample_attributes"])
    tissue = attrs.SMAFRZE.isin(["RNASEQ", "EXCLUDE"]) & ~attrs.SMTSD.isin(gtex.TISSUES_WITHOUT_SLIDES)
    blank = attrs.SMATSSCR.isna() & tissue
    assert blank.sum() >= attrs.loc[tissue, "SMTSD"].nunique()  # a quarter of each tissue's 3-4 samples
    assert set(attrs.SAMPID[blank]) == set(meta["blank_SMATSSCR"])
    assert all(rows[i]["SMATSSCR"] == "" for i in np.flatnonzero(blank.to_numpy()))
    assert set(attrs.loc[tissue & ~blank, "SMATSSCR"]) <= {0, 1, 2, 3}
    sub = _reader("read_subject_phenotypes")(out / GTEX_V8_FILES["subject_phenotypes"])
    assert sub.DTHHRDY.dtype == "Int64"
    assert sub.DTHHRDY.isna().sum() >= round(0.25 * len(sub)) >= 1
    assert set(meta["blank_DTHHRDY_added"]) <= set(sub.SUBJID[sub.DTHHRDY.isna()])
    assert set(sub.DTHHRDY.dropna()) <= {0, 1, 2, 3, 4}
    raw = dict(line.split("\t")[::3] for line in
               (out / GTEX_V8_FILES["subject_phenotypes"]).read_text().splitlines()[1:])
    assert all(raw[s] == "" for s in sub.SUBJID[sub.DTHHRDY.isna()])


def test_v8_enough_samples_for_nine_confounders(v8_large):
    """Every detailed tissue (heart halves of ~24 included) has MIN_SAMPLES_NINE_CONFOUNDERS complete samples;
    counting columns with rare levels (< 5) pooled into one level, the design of the nine leaves residual degrees
    of freedom, and build_design (min_level_size 5) has fewer columns of rank than samples."""
    from histo_utils import confounders
    from histo_utils.synthetic.formats import MIN_SAMPLES_NINE_CONFOUNDERS

    files = _reader("locate_gtex_files")(v8_large)
    attrs = _reader("read_sample_attributes")(files.sample_attributes)
    subjects = _reader("read_subject_phenotypes")(files.subject_phenotypes).set_index("SUBJID")
    slides = tiling.list_slides(files.slides_dir)
    joined, _ = gtex.join_images_to_samples(slides.image_id, attrs, io.read_gct_samples(files.expression))
    s = confounders.sample_covariates(joined, subjects, joined.SAMPID)
    spec = confounders.confounder_spec(NINE, columns=s.columns)
    written = attrs[attrs.SMAFRZE == "RNASEQ"].SMTSD.value_counts()
    assert set(gtex.TISSUE_MERGES["badea_33"]["Heart"]) <= set(s.SMTSD)
    for t, g in s.groupby("SMTSD"):
        complete = g.dropna(subset=NINE_COLUMNS)
        assert len(complete) >= MIN_SAMPLES_NINE_CONFOUNDERS, (t, len(complete))
        n_cols = 1
        for col, kind in spec.values():
            if kind == "category":
                counts = complete[col].astype(str).value_counts()
                n_cols += int((counts >= 5).sum()) + int((counts < 5).any()) - 1
            else:
                n_cols += 1
        if written[t] < 27:
            assert n_cols <= MIN_SAMPLES_NINE_CONFOUNDERS - 1, (t, n_cols)
        assert n_cols < len(complete), (t, n_cols, len(complete))
        d = confounders.build_design(g, confounders=spec, min_level_size=5)
        assert len(d.matrix) - np.linalg.matrix_rank(d.matrix.to_numpy()) >= 1, t


def test_v8_merged_refuses_unknown_groups(tiny_cohort, tmp_path):
    src, _ = tiny_cohort
    with pytest.raises(ValueError, match="badea_33"):
        write_gtex_v8_download(src, tmp_path / "a", merged={"Muscle": "Kidney"})
    with pytest.raises(ValueError, match="no sample of tissue 'Lung'"):
        write_gtex_v8_download(src, tmp_path / "b", merged={"Lung": "Heart"})
