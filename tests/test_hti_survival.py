"""HTI (hti), labels and OOD bands and the ensemble (trait_models), patient splits, the survival wiring."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import hti, metrics, splits, survival, trait_models, truth


def test_hti_paper_cases_and_k3():
    both = np.ones((90, 2), int)
    assert hti.hti(both) == 0.0  # one combination everywhere
    thirds = np.array([[1, 0]] * 30 + [[0, 1]] * 30 + [[1, 1]] * 30)
    assert hti.hti(thirds) == pytest.approx(1.0)  # A, B, Both in equal thirds
    k3 = np.array([[(c >> j) & 1 for j in range(3)] for c in range(1, 8)] * 10)
    assert hti.hti(k3) == pytest.approx(1.0)  # all 7 combinations equally
    half = np.array([[1, 0, 0]] * 50 + [[0, 1, 1]] * 50)
    assert hti.hti(half) == pytest.approx(np.log(2) / np.log(7))
    # tiles without a positive trait: left out by default, or a category of their own
    with_empty = np.vstack([thirds, np.zeros((30, 2), int)])
    assert hti.hti(with_empty) == pytest.approx(1.0)
    assert hti.hti(with_empty, empty="category") == pytest.approx(1.0)  # 4 equal quarters, C = 4
    assert np.isnan(hti.hti(np.zeros((5, 2), int)))
    with pytest.raises(ValueError, match="k >= 2"):
        hti.hti(np.ones((5, 1), int))
    h, lo, hi = hti.hti_bootstrap(thirds, n_boot=200, seed=0)
    assert h == pytest.approx(1.0) and lo <= h + 1e-12 and 0.9 < lo <= hi <= 1.0 + 1e-12


def test_labels_and_ood_bands():
    v = pd.Series(np.arange(101, dtype=float), index=[f"s{i}" for i in range(101)])
    lab = trait_models.trait_labels(v)
    assert lab.loc["s100", "label"] == 1 and lab.loc["s0", "label"] == 0 and lab.loc["s50", "label"] == 0
    assert not lab.loc["s20", "ood"] and lab.loc["s21", "ood"] and lab.loc["s79", "ood"] and not lab.loc["s80", "ood"]
    assert lab.loc["s25", "ood_near"] and not lab.loc["s50", "ood_near"] and lab.loc["s75", "ood_near"]
    assert lab.ood.sum() == 59 and lab.ood_near.sum() == 20


def test_patient_splits_do_not_leak():
    patients = [f"TCGA-{i:02d}" for i in range(50)]
    test, drawn = splits.split_patients(patients, seed=3)
    assert len(test) == 5 and len(drawn) == 5
    for train, val in drawn:
        assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
        assert set(train) | set(val) | set(test) == set(patients)
    assert splits.split_patients(patients, seed=3) == (test, drawn)  # seeded
    splits.check_patient_splits(test, drawn)
    with pytest.raises(ValueError, match="two of test/train/validation"):
        splits.check_patient_splits(test, [(drawn[0][0] + test[:1], drawn[0][1])])


def test_ensemble_vote_and_scores():
    p = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]])
    assert trait_models.ensemble_vote(p).tolist() == [1, 1, 1, 0]
    assert trait_models.ensemble_vote(p[:2]).tolist() == [1, 0, 0, 0]  # ties count as negative
    s = trait_models.slide_scores([1, 0, 1, 1], ["a", "a", "b", "b"])
    assert s.to_dict() == {"a": 50.0, "b": 100.0}


def test_survival_wiring_detects_a_planted_effect():
    rng = np.random.default_rng(0)
    n = 200
    hti_v = rng.uniform(0, 1, n)
    hazard = np.exp(1.5 * hti_v)
    t = rng.exponential(10 / hazard)
    c = rng.exponential(20, n)
    time, event = np.minimum(t, c), (t <= c).astype(int)
    res = survival.logrank_groups(time, event, hti_v > 0.5)
    assert res.p < 0.01 and sum(res.n) == n
    assert res.km[True].median_survival_time_ < res.km[False].median_survival_time_
    null = survival.logrank_groups(time, event, rng.random(n) > 0.5)
    assert null.p > 0.01
    summ = survival.cox_hti(pd.DataFrame({"time": time, "event": event, "HTI": hti_v}))
    assert abs(summ.loc["HTI", "coef"] - 1.5) < 3 * summ.loc["HTI", "se(coef)"]  # the planted log hazard ratio
    assert summ.loc["HTI", "p"] < 1e-4
    # an HTI of 0 everywhere (tile models calling one combination) cannot be estimated: NaN row, others fitted
    age = rng.normal(6, 1, n)
    flat = survival.cox_hti(pd.DataFrame({"time": time, "event": event, "HTI": 0.0, "age": age}),
                      covariates=["HTI", "age"])
    assert list(flat.index) == ["HTI", "age"] and np.isnan(flat.loc["HTI", "coef"])
    assert np.isfinite(flat.loc["age", "coef"]) and (flat.penalizer == 0).all()
    with pytest.raises(ValueError, match="No events"):
        survival.cox_hti(pd.DataFrame({"time": time, "event": 0, "HTI": hti_v}))


def test_hti_from_proportions_and_cartography():
    # weights by combination code: the paper's three equal thirds, and the empty code left out
    assert hti.hti_from_proportions(np.array([5.0, 1, 1, 1]), k=2) == pytest.approx(1.0)
    assert hti.hti_from_proportions(np.array([0.0, 0, 0, 2]), k=2) == 0.0
    assert np.isnan(hti.hti_from_proportions(np.array([3.0, 0, 0, 0]), k=2))
    assert hti.hti_from_proportions(np.array([1.0, 1, 1, 1]), k=2, empty="category") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k >= 2"):
        hti.hti_from_proportions(np.ones(2), k=1)
    with pytest.raises(ValueError, match="one per combination"):
        hti.hti_from_proportions(np.ones(3), k=2)
    # tiles at grid positions with an offset origin; the missing cell stays empty
    tiles = pd.DataFrame({"x": [10, 74, 10, 138], "y": [5, 5, 69, 69], "size0": 64})
    grid = hti.cartography(tiles, np.array([[1, 0], [0, 1], [1, 1], [0, 0]]), fill=-1)
    assert grid.shape == (2, 3, 2)
    assert grid[0, 0].tolist() == [1, 0] and grid[0, 1].tolist() == [0, 1] and grid[1, 0].tolist() == [1, 1]
    assert grid[1, 2].tolist() == [0, 0] and grid[0, 2].tolist() == [-1, -1]


def test_auc_matches_pair_counting_and_scikit_learn():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.integers(0, 2, 40)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert metrics.auc(s, y) == pytest.approx(brute)
    assert np.isnan(metrics.auc(s, np.ones(40)))
    from sklearn.metrics import roc_auc_score

    for i in range(50):  # continuous, tied and float32-rounded scores
        s = rng.random(60).astype(np.float32).astype(float)
        s = np.round(s, 1) if i % 2 else s
        y = rng.integers(0, 2, 60)
        assert metrics.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="one label per score"):
        metrics.auc([0.1, 0.2], [0, 1, 1])


def _slides_table():
    # 10 patients, one with a second slide; two traits
    pts = [f"TCGA-SY-{i:04d}" for i in range(10)]
    vals = pd.DataFrame({"A": np.arange(10.0), "B": np.arange(10.0)[::-1]}, index=pts)
    slides = pd.DataFrame({"image_id": [f"{p}-01Z-00-DX1" for p in pts] + [f"{pts[9]}-01Z-00-DX2"],
                           "patient": pts + [pts[9]]})
    slides["chosen"] = slides.image_id.str.endswith("DX1")
    return vals, slides


def test_label_slides_and_survival_set():
    vals, slides = _slides_table()
    lab = trait_models.label_slides(vals, slides).set_index("image_id")
    # a patient's slides share its labels; percentiles are over patients, not slides
    assert lab.loc["TCGA-SY-0009-01Z-00-DX2", "A:label"] == lab.loc["TCGA-SY-0009-01Z-00-DX1", "A:label"] == 1
    assert lab["A:percentile"].max() == 1.0 and lab.loc["TCGA-SY-0004-01Z-00-DX1", "A:ood"]
    assert (lab["A:ood"] == lab["B:ood"]).all()  # B reversed: same band
    surv = survival.survival_set(lab.reset_index(), ["A", "B"], test_patients=["TCGA-SY-0000", "TCGA-SY-0009"])
    assert set(surv.patient) == {"TCGA-SY-0000", "TCGA-SY-0009"} | {f"TCGA-SY-{i:04d}" for i in range(2, 8)}
    assert surv.image_id.is_unique and surv.image_id.str.endswith("DX1").all()  # one chosen slide per patient
    assert (surv.set == "test").sum() == 2
    # a slide OOD for only one trait is not in the survival set
    vals2 = vals.assign(B=[0, 9, 1, 8, 2, 7, 3, 6, 4, 5.0])
    lab2 = trait_models.label_slides(vals2, slides)
    surv2 = survival.survival_set(lab2, ["A", "B"], test_patients=[])
    both = lab2[lab2["A:ood"] & lab2["B:ood"] & lab2.chosen]
    assert set(surv2.image_id) == set(both.image_id) and len(surv2) < (lab2["A:ood"] & lab2.chosen).sum()


def test_ensemble_takes_top_models_by_validation_auc():
    hist = pd.DataFrame({"trait": ["A"] * 5, "split": range(5), "val_score": [0.6, 0.9, 0.7, 0.95, 0.5]})
    prob = pd.DataFrame({("A", s): v for s, v in enumerate([[0.9, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1],
                                                            [0.1, 0.9]])})
    prob.columns = pd.MultiIndex.from_tuples(prob.columns)
    calls, members = trait_models.ensemble_predictions(prob, hist, top=3)
    assert sorted(members.split) == [1, 2, 3]  # AUC 0.9, 0.7, 0.95
    assert calls.A.tolist() == [1, 0]  # tile 2: splits 1 and 3 say no, 2 says yes


def test_slide_hti_and_evaluation_tables():
    tile_slides = np.array(["s1"] * 6 + ["s2"] * 6)
    calls = np.array([[1, 0], [0, 1], [1, 1]] * 2 + [[1, 1]] * 6)
    h = hti.slide_hti(calls, tile_slides, n_boot=50, seed=0)
    assert h.loc["s1", "hti"] == pytest.approx(1.0) and h.loc["s2", "hti"] == 0.0
    assert h.loc["s1", "comb_3"] == pytest.approx(1 / 3) and h.loc["s2", "hti_high"] == 0.0
    slides = pd.DataFrame({"patient": ["p1", "p2"], "A:label": [1, 0], "A:percentile": [1.0, 0.0],
                           "A:ood": [False, False], "A:ood_near": [False, False]}, index=["s1", "s2"])
    prob = pd.DataFrame({("A", 0): np.r_[np.full(6, 0.9), np.full(6, 0.2)]})
    prob.columns = pd.MultiIndex.from_tuples(prob.columns)
    ev, scores = trait_models.evaluate_slides(prob, pd.DataFrame({"A": (prob[("A", 0)] > 0.5).astype(int)}), tile_slides,
                                    slides, test_patients=["p1", "p2"])
    assert set(ev.model) == {"split0", "ensemble"} and (ev.auc == 1.0).all()
    assert scores.set_index("image_id").score.to_dict() == {"s1": 100.0, "s2": 0.0}
    t1 = trait_models.table1(ev)
    assert t1.loc[0, "test_runs_mean"] == 1.0 and t1.loc[0, "test_ensemble"] == 1.0
    # a trait whose test slides are all of one class has no test AUC: it keeps its row, NaN there
    ev_b = pd.concat([ev, ev[ev.set != "test"].assign(trait="B")])
    ev_b = pd.concat([ev_b, pd.DataFrame({"trait": ["B"], "set": ["OOD-all"], "model": ["ensemble"], "auc": [0.7]})])
    t1 = trait_models.table1(ev_b).set_index("trait")
    assert t1.index.tolist() == ["A", "B"] and np.isnan(t1.loc["B", "test_runs_mean"])
    assert np.isnan(t1.loc["B", "test_ensemble"]) and t1.loc["B", "OOD-all_ensemble"] == 0.7


def _clone_slide(rows=8, cols=10):
    """One slide's tile grid: trait A on in the left half, off in the right half."""
    ys, xs = np.mgrid[0:rows, 0:cols]
    tiles = pd.DataFrame({"image_id": "s", "x": xs.ravel() * 64, "y": ys.ravel() * 64, "size0": 64})
    return tiles, (xs.ravel() < cols // 2).astype(int)


def test_denoise_logits_removes_isolated_errors_and_keeps_clones():
    tiles, truth = _clone_slide()
    p = np.where(truth == 1, 0.8, 0.2)
    p[3 * 10 + 2] = 0.1  # isolated false negative inside the left clone
    p[3 * 10 + 7] = 0.9  # isolated false positive inside the right clone
    assert ((p > 0.5) != truth).sum() == 2
    z = hti.denoise_logits(tiles, p, sigma=0.75)
    assert ((z > 0) == truth).all()  # both errors voted down by their neighbours, the border kept
    assert np.allclose(hti.denoise_logits(tiles, p, sigma=0), np.log(p / (1 - p)))
    # a slide's edge is no border of zeros: a uniform map stays uniform up to its corners
    assert np.allclose(hti.denoise_logits(tiles, np.full(len(tiles), 0.8), sigma=1.0), np.log(4))
    with pytest.raises(ValueError, match="sigma"):
        hti.denoise_logits(tiles, p, sigma=-1)


def test_adjusted_proportions_undo_a_known_misclassification():
    m = hti.misclassification_matrix([0.1, 0.05], [0.2, 0.1])
    assert m.shape == (4, 4) and np.allclose(m.sum(1), 1)
    # trait 0 is bit 0: a tile truly "A only" (code 1) is called "B only" (code 2) with P fnr_A * fpr_B
    assert m[1, 2] == pytest.approx(0.2 * 0.05)
    true_p = np.array([0.0, 0.7, 0.0, 0.3])
    q = true_p @ m  # the expected calls
    assert hti.hti_from_proportions(q, k=2) > hti.hti_from_proportions(true_p, k=2) + 0.15  # errors add entropy
    assert np.allclose(hti.adjust_proportions(q, m), true_p, atol=1e-6)
    # a homogeneous slide's spurious calls are removed, never made negative
    p = hti.adjust_proportions(np.array([0.0, 0.95, 0.05, 0.0]), m)
    assert (p >= 0).all() and p.sum() == pytest.approx(1) and hti.hti_from_proportions(p, k=2) < 0.05
    with pytest.raises(ValueError, match="fpr"):
        hti.misclassification_matrix([0.6], [0.5])


def test_corrected_hti_recovers_homogeneous_and_mixed_slides_from_validation_labels():
    """A split model with scattered 10 % errors: the corrected HTI is near the truth where the paper's is not."""
    rng = np.random.default_rng(0)
    t1, half = _clone_slide()
    slides_t, truths = [], {}
    # validation slides v0 (low for both traits) and v1 (high for both); held-out h (A+B | B: mixed), u (A+B)
    for iid, a_state, b_state in (("v0", 0 * half, 0 * half), ("v1", 1 + 0 * half, 1 + 0 * half),
                                  ("h", half, 1 + 0 * half), ("u", 1 + 0 * half, 1 + 0 * half)):
        slides_t.append(t1.assign(image_id=iid))
        truths[iid] = np.c_[a_state, b_state]
    tiles = pd.concat(slides_t, ignore_index=True)
    true = np.vstack([truths[i] for i in ("v0", "v1", "h", "u")])
    cols = pd.MultiIndex.from_tuples([("A", 0), ("B", 0)], names=["trait", "split"])
    calls = true ^ (rng.random(true.shape) < 0.1)
    prob = pd.DataFrame(np.where(calls == 1, 0.7, 0.3), columns=cols)
    lab = pd.DataFrame({"patient": ["P0", "P1", "P2", "P3"], "A:label": [0, 1, 1, 1], "B:label": [0, 1, 1, 1],
                        "A:ood": False, "B:ood": False}, index=pd.Index(["v0", "v1", "h", "u"], name="image_id"))
    splits = [(["P2", "P3"], ["P0", "P1"])]
    res = hti.corrected_hti(tiles, prob, lab, splits, sigma=0.0, n_boot=50, seed=1)
    paper = hti.slide_hti(calls, tiles.image_id)
    assert set(res.rates.trait) == {"A", "B"} and (res.rates[["n_low", "n_high"]] == 1).all().all()
    assert res.rates[["fpr", "fnr"]].stack().between(0.03, 0.2).all()  # the planted 10 %, seen on 2 slides
    u, h = res.slides.loc["u"], res.slides.loc["h"]
    assert paper.loc["u", "hti"] > 0.3 and u.hti_corrected < 0.1  # homogeneous: the errors' entropy removed
    assert abs(paper.loc["h", "hti"] - np.log(2) / np.log(3)) > 0.1
    assert abs(h.hti_corrected - np.log(2) / np.log(3)) < 0.1  # A+B and B in equal parts: true HTI log_3 2
    assert u.hti_corrected_low <= u.hti_corrected <= u.hti_corrected_high
    # a trait the model did not learn (validation calls inverted) is left uncorrected, not refused
    bad = prob.copy()
    on_val = tiles.image_id.isin(["v0", "v1"]).to_numpy()
    bad.loc[on_val, ("B", 0)] = 1 - bad.loc[on_val, ("B", 0)]
    chance = hti.corrected_hti(tiles, bad, lab, splits, sigma=0.0, n_boot=5).rates.set_index("trait")
    assert chance.loc["B", "fpr"] + chance.loc["B", "fnr"] > 1.5 and not chance.loc["B", "used"]
    assert chance.loc["A", "used"]
    # denoising alone already removes scattered errors on these large clones
    den = hti.corrected_hti(tiles, prob, lab, splits, sigma=1.0, n_boot=0)
    assert den.slides.loc["u", "hti_corrected"] < 0.05 and den.rates.fpr.max() < 0.05
    # same seed, same numbers
    again = hti.corrected_hti(tiles, prob, lab, splits, sigma=0.0, n_boot=50, seed=1)
    pd.testing.assert_frame_equal(res.slides, again.slides)


def test_label_counts_and_held_out_slides():
    vals, slides = _slides_table()
    lab = trait_models.label_slides(vals, slides).set_index("image_id")
    drawn = [(["TCGA-SY-0001", "TCGA-SY-0002"], ["TCGA-SY-0003"]), (["TCGA-SY-0003"], ["TCGA-SY-0009"])]
    held = trait_models.held_out_slides(lab, drawn)
    assert not held["TCGA-SY-0009-01Z-00-DX2"] and held["TCGA-SY-0000-01Z-00-DX1"] and held.sum() == 6
    counts = trait_models.label_counts(lab, ["A"], ["TCGA-SY-0000"], drawn).iloc[0]
    assert counts["in-distribution"] + counts["OOD-all"] == len(lab)
    assert counts["test (in-dist.)"] == 1  # patient 0 is at the bottom: not OOD
    assert counts["validation per split"] == 1  # split 0: patient 3 (OOD) -> 0; split 1: patient 9, two slides -> 2


def test_hti_comparisons_and_cox_table():
    rng = np.random.default_rng(0)
    n = 120
    hti_v = rng.uniform(0, 1, n)
    t = rng.exponential(10 / np.exp(1.5 * hti_v))
    c = rng.exponential(20, n)
    surv = pd.DataFrame({"hti0": hti_v, "hti_corrected": hti_v, "true_hti0": hti_v, "months": np.minimum(t, c),
                         "OS": (t <= c).astype(int), "age_at_initial_pathologic_diagnosis": rng.normal(60, 10, n),
                         "ajcc_pathologic_tumor_stage": rng.choice(["Stage I", "Stage II", "Stage III"], n)},
                        index=[f"s{i}" for i in range(n)])
    comps = survival.hti_comparisons(surv, split=0.5, extremes=(0.3, 0.7))
    assert [name for name, _ in comps][-1].endswith("(oracle)") and len(comps) == 4
    extremes = comps[1][1]
    assert len(extremes) == ((hti_v > 0.7) | (hti_v <= 0.3)).sum()  # the middle is left out
    assert len(survival.hti_comparisons(surv.drop(columns="true_hti0"))) == 3
    cox = survival.cox_table(surv, planted={"HTI": 1.5, "age_decades": 0.0, "stage": 0.0})
    assert list(dict.fromkeys(cox.fit)) == ["estimated HTI", "corrected HTI", "true HTI (oracle)"]
    est = cox[(cox.fit == "estimated HTI") & (cox.covariate == "HTI")].iloc[0]
    assert abs(est.coef - 1.5) < 3 * est["se(coef)"] and est.planted_coef == 1.5
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histo_utils import figures

    res = survival.logrank_comparisons(surv, [("HTI", surv.hti0 > 0.5), ("none high", surv.hti0 > 2)])
    row, one = res.table.iloc[0], res.table.iloc[1]
    ref = survival.logrank_groups(surv.months, surv.OS, surv.hti0 > 0.5)
    assert row["p"] == ref.p and (row["n_low"], row["n_high"]) == ref.n
    assert np.isnan(one["p"]) and one["n_high"] == 0 and not (res.curves.comparison == "none high").any()
    fig, table = figures.logrank_panels(res)
    assert table is res.table and fig.axes[1].get_title() == "none high\none group only (n = 120): no test"
    plt.close("all")


def test_combination_names():
    assert hti.combination_names(["A", "B"]) == ["none", "A", "B", "A+B"]
    assert hti.combination_names(["A", "B", "C"])[5] == "A+C"


def test_hti_by_subtype_panel_with_and_without_subtypes(tmp_path):
    """A TCGA folder without a subtype table gives an empty, explained panel; with subtypes, a Kruskal-Wallis test."""
    import matplotlib.pyplot as plt

    from histo_utils import figures
    from histo_utils.plotting import save_figure

    rng = np.random.default_rng(0)
    surv = pd.DataFrame({"hti0": np.r_[rng.uniform(0, 0.3, 20), rng.uniform(0.6, 1, 20)],
                         "subtype": ["LumA"] * 20 + ["Basal"] * 20})
    fig, table, why = figures.hti_by_subtype(survival.hti_by_subtype(surv))
    assert why is None and list(table.subtype) == ["Basal", "LumA"] and table["count"].tolist() == [20, 20]
    assert "Kruskal-Wallis p = " in fig.axes[0].get_title() and float(fig.axes[0].get_title().split("= ")[1][:-1]) < 1e-4
    plt.close(fig)
    fig, table, why = figures.hti_by_subtype(survival.hti_by_subtype(surv.assign(subtype=pd.NA)))
    assert len(table) == 0 and "no patient has a molecular subtype" in why
    png = save_figure(fig, table, tmp_path, "08_hti_survival", "hti_by_subtype", empty=why)
    assert png.exists()


def test_held_out_slides_count_slides_ood_for_every_trait():
    vals, slides = _slides_table()
    lab = trait_models.label_slides(vals, slides).set_index("image_id")  # patients 2-7 OOD for A and B
    drawn = [(["TCGA-SY-0001", "TCGA-SY-0002"], ["TCGA-SY-0003"]), (["TCGA-SY-0003"], ["TCGA-SY-0009"])]
    held = trait_models.held_out_slides(lab, drawn, traits=["A", "B"])
    # patients 2 and 3 are in splits but OOD for every trait: no model trained or selected on them
    assert held["TCGA-SY-0002-01Z-00-DX1"] and held["TCGA-SY-0003-01Z-00-DX1"]
    assert not held["TCGA-SY-0001-01Z-00-DX1"] and not held["TCGA-SY-0009-01Z-00-DX2"] and held.sum() == 8
    # OOD for one trait only: the other trait's models trained on it
    vals2 = vals.assign(B=[0, 9, 1, 8, 2, 7, 3, 6, 4, 5.0])  # patient 2 at B's 11th percentile
    lab2 = trait_models.label_slides(vals2, slides).set_index("image_id")
    assert not trait_models.held_out_slides(lab2, drawn, traits=["A", "B"])["TCGA-SY-0002-01Z-00-DX1"]
    sets = trait_models.slide_sets(lab, ["A", "B"], ["TCGA-SY-0000"], drawn)
    assert sets["TCGA-SY-0000-01Z-00-DX1"] == "test" and sets["TCGA-SY-0003-01Z-00-DX1"] == "OOD"
    assert sets["TCGA-SY-0001-01Z-00-DX1"] == "train" and sets["TCGA-SY-0009-01Z-00-DX2"] == "validation"
    assert sets["TCGA-SY-0008-01Z-00-DX1"] == "unused"  # in no split, in distribution
    assert set(sets[held].unique()) == {"test", "OOD", "unused"}


def test_model_bootstrap_interval_covers_disagreeing_models():
    # one slide, 40 tiles; trait A certain; the 5 models disagree on B for half the tiles
    n = 40
    a = np.ones((n, 1, 5), int)
    b = np.zeros((n, 1, 5), int)
    b[: n // 2, 0, 3:] = 1  # splits 3 and 4 call the first half high
    model_calls = np.concatenate([a, b], 1)
    calls = trait_models.ensemble_vote(model_calls[:, 1, :3].T)  # the ensemble of splits 0-2: all low
    ens = np.c_[np.ones(n, int), calls]
    tiles_only = hti.slide_hti(ens, ["s"] * n, n_boot=200, seed=0)
    both = hti.slide_hti(ens, ["s"] * n, n_boot=200, seed=0, model_calls=model_calls, top=3)
    assert tiles_only.loc["s", "hti"] == both.loc["s", "hti"] == 0.0
    assert tiles_only.loc["s", "hti_high"] == 0.0  # tile resampling cannot see the models' disagreement
    # resampled ensembles with two "high" models on B split the slide into A and A+B: HTI up to log_3 2
    assert both.loc["s", "hti_high"] == pytest.approx(np.log(2) / np.log(3), abs=0.02)
    assert both.loc["s", "hti_low"] == 0.0
    assert (trait_models.split_calls(pd.DataFrame(
        {("A", 0): [0.9, 0.1], ("A", 1): [0.2, 0.6]}).set_axis(pd.MultiIndex.from_tuples([("A", 0), ("A", 1)]),
                                                                axis=1), ["A"])[:, 0] == [[1, 0], [0, 1]]).all()
    with pytest.raises(ValueError, match="model_calls"):
        hti.slide_hti(ens, ["s"] * n, n_boot=10, model_calls=model_calls[:, :1])
    # two split models (a CPU run with n_splits 2) and top 3: two drawn with replacement per vote (a tie counts
    # as 0, as in ensemble_vote); drawing model 4 twice still shows that it calls half of B high
    for top in (3, 1):
        two = hti.slide_hti(ens, ["s"] * n, n_boot=200, seed=0, model_calls=model_calls[:, :, [0, 4]], top=top)
        assert two.loc["s", "hti_low"] == 0.0
        assert two.loc["s", "hti_high"] == pytest.approx(np.log(2) / np.log(3), abs=0.02)
    with pytest.raises(ValueError, match="positive number of models"):
        hti.slide_hti(ens, ["s"] * n, n_boot=10, model_calls=model_calls, top=0)
    with pytest.raises(ValueError, match="no models for traits"):
        trait_models.split_calls(pd.DataFrame({("A", 0): [0.1]}).set_axis(
            pd.MultiIndex.from_tuples([("A", 0)]), axis=1), ["B"])


def test_hti_vs_truth_table_marks_sets_and_coverage():
    import matplotlib

    matplotlib.use("Agg")
    ids = [f"s{i}" for i in range(8)]
    true = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5, np.nan])
    table = pd.DataFrame({"true_hti": true, "hti": true + 0.05, "hti0": true + 0.05, "hti_low": true,
                          "hti_high": true + 0.1, "hti_corrected": true, "hti_corrected_low": true - 0.02,
                          "hti_corrected_high": true + 0.02, "tile_truth_hti": true},
                         index=pd.Index(ids, name="image_id"))
    table.loc["s2", ["hti_low", "hti_high"]] = [0.5, 0.6]  # the paper's interval misses its true 0.4
    table.loc["s3", ["hti_corrected_low", "hti_corrected_high"]] = [0.7, 0.8]  # the corrected one misses 0.6
    sets = pd.Series(["test", "OOD", "OOD", "train", "validation", "train", "test", "test"], index=ids)
    from histo_utils import figures

    vs = hti.hti_vs_truth(table, sets)
    fig, out = figures.hti_vs_truth(vs)
    out = out.set_index("image_id")
    assert list(out.index) == ids[:7]  # the slide without a true HTI is left out
    assert out.set.to_dict() == sets.iloc[:7].to_dict()
    assert not out.loc["s2", "covers_paper"] and out.drop("s2").covers_paper.all()
    assert not out.loc["s3", "covers"] and out.drop("s3").covers.all()
    assert (out.hti_paper == out.index.map(table.hti0)).all() and (out.hti_corrected == true[:7]).all()
    panels = vs.panels.set_index("panel")
    held = panels.loc["test + OOD slides, corrected HTI"]
    assert held.n == 4 and held.coverage == 1.0 and held.width == pytest.approx(0.04)
    assert panels.loc["test + OOD slides, paper's HTI"].coverage == 0.75
    assert "(n = 4)" in fig.axes[0].get_title() and "covered 75 %" in fig.axes[0].get_title()
    ag = truth.hti_agreement(vs).set_index(["set", "hti"])
    assert ag.loc[("test + OOD slides", "hti_corrected"), "pearson"] == pytest.approx(1.0)
    assert ag.loc[("test + OOD slides", "hti0"), "low_true_mean"] == pytest.approx(0.05)  # s0, true 0: +0.05
    assert ag.loc[("training/validation slides", "hti_corrected"), "ci_coverage"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="Unknown slide sets"):
        hti.hti_vs_truth(table, sets.replace("train", "training"))


