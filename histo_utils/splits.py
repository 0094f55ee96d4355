"""Subject-level splits: donors stratified by tissue (notebooks 01-02), patients for the tile models (08).

A donor gives several tissues, and two samples of one donor share age, sex,
death circumstances and genotype; a split by sample would let a model meet
the test donors in training. Splits are therefore drawn over subjects, and
balanced so that every tissue is divided close to the asked fractions
(Badea & Stanescu 2020: 60/20/20): :func:`split_subjects`.

:func:`split_patients` draws Levy-Jurgenson et al.'s patient splits: one held-out test set, then several
random train/validation splits of the rest, with no stratum to balance. The two are different
algorithms (a greedy balance over tissues against plain permutations), not two versions of one: each
reproduces the splits its notebook has always drawn.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["split_subjects", "split_patients", "check_split", "check_patient_splits"]


def split_subjects(samples: pd.DataFrame, *, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                   names: Sequence[str] = ("train", "validation", "test"),
                   subject_col: str = "subject_id", stratum_col: str = "SMTS",
                   seed: int = 0) -> pd.Series:
    """Assign every subject to one split, balancing each tissue's fractions.

    Greedy balancing: subjects are visited in a seeded random order, those with
    the most samples first, and each goes to the split whose per-tissue counts
    are furthest below their targets for the tissues this subject has.

    Parameters
    ----------
    samples : DataFrame
        One row per sample with ``subject_col`` and ``stratum_col``.
    fractions
        Target fraction per split; must sum to 1.
    names
        Split names, same length as ``fractions``.
    seed
        Seed of the visiting order.

    Returns
    -------
    Series, indexed like ``samples``
        The split of each sample's subject.
    """
    fractions = np.asarray(fractions, float)
    if len(fractions) != len(names):
        raise InputError(f"fractions ({len(fractions)}) and names ({len(names)}) must have the same length.")
    if np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise InputError(f"fractions must be non-negative and sum to 1, got {list(fractions)}.")
    for col in (subject_col, stratum_col):
        if col not in samples.columns:
            raise InputError(f"samples has no column '{col}' (columns: {list(samples.columns)}).")
    rng = np.random.default_rng(seed)
    strata = sorted(samples[stratum_col].unique())
    counts = pd.crosstab(samples[subject_col], samples[stratum_col]).reindex(columns=strata, fill_value=0)
    totals = counts.sum(0).to_numpy(float)
    targets = np.outer(fractions, totals)  # (n_splits, n_strata)
    have = np.zeros_like(targets)
    subjects = counts.index.to_numpy()
    order = rng.permutation(len(subjects))
    sizes = counts.to_numpy().sum(1)
    order = order[np.argsort(-sizes[order], kind="stable")]
    assignment: dict[str, str] = {}
    for i in order:
        c = counts.iloc[i].to_numpy(float)
        # deficit relative to target, over the tissues this subject has
        deficit = ((targets - have) / np.maximum(targets, 1e-9) * (c > 0)).sum(1)
        deficit[fractions == 0] = -np.inf
        k = int(np.argmax(deficit))
        assignment[subjects[i]] = names[k]
        have[k] += c
    out = samples[subject_col].map(assignment)
    out.name = "split"
    return out


def check_split(samples: pd.DataFrame, split: pd.Series, *, subject_col: str = "subject_id") -> None:
    """Raise if any subject falls in more than one split (leakage)."""
    per_subject = pd.DataFrame({"s": samples[subject_col], "split": split}).groupby("s")["split"].nunique()
    leaked = per_subject[per_subject > 1]
    if len(leaked):
        raise InputError(f"{len(leaked)} subjects are in several splits (e.g. {list(leaked.index[:3])}).")


def split_patients(patients: Sequence[str], *, test_fraction: float = 0.1, n_splits: int = 5,
                   val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """Patients split before any trait is processed: one held-out test set, then ``n_splits`` random
    train/validation splits of the rest (Levy-Jurgenson et al.: 10 % test; 80/10 of the whole, i.e. about
    8:1 of the rest).

    Parameters
    ----------
    patients : patient IDs (duplicates allowed: one per slide)
    test_fraction : fraction of the patients held out as the test set (at least one)
    n_splits : train/validation splits of the rest
    val_fraction : fraction of all patients in each validation set (at least one)
    seed : seed of the permutations (``default_rng``)

    Returns
    -------
    test : sorted list of test patients
    splits : list of ``(train, validation)`` sorted lists; no patient is in two of test/train/validation of
        a split

    Examples
    --------
    >>> test, splits = split_patients([f"P{i}" for i in range(20)], seed=0)
    >>> len(test), len(splits), len(splits[0][1])
    (2, 5, 2)
    """
    ids = np.array(sorted(set(patients)))
    if len(ids) < 3:
        raise InputError(f"{len(ids)} patients are too few for test, training and validation sets.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(ids)
    n_test = max(1, int(round(test_fraction * len(ids))))
    test, rest = sorted(perm[:n_test]), perm[n_test:]
    n_val = max(1, int(round(val_fraction * len(ids))))
    if n_val >= len(rest):
        raise InputError(f"{len(rest)} patients left after the test set cannot give {n_val} for validation.")
    splits = []
    for _ in range(n_splits):
        p = rng.permutation(rest)
        splits.append((sorted(p[n_val:]), sorted(p[:n_val])))
    return list(test), splits


def check_patient_splits(test: Sequence[str], splits: Sequence[tuple[Sequence[str], Sequence[str]]]) -> None:
    """Raise if a patient is in two of test, training and validation of any split (leakage).

    Parameters
    ----------
    test : the held-out test patients
    splits : ``[(train, validation), ...]`` (:func:`split_patients`)

    Returns
    -------
    None; raises ``ValueError`` naming the split and a few patients on leakage.
    """
    test = set(test)
    for i, (train, val) in enumerate(splits):
        both = (set(train) & set(val)) | ((set(train) | set(val)) & test)
        if both:
            raise InputError(f"Split {i}: {len(both)} patients are in two of test/train/validation "
                             f"(e.g. {sorted(both)[:3]}).")
