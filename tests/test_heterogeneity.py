"""HTI, labels and OOD bands, patient splits, the ensemble vote and the survival wiring."""
import numpy as np
import pandas as pd
import pytest

from histo_utils import heterogeneity as ht


def test_hti_paper_cases_and_k3():
    both = np.ones((90, 2), int)
    assert ht.hti(both) == 0.0  # one combination everywhere
    thirds = np.array([[1, 0]] * 30 + [[0, 1]] * 30 + [[1, 1]] * 30)
    assert ht.hti(thirds) == pytest.approx(1.0)  # A, B, Both in equal thirds
    k3 = np.array([[(c >> j) & 1 for j in range(3)] for c in range(1, 8)] * 10)
    assert ht.hti(k3) == pytest.approx(1.0)  # all 7 combinations equally
    half = np.array([[1, 0, 0]] * 50 + [[0, 1, 1]] * 50)
    assert ht.hti(half) == pytest.approx(np.log(2) / np.log(7))
    # tiles without a positive trait: left out by default, or a category of their own
    with_empty = np.vstack([thirds, np.zeros((30, 2), int)])
    assert ht.hti(with_empty) == pytest.approx(1.0)
    assert ht.hti(with_empty, empty="category") == pytest.approx(1.0)  # 4 equal quarters, C = 4
    assert np.isnan(ht.hti(np.zeros((5, 2), int)))
    with pytest.raises(ValueError, match="k >= 2"):
        ht.hti(np.ones((5, 1), int))
    h, lo, hi = ht.hti_bootstrap(thirds, n_boot=200, seed=0)
    assert h == pytest.approx(1.0) and lo <= h + 1e-12 and 0.9 < lo <= hi <= 1.0 + 1e-12


def test_labels_and_ood_bands():
    v = pd.Series(np.arange(101, dtype=float), index=[f"s{i}" for i in range(101)])
    lab = ht.trait_labels(v)
    assert lab.loc["s100", "label"] == 1 and lab.loc["s0", "label"] == 0 and lab.loc["s50", "label"] == 0
    assert not lab.loc["s20", "ood"] and lab.loc["s21", "ood"] and lab.loc["s79", "ood"] and not lab.loc["s80", "ood"]
    assert lab.loc["s25", "ood_near"] and not lab.loc["s50", "ood_near"] and lab.loc["s75", "ood_near"]
    assert lab.ood.sum() == 59 and lab.ood_near.sum() == 20


def test_patient_splits_do_not_leak():
    patients = [f"TCGA-{i:02d}" for i in range(50)]
    test, splits = ht.split_patients(patients, seed=3)
    assert len(test) == 5 and len(splits) == 5
    for train, val in splits:
        assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
        assert set(train) | set(val) | set(test) == set(patients)
    assert ht.split_patients(patients, seed=3) == (test, splits)  # seeded


def test_ensemble_vote_and_scores():
    p = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]])
    assert ht.ensemble_vote(p).tolist() == [1, 1, 1, 0]
    assert ht.ensemble_vote(p[:2]).tolist() == [1, 0, 0, 0]  # ties count as negative
    s = ht.slide_scores([1, 0, 1, 1], ["a", "a", "b", "b"])
    assert s.to_dict() == {"a": 50.0, "b": 100.0}


def test_survival_wiring_detects_a_planted_effect():
    rng = np.random.default_rng(0)
    n = 200
    hti_v = rng.uniform(0, 1, n)
    hazard = np.exp(1.5 * hti_v)
    t = rng.exponential(10 / hazard)
    c = rng.exponential(20, n)
    time, event = np.minimum(t, c), (t <= c).astype(int)
    res = ht.logrank_groups(time, event, hti_v > 0.5)
    assert res["p"] < 0.01 and sum(res["n"]) == n
    assert res["km"][True].median_survival_time_ < res["km"][False].median_survival_time_
    null = ht.logrank_groups(time, event, rng.random(n) > 0.5)
    assert null["p"] > 0.01
    summ = ht.cox_hti(pd.DataFrame({"time": time, "event": event, "HTI": hti_v}))
    assert abs(summ.loc["HTI", "coef"] - 1.5) < 3 * summ.loc["HTI", "se(coef)"]  # the planted log hazard ratio
    assert summ.loc["HTI", "p"] < 1e-4