def test_fit_trait_models_restarts_a_model_stuck_at_the_constant_solution(monkeypatch, tmp_path):
    import torch

    from histo_utils import models, training

    class FakeDS:
        input_px = 8
        read_key = {"input_px": 8}

        def __init__(self, tiles):
            self.tiles = tiles

        def subset(self, idx, labels=None):
            return self

        def with_augmentation(self, *a, **k):
            return self

    ids = [f"s{i}" for i in range(6)]
    tiles = pd.DataFrame({"image_id": np.repeat(ids, 4)})
    slides = pd.DataFrame({"patient": [f"p{i}" for i in range(6)], "A:label": [0, 1, 0, 1, 0, 1],
                           "A:ood": False}, index=pd.Index(ids, name="image_id"))
    inits = []
    monkeypatch.setattr(models, "build_model",
                        lambda arch, n: inits.append(torch.initial_seed()) or torch.nn.Conv2d(3, 2, 1))

    def fake_train(model, train, val, *, config, checkpoint_dir, run_key, **kw):
        stuck = len(inits) < 3  # the first two attempts never leave log 2
        loss = [0.6931, 0.6925] if stuck else [0.69, 0.4]
        return pd.DataFrame({"epoch": [1, 2], "train_loss": loss, "val_score": [0.5, 0.5 if stuck else 1.0]})

    monkeypatch.setattr(training, "train_classifier", fake_train)
    monkeypatch.setattr(training, "predict_tiles", lambda m, ds, **k: np.full((len(ds.tiles), 2), 0.5))
    cfg = training.TrainConfig(seed=0)
    split = [(["p0", "p1", "p2", "p3"], ["p4", "p5"])]
    prob, hist = trait_models.fit_trait_models(FakeDS(tiles), slides, traits=["A"], splits=split, arch="x",
                                               config=cfg, work_dir=tmp_path / "a", restarts=3, progress=False)
    assert len(inits) == 3 and len(set(inits)) == 3  # two restarts, each from other random weights
    assert (hist.attempt == 2).all() and hist.val_score.max() == 1.0 and prob.shape == (24, 1)
    inits.clear()
    _, hist = trait_models.fit_trait_models(FakeDS(tiles), slides, traits=["A"], splits=split, arch="x",
                                            config=cfg, work_dir=tmp_path / "b", restarts=1, progress=False)
    assert len(inits) == 2 and (hist.attempt == 1).all()  # out of restarts: the stuck model is kept
    # a rerun with the same settings reuses the saved predictions; other settings, labels or tile pixels never do
    inits.clear()
    trait_models.fit_trait_models(FakeDS(tiles), slides, traits=["A"], splits=split, arch="x", config=cfg,
                                  work_dir=tmp_path / "b", restarts=1, progress=False)
    assert inits == []
    for change in ({"config": training.TrainConfig(seed=0, epochs=cfg.epochs + 1)},
                   {"slides": slides.assign(**{"A:label": [1, 0, 0, 1, 0, 1]})}):
        ds = FakeDS(tiles)
        kw = {"config": cfg, "slides": slides, **change}
        trait_models.fit_trait_models(ds, kw["slides"], traits=["A"], splits=split, arch="x", config=kw["config"],
                                      work_dir=tmp_path / "b", restarts=1, progress=False)
        assert len(inits) == 2, change  # trained anew (stuck, then restarted)
        inits.clear()
    other_pixels = FakeDS(tiles)
    other_pixels.read_key = {"input_px": 8, "resampling": "another filter"}
    trait_models.fit_trait_models(other_pixels, slides, traits=["A"], splits=split, arch="x", config=cfg,
                                  work_dir=tmp_path / "b", restarts=1, progress=False)
    assert len(inits) == 2


