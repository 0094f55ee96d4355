"""Survival analysis of the heterogeneity index: the survival set, Kaplan-Meier and log-rank, Cox.

Levy-Jurgenson et al. 2020 (Figs 4-6) compare Kaplan-Meier curves of patients split by HTI with Mantel's
log-rank test; beyond the paper, a Cox model takes HTI as a continuous covariate. lifelines does the
statistics; results come back as :class:`LogRank` and DataFrames.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["LogRank", "logrank_groups", "cox_hti", "survival_set"]


@dataclass(frozen=True)
class LogRank:
    """Kaplan-Meier fits of two groups and Mantel's log-rank test between them.

    ``n`` is (patients in the low / False group, in the high / True group); ``km`` maps False and True to
    fitted ``lifelines.KaplanMeierFitter`` objects.
    """

    p: float
    statistic: float
    n: tuple[int, int]
    km: dict


def logrank_groups(duration: Sequence[float], event: Sequence[int], group: Sequence[bool]) -> LogRank:
    """Kaplan–Meier fits of two groups and Mantel's log-rank test (lifelines).

    Parameters
    ----------
    duration : array-like, shape (n,)
        Follow-up time of each patient.
    event : array-like, shape (n,)
        1 = death observed, 0 = censored.
    group : array-like of bool, shape (n,)
        The group of each patient (True: "high").

    Returns
    -------
    LogRank
        ``p``, ``statistic``, ``n`` = (n_false, n_true), ``km`` = {False: fitter, True: fitter}.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    d = np.asarray(duration, dtype=float)
    e = np.asarray(event, dtype=int)
    g = np.asarray(group, dtype=bool)
    if g.all() or (~g).all():
        raise ValueError("Both groups need at least one patient for a log-rank test.")
    res = logrank_test(d[~g], d[g], event_observed_A=e[~g], event_observed_B=e[g])
    km = {flag: KaplanMeierFitter(label=str(flag)).fit(d[g == flag], e[g == flag]) for flag in (False, True)}
    return LogRank(p=float(res.p_value), statistic=float(res.test_statistic), n=(int((~g).sum()), int(g.sum())),
                   km=km)


def cox_hti(df: pd.DataFrame, *, duration: str = "time", event: str = "event", covariates: Sequence[str] = ("HTI",)
            ) -> pd.DataFrame:
    """Cox proportional-hazards model (lifelines); returns the summary (coef, HR = exp(coef), CI, p).

    A covariate without variance in the complete cases (e.g. an HTI of 0 on every slide when the tile
    models call one combination everywhere) cannot be estimated: it is left out of the fit with a warning
    and keeps a row of NaN, so tables of several fits line up. If Newton–Raphson does not converge (small
    or separated data), the fit is repeated with a small ridge penalty (``penalizer`` 0.1) and a warning.
    The ``penalizer`` column of the result says which fit was used.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    cols = [duration, event, *covariates]
    missing = [c for c in cols if c not in df]
    if missing:
        raise ValueError(f"Columns {missing} missing from the survival table.")
    data = df[cols].dropna()
    if data[event].sum() == 0:
        raise ValueError(f"No events in column '{event}' among {len(data)} complete cases: a Cox model needs "
                         "at least one event.")
    constant = [c for c in covariates if data[c].nunique() < 2]
    if constant:
        log.warning("Cox model: covariates %s have no variance in %d complete cases; left out of the fit.",
                    constant, len(data))
    kept = [c for c in covariates if c not in constant]
    rows = pd.DataFrame(np.nan, index=pd.Index(list(covariates), name="covariate"),
                        columns=["coef", "exp(coef)", "se(coef)", "coef lower 95%", "coef upper 95%",
                                 "exp(coef) lower 95%", "exp(coef) upper 95%", "cmp to", "z", "p",
                                 "-log2(p)"])
    penalizer = 0.0
    if kept:
        frame = data[[duration, event, *kept]]
        try:
            summary = CoxPHFitter().fit(frame, duration_col=duration, event_col=event).summary
        except ConvergenceError as err:
            penalizer = 0.1
            log.warning("Cox model did not converge (%s); refitting with penalizer=%g.", str(err)[:80], penalizer)
            summary = CoxPHFitter(penalizer=penalizer).fit(frame, duration_col=duration, event_col=event).summary
        rows = summary.reindex(pd.Index(list(covariates), name="covariate"))
    rows["penalizer"] = penalizer
    return rows


def survival_set(slides: pd.DataFrame, traits: Sequence[str], test_patients: Sequence[str]) -> pd.DataFrame:
    """Slides for survival analysis: test patients plus patients OOD for *every* trait, one chosen slide each.

    ``slides`` needs ``image_id, patient, chosen`` (the DX1 rule) and the ``t:ood`` columns of
    :func:`label_slides`. Returns the rows kept, with a ``set`` column (``test`` or ``OOD``).
    """
    ood_all = np.logical_and.reduce([slides[f"{t}:ood"].to_numpy(bool) for t in traits])
    test = slides["patient"].isin(set(test_patients)).to_numpy()
    keep = slides[(ood_all | test) & slides["chosen"].to_numpy(bool)].copy()
    keep["set"] = np.where(keep["patient"].isin(set(test_patients)), "test", "OOD")
    return keep.reset_index(drop=True)
