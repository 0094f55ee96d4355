"""The written readings take their numbers (and the claims that follow from them) from the run's tables."""
import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from histo_utils import crossvariance, io, products, readings
from histo_utils.products import NOTEBOOKS_DIR


def _variance(tmp_path, sex=(0.08, 0.09), centre_img=(0.17, 0.28)):
    rows = []
    for i, t in enumerate(["Liver", "Thyroid"]):
        for table, terms in (("expression", {"(all)": 0.4, "sex": sex[i], "centre": 0.03, "log_ischemic_time": 0.02,
                                             "RIN": 0.01, "age": -0.002}),
                             ("image features", {"(all)": 0.35, "sex": 0.0, "centre": centre_img[i],
                                                 "log_ischemic_time": 0.05, "RIN": 0.0, "age": 0.01})):
            for term, v in terms.items():
                rows.append({"tissue": t, "table": table, "term": term, "fraction_of_variance": v + 0.1,
                             "fraction_adjusted": v})
    d = tmp_path / "05_confounder_regression"
    d.mkdir(exist_ok=True)
    io.write_table(pd.DataFrame(rows), d / "variance_explained_overall.tsv")
    io.write_table(pd.DataFrame({"var_fraction": [0.95] * 4, "image_p": [0.01, 0.2, 0.3, 0.4],
                                 "expression_p": [0.01, 0.01, 0.01, 0.5]}), d / "shared_variance_residuals.tsv")


def test_confounder_reading_follows_the_tables(tmp_path):
    _variance(tmp_path)
    text = readings.confounder_reading(tmp_path)
    assert "**sex** explains the most (8–9 % per tissue)" in text
    assert "17–28 % of the image-feature variance above chance in Thyroid, Liver" in text
    assert "95.0%: expression 75 %, image 25 %" in text
    assert "age, with no planted effect, 0 %" in text  # negative adjusted fractions read as nothing
    _variance(tmp_path, sex=(0.01, 0.012), centre_img=(0.05, 0.06))
    text = readings.confounder_reading(tmp_path)
    assert "**centre** explains the most" in text and "sex (1 %)" in text
    assert "at most 6 % of the image-feature variance" in text


def _radiogenomics(tmp_path, nn_auc):
    d = tmp_path / "09_radiogenomic_network"
    d.mkdir(exist_ok=True)
    rows = [{"trait": t, "model": m, "fold": f, "auc": a}
            for t, nn in zip(["lumen_size_feature", "stroma_fraction_feature"], nn_auc)
            for m, a in (("nn", nn), ("rf", 0.7), ("logit", 0.6)) for f in range(2)]
    io.write_table(pd.DataFrame(rows), d / "fold_auc.tsv")
    io.write_table(pd.DataFrame({"trait": ["lumen_size_feature"] * 2 + ["stroma_fraction_feature"] * 2,
                                 "model": ["rf", "logit"] * 2, "mean": [0.1] * 4, "low": [0.02, 0.05, -0.01, 0.01],
                                 "high": [0.2] * 4}), d / "bootstrap_summary.tsv")
    io.write_table(pd.DataFrame({"gene_set": ["PLANTED_PROGRAM_LUMEN_SIZE", "DECOY_30_01",
                                              "PLANTED_PROGRAM_STROMA_FRACTION", "DECOY_30_01"],
                                 "auc": [0.81, 0.6, 0.7, 0.58], "trait": ["lumen_size_feature"] * 2
                                 + ["stroma_fraction_feature"] * 2, "planted": [True, False, True, False],
                                 "rank": [1, 2, 1, 2]}), d / "gene_masking.tsv")
    io.write_table(pd.DataFrame({"trait": ["lumen_size_feature", "stroma_fraction_feature"],
                                 "planted_set": ["PLANTED_PROGRAM_LUMEN_SIZE", "PLANTED_PROGRAM_STROMA_FRACTION"],
                                 "rank": [1, 1], "n_sets": [2, 2], "best_decoy_rank": [2, 2]}),
                   d / "masking_truth.tsv")
    io.write_table(pd.DataFrame({"trait": ["lumen_size_feature", "stroma_fraction_feature"],
                                 "rate_positive": [0.8, 0.85], "decoy_rate_positive": [0.003, 0.006]}),
                   d / "saliency_truth.tsv")