def test_fit_trait_models_in_worker_processes_equals_one_process(tmp_path):
    """The parallel path (forked workers) gives bit for bit the models of the in-process path, and learns."""
    import torch

    from histo_utils import training

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(8)]
    n_per, px = 12, 16
    tiles = pd.DataFrame({"image_id": np.repeat(ids, n_per), "x": 0, "y": 0, "level": 0, "read_px": px})
    slides = pd.DataFrame({"patient": [f"p{i}" for i in range(8)], "A:label": [0, 1] * 4, "A:ood": False,
                           "B:label": [0, 0, 1, 1] * 2, "B:ood": [False] * 7 + [True]},
                          index=pd.Index(ids, name="image_id"))
    ds = training.TileDataset(tiles, {i: "/nowhere.svs" for i in ids}, input_px=px)
    cache = rng.integers(0, 120, (len(tiles), px, px, 3), dtype=np.uint8)
    bright = np.repeat(slides["A:label"].to_numpy(), n_per).astype(bool)
    cache[bright, :, :, 0] += 120  # trait A: a red tile; trait B is not in the pixels
    ds._cache = cache
    split = [(["p0", "p1", "p2", "p3", "p4", "p5"], ["p6", "p7"]), (["p2", "p3", "p4", "p5", "p6", "p7"],
                                                                    ["p0", "p1"])]
    cfg = training.TrainConfig(optimizer="adam", epochs=3, batch_size=16, lr=3e-3, weight_decay=0.0, seed=0,
                               schedule="plateau", lr_patience=2)
    out = {}
    threads = torch.get_num_threads()
    for workers in (1, 2):
        out[workers] = trait_models.fit_trait_models(ds, slides, traits=["A", "B"], splits=split, arch="compact",
                                                     config=cfg, work_dir=tmp_path / f"w{workers}",
                                                     tiles_per_slide=8, val_tiles_per_slide=6, seed=0,
                                                     progress=False, workers=workers)
    assert torch.get_num_threads() == threads  # the one-thread setting of a model does not leak
    (p1, h1), (p2, h2) = out[1], out[2]
    assert p1.shape == (len(tiles), 4) and list(p1.columns) == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    pd.testing.assert_frame_equal(p1, p2)  # same numbers in worker processes
    pd.testing.assert_frame_equal(h1, h2)
    assert h1.groupby(["trait", "split"]).n_train_tiles.first().tolist() == [48, 48, 48, 40]  # B: p7 OOD
    a = p1[("A", 0)].to_numpy()
    assert a[bright].mean() > a[~bright].mean() + 0.2  # trait A is learned
    # a rerun reads the saved predictions
    p3, h3 = trait_models.fit_trait_models(ds, slides, traits=["A", "B"], splits=split, arch="compact", config=cfg,
                                           work_dir=tmp_path / "w1", tiles_per_slide=8, val_tiles_per_slide=6,
                                           seed=0, progress=False, workers=2)
    pd.testing.assert_frame_equal(p1, p3)


