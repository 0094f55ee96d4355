"""The package's one area under the ROC curve.

Slides scored against their labels (notebook 08), pixels of a saliency map against a true structure mask
(notebook 07), masked network outputs and cross-validated predictions against a trait (notebook 09) all
use :func:`auc`: the Mann-Whitney statistic, computed exactly from average ranks (ties count half).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from .errors import InputError

__all__ = ["auc"]


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of scores against binary labels: P(score of a positive > of a negative).

    Computed as the Mann-Whitney U statistic from average ranks (ties count half), so that the value is
    exact up to one rounding; scikit-learn's ``roc_auc_score`` (a trapezoid sum) agrees to ~1e-15.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Larger = more likely positive.
    labels : array-like, shape (n,)
        0/1 (or boolean) classes.

    Returns
    -------
    float
        In [0, 1]; NaN when one class is absent.

    Examples
    --------
    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(int)
    if s.shape != y.shape:
        raise InputError(f"scores {s.shape} and labels {y.shape} differ in shape; give one label per score.")
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