def test_radiogenomic_reading_says_what_the_aucs_say(tmp_path):
    _radiogenomics(tmp_path, nn_auc=(0.86, 0.77))
    text = readings.radiogenomic_reading(tmp_path)
    assert "beats every comparison model on every trait" in text
    assert "lumen size: network 0.860, beats rf 0.700, logit 0.600" in text
    assert "for every model on: lumen size." in text  # stroma's rf interval touches 0
    assert "lumen size rank 1 of 2 (AUC 0.81), stroma fraction rank 1 of 2 (AUC 0.70)" in text
    assert "best decoy set reaches AUC 0.58–0.60" in text and "80–85 % of positive samples" in text
    _radiogenomics(tmp_path, nn_auc=(0.86, 0.65))
    text = readings.radiogenomic_reading(tmp_path)
    assert "does not beat every comparison model" in text
    assert "stroma fraction: network 0.650, beats logit 0.600, loses to rf 0.700" in text  # which baseline, with AUCs


def test_correlation_reading_reads_the_grid_and_the_reproducibility(tmp_path):
    d = tmp_path / "03_feature_correlation"
    d.mkdir()
    io.write_table(pd.DataFrame({"R_T": [0.6, 0.8, 0.9, 0.8], "E_T": [5.0, 5.0, 5.0, 0.0],
                                 "pairs": [4000, 1200, 300, 9999], "genes": [90, 40, 10, 99],
                                 "features": [70, 30, 8, 99], "tissues": [3, 2, 1, 3]}), d / "threshold_grid.tsv")
    (d / "reproducibility.json").write_text(json.dumps({"n_pairs": 123456, "r_correlation": 0.5,
                                                        "z_correlation": 0.67, "n_samples_split": 41,
                                                        "n_samples_replicate": 43, "reported_pairs": 1200,
                                                        "reported_z_correlation": 0.988,
                                                        "reported_sign_agreement": 1.0}))
    text = readings.correlation_reading(tmp_path, r_threshold=0.8, e_threshold=5.0)
    assert "1,200 pairs, 40 genes, 30 features" in text
    assert "pairs fall from 4,000 to 300" in text
    assert "over all 123,456 pairs: r = 0.50 (Fisher z: 0.67)" in text
    assert "Fisher-z correlation 0.99, same sign in 100 %" in text


def test_readings_of_a_real_download_claim_nothing_planted(tmp_path):
    """Without truth/ (every real download): 05 names no planted effect, 09 reads gene masking without
    masking_truth.tsv (before: 'Table ... masking_truth.tsv does not exist' stopped 09's Reading cell)."""
    _variance(tmp_path)
    text = readings.confounder_reading(tmp_path, planted=False)
    assert "planted" not in text and "programs" not in text
    assert "The collection centre (stain and scanner differences between sites) explains 17–28 %" in text
    _radiogenomics(tmp_path, nn_auc=(0.86, 0.77))
    (tmp_path / "09_radiogenomic_network" / "masking_truth.tsv").unlink()
    (tmp_path / "09_radiogenomic_network" / "saliency_truth.tsv").unlink()
    text = readings.radiogenomic_reading(tmp_path)
    assert "no planted truth in this data folder" in text
    assert "lumen size: PLANTED_PROGRAM_LUMEN_SIZE (AUC 0.81, first of 2 sets)" in text
    assert "decoy" not in text.lower().replace("decoy_30_01", "")


