import gzip
import logging

import pandas as pd
import pytest

from conftest import fixture_file
from histo_utils import gtex, io


def _tpm():
    df = pd.DataFrame([[0.0, 1.5, 2.25], [10.0, 0.0, 3.0]], index=["ENSG00000117118.9", "ENSG00000000003.14"],
                      columns=["GTEX-1117F-0226-SM-5GZZ7", "GTEX-111CU-1826-SM-5GZYN", "GTEX-111FC-0226-SM-5N9B8"])
    df.attrs["description"] = pd.Series(["SDHB", "TSPAN6"], index=df.index)
    return df


@pytest.mark.parametrize("name", ["x.gct", "x.gct.gz"])
def test_gct_round_trip(tmp_path, name):
    df = _tpm()
    io.write_gct(df, tmp_path / name)
    opener = gzip.open if name.endswith("gz") else open
    with opener(tmp_path / name, "rt") as fh:
        head = [fh.readline() for _ in range(3)]
    assert head[0] == "#1.2\n" and head[1] == "2\t3\n" and head[2].startswith("Name\tDescription\tGTEX-1117F")
    back = io.read_gct(tmp_path / name)
    pd.testing.assert_frame_equal(back, df, check_names=False)
    assert list(back.attrs["description"]) == ["SDHB", "TSPAN6"]
    assert io.read_gct_samples(tmp_path / name) == list(df.columns)
    sub = io.read_gct(tmp_path / name, samples=["GTEX-111FC-0226-SM-5N9B8"])
    assert sub.shape == (2, 1)


def test_gct_dimension_mismatch_warns_not_fails(tmp_path, caplog):
    p = tmp_path / "sub.gct"
    p.write_text("#1.2\n56200\t17382\nName\tDescription\tS1\nENSG1.1\tA\t1.0\n")
    with caplog.at_level(logging.WARNING):
        df = io.read_gct(p)
    assert df.shape == (1, 1) and "declares 56200 x 17382" in caplog.text


def test_gct_wrong_version_is_named(tmp_path):
    p = tmp_path / "bad.gct"
    p.write_text("#1.3\n1\t1\nName\tDescription\tS1\n")
    with pytest.raises(ValueError, match="not GCT v1.2"):
        io.read_gct(p)


def test_gmt_round_trip(tmp_path):
    sets = {"A": ["g1", "g2"], "B": ["g3"]}
    io.write_gmt(sets, tmp_path / "s.gmt", descriptions={"A": "first"})
    assert (tmp_path / "s.gmt").read_text().splitlines()[0] == "A\tfirst\tg1\tg2"
    assert io.read_gmt(tmp_path / "s.gmt") == sets


def test_attributes_keep_text_ids(tmp_path):
    p = tmp_path / "GTEx_SampleAttributesDS.txt"
    p.write_text("SAMPID\tSMTS\tSMUBRID\tSMRIN\tSMTSISCH\nGTEX-1117F-0226-SM-5GZZ7\tThyroid\t0002046\t6.8\t-12\n")
    df = gtex.read_sample_attributes(p)
    assert df.SMUBRID[0] == "0002046" and df.SMTSISCH[0] == -12
    p.write_text("ID\tSMTS\nx\ty\n")
    with pytest.raises(ValueError, match="no SAMPID column"):
        gtex.read_sample_attributes(p)


def test_real_gtex_subject_table():
    p = fixture_file("gtex/GTEx_v7_Annotations_SubjectPhenotypesDS.txt")
    df = gtex.read_subject_phenotypes(p)
    assert len(df) == 752
    assert set(df.SEX) == {1, 2}
    assert set(df.AGE) <= {"20-29", "30-39", "40-49", "50-59", "60-69", "70-79"}
    assert df.DTHHRDY.isna().any() and set(df.DTHHRDY.dropna()) <= {0, 1, 2, 3, 4}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_open(tmp_path / "t.tsv") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_locate_names_missing_file(tmp_path):
    (tmp_path / "slides").mkdir()
    with pytest.raises(FileNotFoundError, match="no expression file"):
        gtex.locate_gtex_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gtex.locate_gtex_files(tmp_path / "nope")


@pytest.mark.parametrize("sample, subject, image", [
    ("GTEX-1117F-0226-SM-5GZZ7", "GTEX-1117F", "GTEX-1117F-0226"),
    ("GTEX-1117F-0011-R10a-SM-AS5GI", "GTEX-1117F", "GTEX-1117F-0011"),
    ("GTEX-11NSD-0126", "GTEX-11NSD", "GTEX-11NSD-0126"),
])
def test_gtex_ids(sample, subject, image):
    assert gtex.subject_id(sample) == subject and gtex.image_id(sample) == image


def test_gtex_id_errors():
    with pytest.raises(ValueError, match="not a GTEx-style ID"):
        gtex.image_id("slide 12.svs")
    with pytest.raises(ValueError, match="needs at least 3"):
        gtex.image_id("GTEX-1117F")


def test_join_reports_and_deduplicates():
    attrs = pd.DataFrame({
        "SAMPID": ["GTEX-A1-0001-SM-1", "GTEX-A1-0001-SM-2", "GTEX-B2-0002-SM-3", "GTEX-C3-0003-SM-4"],
        "SMTS": ["Thyroid", "Thyroid", "Liver", "Lung"], "SMRIN": [6.0, 8.5, 7.0, 7.0]})
    images = ["GTEX-A1-0001", "GTEX-B2-0002", "GTEX-D4-0004"]
    expr = ["GTEX-A1-0001-SM-1", "GTEX-A1-0001-SM-2", "GTEX-B2-0002-SM-3", "GTEX-C3-0003-SM-4"]
    joined, rep = gtex.join_images_to_samples(images, attrs, expr)
    assert list(joined.image_id) == ["GTEX-A1-0001", "GTEX-B2-0002"]
    assert joined.set_index("image_id").SAMPID["GTEX-A1-0001"] == "GTEX-A1-0001-SM-2"  # highest RIN
    assert rep.images_without_expression == ["GTEX-D4-0004"]
    assert rep.samples_without_image == ["GTEX-C3-0003-SM-4"]
    assert set(rep.duplicate_samples.SAMPID[~rep.duplicate_samples.kept]) == {"GTEX-A1-0001-SM-1"}
    summary = rep.summary().set_index("problem")["count"]
    assert summary.tolist() == [1, 1, 1, 1]  # the last: Lung has RNA but no slide (left out)
    assert rep.tissues_without_slides.tissue.tolist() == ["Lung"]
    assert joined.subject_id.tolist() == ["GTEX-A1", "GTEX-B2"]
