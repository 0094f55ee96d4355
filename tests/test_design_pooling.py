"""Notebook 05 never saturates a design: rare levels pooled, all-rare terms left out, residual degrees of
freedom reported, tissues without them skipped; pandas' nullable dtypes through statsmodels and the batched
regression (issue 27, item 4)."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from histo_utils import confounders as cf

#: Jones' nine confounders, as the gtex profile lists them
JONES9 = ["log_ischemic_time", "RIN", "centre", "age", "sex", "SMATSSCR", "DTHHRDY", "SMNABTCH", "SMGEBTCH"]


def _batches(prefix: str, n: int, sizes, rng) -> np.ndarray:
    """n batch IDs in batches of the given sizes (cycled), shuffled: every batch is rare."""
    ids, i = [], 0
    while len(ids) < n:
        ids += [f"{prefix}-{1000 + i}"] * sizes[i % len(sizes)]
        i += 1
    return rng.permutation(np.array(ids[:n], dtype=object))


def _gtex_tissue(tissue: str = "Lung", *, seed: int = 0, prefix: str = "S") -> pd.DataFrame:
    """41 samples of one tissue as a GTEx v8 download reads them: Hardy scale, autolysis score and ischemic
    time as nullable integers (one sample blank in DTHHRDY and SMATSSCR), nucleic-acid and expression batches
    of 1-3 samples each; with min_level_size 5, two rare centres (4 + 4 samples: pooled), one rare age
    bracket (4 samples: merged into the largest). After the blank sample, 40 samples."""
    rng = np.random.default_rng(seed)
    n = 40
    s = pd.DataFrame({
        "SMTS": tissue,
        "SMTSISCH": pd.array(rng.integers(-10, 1400, n), dtype="Int64"),
        "SMRIN": rng.uniform(5, 9, n).round(1),
        "SMCENTER": rng.permutation(["B1"] * 18 + ["C1"] * 14 + ["D1"] * 4 + ["E1"] * 4),
        "AGE": rng.permutation(["50-59"] * 20 + ["60-69"] * 16 + ["70-79"] * 4),
        "SEX": rng.permutation([1] * 26 + [2] * 14),
        "SMATSSCR": pd.array(rng.integers(0, 4, n), dtype="Int64"),
        "DTHHRDY": pd.array(rng.permutation([0] * 16 + [2] * 12 + [1] * 6 + [4] * 6), dtype="Int64"),
        "SMNABTCH": _batches("BP", n, [1, 2, 3], rng),
        "SMGEBTCH": _batches("LCSET", n, [3, 1, 2], rng),
    }, index=[f"GTEX-{prefix}{i:03d}-0001-SM-{tissue[:2]}{i}" for i in range(n)])
    blank = pd.DataFrame({**s.iloc[[0]].to_dict("list"), "SMNABTCH": ["BP-blank"], "SMGEBTCH": ["LCSET-blank"]},
                         index=[f"GTEX-{prefix}999-0001-SM-{tissue[:2]}blank"]).astype(s.dtypes.to_dict())
    blank["DTHHRDY"] = pd.array([pd.NA], dtype="Int64")
    blank["SMATSSCR"] = pd.array([pd.NA], dtype="Int64")
    s = pd.concat([s, blank])
    return s.assign(log_isch=cf.log_ischemic_time(s.SMTSISCH))


def _tables(s: pd.DataFrame, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Expression (log scale, a batch-free centre gene and an autolysis gene) and image features."""
    rng = np.random.default_rng(seed)
    n = len(s)
    e = pd.DataFrame(rng.normal(size=(n, 6)) + 5, index=s.index, columns=[f"G{i}" for i in range(6)])
    e["centre_gene"] = 5 + 2.0 * s.SMCENTER.isin(["D1", "E1"]).to_numpy() + 0.3 * rng.normal(size=n)
    e["autolysis_gene"] = 5 + 0.8 * s.SMATSSCR.astype("float64").fillna(0).to_numpy() + 0.3 * rng.normal(size=n)
    f = pd.DataFrame(rng.normal(size=(n, 4)), index=s.index, columns=["0_0", "0_1", "1_0", "1_1"])
    return e, f