# ------------------------------------------------------------------ 00-06: each reading follows its tables
def _write(df: pd.DataFrame, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_table(df, path)


def _cohort_tables(tmp_path, own_r=0.97, off_r=0.05, slope=-1.0):
    out = products.outputs(tmp_path, "00_synthetic_cohort")
    rows = [{"tissue": t, "module": m, "driver": dr, "r": (own_r if m == dr or (m, dr) == ("ischemia",
             "log_ischemic_time") else off_r)}
            for t in ("Liver", "Thyroid") for m in ("program_lumen_size", "ischemia")
            for dr in ("program_lumen_size", "log_ischemic_time")]
    _write(pd.DataFrame(rows), out.figure("planted_expression_coupling").with_suffix(".csv"))
    rng = np.random.default_rng(0)
    isch = rng.normal(size=80)
    _write(pd.DataFrame({"SMTS": ["Liver", "Thyroid"] * 40, "log_isch": isch, "SMRIN": rng.normal(size=80),
                         "od_centred": slope * isch + 0.3 * rng.normal(size=80)}),
           out.figure("ischemia_fading").with_suffix(".csv"))


def test_cohort_reading_follows_the_coupling_and_the_fading(tmp_path):
    _cohort_tables(tmp_path)
    text = readings.cohort_reading(tmp_path)
    assert "own driver within tissue at r = 0.97 " in text and "at or below 0.05" in text
    assert "the slides fade with ischemic time" in text
    _cohort_tables(tmp_path, own_r=0.61, off_r=0.3, slope=1.0)
    text = readings.cohort_reading(tmp_path)
    assert "r = 0.61 " in text and "at or below 0.30" in text
    assert "darken with ischemic time" in text and "fade" not in text


def _tiling_tables(tmp_path, adipose_dice=0.568):
    d = products.outputs(tmp_path, "01_tiling")
    _write(pd.DataFrame({"image_id": ["A", "B", "C"], "status": ["ok", "ok", "failed"], "stage": ["", "", "open"],
                         "error": ["", "", "truncated"]}), d.slides)
    _write(pd.DataFrame({"problem": ["slide without expression", "expression without slide",
                                     "extra RNA sample for one image (dropped)"], "count": [2, 3, 1],
                         "examples": ["", "", ""]}), d.join_report)
    _write(pd.DataFrame({"image_id": list("ABCDE"), "subject_id": ["s1", "s2", "s3", "s4", "s5"],
                         "SMTS": ["Liver"] * 5, "split": ["train", "train", "train", "validation", "test"]}),
           d.samples)
    d.tissue_grouping.write_text(json.dumps({"label_column": "SMTS"}))
    _write(pd.DataFrame({"image_id": ["A", "B", "A", "B"], "threshold": ["otsu", "otsu", "multiotsu", "multiotsu"],
                         "dice": [0.99, adipose_dice, 0.97, 0.96], "SMTS": ["Liver", "Adipose Tissue"] * 2}),
           d.mask_agreement)
    _write(pd.DataFrame({"kind": ["samples"] * 4, "what": ["slide without RNA", "RNA without slide",
                                                           "extra RNA aliquot", "damaged slide file"],
                         "count": [2, 2, 1, 1]}), products.outputs(tmp_path, "00_synthetic_cohort").planted_summary)


def test_tiling_reading_calls_a_low_dice_a_failure_not_an_outline(tmp_path):
    _tiling_tables(tmp_path)
    text = readings.tiling_reading(tmp_path, threshold="multiotsu")
    assert "2 of 3 slide files were tiled; 1 skipped: C (open)" in text
    assert "the counts differ (found 2, 3, 1, 1)" in text  # 3 RNA without slide against 2 planted
    assert "train 60 %, validation 20 %, test 20 %" in text
    assert "Adipose Tissue: fails on 1 of 1 slides (Dice down to 0.568" in text
    assert "**multiotsu** (used) — Adipose Tissue: near-perfect (median 0.960" in text
    _tiling_tables(tmp_path, adipose_dice=0.9)
    text = readings.tiling_reading(tmp_path, threshold="multiotsu")
    assert "Adipose Tissue: outline-level disagreement (median 0.900" in text and "fails" not in text
    text = readings.tiling_reading(tmp_path, planted=False)
    assert "Mask" not in text and "planted" not in text


def _training_tables(tmp_path, slide_acc=0.95, trained_r=0.75):
    d = products.outputs(tmp_path, "02_training")
    _write(pd.DataFrame({"arch": ["vgg"] * 4, "level": ["tile", "slide", "tile", "tile"], "split": ["test"] * 4,
                         "class": ["(all)", "(all)", "Liver", "Muscle"], "n": [100, 10, 50, 50],
                         "accuracy": [0.9, slide_acc, 0.98, 0.82]}), d.accuracy)
    rows = [{"network": n, "tile_px": 256, "program": "program_lumen_size", "layer": layer, "feature": f"{layer}_0",
             "abs_r": r * (1 if layer == 2 or "shuffled" in n else 0.5), "r": r}
            for n, r in (("trained", trained_r), ("untrained", 0.5), ("trained (shuffled)", 0.4),
                         ("untrained (shuffled)", 0.4)) for layer in (1, 2)]
    _write(pd.DataFrame(rows), d.layer_tracking)


def test_training_reading_follows_accuracy_and_layer_tracking(tmp_path):
    _training_tables(tmp_path)
    text = readings.training_reading(tmp_path)
    assert "vgg 0.900 → 0.950. Voting raises the accuracy of every network" in text
    assert "vgg: Muscle (0.820 of 50 tiles)" in text
    assert "lumen size 0.75 (layer 2, above the shuffled maximum in 1 of 2 layers)" in text
    assert "Training changes the best |r| by 0.25" in text
    _training_tables(tmp_path, slide_acc=0.85, trained_r=0.9)
    text = readings.training_reading(tmp_path)
    assert "does not raise the accuracy of vgg" in text and "lumen size 0.90 (layer 2, above the shuffled " \
        "maximum in 2 of 2 layers)" in text
    d3 = tmp_path / "03_feature_correlation"  # 03 quotes the best program channel from the same table
    d3.mkdir()
    io.write_table(pd.DataFrame({"R_T": [0.8], "E_T": [1.0], "pairs": [5], "genes": [2], "features": [1]}),
                   d3 / "threshold_grid.tsv")
    (d3 / "reproducibility.json").write_text(json.dumps({"n_pairs": 5}))
    assert "best channel |r| within tissue 0.90 (trained" in readings.correlation_reading(
        tmp_path, r_threshold=0.8, e_threshold=1.0)


def _grid(p_expr, shared=0.5, n=40, **extra):
    return pd.DataFrame({"network": "trained", "tile_px": 256, "aggregation": "sum", "tissue": ["Liver", "Thyroid"],
                         "layer": "all", "var_fraction": 0.95, "n_samples": n, "n_pc_expression": 20,
                         "image_shared": shared, "image_null_mean": 0.3, "image_excess": shared - 0.3,
                         "image_p": 0.01, "expression_shared": shared, "expression_null_mean": 0.3,
                         "expression_excess": shared - 0.3, "expression_p": p_expr, **extra})


def test_crossvariance_reading_follows_the_grid_and_the_control(tmp_path):
    d = products.outputs(tmp_path, "04_pca_cross_variance")
    _write(_grid([0.01, 0.5]), d.shared_variance)
    _write(pd.concat([_grid([0.01, 0.01], cohort="coupled (as planted)"),
                      _grid([0.5, 0.6], shared=0.3, cohort="coupling switched off").assign(image_p=0.4)]),
           d.decoupled_control)
    text = readings.crossvariance_reading(tmp_path)
    assert "S_expression 0.500 against null 0.300, 50 % of cells with p < 0.05 (separates from its null)" in text
    assert "coupling switched off at 95.0%: excess expression +0.000" in text and "(no more than chance)" in text
    _write(_grid([0.5, 0.5], shared=0.31), d.shared_variance)
    text = readings.crossvariance_reading(tmp_path)
    assert "S_expression 0.310 against null 0.300, 0 % of cells with p < 0.05 (does not separate" in text


def test_technical_share_takes_each_value_against_its_own_null():
    """The residual analysis has a higher chance level: the plain drop is negative, the drop above chance is not."""
    total = _grid([0.01, 0.01], shared=0.5)
    residual = _grid([0.01, 0.01], shared=0.6).assign(expression_null_mean=0.55, image_null_mean=0.55)
    both = crossvariance.technical_share(total, residual)
    np.testing.assert_allclose(both.expression_plain_drop, -0.1)
    np.testing.assert_allclose(both.expression_technical, (0.5 - 0.3) - (0.6 - 0.55))
    np.testing.assert_allclose(both.image_excess_residual, 0.05)


def test_confounder_reading_reports_the_technical_share(tmp_path):
    _variance(tmp_path)
    d5 = products.outputs(tmp_path, "05_confounder_regression")
    _write(_grid([0.01, 0.01], shared=0.6).assign(expression_null_mean=0.55, image_shared=0.5),
           d5.shared_variance_residuals)
    _write(_grid([0.01, 0.01], shared=0.5), products.outputs(tmp_path, "04_pca_cross_variance").shared_variance)
    text = readings.confounder_reading(tmp_path)
    assert "95.0%: expression +0.150 (0 % of cells below 0)" in text
    assert "would be below 0 in 50 % of the values" in text  # expression drops by 0.1, image by 0


def _gsea_tables(tmp_path, liver=6039):
    d = products.outputs(tmp_path, "06_gsea")
    _write(pd.DataFrame({"table": "trained_256px", "scope": ["Liver", "Thyroid", "pooled"], "samples": [40, 42, 82],
                         "tests": [2_000_000, 2_100_000, 2_100_000], "associations_bh": [liver, 41290, 90000]}),
           d.association_counts)
    _write(pd.DataFrame({"ranking": ["trained_256px/3_1", "confounder log_ischemic_time"],
                         "expected": ["PLANTED_PROGRAM_LUMEN_SIZE", "PLANTED_ISCHEMIA"],
                         "why": ["tracks program_lumen_size", "confounder"], "rank": [1, 3], "nes": [2.1, 1.2],
                         "fdr": [0.001, 0.3]}), d.planted_recovery)
    _write(pd.DataFrame({"term": ["PLANTED_TISSUE_LIVER", "PLANTED_TISSUE_THYROID", "GO_X"], "q": [0.01, 0.2, 0.5]}),
           d.annotation_ora)


def test_gsea_reading_counts_the_pairs_that_survive_bh(tmp_path):
    _gsea_tables(tmp_path)
    text = readings.gsea_reading(tmp_path)
    assert "per tissue 6,039–41,290 of 2,000,000–2,100,000 tests (2 tissues, 40–42 samples)" in text
    assert "pooled over tissues 90,000 of 2,100,000 tests" in text
    assert "PLANTED_PROGRAM_LUMEN_SIZE first (NES +2.10, FDR 0.001)" in text
    assert "log_ischemic_time: PLANTED_ISCHEMIA rank 3 (NES +1.20, FDR 0.3, not below 0.05)" in text
    assert "1 of 2 planted tissue sets" in text
    _gsea_tables(tmp_path, liver=12)
    assert "per tissue 12–41,290" in readings.gsea_reading(tmp_path)
    assert "PLANTED" not in readings.gsea_reading(tmp_path, planted=False)


# ------------------------------------------------------------------ no typed result in a Reading cell
#: what a Reading's markdown may hold that looks like a number but is no result: the chance AUROC, the
#: variance fraction named as a parameter
ALLOWED = (r"(AUROC|below)\s*[−-]?\s*0\.5", r"99\.9 %")
#: results: decimals (0.97), percentages (12 %), thousands (6,039)
RESULT = re.compile(r"\d+\.\d+|\d\s?%|\d,\d{3}")


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS_DIR.glob("0*.ipynb")))
def test_reading_cells_type_no_result(name):
    """Every notebook's Reading markdown explains what to look for; its numbers come from a reading function."""
    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and re.match(r"#+ Reading", c.source)]
    assert cells, f"{name} has no Reading cell"
    text = cells[0]
    for allowed in ALLOWED:
        text = re.sub(allowed, "", text)
    assert not RESULT.findall(text), f"{name}: the Reading types {RESULT.findall(text)}: format them from the tables"
