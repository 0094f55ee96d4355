"""Known technical and donor confounders: design, batched regression, variance partition (Jones Q2, Q3A).

The confounders ``C`` of a sample are by default log ischemic time, RIN,
collection centre, age bracket and sex; any numeric or categorical column of
the sample attributes or subject phenotypes can be one (:func:`confounder_spec`:
Jones' autolysis score ``SMATSSCR``, Hardy scale ``DTHHRDY``, batches
``SMNABTCH``/``SMGEBTCH``, ...). Each column ``y`` of a table (a gene or an image
feature) is fitted by ordinary least squares ``y ~ C`` and replaced by its
residual. All columns share the design, so one orthonormal basis ``Q`` of the
design serves all of them: ``residual = Y - Q (Q^T Y)`` — one matrix product
for 56,202 genes instead of 56,202 model fits (checked against statsmodels).

Rare category levels (GTEx's batches) are pooled, terms left without a
contrast are left out, and a tissue whose design leaves no residual degrees
of freedom is skipped, each logged and noted in the design report
(:func:`build_design`, :func:`build_designs`).

Variance partition per term (type-II sums of squares): the increase of the
residual sum of squares when the term's columns are dropped from the full
model, as a fraction of the column's total sum of squares (``unique_r2``)
and relative to the full model's residual (``partial_r2``); with its F test.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .distributed import one_blas_thread
from .errors import InputError
from .correlation import drop_constant
from .crossvariance import select_columns, shared_variance_with_null

log = logging.getLogger(__name__)

__all__ = ["log_ischemic_time", "Design", "build_design", "residualize", "fit_rss", "variance_partition",
           "select_terms", "residualize_selected", "DEFAULT_CONFOUNDERS", "SOURCE_COLUMNS", "confounder_spec",
           "sample_covariates", "build_designs", "expressed_genes", "residual_table", "residualize_by_tissue",
           "residualize_expression_by_tissue", "VarianceByConfounder", "variance_by_confounder", "Diagnostics",
           "strongest_columns", "compare_model_choices", "largest_term_share", "KINDS", "GTEX_COLUMNS", "transform",
           "age_bracket_midpoint", "source_columns", "numeric_terms", "confounder_levels", "ols_formula",
           "POOLED_LEVEL", "check_confounders_filled"]

#: confounder name -> (source column, kind)
DEFAULT_CONFOUNDERS = {
    "log_ischemic_time": ("SMTSISCH", "log_ischemic"),
    "RIN": ("SMRIN", "numeric"),
    "centre": ("SMCENTER", "category"),
    "age": ("AGE", "category"),
    "sex": ("SEX", "category"),
}


#: the GTEx file each confounder column comes from (for messages)
SOURCE_FILES = {
    "SMTSISCH": "sample attributes (*SampleAttributesDS.txt, one row per sample)",
    "SMRIN": "sample attributes (*SampleAttributesDS.txt, one row per sample)",
    "SMCENTER": "sample attributes (*SampleAttributesDS.txt, one row per sample)",
    "AGE": "subject phenotypes (*SubjectPhenotypesDS.txt, one row per donor)",
    "SEX": "subject phenotypes (*SubjectPhenotypesDS.txt, one row per donor)",
}


def log_ischemic_time(minutes) -> np.ndarray:
    """``log(1 + max(t, 0))`` of ischemic time in minutes.

    GTEx records a few times <= 0 (tissue taken before or at the declared
    time of death, e.g. surgical and organ-donor samples); they are set to 0
    minutes, the shortest possible time, before the log. Negative values are
    not errors; NaN stays NaN (see :func:`build_design`).
    """
    t = _float_array(minutes)
    return np.log1p(np.clip(t, 0, None))


def _float_array(values) -> np.ndarray:
    """float64 array of a vector or table; pandas' missing values (``pd.NA`` of the nullable dtypes Int64,
    Float64, boolean) become NaN. Every number handed to NumPy, statsmodels or patsy passes through here."""
    if isinstance(values, (pd.Series, pd.DataFrame, pd.Index)):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(values, pd.api.extensions.ExtensionArray):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64)


def _level_text(values: pd.Series) -> pd.Series:
    """The levels of a categorical confounder as text, as the design names its columns (``term[level]``).

    Nullable dtypes (Int64 ``1`` -> ``"1"``, boolean, string) give the text of their values; missing values
    stay missing (they are dropped before, see :func:`build_design`).
    """
    text = values.astype(object).where(values.notna(), None).astype(str)
    return text.where(values.notna(), None)


@dataclass
class Design:
    """A design matrix with the columns of each term.

    Attributes
    ----------
    matrix : DataFrame, shape (n_samples, n_columns), intercept first
    terms : dict, term -> list of column names (the intercept is not a term)
    dropped : dict, what was left out or changed and why: ``constant_terms`` (list: no variation, or one
        level left after merging), ``rare_terms`` (term -> levels: every level rarer than ``min_level_size``,
        term left out), ``samples_missing`` (list of samples), ``pooled_levels`` (term -> the rare levels
        pooled into :data:`POOLED_LEVEL`), ``merged_levels`` (term -> the rare levels merged into the most
        frequent level), ``notes`` (list of str: each change in words, as logged)
    """

    matrix: pd.DataFrame
    terms: dict[str, list[str]]
    dropped: dict = field(default_factory=dict)

    def columns(self, terms: Sequence[str] | None = None) -> list[str]:
        """Intercept plus the columns of ``terms`` (all terms when None)."""
        use = self.terms if terms is None else terms
        return ["intercept"] + [c for t in use for c in self.terms[t]]


#: the level that the rare levels of a categorical confounder are pooled into (:func:`build_design`)
POOLED_LEVEL = "other (pooled)"


def _level_list(counts: pd.Series, *, limit: int = 6) -> str:
    """``"BP-1 (2), BP-7 (1), ... (23 levels, 40 samples)"``: levels with their sample counts, for messages."""
    shown = ", ".join(f"{lev} ({int(n)})" for lev, n in counts.iloc[:limit].items())
    more = f", ... ({len(counts)} levels, {int(counts.sum())} samples)" if len(counts) > limit else ""
    return shown + more


def _pool_rare_levels(v: pd.Series, term: str, min_level_size: int, dropped: dict, where: str
                      ) -> tuple[pd.Series | None, str | None]:
    """The levels of one categorical term after pooling its rare levels (see :func:`build_design`), and the
    name of the pooled level (None: nothing pooled); levels None when the term is left out. Each change is
    recorded in ``dropped`` and logged."""
    counts = v.value_counts()
    rare = counts[counts < min_level_size]
    if len(rare) and len(rare) == len(counts):
        dropped["rare_terms"][term] = list(rare.index)
        msg = (f"{where}: {term} left out: all its {len(counts)} levels have fewer than {min_level_size} "
               f"samples ({_level_list(rare)}); pooled they would be one level")
        dropped["notes"].append(msg)
        log.warning("%s.", msg)
        return None, None
    if not len(rare):
        return v, None
    if rare.sum() >= min_level_size:
        name = POOLED_LEVEL
        while name in counts.index:  # a real level of that name: keep the pooled one apart
            name += "*"
        dropped["pooled_levels"][term] = list(rare.index)
        msg = (f"{where}: {term} levels with fewer than {min_level_size} samples pooled into '{name}': "
               f"{_level_list(rare)}")
        v = v.where(~v.isin(rare.index), name)
    else:
        name = None  # pooled they would still be rarer than min_level_size: into the most frequent level
        dropped["merged_levels"][term] = list(rare.index)
        msg = (f"{where}: {term} levels with fewer than {min_level_size} samples (together {int(rare.sum())}, "
               f"too few to pool) merged into the most frequent level '{counts.index[0]}': {_level_list(rare)}")
        v = v.where(~v.isin(rare.index), counts.index[0])
        if len(counts) - len(rare) == 1:  # the only common level: nothing left to contrast
            msg = f"{where}: {term} left out: one level left after merging; " + msg.split(f"{term} ", 1)[1]
            dropped["notes"].append(msg)
            log.warning("%s.", msg)
            return v, None
    dropped["notes"].append(msg)
    log.info("%s.", msg)
    return v, name


def build_design(samples: pd.DataFrame, *, confounders: dict | None = None, min_level_size: int = 2,
                 on_missing: str = "drop", tissue: str | None = None) -> Design:
    """Design matrix of the confounders of the given samples.

    Parameters
    ----------
    samples : DataFrame, one row per sample, with the source columns (``SMTSISCH, SMRIN, SMCENTER, AGE, SEX``);
        numeric or categorical columns of any dtype, pandas' nullable ones (Int64, Float64, boolean, string
        with ``pd.NA``) included
    confounders : term -> (source column, kind), kind one of :data:`KINDS` (:func:`confounder_spec`); default
        :data:`DEFAULT_CONFOUNDERS` (ischemic time through :func:`log_ischemic_time`)
    min_level_size : a category level with fewer samples is *rare* (a level of one sample would be fitted
        exactly and leave it a zero residual; a batch of two spends a degree of freedom on two samples).
        The rare levels of a term are pooled into one level, :data:`POOLED_LEVEL`, when together they have
        at least ``min_level_size`` samples, else merged into the most frequent level. A term whose levels
        are all rare is left out (pooled, they would be one level: no contrast left), as is a term left with
        one level. Each pooling, merging and leaving-out is logged and reported in ``dropped``.
    on_missing : ``"drop"`` the samples with a missing confounder (reported in ``dropped``) or ``"raise"``
    tissue : what the samples are, for the messages (e.g. the tissue)

    Returns
    -------
    Design
        Numeric terms are centred; categories are treatment-coded against their most frequent level (never
        the pooled one). Terms without variation in these samples (one centre in a tissue) are left out and
        reported.

    Notes
    -----
    Pooling rather than merging into the most frequent level: a sample of a rare batch is not a sample of
    the largest batch, and merging it there biases that level's mean; pooled, the rare batches share one
    mean of their own. A pooled level of fewer than ``min_level_size`` samples would be the rare level the
    rule removes, so then (e.g. one singleton) the old merge applies. Rare levels that are all the term
    has (GTEx's nucleic-acid and expression batches within a tissue: dozens of batches of 1-3 samples)
    would saturate the design; the term is left out instead.
    """
    confounders = DEFAULT_CONFOUNDERS if confounders is None else confounders
    where = tissue if tissue is not None else f"{len(samples)} samples"
    missing_cols = [src for src, _ in confounders.values() if src not in samples]
    if missing_cols:
        where_from = "; ".join(f"{c} from the {SOURCE_FILES.get(c, 'sample table')}" for c in missing_cols)
        terms = [t for t, (src, _) in confounders.items() if src in missing_cols]
        raise InputError(f"Sample table lacks confounder columns {missing_cols} ({where_from}). Join that file's "
                         f"columns first, or leave the terms {terms} out of confounders=.")
    dropped: dict = {"constant_terms": [], "rare_terms": {}, "samples_missing": [], "pooled_levels": {},
                     "merged_levels": {}, "notes": []}
    src = samples[[s for s, _ in confounders.values()]]
    bad = pd.DataFrame({t: transform(samples[c], k) if k in NUMERIC_KINDS else samples[c]
                        for t, (c, k) in confounders.items()}, index=samples.index).isna().any(axis=1)
    if bad.any():
        msg = (f"{int(bad.sum())} samples have missing confounders (e.g. {list(samples.index[bad][:3])} in "
               f"{list(src.columns[src.isna().any()])})")
        if on_missing == "raise":
            raise InputError(msg + "; impute them or pass on_missing='drop'.")
        log.warning("%s%s: left out of the regression.", f"{tissue}: " if tissue is not None else "", msg)
        dropped["samples_missing"] = list(samples.index[bad])
    s = samples.loc[~bad]
    cols = {"intercept": np.ones(len(s))}
    terms: dict[str, list[str]] = {}
    for term, (col, kind) in confounders.items():
        v = s[col]
        if kind in NUMERIC_KINDS:
            x = transform(v, kind)
            if not len(x) or np.ptp(x) == 0:
                dropped["constant_terms"].append(term)
                continue
            cols[term] = x - x.mean()
            terms[term] = [term]
        elif kind == "category":
            v, pooled = _pool_rare_levels(_level_text(v), term, min_level_size, dropped, where)
            if v is None:
                continue
            counts = v.value_counts()
            if len(counts) < 2:  # no variation (one centre in a tissue), or one level left after merging
                dropped["constant_terms"].append(term)
                continue
            ref = counts.drop(pooled).index[0] if pooled is not None else counts.index[0]
            names = []
            for lev in sorted(lev for lev in counts.index if lev != ref):
                name = f"{term}[{lev}]"
                cols[name] = (v == lev).to_numpy(dtype=np.float64)
                names.append(name)
            terms[term] = names
        else:
            raise InputError(f"Confounder kind {kind!r} of {term!r} not available: {', '.join(KINDS)}.")
    if dropped["constant_terms"]:
        log.info("%s: confounders without variation here, left out: %s", where, dropped["constant_terms"])
    return Design(pd.DataFrame(cols, index=s.index), terms, dropped)


def _basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space of x (rank-revealing, via SVD)."""
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    rank = int((sv > sv[0] * max(x.shape) * np.finfo(float).eps).sum()) if len(sv) else 0
    return u[:, :rank]


def residualize(y, x) -> np.ndarray:
    """Residuals of every column of ``y`` regressed on ``x`` by least squares, in one pass.

    Parameters
    ----------
    y : array or DataFrame, shape (n_samples, n_columns)
    x : array or DataFrame, shape (n_samples, n_covariates), including the intercept column

    Returns
    -------
    array, shape (n_samples, n_columns)
        Equal to ``statsmodels.OLS(y[:, j], x).fit().resid`` for every j (rank-deficient designs
        included: the projection is onto the column space of x).
    """
    y = _float_array(y)
    x = _float_array(x)
    if y.shape[0] != x.shape[0]:
        raise InputError(f"y has {y.shape[0]} samples and the design {x.shape[0]}; align them first.")
    if not (np.isfinite(y.sum()) and np.isfinite(x).all()):  # a sum is NaN/inf iff a value is: one cheap pass
        raise InputError("NaN or infinite values in the table or the design; drop those samples first.")
    q = _basis(x)
    if q.shape[1] >= len(y):
        raise InputError(f"The design has rank {q.shape[1]} with {len(y)} samples: no residual degrees of "
                         f"freedom. Use fewer confounders or more samples.")
    out = q @ (q.T @ y)
    np.subtract(y, out, out=out)
    return out


def fit_rss(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Residual sum of squares of every column of y on x, and the rank of x."""
    q = _basis(_float_array(x))
    y = _float_array(y)
    r = y - q @ (q.T @ y)
    return (r ** 2).sum(0), q.shape[1]


def variance_partition(y, design: Design, *, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Variance of each column explained by each confounder term (type-II) and by all together.

    Parameters
    ----------
    y : array or DataFrame, shape (n_samples, n_columns), rows in ``design.matrix`` order
    design : :class:`Design`
    names : column names (taken from y when a DataFrame)

    Returns
    -------
    DataFrame, long format: ``column, term, df, unique_r2, unique_r2_adj, partial_r2, F, p`` for every
    term, and a row with term ``"(all)"`` whose ``unique_r2`` is the full model's R² (its F test against
    the intercept only).

    Notes
    -----
    With few samples a term of ``q`` columns explains about ``q / (n - 1)`` of any column by chance (a
    5-level category, 40 samples: 10 %). ``unique_r2_adj = (SS_term - q * MSE) / SS_total`` removes that
    expectation (zero on average for a term without effect; it can be negative), and for ``"(all)"`` it
    is the adjusted R².
    """
    if isinstance(y, pd.DataFrame):
        names = list(y.columns) if names is None else names
    y = _float_array(y)
    names = list(range(y.shape[1])) if names is None else list(names)
    n = len(y)
    x_full = design.matrix[design.columns()].to_numpy()
    rss_full, rank_full = fit_rss(y, x_full)
    df_resid = n - rank_full
    if df_resid < 1:
        raise InputError(f"{n} samples and a design of rank {rank_full}: no residual degrees of freedom.")
    tss = ((y - y.mean(0)) ** 2).sum(0)
    mse = rss_full / df_resid
    with np.errstate(divide="ignore", invalid="ignore"):
        out = []
        for term in design.terms:
            rss_red, rank_red = fit_rss(y, design.matrix[design.columns([t for t in design.terms if t != term])]
                                        .to_numpy())
            df_term = rank_full - rank_red
            ss = rss_red - rss_full
            fstat = (ss / max(df_term, 1)) / (rss_full / df_resid)
            out.append(pd.DataFrame({"column": names, "term": term, "df": df_term, "unique_r2": ss / tss,
                                     "unique_r2_adj": (ss - df_term * mse) / tss,
                                     "partial_r2": ss / (ss + rss_full), "F": fstat,
                                     "p": stats.f.sf(fstat, max(df_term, 1), df_resid)}))
        df_model = rank_full - 1
        fstat = ((tss - rss_full) / max(df_model, 1)) / (rss_full / df_resid)
        out.append(pd.DataFrame({"column": names, "term": "(all)", "df": df_model, "unique_r2": 1 - rss_full / tss,
                                 "unique_r2_adj": 1 - mse / (tss / (n - 1)),
                                 "partial_r2": 1 - rss_full / tss, "F": fstat,
                                 "p": stats.f.sf(fstat, max(df_model, 1), df_resid)}))
    return pd.concat(out, ignore_index=True)


def select_terms(y, design: Design, *, method: str = "all", alpha: float = 0.05) -> pd.DataFrame:
    """Which confounder terms each column keeps, by the model-choice rule.

    method
        ``"all"``: every term for every column (Jones' full model).
        ``"significant"``: the terms whose type-II F test in the full model has p < alpha.
        ``"forward"``: forward selection per column: starting from the intercept, add the term with the
        smallest partial F-test p-value while it is below alpha.

    Returns
    -------
    DataFrame of booleans, shape (n_columns, n_terms).
    """
    y = _float_array(y)
    terms = list(design.terms)
    if method == "all":
        return pd.DataFrame(True, index=range(y.shape[1]), columns=terms)
    if method == "significant":
        vp = variance_partition(y, design)
        vp = vp[vp.term != "(all)"]
        return (vp.assign(keep=vp.p < alpha).pivot(index="column", columns="term", values="keep")
                .reindex(columns=terms).fillna(False).astype(bool))
    if method != "forward":
        raise InputError(f"Model choice {method!r} not available. Choose 'all', 'significant' or 'forward'.")
    n = len(y)
    chosen = np.zeros((y.shape[1], len(terms)), bool)
    active = np.ones(y.shape[1], bool)
    for _ in range(len(terms)):
        if not active.any():
            break
        best_p = np.full(y.shape[1], np.inf)
        best_t = np.full(y.shape[1], -1)
        # columns with the same current model share the fits
        keys = pd.Series([row.tobytes() for row in chosen])
        for key, idx in keys[active].groupby(keys[active]).groups.items():
            idx = np.asarray(idx)
            cur = [t for t, c in zip(terms, chosen[idx[0]]) if c]
            x0 = design.matrix[design.columns(cur)].to_numpy()
            rss0, r0 = fit_rss(y[:, idx], x0)
            for j, t in enumerate(terms):
                if chosen[idx[0], j]:
                    continue
                rss1, r1 = fit_rss(y[:, idx], design.matrix[design.columns(cur + [t])].to_numpy())
                df1, df2 = r1 - r0, n - r1
                if df1 < 1 or df2 < 1:
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    p = stats.f.sf(((rss0 - rss1) / df1) / (rss1 / df2), df1, df2)
                better = p < best_p[idx]
                best_p[idx[better]] = p[better]
                best_t[idx[better]] = j
        add = active & (best_p < alpha)
        chosen[np.where(add)[0], best_t[add]] = True
        active = add
    return pd.DataFrame(chosen, columns=terms)


def residualize_selected(y, design: Design, keep: pd.DataFrame) -> np.ndarray:
    """Residuals of each column on the intercept and its own selected terms (:func:`select_terms`)."""
    y = _float_array(y)
    out = np.empty_like(y)
    keys = pd.Series([row.tobytes() for row in keep.to_numpy()])
    for _, idx in keys.groupby(keys).groups.items():
        idx = np.asarray(idx)
        cur = [t for t, c in zip(keep.columns, keep.to_numpy()[idx[0]]) if c]
        out[:, idx] = residualize(y[:, idx], design.matrix[design.columns(cur)].to_numpy())
    return out


# --------------------------------------------------------------------------
# notebook 05: designs, residual tables and variance partitions per tissue
# --------------------------------------------------------------------------
#: confounder term -> the column of the sample table that holds it (plots and diagnostics)
SOURCE_COLUMNS = {"log_ischemic_time": "log_isch", "RIN": "SMRIN", "centre": "SMCENTER", "age": "AGE", "sex": "SEX"}
NUMERIC_TERMS = ("log_ischemic_time", "RIN")


#: kinds of confounder: numbers, numbers through log(1 + max(x, 0)), GTEx's age brackets at their midpoints,
#: categories (treatment-coded)
KINDS = ("numeric", "log", "log_ischemic", "age_bracket", "category")
NUMERIC_KINDS = ("numeric", "log", "log_ischemic", "age_bracket")

#: GTEx v8 columns usable as confounders by their own name, with their kind (Jones' technical factors and
#: donor phenotypes); any other column of the sample table can be named as ``"COLUMN:kind"``
GTEX_COLUMNS = {
    "SMTSISCH": "log_ischemic",  # ischemic time, minutes (log)
    "SMRIN": "numeric",          # RNA integrity number
    "SMATSSCR": "numeric",       # autolysis score 0-3
    "SMTSPAX": "numeric",        # time in PAXgene fixative, minutes
    "SMCENTER": "category",      # collection centre
    "SMNABTCH": "category",      # nucleic-acid isolation batch
    "SMNABTYP": "category",      # nucleic-acid isolation type
    "SMGEBTCH": "category",      # expression (genotype or expression) batch
    "SMGEBTYP": "category",      # expression batch type
    "SMAFRZE": "category",       # analysis freeze
    "AGE": "age_bracket",        # donor age bracket, e.g. 60-69 -> 64.5 years
    "SEX": "category",           # donor sex (1 male, 2 female)
    "DTHHRDY": "category",       # Hardy scale 0-4 (cause and speed of death)
}
SOURCE_FILES.update({c: ("subject phenotypes (*SubjectPhenotypesDS.txt, one row per donor)" if c in
                         ("AGE", "SEX", "DTHHRDY") else "sample attributes (*SampleAttributesDS.txt, one row per sample)")
                     for c in GTEX_COLUMNS})


def age_bracket_midpoint(values) -> np.ndarray:
    """GTEx age brackets (``"60-69"``) as their midpoints in years (64.5); numbers pass through, blanks are NaN."""
    v = pd.Series(values)
    text = v.astype("string").str.strip()
    m = text.str.extract(r"^(\d+)\s*-\s*(\d+)$").astype(float)
    mid = (m[0] + m[1]) / 2
    num = pd.Series(_float_array(pd.to_numeric(v, errors="coerce")), index=v.index)
    bad = mid.isna() & num.isna() & v.notna()
    if bad.any():
        raise InputError(f"Age values {sorted(set(v[bad].astype(str)))[:5]} are neither brackets like '60-69' nor "
                         "numbers; fix the subject phenotypes file.")
    return mid.fillna(num).to_numpy(dtype=np.float64)


def transform(values, kind: str) -> np.ndarray:
    """The numbers a numeric confounder of ``kind`` enters the design as (see :data:`KINDS`).

    Parameters
    ----------
    values : array-like, shape (n_samples,)
    kind : ``"numeric"``, ``"log"`` or ``"log_ischemic"`` (log(1 + max(x, 0))), ``"age_bracket"``

    Returns
    -------
    array, shape (n_samples,), float64; NaN where a value is missing

    Raises
    ------
    ValueError
        A value that is not a number (named, with the column's fix).
    """
    if kind == "age_bracket":
        return age_bracket_midpoint(values)
    v = pd.Series(values)
    num = pd.to_numeric(v, errors="coerce")
    bad = num.isna() & v.notna() & (v.astype(str).str.strip() != "")
    if bad.any():
        raise InputError(f"Confounder column {getattr(values, 'name', '')!r} has non-numeric values "
                         f"{sorted(set(v[bad].astype(str)))[:5]}; name it as 'COLUMN:category' or fix the values.")
    x = _float_array(num)
    return log_ischemic_time(x) if kind in ("log", "log_ischemic") else x


def confounder_spec(names: Sequence[str], *, columns: Sequence[str] | None = None) -> dict:
    """The confounder terms of ``names``, in that order (for :func:`build_design`).

    A name is one of :data:`DEFAULT_CONFOUNDERS` (``log_ischemic_time, RIN, centre, age, sex``), a GTEx
    column of :data:`GTEX_COLUMNS` (``SMATSSCR``, ``DTHHRDY``, ``SMNABTCH``, ``AGE`` as bracket midpoints,
    ...), or ``"COLUMN:kind"`` for any other column of the sample table (kind one of :data:`KINDS`).

    Parameters
    ----------
    names : sequence of str, e.g. ``["log_ischemic_time", "RIN", "SMATSSCR", "DTHHRDY", "SMNABTCH"]``
    columns : the columns of the sample table (:func:`sample_covariates`); when given, a name whose column
        is absent is refused here, with the closest available name

    Returns
    -------
    dict, term -> (source column, kind)

    Raises
    ------
    ValueError
        An unknown name or kind, a name listed twice, a column absent from ``columns``.
    """
    import difflib

    available = list(DEFAULT_CONFOUNDERS) + list(GTEX_COLUMNS)
    spec = {}
    for name in names:
        if name in spec:
            raise InputError(f"Confounder {name!r} is listed twice; list each once.")
        if name in DEFAULT_CONFOUNDERS:
            spec[name] = DEFAULT_CONFOUNDERS[name]
        elif name in GTEX_COLUMNS:
            spec[name] = (name, GTEX_COLUMNS[name])
        elif ":" in name:
            col, kind = name.rsplit(":", 1)
            if kind not in KINDS:
                raise InputError(f"Confounder {name!r}: kind {kind!r} not available. Available: {list(KINDS)}.")
            spec[name] = (col, kind)
        else:
            pool = available + [f"{c}:category" for c in (columns or []) if c not in available]
            close = difflib.get_close_matches(name, pool, n=1, cutoff=0.5) or \
                difflib.get_close_matches(name.upper(), pool, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(f"Confounder {name!r} not available.{hint} Available: {available}, or "
                             f"'COLUMN:kind' (kind one of {list(KINDS)}) for another column of the sample table.")
    if columns is not None:
        absent = {t: c for t, (c, _) in spec.items() if c not in set(columns)}
        if absent:
            t, c = next(iter(absent.items()))
            close = difflib.get_close_matches(c, list(columns), n=1, cutoff=0.5)
            raise InputError(f"Confounder {t!r} needs column {c!r}, absent from the sample table"
                             f"{f' (closest: {close[0]!r})' if close else ''}; it comes from the "
                             f"{SOURCE_FILES.get(c, 'sample attributes or subject phenotypes')}.")
    return spec


def source_columns(spec: dict) -> dict:
    """Term -> the column of :func:`sample_covariates` shown against it in plots (``log_isch`` for ischemic time)."""
    return {t: SOURCE_COLUMNS.get(t, "log_isch" if (c, k) == ("SMTSISCH", "log_ischemic") else c)
            for t, (c, k) in spec.items()}


def numeric_terms(spec: dict) -> tuple[str, ...]:
    """The terms of ``spec`` that enter the design as numbers (plotted as scatters)."""
    return tuple(t for t, (_, k) in spec.items() if k in NUMERIC_KINDS)


def _design_levels(values: pd.Series, term: str, columns: Sequence[str]) -> pd.Series | None:
    """The levels a design gave a categorical term's values (rare levels pooled or merged as
    :func:`build_design` did), read back from its columns ``term[level]``; None when nothing was recoded.

    The levels with a column keep their name. The others are the reference (the most frequent of them:
    a rare level is rarer than any kept one) and the rare levels: pooled when the design has a column for
    a level absent from the values (:data:`POOLED_LEVEL`), else merged into the reference.
    """
    text = _level_text(values)
    present = text.dropna()
    own = {c[len(term) + 1:-1] for c in columns if c.startswith(f"{term}[") and c.endswith("]")}
    rest = present[~present.isin(own)].value_counts()
    if len(rest) < 2:
        return None
    pooled = sorted(own - set(present))
    into = pooled[0] if pooled else rest.index[0]
    recode = {lev: into for lev in rest.index[1:]}
    return text.map(lambda lev: recode.get(lev, lev) if lev is not None else np.nan)


def ols_formula(samples: pd.DataFrame, spec: dict, terms: Sequence[str] | dict) -> tuple[str, pd.DataFrame]:
    """The right-hand side of a statsmodels formula for ``terms`` and the frame it reads (for checking the
    batched regression against ``statsmodels.formula.api.ols``).

    Parameters
    ----------
    samples : DataFrame, one row per sample (:func:`sample_covariates`): the design's samples
    spec : :func:`confounder_spec`
    terms : the terms of a design (``Design.terms``, a dict: then the categorical columns of the frame hold
        the design's levels, rare levels pooled or merged as :func:`build_design` did, so statsmodels fits
        the same model), or a list of term names (the levels as they are)

    Returns
    -------
    rhs : str, e.g. ``"log_isch + SMRIN + C(SMCENTER) + C(AGE) + C(SEX)"`` for the default terms
    frame : ``samples`` with a column per transformed numeric term (``<COLUMN>__<kind>``); the columns the
        formula reads are plain NumPy dtypes (numbers float64 with NaN, categories objects with NaN), as
        patsy does not read pandas' nullable dtypes (Int64, Float64, boolean, string with ``pd.NA``)
    """
    frame, parts = samples.copy(), []
    for t in terms:
        col, kind = spec[t]
        if (col, kind) == ("SMTSISCH", "log_ischemic") and "log_isch" in frame:
            frame["log_isch"] = _float_array(frame["log_isch"])
            parts.append("log_isch")
        elif kind == "numeric":
            if not (isinstance(frame[col].dtype, np.dtype) and frame[col].dtype.kind in "iuf"):
                frame[col] = transform(frame[col], kind)  # Int64, Float64, booleans, text: float64 with NaN
            parts.append(f"Q('{col}')" if not col.isidentifier() else col)
        elif kind in NUMERIC_KINDS:
            name = f"{col}__{kind}"
            frame[name] = transform(frame[col], kind)
            parts.append(name if name.isidentifier() else f"Q('{name}')")
        else:
            v = frame[col]
            coded = _design_levels(v, t, terms[t]) if isinstance(terms, dict) else None
            if coded is not None:
                frame[col] = coded
            elif isinstance(v.dtype, pd.api.extensions.ExtensionDtype) and \
                    not isinstance(v.dtype, pd.CategoricalDtype):  # Int64, boolean, string: pd.NA -> NaN
                frame[col] = v.astype(object).where(v.notna(), np.nan)
            parts.append(f"C({col})" if col.isidentifier() else f"C(Q('{col}'))")
    return " + ".join(parts), frame


def _blank_columns(samples: pd.DataFrame, confounders: dict) -> dict[str, str]:
    """term -> its source column, for the confounders whose column is blank (missing) in every sample."""
    out = {}
    for term, (col, kind) in confounders.items():
        if col in samples and len(samples):
            x = transform(samples[col], kind) if kind in NUMERIC_KINDS else samples[col].isna().to_numpy()
            if (np.isnan(x) if kind in NUMERIC_KINDS else x).all():
                out[term] = col
    return out


def check_confounders_filled(samples: pd.DataFrame, confounders: dict | None = None) -> None:
    """Refuse a confounder whose column is blank for every sample (no sample could enter any design).

    Parameters
    ----------
    samples : DataFrame, one row per sample (:func:`sample_covariates`)
    confounders : term -> (source column, kind) (:func:`confounder_spec`); default :data:`DEFAULT_CONFOUNDERS`

    Raises
    ------
    ValueError
        Naming the term, its column, the file it comes from and the fix (drop the term or fill the column).
    """
    confounders = DEFAULT_CONFOUNDERS if confounders is None else confounders
    blank = _blank_columns(samples, confounders)
    if blank:
        term, col = next(iter(blank.items()))
        raise InputError(f"Confounder {term!r}: column {col} is blank for all {len(samples)} samples (in the "
                         f"{SOURCE_FILES.get(col, 'sample table')}), so no sample can enter the regression. Drop "
                         f"{term!r} from confounders, or fill {col} in that file"
                         + (f" (also blank: {', '.join(f'{c} ({t})' for t, c in list(blank.items())[1:])})."
                            if len(blank) > 1 else "."))


def confounder_levels(samples: pd.DataFrame, spec: dict, *, min_level_size: int = 2,
                      group: str | None = "SMTS") -> pd.DataFrame:
    """What each confounder holds in the samples: levels of categories, range of numbers, missing values.

    Parameters
    ----------
    samples : DataFrame, one row per sample with the source columns (:func:`sample_covariates`)
    spec : :func:`confounder_spec`
    min_level_size : a category level with fewer samples (within a ``group``) is flagged ``too_few``; the
        design pools it with the other rare levels, merges it into the most frequent level or leaves the
        term out (:func:`build_design`)
    group : column the designs are built within (tissue); None: all samples together

    Returns
    -------
    DataFrame, one row per term × level (categories) or per term (numbers): ``term, column, kind, level,
    samples, missing, min, max, groups_too_few`` (``groups_too_few``: groups where the level has fewer than
    ``min_level_size`` samples but more than none)

    Raises
    ------
    ValueError
        A confounder whose column is blank for every sample (:func:`check_confounders_filled`).
    """
    check_confounders_filled(samples, spec)
    rows = []
    for term, (col, kind) in spec.items():
        v = samples[col]
        if kind in NUMERIC_KINDS:
            x = transform(v, kind)
            rows.append({"term": term, "column": col, "kind": kind, "level": "", "samples": int(np.isfinite(x).sum()),
                         "missing": int(np.isnan(x).sum()), "min": float(np.nanmin(x)) if np.isfinite(x).any()
                         else np.nan, "max": float(np.nanmax(x)) if np.isfinite(x).any() else np.nan,
                         "groups_too_few": 0})
            continue
        text = v.dropna().astype(str)
        grp = samples.loc[text.index, group] if group else pd.Series("all", index=text.index)
        per = pd.crosstab(text, grp)
        for lev, n in text.value_counts().sort_index().items():
            few = int(((per.loc[lev] > 0) & (per.loc[lev] < min_level_size)).sum())
            rows.append({"term": term, "column": col, "kind": kind, "level": lev, "samples": int(n),
                         "missing": int(v.isna().sum()), "min": np.nan, "max": np.nan, "groups_too_few": few})
    out = pd.DataFrame(rows)
    few = out[out.groups_too_few > 0]
    if len(few):
        log.info("%d confounder levels have fewer than %d samples in some tissue (pooled, merged or left out "
                 "there, see the designs): %s", len(few),
                 min_level_size, ", ".join(f"{t}={lv}" for t, lv in zip(few.term[:5], few.level[:5])))
    return out


def sample_covariates(samples: pd.DataFrame, subjects: pd.DataFrame, expressed: Sequence[str]) -> pd.DataFrame:
    """One row per RNA sample with a slide and expression, with its donor's phenotypes and ``log_isch``.

    Every column of ``subjects`` the sample table does not already have is joined (AGE, SEX, DTHHRDY, ...),
    so any of them can be a confounder (:func:`confounder_spec`).

    Parameters
    ----------
    samples : DataFrame, notebook 01's ``samples.tsv`` (``SAMPID``, ``subject_id``, ``SMTS``, ``SMTSISCH``, ...)
    subjects : DataFrame indexed by SUBJID with ``AGE`` and ``SEX`` (:func:`histo_utils.gtex.read_subject_phenotypes`)
    expressed : sample IDs of the expression table

    Returns
    -------
    DataFrame, shape (n_samples, ...), index SAMPID.
    """
    s = samples.drop_duplicates("SAMPID").set_index("SAMPID")
    s = s[s.index.isin(expressed)].join(subjects[[c for c in subjects.columns if c not in s]], on="subject_id")
    return s.assign(log_isch=log_ischemic_time(s.SMTSISCH))


def build_designs(samples: pd.DataFrame, *, min_samples: int = 10, confounders: dict | None = None,
                  min_level_size: int = 2, min_resid_df: int = 1, group: str = "SMTS"
                  ) -> tuple[dict[str, Design], pd.DataFrame]:
    """One design per tissue with at least ``min_samples`` samples and enough residual degrees of freedom,
    and what each left out.

    Parameters
    ----------
    samples : DataFrame, shape (n_samples, ...), index SAMPID, with the tissue column ``group`` and the
        confounders' source columns (:func:`sample_covariates`)
    min_samples : tissues with fewer samples get no design (and no row; logged)
    confounders, min_level_size : passed to :func:`build_design` (rare levels pooled, all-rare terms left out)
    min_resid_df : a tissue whose design leaves fewer residual degrees of freedom (samples minus the rank of
        the design) is skipped: logged, and its row says why. The default 1 skips only saturated designs
        (residuals all zero); notebook 06 tests a tissue's associations only with 2 or more.
    group : the tissue column the designs are built within (the run's ``label_column``: ``SMTS`` or ``SMTSD``)

    Returns
    -------
    designs : dict, tissue -> Design, tissues in alphabetical order (the skipped ones left out)
    notes : DataFrame, one row per tissue with at least ``min_samples`` samples: ``tissue, status``
        (``"fitted"`` or ``"skipped"``), ``samples, design_columns`` (0 when skipped: no design fitted),
        ``rank, resid_df`` (of the tissue's design), ``terms, left_out_terms`` (no variation, or all levels
        rare), ``samples_missing, pooled_levels, merged_levels`` (JSON, term -> levels),
        ``ischemic_time_le_0, note`` (each pooling, merging, leaving-out and skip in words, as logged)

    Raises
    ------
    ValueError
        A confounder whose column is blank for every sample (:func:`check_confounders_filled`; a column
        blank for every sample of one tissue skips that tissue, its note naming the column). Every tissue
        with ``min_samples`` samples is skipped: the message names the confounders, what each tissue's
        design needs and the fix (fewer confounders, or more samples per tissue).
    """
    import json

    if min_resid_df < 1:
        raise InputError(f"min_resid_df={min_resid_df}: a design needs at least 1 residual degree of freedom "
                         "(with 0 every residual is zero); pass 1 or more.")
    if group not in samples:
        raise InputError(f"The samples have no tissue column '{group}' (columns: {list(samples.columns)[:12]} ...). "
                         "Pass group= the run's label_column (SMTS or SMTSD).")
    check_confounders_filled(samples, confounders)
    counts = samples[group].value_counts().sort_index()
    tissues = [t for t, n in counts.items() if n >= min_samples]
    if len(tissues) < len(counts):
        log.info("Tissues with fewer than %d samples, no design: %s", min_samples,
                 ", ".join(f"{t} ({n})" for t, n in counts.items() if n < min_samples))
    designs, notes = {}, []
    for t in tissues:
        d = build_design(samples[samples[group] == t], confounders=confounders, min_level_size=min_level_size,
                         tissue=t)
        n = len(d.matrix)
        rank = _basis(d.matrix.to_numpy()).shape[1] if n else 0
        resid_df = n - rank
        said = list(d.dropped["notes"])
        if resid_df < min_resid_df:
            cost = ", ".join(f"{term} {len(cols)}" for term, cols in
                             sorted(d.terms.items(), key=lambda kv: -len(kv[1])))
            lost = len(d.dropped["samples_missing"])
            msg = (f"{t}: skipped: {n} samples{f' ({lost} more miss a confounder)' if lost else ''} and a design "
                   f"of rank {rank} (intercept 1{', ' + cost if cost else ''}) leave {resid_df} residual degrees "
                   f"of freedom, fewer than {min_resid_df}; it needs {rank + min_resid_df} samples, or fewer "
                   f"confounders")
            blank = _blank_columns(samples[samples[group] == t],
                                   DEFAULT_CONFOUNDERS if confounders is None else confounders)
            if blank:
                msg += "; " + "; ".join(f"{c} is blank for all its samples (drop {term!r} from confounders, or "
                                        f"fill {c})" for term, c in blank.items())
            log.warning("%s.", msg)
            said.append(msg)
        else:
            designs[t] = d
        notes.append({"tissue": t, "status": "fitted" if t in designs else "skipped", "samples": n,
                      "design_columns": d.matrix.shape[1] if t in designs else 0, "rank": rank,
                      "resid_df": resid_df, "terms": ", ".join(d.terms),
                      "left_out_terms": ", ".join(d.dropped["constant_terms"] + list(d.dropped["rare_terms"])),
                      "samples_missing": len(d.dropped["samples_missing"]),
                      "pooled_levels": json.dumps(d.dropped["pooled_levels"]),
                      "merged_levels": json.dumps(d.dropped["merged_levels"]),
                      "ischemic_time_le_0": int((_float_array(samples.loc[d.matrix.index, "SMTSISCH"]) <= 0).sum())
                      if "SMTSISCH" in samples else 0,
                      "note": "; ".join(m[len(t) + 2:] if m.startswith(f"{t}: ") else m for m in said)})
    if tissues and not designs:
        terms = list(DEFAULT_CONFOUNDERS if confounders is None else confounders)
        close = min(notes, key=lambda r: r["rank"] + min_resid_df - r["samples"])
        each = "; ".join(f"{r['tissue']}: {r['samples']} samples, design rank {r['rank']}" for r in notes)
        raise InputError(f"No tissue has {min_resid_df} residual degree(s) of freedom left with the confounders "
                         f"{terms} ({each}). Use fewer confounders (a category costs one column per level beyond "
                         f"the first; batch IDs cost most) or a larger min_level_size (more rare levels pooled), "
                         f"or more samples per tissue: {close['tissue']} needs at least "
                         f"{close['rank'] + min_resid_df} with this design (levels new samples add cost more).")
    return designs, pd.DataFrame(notes)


def expressed_genes(log_expression: pd.DataFrame, design: Design, *, min_mean: float = 1.0) -> pd.DataFrame:
    """The genes of a tissue with mean log2(1 + TPM) at least ``min_mean`` there and with variance.

    Parameters
    ----------
    log_expression : DataFrame, shape (n_samples, n_genes), index SAMPID
    design : Design of the tissue (its samples are the rows kept)

    Returns
    -------
    DataFrame, shape (n_tissue_samples, n_kept_genes).
    """
    e = log_expression.loc[design.matrix.index]
    return drop_constant(e.loc[:, e.mean() >= min_mean], what="gene")[0]


def residual_table(table: pd.DataFrame, design: Design, *, method: str = "all", alpha: float = 0.05
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Residuals of a table's columns (those with variance) on the confounders of one tissue.

    Parameters
    ----------
    table : DataFrame, shape (n_samples, n_columns), index SAMPID (features or expression); samples of the
        design without a row (a slide without a tile of a large patch size) are left out, logged, and the
        design fitted on the others
    design : Design of the tissue
    method, alpha : model choice of :func:`select_terms`

    Returns
    -------
    residuals : DataFrame, shape (n_tissue_samples, n_kept_columns)
    keep : DataFrame of booleans, shape (n_kept_columns, n_terms), the terms each column used
    """
    rows = design.matrix.index
    have = rows[rows.isin(table.index)]
    if len(have) < len(rows):
        log.warning("%d of the %d samples of a design have no row in the table (e.g. %s; a slide without a tile "
                    "of this size): fitted on the other %d", len(rows) - len(have), len(rows),
                    list(rows[~rows.isin(table.index)][:2]), len(have))
        design = replace(design, matrix=design.matrix.loc[have])
    y = drop_constant(table.loc[design.matrix.index])[0]
    yy = _float_array(y)
    keep = select_terms(yy, design, method=method, alpha=alpha)
    return pd.DataFrame(residualize_selected(yy, design, keep), index=y.index, columns=y.columns), keep


def residualize_by_tissue(table: pd.DataFrame, designs: dict[str, Design], *, method: str = "all",
                          alpha: float = 0.05) -> pd.DataFrame:
    """Residuals of a table within each tissue (:func:`residual_table`), stacked.

    Parameters
    ----------
    table : DataFrame, shape (n_samples, n_columns), index SAMPID (e.g. image features)
    designs : dict, tissue -> Design (:func:`build_designs`)
    method, alpha : model choice of :func:`select_terms`

    Returns
    -------
    DataFrame, shape (n_design_samples, n_columns): columns without variance in a tissue are NaN there.

    Examples
    --------
    >>> residual_features = residualize_by_tissue(features, designs)                   # doctest: +SKIP
    """
    return pd.concat([residual_table(table, d, method=method, alpha=alpha)[0] for d in designs.values()])


def residualize_expression_by_tissue(log_expression: pd.DataFrame, designs: dict[str, Design], *,
                                     gene_min_mean: float = 1.0, method: str = "all", alpha: float = 0.05
                                     ) -> pd.DataFrame:
    """Residuals of each tissue's expressed genes (:func:`expressed_genes`) within that tissue, stacked.

    Parameters
    ----------
    log_expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index SAMPID
    designs : dict, tissue -> Design
    gene_min_mean : genes with a lower mean in a tissue are left out there
    method, alpha : model choice of :func:`select_terms`

    Returns
    -------
    DataFrame, shape (n_design_samples, n_genes): genes left out in a tissue are NaN there.
    """
    return pd.concat([residual_table(expressed_genes(log_expression, d, min_mean=gene_min_mean), d,
                                     method=method, alpha=alpha)[0] for d in designs.values()])


@dataclass
class VarianceByConfounder:
    """Type-II variance partitions of genes and image features, per tissue (notebook 05).

    Attributes
    ----------
    genes : DataFrame, long: ``gene, term, df, unique_r2, unique_r2_adj, partial_r2, F, p, tissue, symbol``
    features : DataFrame, long: ``feature, term, ...`` (standardised features)
    overall : DataFrame, ``tissue, table, term, fraction_of_variance, fraction_adjusted``: each term's
        unique R² averaged over the columns weighted by their share of the tissue's total variance
    """

    genes: pd.DataFrame
    features: pd.DataFrame
    overall: pd.DataFrame


def variance_by_confounder(features: pd.DataFrame, log_expression: pd.DataFrame, designs: dict[str, Design],
                           *, symbols: pd.Series, gene_min_mean: float = 1.0) -> VarianceByConfounder:
    """:func:`variance_partition` of expression and standardised image features in every tissue.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features), index SAMPID
    log_expression : DataFrame, shape (n_samples, n_genes), index SAMPID
    designs : dict, tissue -> Design
    symbols : Series, gene -> symbol
    gene_min_mean : genes below this mean in a tissue are left out there (:func:`expressed_genes`)

    Returns
    -------
    VarianceByConfounder
    """
    vp_genes, vp_feats, overall = [], [], []
    for t, d in designs.items():
        e = expressed_genes(log_expression, d, min_mean=gene_min_mean)
        f = drop_constant(features.loc[d.matrix.index], what="feature")[0]
        f = (f - f.mean()) / f.std()
        for what, y, store in (("expression", e, vp_genes), ("image features", f, vp_feats)):
            vp = variance_partition(y, d).assign(tissue=t)
            store.append(vp)
            tss = ((y - y.mean()) ** 2).sum()
            w = tss / tss.sum()  # each column's share of the tissue's total variance
            for term, g in vp.groupby("term"):
                gi = g.set_index("column").reindex(y.columns)
                overall.append({"tissue": t, "table": what, "term": term,
                                "fraction_of_variance": float((gi.unique_r2 * w).sum()),
                                "fraction_adjusted": float((gi.unique_r2_adj * w).sum())})
    genes = pd.concat(vp_genes, ignore_index=True).rename(columns={"column": "gene"})
    genes["symbol"] = genes.gene.map(symbols)
    feats = pd.concat(vp_feats, ignore_index=True).rename(columns={"column": "feature"})
    return VarianceByConfounder(genes, feats, pd.DataFrame(overall))


@dataclass
class Diagnostics:
    """The strongest column of each confounder, for the diagnostic plots of notebook 05.

    Attributes
    ----------
    chosen : DataFrame, one row per term × kind: ``confounder, kind, column, tissue, unique_r2``
    scatter : DataFrame, one row per sample of each chosen column: ``confounder, kind, column, tissue, x, y``
        (``x`` as text for categorical terms)
    fitted : DataFrame, ``confounder, kind, column, tissue, fitted, residual`` of the full model
    """

    chosen: pd.DataFrame
    scatter: pd.DataFrame
    fitted: pd.DataFrame


def strongest_columns(partition: VarianceByConfounder, features: pd.DataFrame, log_expression: pd.DataFrame,
                      samples: pd.DataFrame, designs: dict[str, Design], terms: Sequence[str], *,
                      spec: dict | None = None) -> Diagnostics:
    """For each confounder term, the gene and the feature it explains most (largest unique R²), with their
    values against the confounder and the full model's fitted values and residuals.

    Parameters
    ----------
    partition : VarianceByConfounder
    features, log_expression : DataFrames, shape (n_samples, n_features / n_genes), index SAMPID
    samples : DataFrame indexed by SAMPID with the :data:`SOURCE_COLUMNS` (:func:`sample_covariates`)
    designs : dict, tissue -> Design
    terms : confounder terms to show (those present in a design)
    spec : :func:`confounder_spec` of the terms (default: :data:`DEFAULT_CONFOUNDERS`)

    Returns
    -------
    Diagnostics
    """
    spec = DEFAULT_CONFOUNDERS if spec is None else spec
    shown, numeric = source_columns(spec), numeric_terms(spec)
    chosen, diag_rows, fitted_rows = [], [], []
    for term in terms:
        for vp, kind, source in ((partition.genes, "gene", log_expression), (partition.features, "feature", features)):
            top = vp[vp.term == term].nlargest(1, "unique_r2").iloc[0]
            name, t = top[kind], top.tissue
            chosen.append({"confounder": term, "kind": kind, "column": name, "tissue": t,
                           "unique_r2": float(top.unique_r2)})
            idx = designs[t].matrix.index
            y = source.loc[idx, name]
            x = samples.loc[idx, shown[term]]
            if term in numeric and shown[term] == spec[term][0]:
                x = pd.Series(transform(x, spec[term][1]), index=idx)
            diag_rows.append(pd.DataFrame({"confounder": term, "kind": kind, "column": name, "tissue": t,
                                           "x": x if term in numeric else x.astype(str), "y": y}))
            yy = _float_array(y)[:, None]
            resid = residualize(yy, designs[t].matrix.to_numpy())[:, 0]
            fitted_rows.append(pd.DataFrame({"confounder": term, "kind": kind, "column": name, "tissue": t,
                                             "fitted": yy[:, 0] - resid, "residual": resid}))
    return Diagnostics(pd.DataFrame(chosen), pd.concat(diag_rows, ignore_index=True),
                       pd.concat(fitted_rows, ignore_index=True))


@one_blas_thread  # small SVDs and regressions: BLAS threads only cost
def compare_model_choices(features: pd.DataFrame, log_expression: pd.DataFrame, designs: dict[str, Design], *,
                          methods: Sequence[str] = ("all", "significant", "forward"), alpha: float = 0.05,
                          gene_min_mean: float = 1.0, top_genes: int | None = None, var_fraction: float = 0.95,
                          n_shuffles: int = 200, seed: int = 0) -> pd.DataFrame:
    """What each model-choice rule removes, and the shared expression variance left with its null.

    The null stays in the residual space of the terms any column kept (exact for ``"all"``).

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features), index SAMPID
    log_expression : DataFrame, shape (n_samples, n_genes), index SAMPID
    designs : dict, tissue -> Design
    methods : rules of :func:`select_terms`
    alpha, gene_min_mean : as :func:`select_terms` and :func:`expressed_genes`
    top_genes, var_fraction, n_shuffles, seed : of the shared variance
        (:func:`histo_utils.crossvariance.shared_variance_with_null`)

    Returns
    -------
    DataFrame, one row per rule × tissue: ``model_choice, tissue, expression_variance_removed,
    feature_variance_removed, terms_per_gene, terms_per_feature, expression_shared, expression_null_mean,
    expression_p``
    """
    rows = []
    for method in methods:
        for t, d in designs.items():
            e = expressed_genes(log_expression, d, min_mean=gene_min_mean)
            re_, keep_e = residual_table(e, d, method=method, alpha=alpha)
            rf_, keep_f = residual_table(features, d, method=method, alpha=alpha)
            f0 = features.loc[rf_.index, rf_.columns]
            used = [term for term in d.terms if keep_e[term].any() or keep_f[term].any()]
            sv = shared_variance_with_null(((rf_ - rf_.mean()) / rf_.std().replace(0, 1)).to_numpy(),
                                           select_columns(re_, top=top_genes).to_numpy(),
                                           var_fraction=var_fraction, n_shuffles=n_shuffles, seed=seed,
                                           design=d.matrix[d.columns(used)].to_numpy())
            rows.append({"model_choice": method, "tissue": t,
                         "expression_variance_removed": 1 - float(re_.var().sum() / e[re_.columns].var().sum()),
                         "feature_variance_removed": 1 - float((rf_.var() / f0.var()).mean()),
                         "terms_per_gene": float(keep_e.sum(1).mean()),
                         "terms_per_feature": float(keep_f.sum(1).mean()),
                         "expression_shared": sv.expression_shared,
                         "expression_null_mean": sv.expression_null_mean, "expression_p": sv.expression_p})
    return pd.DataFrame(rows)


def largest_term_share(partition: pd.DataFrame, *, column: str = "feature") -> pd.Series:
    """Share of the columns (per tissue) whose largest chance-corrected unique R² is each term's.

    Parameters
    ----------
    partition : DataFrame, :attr:`VarianceByConfounder.features` (or ``.genes`` with ``column="gene"``)

    Returns
    -------
    Series, term -> fraction of tissue × column pairs (sums to 1)
    """
    vp = partition[partition.term != "(all)"]
    return vp.sort_values("unique_r2_adj").groupby(["tissue", column]).tail(1).term.value_counts(normalize=True)