def test_rare_batches_no_longer_saturate_nine_confounders(caplog):
    """(a) GTEx's batches have only rare levels within a tissue: with Jones' nine confounders the design had
    rank 40 with 40 samples. Now the all-rare batches are left out, rare centres pooled, the lone rare age
    bracket merged, and the residual degrees of freedom reported."""
    s = _gtex_tissue()
    spec = cf.confounder_spec(JONES9, columns=s.columns)
    with caplog.at_level(logging.INFO, logger="histo_utils.confounders"):
        designs, notes = cf.build_designs(s, min_samples=10, confounders=spec, min_level_size=5)
    d = designs["Lung"]
    # the regression runs (it stopped: "The design has rank 40 with 40 samples: no residual degrees of
    # freedom."): residuals orthogonal to the design, the variance partition has its F tests
    e, _ = _tables(s)
    res = cf.residualize_expression_by_tissue(e, designs, gene_min_mean=1.0)
    assert res.shape == (40, 8) and np.abs(d.matrix.to_numpy().T @ res.to_numpy()).max() < 1e-8
    vp = cf.variance_partition(e.loc[d.matrix.index], d)
    top = vp[(vp.column == "centre_gene") & (vp.term != "(all)")].nlargest(1, "unique_r2").term.iloc[0]
    assert top == "centre" and vp.p.between(0, 1).all()
    row = notes.set_index("tissue").loc["Lung"]
    assert len(notes) == 1 and row.status == "fitted" and row.samples == 40 == len(d.matrix)
    # intercept, 3 numbers, centre B1 | C1 | other (pooled), age 50-59 (+ 70-79) | 60-69, sex, Hardy 0 | 1 | 2 | 4
    assert row.design_columns == 11 == row["rank"] and row.resid_df == 29
    assert set(row.left_out_terms.split(", ")) == {"SMNABTCH", "SMGEBTCH"}
    assert set(d.dropped["rare_terms"]) == {"SMNABTCH", "SMGEBTCH"} and "SMNABTCH" not in d.terms
    assert {k: sorted(v) for k, v in json.loads(row.pooled_levels).items()} == {"centre": ["D1", "E1"]}
    assert json.loads(row.merged_levels) == {"age": ["70-79"]}
    assert d.terms["centre"] == ["centre[C1]", f"centre[{cf.POOLED_LEVEL}]"]  # B1, the largest, is the reference
    assert d.terms["age"] == ["age[60-69]"] and d.terms["DTHHRDY"] == ["DTHHRDY[1]", "DTHHRDY[2]", "DTHHRDY[4]"]
    assert "SMNABTCH left out: all its 21 levels have fewer than 5 samples" in row.note
    assert "centre levels with fewer than 5 samples pooled into 'other (pooled)'" in row.note
    assert "age levels with fewer than 5 samples (together 4, too few to pool) merged" in row.note
    # each change is one logged line naming tissue, term and levels
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("Lung: SMGEBTCH left out: all its") and "LCSET-" in m for m in warned)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("Lung: centre levels") and "D1 (4)" in m and "E1 (4)" in m for m in said)


def test_pooling_rules_by_case():
    """One rare level (too few to pool) merges as before; rare levels enough together are pooled; a term
    whose only common level absorbs its rare ones is left out, with its note."""
    base = pd.DataFrame({"SMTSISCH": np.arange(12.0), "SMRIN": np.linspace(5, 9, 12)},
                        index=[f"s{i}" for i in range(12)])
    spec = {"c": ("C", "category")}
    merged = cf.build_design(base.assign(C=["a"] * 8 + ["b"] * 3 + ["z"]), confounders=spec, min_level_size=2)
    assert merged.dropped["merged_levels"] == {"c": ["z"]} and merged.terms["c"] == ["c[b]"]
    pooled = cf.build_design(base.assign(C=["a"] * 8 + ["b"] * 2 + ["y", "z"]), confounders=spec, min_level_size=2)
    assert sorted(pooled.dropped["pooled_levels"]["c"]) == ["y", "z"]
    assert pooled.terms["c"] == ["c[b]", "c[other (pooled)]"]
    one = cf.build_design(base.assign(C=["a"] * 11 + ["z"]), confounders=spec, min_level_size=2)
    assert one.terms == {} and one.dropped["constant_terms"] == ["c"]
    assert one.dropped["notes"][-1] == ("12 samples: c left out: one level left after merging; levels with fewer "
                                        "than 2 samples (together 1, too few to pool) merged into the most "
                                        "frequent level 'a': z (1)")
    rare = cf.build_design(base.assign(C=[f"x{i}" for i in range(12)]), confounders=spec, min_level_size=2)
    assert rare.terms == {} and list(rare.dropped["rare_terms"]) == ["c"]
    # min_level_size 1: nothing is rare, every level keeps its column (as before)
    assert len(cf.build_design(base.assign(C=[f"x{i % 6}" for i in range(12)]), confounders=spec,
                               min_level_size=1).terms["c"]) == 5


