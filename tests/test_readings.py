"""The written readings take their numbers (and the claims that follow from them) from the run's tables."""
import json

import pandas as pd

from histo_utils import io, readings


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
    assert "lumen size 0.86 against 0.70 (rf)" in text
    assert "for every model on: lumen size." in text  # stroma's rf interval touches 0
    assert "lumen size rank 1 of 2 (AUC 0.81), stroma fraction rank 1 of 2 (AUC 0.70)" in text
    assert "best decoy set reaches AUC 0.58–0.60" in text and "80–85 % of positive samples" in text
    _radiogenomics(tmp_path, nn_auc=(0.86, 0.65))
    assert "does not beat every comparison model" in readings.radiogenomic_reading(tmp_path)


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
