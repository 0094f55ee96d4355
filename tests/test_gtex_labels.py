"""Tissue labels from a label column (SMTS or SMTSD), tissues without slides, Badea's merge, the expression floor."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import correlation, gtex, io, training

DETAILED = {"GTEX-AAAA1-0126": ("Artery", "Artery - Tibial"), "GTEX-AAAA1-0226": ("Artery", "Artery - Aorta"),
            "GTEX-AAAA2-0126": ("Artery", "Artery - Tibial"), "GTEX-AAAA2-0326": ("Skin", "Skin - Sun Exposed (Lower leg)"),
            "GTEX-AAAA3-0326": ("Skin", "Skin - Not Sun Exposed (Suprapubic)")}


def _attributes():
    rows = [{"SAMPID": f"{img}-SM-{k:05d}", "SMTS": smts, "SMTSD": smtsd, "SMRIN": 7.0}
            for k, (img, (smts, smtsd)) in enumerate(DETAILED.items())]
    # RNA-only samples: whole blood (SMTS Blood) and cultured fibroblasts (SMTS Skin, like GTEx)
    rows += [{"SAMPID": "GTEX-AAAA1-0005-SM-B0001", "SMTS": "Blood", "SMTSD": "Whole Blood", "SMRIN": 8.0},
             {"SAMPID": "GTEX-AAAA2-0005-SM-B0002", "SMTS": "Blood", "SMTSD": "Whole Blood", "SMRIN": 8.0},
             {"SAMPID": "GTEX-AAAA3-0008-SM-C0003", "SMTS": "Skin", "SMTSD": "Cells - Cultured fibroblasts",
              "SMRIN": 9.0}]
    return pd.DataFrame(rows)


def test_join_leaves_out_tissues_without_slides_per_label_column():
    attrs = _attributes()
    images = list(DETAILED) + ["GTEX-AAAA3-0008"]  # even an image named like the fibroblast sample is not paired
    joined, rep = gtex.join_images_to_samples(images, attrs, attrs.SAMPID, label_column="SMTSD")
    assert set(joined.SMTSD) == {t for _, t in DETAILED.values()}
    left = rep.tissues_without_slides.set_index("tissue").rna_samples.to_dict()
    assert left == {"Whole Blood": 2, "Cells - Cultured fibroblasts": 1}
    summary = rep.summary().set_index("problem")
    assert summary.loc["tissue without slides (left out)", "count"] == 2
    assert "Whole Blood" in summary.loc["tissue without slides (left out)", "examples"]
    # coarse labels: blood has no slide; the fibroblasts' SMTS (Skin) has slides, so only Blood is listed
    _, rep_smts = gtex.join_images_to_samples(images, attrs, attrs.SAMPID, label_column="SMTS")
    assert rep_smts.tissues_without_slides.tissue.tolist() == ["Blood"]
    with pytest.raises(ValueError, match="label_column 'TISSUE'.*SMTS"):
        gtex.join_images_to_samples(images, attrs, attrs.SAMPID, label_column="TISSUE")


def test_badea_merge_scores_merged_classes_beside_per_tissue():
    merge = gtex.tissue_merge("badea_33")
    members = [m for ms in merge.values() for m in ms]
    assert len(merge) == 5 and len(members) == len(set(members)) == 11  # 11 tissues -> 5 groups: 39 -> 33
    assert gtex.tissue_merge("badea_33", {"Brain": ["Brain - Cortex", "Brain - Cerebellum"]})["Brain"]
    with pytest.raises(ValueError, match="Unknown tissue merge 'badea'"):
        gtex.tissue_merge("badea")
    classes = ["Artery - Aorta", "Artery - Tibial", "Liver"]
    slides = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "SMTSD": ["Artery - Tibial", "Artery - Aorta", "Liver",
                                                                       "Liver"],
                           "split": "test", "pred": ["Artery - Aorta", "Artery - Aorta", "Liver", "Artery - Tibial"]})
    tiles = slides.assign(x=0, y=0)
    acc = training.accuracy_by_split(tiles, slides, splits=["test"], merge_groups=merge, label_column="SMTSD")
    allrows = acc[acc["class"] == "(all)"].set_index("level").accuracy
    assert allrows["slide"] == pytest.approx(0.5) and allrows["slide (merged)"] == pytest.approx(0.75)
    one = {"compact": training.NetworkRun("compact", None, pd.DataFrame(), tiles, slides, acc)}
    conf = training.confusion_tables(one, classes, split="test", label_column="SMTSD", merge_groups=merge)
    assert list(conf["slide (merged)"].index) == ["Artery", "Liver"]
    assert conf["slide (merged)"].loc["Artery", "Artery"] == 2 and conf["slide"].loc["Artery - Tibial", "Artery - Aorta"] == 1


def test_tile_dataset_labels_from_label_column(tmp_path):
    samples = pd.DataFrame({"image_id": ["i1", "i2"], "SMTS": ["Artery", "Artery"],
                            "SMTSD": ["Artery - Aorta", "Artery - Tibial"], "split": "train", "path": ["p1", "p2"]})
    tiles = pd.DataFrame({"image_id": ["i1", "i2", "i2"], "tile_px": 256, "x": 0, "y": [0, 0, 256], "level": 0,
                          "read_px": 256})
    ds = training.tissue_tile_dataset(tiles, samples, tile_px=256, classes=["Artery - Aorta", "Artery - Tibial"],
                                      label_column="SMTSD")
    assert list(ds.labels) == [0, 1, 1]
    with pytest.raises(ValueError, match="not among the classes"):
        training.tissue_tile_dataset(tiles, samples, tile_px=256, classes=["Artery - Aorta", "Artery - Tibial"])
    with pytest.raises(ValueError, match="label_column 'SMTSX'"):
        training.tissue_tile_dataset(tiles, samples, tile_px=256, classes=["x"], label_column="SMTSX")


def test_expression_floor_from_median_file_equals_the_samples(tmp_path):
    rng = np.random.default_rng(0)
    attrs = pd.DataFrame({"SAMPID": [f"GTEX-S{k:04d}-0101-SM-{k:05d}" for k in range(12)],
                          "SMTSD": ["Liver"] * 5 + ["Lung"] * 3 + ["Whole Blood"] * 4}).set_index("SAMPID")
    genes = [f"ENSG{k:011d}.1" for k in range(30)]
    tpm = pd.DataFrame(np.round(rng.gamma(0.8, 20, (30, 12)), 2), index=genes, columns=attrs.index)
    tpm.iloc[0, 8:] = 1e4  # gene 0 is highest in whole blood, a tissue outside the study
    sym = pd.Series([f"G{k}" for k in range(30)], index=genes)
    io.write_gct(tpm, tmp_path / "tpm.gct.gz", description=sym, float_format="%.6g")
    med = pd.DataFrame({t: tpm.loc[:, attrs.SMTSD == t].median(1) for t in ["Liver", "Lung", "Whole Blood"]})
    io.write_gct(med, tmp_path / "median_tpm.gct.gz", description=sym, float_format="%.6g")
    kw = dict(tissues=["Liver", "Lung", "Liver"], label_column="SMTSD")
    from_samples = correlation.tissue_expression_floor(tmp_path / "tpm.gct.gz", attrs, **kw, cache_dir=tmp_path / "c")
    from_file = correlation.tissue_expression_floor(tmp_path / "nothing.gct.gz", attrs, median_tpm=tmp_path / "median_tpm.gct.gz",
                                             **kw)
    assert set(from_samples.max_tissue) <= {"Liver", "Lung"}  # whole blood is not a study tissue
    assert (from_file.max_tissue == from_samples.max_tissue.reindex(from_file.index)).all()
    np.testing.assert_allclose(from_file.max_median, from_samples.max_median.reindex(from_file.index), rtol=1e-5)
    with pytest.raises(ValueError, match="label_column to SMTSD"):
        correlation.tissue_expression_floor(tmp_path / "tpm.gct.gz", attrs.rename(columns={"SMTSD": "SMTS"}),
                                     tissues=["Liver"], median_tpm=tmp_path / "median_tpm.gct.gz")