def _as_download(s: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """notebook 01's samples and the subject phenotypes of ``s``, with pandas' nullable dtypes where a
    reader gives them: Hardy scale Int64, sex as text (string dtype), a boolean freeze flag, RIN Float64."""
    samples = s.drop(columns=["log_isch", "AGE", "SEX", "DTHHRDY"]).rename_axis("SAMPID").reset_index()
    samples["subject_id"] = [f"SUBJ{i}" for i in range(len(samples))]
    samples["SMRIN"] = samples.SMRIN.astype("Float64")
    blank = s.DTHHRDY.isna().to_numpy()  # the blank sample is blank in these too
    samples["SMAFRZE"] = pd.array(np.where(blank, None, np.arange(len(samples)) % 3 == 0), dtype="boolean")
    subjects = pd.DataFrame({"AGE": s.AGE.to_numpy(), "DTHHRDY": s.DTHHRDY.array,
                             "SEX": pd.array(np.where(blank, None, s.SEX.astype(str)), dtype="string")},
                            index=pd.Index(samples.subject_id, name="SUBJID"))
    return samples, subjects


def test_nullable_dtypes_through_statsmodels_and_the_batched_regression():
    """(b) Int64 Hardy scale, autolysis score and ischemic time with pd.NA, Float64 RIN, string sex, a boolean
    category: notebook 05's calls (covariates, levels, designs, residuals, variance partition, the inspected
    statsmodels formula, diagnostics, model choice) run and give the numbers of plain dtypes."""
    t = pd.concat([_gtex_tissue("Lung"), _gtex_tissue("Liver", seed=3, prefix="L")])
    samples, subjects = _as_download(t)
    assert isinstance(subjects.DTHHRDY.dtype, pd.Int64Dtype) and subjects.DTHHRDY.isna().sum() == 2
    e, f = _tables(t)
    s = cf.sample_covariates(samples, subjects, e.index)
    assert {c: str(s[c].dtype) for c in ["SMTSISCH", "SMATSSCR", "DTHHRDY", "SMRIN", "SEX", "SMAFRZE"]} == {
        "SMTSISCH": "Int64", "SMATSSCR": "Int64", "DTHHRDY": "Int64", "SMRIN": "Float64", "SEX": "string",
        "SMAFRZE": "boolean"}
    names = ["log_ischemic_time", "RIN", "centre", "sex", "SMATSSCR", "DTHHRDY", "SMAFRZE", "SMNABTCH"]
    spec = cf.confounder_spec(names, columns=s.columns)
    levels = cf.confounder_levels(s, spec, min_level_size=5)
    assert set(levels[levels.term == "DTHHRDY"].level) == {"0", "1", "2", "4"}
    designs, notes = cf.build_designs(s, min_samples=10, confounders=spec, min_level_size=5)
    # notebook 05's inspected model: a statsmodels formula on the nullable frame, equal to the batched one
    fits = {}
    for tissue, d in designs.items():
        frame = s.loc[d.matrix.index].assign(y=e.loc[d.matrix.index, "autolysis_gene"])
        rhs, frame = cf.ols_formula(frame, spec, d.terms)
        assert "SMATSSCR" in rhs and "C(DTHHRDY)" in rhs and "C(SMAFRZE)" in rhs and "C(SEX)" in rhs
        fits[tissue] = fit = smf.ols("y ~ " + rhs, frame).fit()
        batched = cf.residualize(frame[["y"]], d.matrix)[:, 0]
        np.testing.assert_allclose(fit.resid.to_numpy(), batched, atol=1e-9)
    assert list(designs) == ["Liver", "Lung"] and (notes.samples == 40).all()
    assert notes.resid_df.tolist() == [fits[t].df_resid for t in notes.tissue] and (notes.resid_df > 0).all()
    res = cf.residualize_expression_by_tissue(e, designs, gene_min_mean=1.0)
    feats = cf.residualize_by_tissue(f, designs, method="forward")
    part = cf.variance_by_confounder(f, e, designs, symbols=pd.Series(e.columns, index=e.columns))
    # the same cohort with plain dtypes (floats with NaN, objects) gives the same numbers
    plain = s.astype({c: ("float64" if c in ("SMTSISCH", "SMATSSCR", "SMRIN") else object)
                      for c in ["SMTSISCH", "SMATSSCR", "SMRIN", "DTHHRDY", "SEX", "SMAFRZE"]})
    for c in ["DTHHRDY", "SEX", "SMAFRZE"]:
        plain[c] = plain[c].where(s[c].notna(), np.nan)
    assert not any(isinstance(dt, pd.api.extensions.ExtensionDtype) for dt in plain.dtypes)
    d_plain, _ = cf.build_designs(plain, min_samples=10, confounders=spec, min_level_size=5)
    for tissue, d in designs.items():
        pd.testing.assert_frame_equal(d.matrix, d_plain[tissue].matrix)
    pd.testing.assert_frame_equal(res, cf.residualize_expression_by_tissue(e, d_plain, gene_min_mean=1.0))
    assert feats.notna().all().all() and part.genes.p.between(0, 1).all()
    # the statsmodels frame of a list of terms (no design) reads the nullable columns too: NaN rows dropped
    rhs, frame = cf.ols_formula(s.assign(y=e.G0), spec, ["SMATSSCR", "DTHHRDY"])
    assert smf.ols("y ~ " + rhs, frame).fit().nobs == len(s) - 2
    diag = cf.strongest_columns(part, f, e, s, designs, ["SMATSSCR", "DTHHRDY"], spec=spec)
    assert diag.fitted.residual.notna().all()
    choice = cf.compare_model_choices(f, e, designs, methods=("all",), n_shuffles=5, top_genes=None)
    assert choice.expression_p.between(0, 1).all()


def test_a_tissue_without_residual_degrees_of_freedom_is_skipped_with_its_row(caplog):
    """(c) A tissue whose design leaves too few residual degrees of freedom is skipped (logged, a row says
    why) while the other is fitted; when every tissue is, the error names the confounders and the fix."""
    lung = _gtex_tissue("Lung")
    liver = _gtex_tissue("Liver", seed=5, prefix="L").iloc[:4]  # 4 samples, 3 numbers + intercept: rank 4
    s = pd.concat([lung, liver])
    spec = cf.confounder_spec(["log_ischemic_time", "RIN", "SMATSSCR"])
    with caplog.at_level(logging.WARNING, logger="histo_utils.confounders"):
        designs, notes = cf.build_designs(s, min_samples=4, confounders=spec)
    assert list(designs) == ["Lung"]
    row = notes.set_index("tissue").loc["Liver"]
    assert row.status == "skipped" and row.design_columns == 0 and (row.samples, row["rank"], row.resid_df) == (4, 4, 0)
    assert row.note.startswith("skipped: 4 samples and a design of rank 4") and "it needs 5 samples" in row.note
    assert any(r.getMessage().startswith("Liver: skipped:") for r in caplog.records)
    assert notes.set_index("tissue").loc["Lung", "status"] == "fitted"
    # notebook 06 spends design_columns - 1 per tissue: a skipped tissue spends nothing
    assert notes.design_columns.sum() == designs["Lung"].matrix.shape[1]
    # a stricter minimum: Lung's 29 residual degrees of freedom are too few for 30, and no tissue is left
    with pytest.raises(ValueError, match=r"No tissue has 30 residual degree\(s\) of freedom left with the "
                                         r"confounders \['log_ischemic_time', .*'SMGEBTCH'\] \(Lung: 40 samples, "
                                         r"design rank 11\)\. Use fewer confounders .* Lung needs at least 41"):
        cf.build_designs(_gtex_tissue("Lung"), min_samples=10, confounders=cf.confounder_spec(JONES9),
                         min_level_size=5, min_resid_df=30)
    with pytest.raises(ValueError, match="min_resid_df=0"):
        cf.build_designs(s, min_resid_df=0)


def test_batched_residuals_equal_statsmodels_on_a_pooled_design():
    """(d) The pooled and merged levels of a design are what the statsmodels formula fits: the batched
    residuals of every column equal statsmodels OLS residuals."""
    s = _gtex_tissue()
    spec = cf.confounder_spec(JONES9)
    designs, _ = cf.build_designs(s, min_samples=10, confounders=spec, min_level_size=5)
    d = designs["Lung"]
    assert d.dropped["pooled_levels"] and d.dropped["merged_levels"]
    e, _ = _tables(s)
    res = cf.residualize_expression_by_tissue(e, designs, gene_min_mean=1.0)
    rhs, frame = cf.ols_formula(s.loc[d.matrix.index], spec, d.terms)
    assert "SMNABTCH" not in rhs and "C(SMCENTER)" in rhs and "C(AGE)" in rhs
    assert set(frame.SMCENTER) == {"B1", "C1", cf.POOLED_LEVEL} and set(frame.AGE) == {"50-59", "60-69"}
    for gene in e.columns:
        fit = smf.ols("y ~ " + rhs, frame.assign(y=e.loc[d.matrix.index, gene])).fit()
        np.testing.assert_allclose(fit.resid.to_numpy(), res.loc[d.matrix.index, gene].to_numpy(), atol=1e-9)
    assert fit.df_model == d.matrix.shape[1] - 1
