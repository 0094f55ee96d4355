"""Open confounders: any numeric or categorical column of the sample attributes or subject phenotypes."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from histo_utils import confounders as cf


def _table(n=120, seed=5):
    """Two tissues; a categorical batch (SMNABTCH, 4 levels + one singleton) with a planted effect on
    gene 'batch_gene', autolysis score on 'autolysis_gene', Hardy scale and age brackets without effect."""
    rng = np.random.default_rng(seed)
    batch = rng.choice(["BP-1", "BP-2", "BP-3", "BP-4"], n).astype(object)
    batch[0] = "BP-lonely"
    s = pd.DataFrame({"SMTS": np.repeat(["Lung", "Liver"], n // 2),
                      "SMTSISCH": rng.uniform(-5, 1200, n), "SMRIN": rng.uniform(5, 9, n),
                      "SMATSSCR": rng.integers(0, 4, n).astype(float), "SMNABTCH": batch,
                      "DTHHRDY": rng.choice([0.0, 1.0, 2.0, 4.0], n), "AGE": rng.choice(["20-29", "50-59", "60-69"], n),
                      "SEX": rng.choice([1, 2], n)}, index=[f"GTEX-{i:04d}-0001-SM-{i}" for i in range(n)])
    shift = pd.Series({"BP-1": 0.0, "BP-2": 3.0, "BP-3": -2.0, "BP-4": 1.0, "BP-lonely": 0.0})
    e = pd.DataFrame(rng.normal(size=(n, 5)), index=s.index, columns=[f"G{i}" for i in range(5)])
    e["batch_gene"] = s.SMNABTCH.map(shift).to_numpy() + rng.normal(size=n)
    e["autolysis_gene"] = 1.5 * s.SMATSSCR + rng.normal(size=n)
    return s.assign(log_isch=cf.log_ischemic_time(s.SMTSISCH)), e


JONES = ["log_ischemic_time", "RIN", "SMATSSCR", "DTHHRDY", "SMNABTCH", "AGE", "sex"]


def test_spec_types_gtex_columns_and_refuses_unknown_names_with_the_closest():
    spec = cf.confounder_spec(JONES + ["SMTSPAX:log"])
    assert spec["SMATSSCR"] == ("SMATSSCR", "numeric") and spec["DTHHRDY"] == ("DTHHRDY", "category")
    assert spec["SMNABTCH"] == ("SMNABTCH", "category") and spec["AGE"] == ("AGE", "age_bracket")
    assert spec["log_ischemic_time"] == ("SMTSISCH", "log_ischemic") and spec["SMTSPAX:log"] == ("SMTSPAX", "log")
    # the default five are unchanged
    assert cf.confounder_spec(["log_ischemic_time", "RIN", "centre", "age", "sex"]) == cf.DEFAULT_CONFOUNDERS
    with pytest.raises(ValueError, match=r"'SMNABTCHX' not available\. Did you mean 'SMNABTCH'\?"):
        cf.confounder_spec(["SMNABTCHX"])
    with pytest.raises(ValueError, match=r"Did you mean 'SMATSSCR'"):
        cf.confounder_spec(["smatsscr"])
    with pytest.raises(ValueError, match=r"kind 'logg' not available"):
        cf.confounder_spec(["SMTSPAX:logg"])
    with pytest.raises(ValueError, match=r"needs column 'SMGEBTCH', absent .*closest: 'SMNABTCH'.*sample attributes"):
        cf.confounder_spec(["SMGEBTCH"], columns=["SMNABTCH", "SMRIN"])
    with pytest.raises(ValueError, match="listed twice"):
        cf.confounder_spec(["RIN", "RIN"])


def test_age_brackets_become_midpoints_and_bad_values_are_named():
    np.testing.assert_array_equal(cf.age_bracket_midpoint(["20-29", "60-69", None, 45]), [24.5, 64.5, np.nan, 45.0])
    with pytest.raises(ValueError, match="over 70"):
        cf.age_bracket_midpoint(["20-29", "over 70"])
    with pytest.raises(ValueError, match=r"non-numeric values \['high'\]"):
        cf.transform(pd.Series([1.0, "high"], name="SMATSSCR"), "numeric")


def test_levels_report_counts_ranges_and_levels_too_small():
    s, _ = _table()
    lv = cf.confounder_levels(s, cf.confounder_spec(JONES), min_level_size=2)
    batch = lv[lv.term == "SMNABTCH"].set_index("level")
    assert batch.samples.sum() == len(s) and batch.loc["BP-lonely", "samples"] == 1
    assert batch.loc["BP-lonely", "groups_too_few"] == 1 and batch.loc["BP-1", "groups_too_few"] == 0
    age = lv[lv.term == "AGE"].iloc[0]
    assert (age["min"], age["max"]) == (24.5, 64.5) and age.kind == "age_bracket"
    assert set(lv[lv.term == "DTHHRDY"].level) == {"0.0", "1.0", "2.0", "4.0"}


def test_planted_batch_effect_is_recovered_by_the_variance_partition():
    s, e = _table()
    spec = cf.confounder_spec(JONES)
    designs, notes = cf.build_designs(s, min_samples=10, confounders=spec, min_level_size=2)
    assert set(designs) == {"Liver", "Lung"}
    lung = designs["Lung"]
    assert lung.dropped["merged_levels"] == {"SMNABTCH": ["BP-lonely"]}  # the singleton merged, reported
    assert len(lung.terms["SMNABTCH"]) == 3 and len(lung.terms["DTHHRDY"]) == 3 and lung.terms["AGE"] == ["AGE"]
    for t, d in designs.items():
        vp = cf.variance_partition(e.loc[d.matrix.index], d)
        top = vp[vp.term != "(all)"].sort_values("unique_r2_adj").groupby("column").tail(1).set_index("column").term
        assert top["batch_gene"] == "SMNABTCH" and top["autolysis_gene"] == "SMATSSCR", t
        b = vp[(vp.column == "batch_gene") & (vp.term == "SMNABTCH")].iloc[0]
        planted = 3.25 / (3.25 + 1.0)  # variance of the level shifts (0, 3, -2, 1) over shifts + unit noise
        assert abs(b.partial_r2 - planted) < 0.1 and b.unique_r2 > 0.4 and b.p < 1e-10 and b.df == 3
        noise = vp[vp.column.isin(["G0", "G1", "G2", "G3", "G4"]) & (vp.term == "SMNABTCH")]
        assert noise.unique_r2.max() < 0.25  # no planted effect: no large share
    # the regression removes the batch: residual batch means are zero
    res = cf.residualize_by_tissue(e, designs)
    level = s.loc[res.index, "SMNABTCH"].replace({"BP-lonely": "BP-1"})  # the singleton was merged into BP-1
    means = res.batch_gene.groupby([s.loc[res.index, "SMTS"], level]).mean()
    assert means.abs().max() < 1e-10


def test_batched_regression_equals_statsmodels_for_an_open_list():
    s, e = _table()
    spec = cf.confounder_spec(JONES)
    d = cf.build_design(s[s.SMTS == "Lung"], confounders=spec, min_level_size=1)
    rhs, frame = cf.ols_formula(s.loc[d.matrix.index], spec, d.terms)
    assert "C(SMNABTCH)" in rhs and "C(DTHHRDY)" in rhs and "AGE__age_bracket" in rhs and "log_isch" in rhs
    fit = smf.ols("y ~ " + rhs, frame.assign(y=e.loc[d.matrix.index, "batch_gene"])).fit()
    batched = cf.residualize(e.loc[d.matrix.index, ["batch_gene"]].to_numpy(), d.matrix.to_numpy())[:, 0]
    np.testing.assert_allclose(fit.resid.to_numpy(), batched, atol=1e-9)


def test_diagnostics_work_for_open_terms():
    s, e = _table()
    spec = cf.confounder_spec(["SMATSSCR", "SMNABTCH", "AGE"])
    designs, _ = cf.build_designs(s, min_samples=10, confounders=spec)
    feats = pd.DataFrame(np.random.default_rng(0).normal(size=(len(s), 3)), index=s.index, columns=["0_0", "0_1", "1_0"])
    part = cf.variance_by_confounder(feats, e, designs, symbols=pd.Series(e.columns, index=e.columns), gene_min_mean=-10)
    diag = cf.strongest_columns(part, feats, e, s, designs, list(spec), spec=spec)
    genes = diag.chosen[diag.chosen.kind == "gene"].set_index("confounder").column
    assert genes["SMNABTCH"] == "batch_gene" and genes["SMATSSCR"] == "autolysis_gene"
    age = diag.scatter[diag.scatter.confounder == "AGE"]
    assert set(age.x.unique()) <= {24.5, 54.5, 64.5}  # shown as midpoints
    assert cf.numeric_terms(spec) == ("SMATSSCR", "AGE") and cf.source_columns(spec)["SMNABTCH"] == "SMNABTCH"