def _reading_tables():
    tab1 = pd.DataFrame({"trait": ["A"], "test_runs_mean": [0.9], "test_runs_min": [0.8], "test_runs_max": [0.95],
                         "test_ensemble": [0.9], "OOD-near_ensemble": [0.7], "OOD-all_ensemble": [0.8]})
    evaluation = pd.DataFrame({"trait": ["A"], "set": ["test"], "model": ["ensemble"], "n_slides": [10],
                               "n_high": [5]})
    logrank = pd.DataFrame({"comparison": ["HTI > 0.5 vs <= 0.5"], "p": [0.04], "n_high": [5], "n_low": [5]})
    cox = pd.DataFrame({"covariate": ["HTI"], "fit": ["corrected HTI"], "coef": [1.0], "coef lower 95%": [0.2],
                        "coef upper 95%": [1.8], "planted_coef": [2.0]})
    surv = pd.DataFrame({"OS": [1, 0, 1], "hti0": [0.1, 0.5, 0.9], "subtype": ["B", "A", "B"]})
    agree = pd.DataFrame({"set": ["test + OOD slides"] * 2, "hti": ["hti0", "hti_corrected"], "n": [84, 84],
                          "pearson": [0.62, 0.85], "pearson_tile_truth": [0.99, 0.99], "ci_coverage": [0.99, 0.83],
                          "ci_width": [0.62, 0.24], "n_homogeneous": [42, 42], "low_true_mean": [0.29, 0.08]})
    rates = pd.DataFrame({"trait": ["A"], "fpr": [0.01], "fnr": [0.12], "used": [True], "n_low": [15],
                          "n_high": [16]})
    return tab1, evaluation, logrank, cox, surv, agree, rates


