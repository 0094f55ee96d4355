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
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["LogRank", "logrank_groups", "cox_hti", "survival_set", "survival_table", "hti_comparisons",
           "cox_table", "STAGE_NUMBERS", "km_estimate", "LogRankComparisons", "logrank_comparisons", "BulkSurvival",
           "bulk_survival", "SubtypeHTI", "hti_by_subtype"]


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
        raise InputError("Both groups need at least one patient for a log-rank test.")
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
        raise InputError(f"Columns {missing} missing from the survival table.")
    data = df[cols].dropna()
    if data[event].sum() == 0:
        raise InputError(f"No events in column '{event}' among {len(data)} complete cases: a Cox model needs "
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


def survival_table(slides: pd.DataFrame, traits: Sequence[str], test_patients: Sequence[str],
                   slide_table: pd.DataFrame, clinical: pd.DataFrame, *, truth: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """The survival set (:func:`survival_set`) with each slide's HTI, follow-up and covariates.

    Parameters
    ----------
    slides : DataFrame indexed by ``image_id`` with ``patient, chosen`` and the trait label columns
    traits, test_patients : as for :func:`survival_set`
    slide_table : DataFrame indexed by ``image_id`` with ``hti, hti0, hti_low, hti_high`` (the paper's HTI) and
        ``hti_corrected`` (:func:`histo_utils.hti.corrected_hti`, 0 where no tile is positive)
    clinical : DataFrame indexed by patient with ``OS, OS.time, age_at_initial_pathologic_diagnosis,
        ajcc_pathologic_tumor_stage, subtype``
    truth : DataFrame indexed by ``image_id`` with ``true_hti`` (synthetic cohort), or None

    Returns
    -------
    DataFrame indexed by ``image_id``, one row per patient with follow-up: the columns above plus
    ``months`` (OS.time / 30.44) and, with ``truth``, ``true_hti, true_hti0``.
    """
    surv = survival_set(slides.reset_index(), traits, test_patients).set_index("image_id")
    surv = surv.join(slide_table[["hti", "hti0", "hti_low", "hti_high", "hti_corrected"]])
    surv = surv.join(clinical[["OS", "OS.time", "age_at_initial_pathologic_diagnosis", "ajcc_pathologic_tumor_stage",
                               "subtype"]], on="patient")
    surv = surv.dropna(subset=["OS", "OS.time"])
    surv["months"] = surv["OS.time"] / 30.44
    if truth is not None:
        surv = surv.join(truth[["true_hti"]])
        surv["true_hti0"] = surv.true_hti.fillna(0)
    return surv


def hti_comparisons(surv: pd.DataFrame, *, split: float = 0.5, extremes: Sequence[float] = (0.3, 0.7)
                    ) -> list[tuple[str, pd.Series]]:
    """The paper's HTI comparisons (> split vs <=; > high vs <= low), the corrected HTI and the oracle.

    Parameters
    ----------
    surv : :func:`survival_table` output (``hti0, hti_corrected`` and, when present, ``true_hti0``)
    split : HTI threshold
    extremes : (low, high) of the second comparison; slides in between are left out of it

    Returns
    -------
    list of (title, Series of bool indexed like the slides compared: True = high HTI)
    """
    lo, hi = extremes
    out = [("HTI > %.1f vs <= %.1f" % (split, split), surv.hti0 > split),
           ("HTI > %.1f vs <= %.1f" % (hi, lo), (surv.hti0 > hi)[(surv.hti0 > hi) | (surv.hti0 <= lo)]),
           ("corrected HTI > %.1f vs <= %.1f" % (split, split), surv.hti_corrected > split)]
    if "true_hti0" in surv:
        out.append(("true HTI > %.1f vs <= %.1f (oracle)" % (split, split), surv.true_hti0 > split))
    return out


# --------------------------------------------------------------------------
# results drawn by histo_utils.figures (survival_hti, survival_bulk, hti_by_subtype)
# --------------------------------------------------------------------------
#: columns of a Kaplan-Meier estimate table (:func:`km_estimate`)
KM_COLUMNS = ("time", "survival", "ci_lower", "ci_upper")


def _km_table(km, **keys) -> pd.DataFrame:
    """A fitted ``lifelines.KaplanMeierFitter`` as a table: ``keys..., time, survival, ci_lower, ci_upper``."""
    sf = km.survival_function_.iloc[:, 0]
    ci = km.confidence_interval_survival_function_
    return pd.DataFrame({**{k: [v] * len(sf) for k, v in keys.items()}, "time": sf.index.to_numpy(dtype=float),
                         "survival": sf.to_numpy(dtype=float), "ci_lower": ci.iloc[:, 0].to_numpy(dtype=float),
                         "ci_upper": ci.iloc[:, 1].to_numpy(dtype=float)})


def km_estimate(duration: Sequence[float], event: Sequence[int], **keys) -> pd.DataFrame:
    """Kaplan-Meier estimate of one group with its 95 % confidence band (lifelines).

    Parameters
    ----------
    duration, event : array-like, shape (n,): follow-up time and death (1) or censoring (0)
    **keys : constant columns put in front (e.g. ``group="high"``)

    Returns
    -------
    DataFrame, one row per time of the estimate: ``keys..., time, survival, ci_lower, ci_upper``
    """
    from lifelines import KaplanMeierFitter

    return _km_table(KaplanMeierFitter().fit(duration, event), **keys)


def _curve_frame(curves: list[pd.DataFrame], keys: Sequence[str]) -> pd.DataFrame:
    curves = [c for c in curves if len(c)]
    if curves:
        return pd.concat(curves, ignore_index=True)
    return pd.DataFrame({c: pd.Series(dtype=object if c in keys else float) for c in (*keys, *KM_COLUMNS)})


def _logrank_row(months: pd.Series, event: pd.Series, groups: pd.Series, title: str) -> tuple[dict, pd.DataFrame]:
    """One comparison: the row of its log-rank test and the Kaplan-Meier estimates of its two groups."""
    keys = ("comparison", "group", "n")
    if groups.nunique() < 2:  # e.g. every slide on one side of the threshold: no test
        return ({"comparison": title, "p": np.nan, "statistic": np.nan, "n_low": int((~groups).sum()),
                 "n_high": int(groups.sum())}, _curve_frame([], keys))
    res = logrank_groups(months[groups.index], event[groups.index], groups.to_numpy())
    curves = [_km_table(res.km[flag], comparison=title, group="high" if flag else "low", n=res.n[int(flag)])
              for flag in (False, True)]
    return ({"comparison": title, "p": res.p, "statistic": res.statistic, "n_low": res.n[0], "n_high": res.n[1]},
            _curve_frame(curves, keys))


@dataclass(frozen=True)
class LogRankComparisons:
    """Log-rank tests of two-group comparisons and the Kaplan-Meier estimates behind them.

    ``table``: one row per comparison, ``comparison, p, statistic, n_low, n_high`` (p NaN when one group is
    empty); ``curves``: the Kaplan-Meier estimate of each group, ``comparison, group`` (``low``/``high``),
    ``n, time`` (months), ``survival, ci_lower, ci_upper`` (95 %); no rows for a comparison without a test.
    """

    table: pd.DataFrame
    curves: pd.DataFrame


def logrank_comparisons(surv: pd.DataFrame, comparisons: Sequence[tuple[str, pd.Series]]) -> LogRankComparisons:
    """Kaplan-Meier estimates and Mantel's log-rank test of each comparison (:func:`logrank_groups`).

    Parameters
    ----------
    surv : :func:`survival_table` output (``months``, ``OS``)
    comparisons : list of (title, Series of bool indexed by the slides compared: True = high), e.g.
        :func:`hti_comparisons`

    Returns
    -------
    LogRankComparisons (drawn by :func:`histo_utils.figures.logrank_panels`)
    """
    out = [_logrank_row(surv.months, surv.OS, g, name) for name, g in comparisons]
    return LogRankComparisons(table=pd.DataFrame([row for row, _ in out]),
                              curves=_curve_frame([c for _, c in out], ("comparison", "group", "n")))


@dataclass(frozen=True)
class BulkSurvival:
    """Survival split on bulk expression and HTI by bulk label, per trait (the paper's Fig 5).

    ``table``: one row per trait, :class:`LogRankComparisons`' row plus ``trait`` (split: above vs below the
    median of ``<trait>:value``); ``curves``: its Kaplan-Meier estimates with ``trait``; ``hti``: one row per
    patient and trait, ``trait, bulk`` (``above median`` / ``below median`` by ``<trait>:label``), ``hti0``;
    ``mann_whitney``: one row per trait, ``trait, statistic, p`` of HTI above against below median.
    """

    traits: tuple[str, ...]
    table: pd.DataFrame
    curves: pd.DataFrame
    hti: pd.DataFrame
    mann_whitney: pd.DataFrame


def bulk_survival(surv: pd.DataFrame, traits: Sequence[str]) -> BulkSurvival:
    """Per trait: log-rank test of bulk expression above vs below the median; Mann-Whitney test of HTI by label.

    Parameters
    ----------
    surv : :func:`survival_table` output (``<trait>:value``, ``<trait>:label``, ``hti0``, ``months``, ``OS``)
    traits : the traits

    Returns
    -------
    BulkSurvival (drawn by :func:`histo_utils.figures.bulk_survival`)
    """
    from scipy import stats

    rows, curves, hti_rows, mw = [], [], [], []
    for t in traits:
        high = surv[f"{t}:value"] > surv[f"{t}:value"].median()
        row, cur = _logrank_row(surv.months, surv.OS, high, f"bulk {t} above vs below median")
        rows.append({**row, "trait": t})
        curves.append(cur.assign(trait=t))
        d = surv.assign(bulk=np.where(surv[f"{t}:label"] == 1, "above median", "below median"))
        u = stats.mannwhitneyu(d.hti0[d.bulk == "above median"], d.hti0[d.bulk == "below median"])
        mw.append({"trait": t, "statistic": float(u.statistic), "p": float(u.pvalue)})
        hti_rows.append(pd.DataFrame({"trait": t, "bulk": d.bulk.to_numpy(), "hti0": d.hti0.to_numpy()},
                                     index=d.index))
    return BulkSurvival(traits=tuple(traits), table=pd.DataFrame(rows),
                        curves=_curve_frame(curves, ("comparison", "group", "n", "trait")),
                        hti=pd.concat(hti_rows) if hti_rows else pd.DataFrame(columns=["trait", "bulk", "hti0"]),
                        mann_whitney=pd.DataFrame(mw, columns=["trait", "statistic", "p"]))


@dataclass(frozen=True)
class SubtypeHTI:
    """HTI per molecular subtype with a Kruskal-Wallis test (the paper's Fig 6).

    ``table``: one row per subtype, ``subtype, count, mean, std, min, 25%, 50%, 75%, max`` of ``value``
    (empty when no patient has a subtype); ``patients``: the patients with a subtype (``subtype`` and
    ``value``); ``order``: the subtypes, sorted; ``kruskal_p``: NaN with fewer than two subtypes; ``empty``:
    None, or the sentence saying why there is nothing to draw (for :func:`histo_utils.plotting.save_figure`).
    """

    value: str
    table: pd.DataFrame
    patients: pd.DataFrame
    order: list
    kruskal_p: float
    empty: str | None


def hti_by_subtype(surv: pd.DataFrame, *, value: str = "hti0") -> SubtypeHTI:
    """HTI per molecular subtype, with a Kruskal-Wallis test when there are at least two subtypes.

    Parameters
    ----------
    surv : DataFrame, one row per patient, with ``subtype`` (missing for patients without one) and ``value``
    value : the HTI column

    Returns
    -------
    SubtypeHTI (drawn by :func:`histo_utils.figures.hti_by_subtype`)
    """
    from scipy import stats

    have = surv[surv["subtype"].notna()] if "subtype" in surv else surv.iloc[:0]
    table = have.groupby("subtype")[value].describe().reset_index()
    if len(have) == 0:
        return SubtypeHTI(value=value, table=table, patients=have, order=[], kruskal_p=np.nan,
                          empty="no patient has a molecular subtype (no subtype table given): panel skipped")
    order = sorted(have["subtype"].unique())
    groups = [g[value].to_numpy() for _, g in have.groupby("subtype")]
    p = float(stats.kruskal(*groups).pvalue) if len(groups) >= 2 else np.nan
    return SubtypeHTI(value=value, table=table, patients=have, order=order, kruskal_p=p, empty=None)


#: TCGA-CDR stage labels as numbers for the Cox model
STAGE_NUMBERS = {"Stage I": 1, "Stage II": 2, "Stage III": 3, "Stage IV": 4}


def cox_table(surv: pd.DataFrame, *, planted: dict | None = None) -> pd.DataFrame:
    """Cox fits of HTI (the paper's, the corrected and, when ``true_hti0`` is present, the oracle) with age and stage.

    Parameters
    ----------
    surv : :func:`survival_table` output
    planted : covariate -> planted log hazard ratio (synthetic cohort), added as ``planted_coef``; or None

    Returns
    -------
    DataFrame, one row per (fit, covariate): ``coef, se(coef), coef lower 95%, coef upper 95%, exp(coef), p``.
    Covariates: ``HTI``, ``age_decades`` (age / 10), ``stage`` (I-IV as 1-4, :data:`STAGE_NUMBERS`).
    """
    cox_df = pd.DataFrame({"time": surv.months, "event": surv.OS.astype(int), "HTI": surv.hti0,
                           "age_decades": surv.age_at_initial_pathologic_diagnosis / 10,
                           "stage": surv.ajcc_pathologic_tumor_stage.map(STAGE_NUMBERS)})
    covariates = ["HTI", "age_decades", "stage"]
    fits = {"estimated HTI": cox_hti(cox_df, covariates=covariates),
            "corrected HTI": cox_hti(cox_df.assign(HTI=surv.hti_corrected), covariates=covariates)}
    if "true_hti0" in surv:
        fits["true HTI (oracle)"] = cox_hti(cox_df.assign(HTI=surv.true_hti0), covariates=covariates)
    cox = pd.concat({k: v[["coef", "se(coef)", "coef lower 95%", "coef upper 95%", "exp(coef)", "p"]]
                     for k, v in fits.items()}, names=["fit", "covariate"]).reset_index()
    if planted is not None:
        cox["planted_coef"] = cox.covariate.map(planted)
    return cox


