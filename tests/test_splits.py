import numpy as np
import pandas as pd
import pytest

from histo_utils.splits import check_split, split_subjects


def _samples(n_subjects=90, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        for t in rng.choice(["A", "B", "C", "D", "E"], rng.integers(1, 4), replace=False):
            rows.append((f"GTEX-{i:04d}", t))
    return pd.DataFrame(rows, columns=["subject_id", "SMTS"])


def test_no_subject_in_two_splits_and_fractions_per_tissue():
    s = _samples()
    split = split_subjects(s, seed=3)
    check_split(s, split)
    assert split.notna().all()
    frac = pd.crosstab(s.SMTS, split, normalize="index")
    np.testing.assert_allclose(frac[["train", "validation", "test"]].to_numpy(),
                               np.tile([0.6, 0.2, 0.2], (5, 1)), atol=0.08)


def test_split_is_seeded():
    s = _samples()
    a, b, c = split_subjects(s, seed=1), split_subjects(s, seed=1), split_subjects(s, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_check_split_catches_leakage():
    s = pd.DataFrame({"subject_id": ["S1", "S1", "S2"], "SMTS": ["A", "B", "A"]})
    with pytest.raises(ValueError, match="1 subjects are in several splits"):
        check_split(s, pd.Series(["train", "test", "test"]))


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split_subjects(_samples(), fractions=(0.5, 0.2, 0.2))