def test_hti_reading_follows_its_tables():
    tab1, evaluation, logrank, cox, surv, agree, rates = _reading_tables()
    bulk = pd.DataFrame({"trait": ["A"], "p": [0.5]})

    def read(**kw):
        t = {"agree": agree, "rates": rates, "cox": cox, "logrank": logrank, **kw}
        return hti.reading(tab1, evaluation, t["logrank"], bulk, t["cox"], surv, agree=t["agree"], rates=t["rates"])

    text = read()
    assert "The corrected HTI: Pearson r = 0.85 on 84 slides" in text and "4 of the 4 goals met" in text
    assert "The paper's HTI: Pearson r = 0.62" in text and "1 of the 4 goals met" in text
    assert "false negatives 12.0 % (16 high slides)" in text
    assert "covers the planted 2.0" not in text and "misses the planted 2.0" in text  # 0.2-1.8 misses 2.0
    moved = read(agree=agree.assign(pearson=[0.62, 0.71], ci_width=[0.62, 0.31]),
                 rates=rates.assign(fnr=[0.3]), cox=cox.assign(**{"coef upper 95%": [2.4]}),
                 logrank=logrank.assign(p=[0.2]))
    assert "The corrected HTI: Pearson r = 0.71" in moved and "2 of the 4 goals met" in moved
    assert "false negatives 30.0 %" in moved and "covers the planted 2.0" in moved and "p = 0.2 " in moved
    unlearned = read(rates=rates.assign(fpr=[0.5], fnr=[0.5], used=[False]))
    assert "no better than chance: left uncorrected" in unlearned
