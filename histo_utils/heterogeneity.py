"""Molecular cartographies, the heterogeneity index HTI and its survival analysis (Levy-Jurgenson et al. 2020).

A slide's tiles each get a binary prediction per trait (high/low expression of a gene or miRNA). The
tensor cartography is the stack of these maps; each tile falls into one combination of positive traits.
With k traits there are C = 2^k - 1 non-empty combinations and

    HTI = - sum_{i=1..C} p_i log_C p_i,

p_i the proportion of tiles whose positive traits are exactly combination i. Tiles with no positive trait
are left out of the proportions by default (the paper counts only the C non-empty combinations); they can
also be counted as a combination of their own (``empty="category"``, then C = 2^k).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import atomic_path, read_table, write_table

log = logging.getLogger(__name__)

__all__ = ["trait_labels", "split_patients", "ensemble_vote", "slide_scores", "slide_auc", "combination_codes",
           "hti", "hti_from_proportions", "hti_bootstrap", "cartography", "logrank_groups", "cox_hti",
           "label_slides", "survival_set", "fit_trait_models", "ensemble_predictions", "evaluate_slides", "table1",
           "smooth_calls", "slide_hti"]


def trait_labels(values: pd.Series, *, ood_low: float = 0.2, ood_high: float = 0.8, near: float = 0.1
                 ) -> pd.DataFrame:
    """Label slides high/low by their expression percentile; mark the out-of-distribution band.

    Parameters
    ----------
    values : Series, slide -> bulk expression of the trait
    ood_low, ood_high : slides with percentile strictly between these are out of distribution (OOD) and not
        used for training (paper: 20th and 80th)
    near : width of the OOD-near bands inside the OOD band (20–30 and 70–80 percentiles)

    Returns
    -------
    DataFrame indexed like ``values``: ``percentile`` (0–1, average ranks), ``label`` (1 above the median),
    ``ood`` (bool), ``ood_near`` (bool).
    """
    if values.isna().any():
        raise ValueError(f"{int(values.isna().sum())} slides have no expression value; drop them first.")
    if not 0 <= ood_low < 0.5 < ood_high <= 1:
        raise ValueError(f"Need 0 <= ood_low < 0.5 < ood_high <= 1, got {ood_low}, {ood_high}.")
    pct = (values.rank(method="average") - 1) / max(len(values) - 1, 1)
    eps = 1e-9  # band edges are inclusive of their rounding (0.8 - 0.1 is not 0.7 in floating point)
    ood = (pct > ood_low + eps) & (pct < ood_high - eps)
    near_band = (pct <= ood_low + near + eps) | (pct >= ood_high - near - eps)
    return pd.DataFrame({"percentile": pct, "label": (pct > 0.5).astype(int), "ood": ood,
                         "ood_near": near_band & ood})


def split_patients(patients: Sequence[str], *, test_fraction: float = 0.1, n_splits: int = 5,
                   val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """Patients split before any trait is processed: one held-out test set, then ``n_splits`` random
    train/validation splits of the rest (paper: 10 % test; 80/10 of the whole, i.e. about 8:1 of the rest).

    Returns ``(test, [(train, validation), ...])``; no patient is in two of test/train/validation of a split.
    """
    ids = np.array(sorted(set(patients)))
    if len(ids) < 3:
        raise ValueError(f"{len(ids)} patients are too few for test, training and validation sets.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(ids)
    n_test = max(1, int(round(test_fraction * len(ids))))
    test, rest = sorted(perm[:n_test]), perm[n_test:]
    n_val = max(1, int(round(val_fraction * len(ids))))
    if n_val >= len(rest):
        raise ValueError(f"{len(rest)} patients left after the test set cannot give {n_val} for validation.")
    splits = []
    for _ in range(n_splits):
        p = rng.permutation(rest)
        splits.append((sorted(p[n_val:]), sorted(p[:n_val])))
    return list(test), splits


def ensemble_vote(predictions: np.ndarray) -> np.ndarray:
    """Majority vote of binary tile predictions, shape (n_models, n_tiles) -> (n_tiles,); ties count as 0."""
    p = np.asarray(predictions)
    if p.ndim != 2:
        raise ValueError(f"predictions must be (n_models, n_tiles), got shape {p.shape}.")
    return (p.sum(0) * 2 > p.shape[0]).astype(int)


def slide_scores(tile_pred: Sequence[int], slide_ids: Sequence[str]) -> pd.Series:
    """Slide score = percent of the slide's tiles predicted positive."""
    s = pd.Series(np.asarray(tile_pred, dtype=float), index=np.asarray(slide_ids))
    return 100.0 * s.groupby(level=0).mean()


def slide_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of slide scores against binary labels (Mann-Whitney; ties count half).

    NaN when one class is absent. The one AUC of the package: gene-set masking (notebook 09) and the
    pixel-level localisation of :func:`histo_utils.visualization.localisation_auroc` use it too.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(int)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape.")
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _grid_index(tiles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each tile of one slide on its tile grid (``y // size0``, ``x // size0`` from the
    top-left tile), each shape (n_tiles,)."""
    size = float(tiles["size0"].iloc[0])
    y, x = tiles["y"].to_numpy(float), tiles["x"].to_numpy(float)
    return np.round((y - y.min()) / size).astype(int), np.round((x - x.min()) / size).astype(int)


def cartography(tiles: pd.DataFrame, values: np.ndarray, *, fill: float = np.nan) -> np.ndarray:
    """Place per-tile values at their grid positions: a molecular cartography of one slide.

    Parameters
    ----------
    tiles : DataFrame of one slide's tiles with ``x, y, size0`` (level-0 pixels, one tile size)
    values : array, shape (n_tiles,) or (n_tiles, k) (a tensor cartography of k traits)
    fill : value of grid cells without a tile

    Returns
    -------
    ndarray, shape (rows, cols) or (rows, cols, k); row = y // size0, col = x // size0 from the
    top-left tile.
    """
    if tiles["size0"].nunique() != 1:
        raise ValueError("A cartography needs tiles of one size; select one tile_px first.")
    v = np.asarray(values, dtype=float)
    if len(v) != len(tiles):
        raise ValueError(f"{len(v)} values for {len(tiles)} tiles.")
    r, c = _grid_index(tiles)
    grid = np.full((r.max() + 1, c.max() + 1, *v.shape[1:]), fill, dtype=float)
    grid[r, c] = v
    return grid


def combination_codes(tile_traits: np.ndarray) -> np.ndarray:
    """Code of each tile's combination of positive traits: sum_j 2^j t_j (0: no positive trait).

    tile_traits : array, shape (n_tiles, k), binary
    """
    t = np.asarray(tile_traits).astype(int)
    if t.ndim != 2 or not np.isin(t, (0, 1)).all():
        raise ValueError("tile_traits must be a binary (n_tiles, k) array.")
    return t @ (1 << np.arange(t.shape[1]))


def hti_from_proportions(weights: np.ndarray, *, k: int, empty: str = "exclude") -> float:
    """HTI from the weight (tile count or area) of each combination code 0..2^k - 1.

    Parameters
    ----------
    weights : array, shape (2^k,), non-negative; index = combination code (0: no positive trait)
    k : number of traits, >= 2
    empty : ``"exclude"`` the no-positive-trait weight (paper; C = 2^k - 1) or count it as a ``"category"``
        (C = 2^k)

    Returns
    -------
    float in [0, 1]; NaN when no weight is left.
    """
    if k < 2:
        raise ValueError(f"HTI needs k >= 2 traits, got k = {k}.")
    if empty not in ("exclude", "category"):
        raise ValueError(f"empty={empty!r} not available: 'exclude' or 'category'.")
    w = np.asarray(weights, dtype=float)
    if w.shape != (2 ** k,) or (w < 0).any():
        raise ValueError(f"weights must be {2 ** k} non-negative numbers (one per combination code), got {w.shape}.")
    c = 2 ** k - 1
    if empty == "exclude":
        w = w[1:]
    else:
        c += 1
    tot = w.sum()
    if tot <= 0:
        return float("nan")
    p = w[w > 0] / tot
    return float(max(0.0, -(p * np.log(p)).sum() / np.log(c)))


def hti(tile_traits: np.ndarray, *, empty: str = "exclude") -> float:
    """Heterogeneity index of one slide's tensor cartography.

    Parameters
    ----------
    tile_traits : array, shape (n_tiles, k), binary, k >= 2
    empty : ``"exclude"`` tiles with no positive trait (paper; C = 2^k - 1) or count them as a
        ``"category"`` (C = 2^k)

    Returns
    -------
    float in [0, 1]; NaN when no tile is left.
    """
    t = np.asarray(tile_traits)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"HTI needs k >= 2 traits: tile_traits of shape (n_tiles, k), got {t.shape}.")
    k = t.shape[1]
    return hti_from_proportions(np.bincount(combination_codes(t), minlength=2 ** k), k=k, empty=empty)


def hti_bootstrap(tile_traits: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                  empty: str = "exclude") -> tuple[float, float, float]:
    """HTI with a percentile bootstrap confidence interval over tiles: ``(hti, low, high)``."""
    t = np.asarray(tile_traits)
    rng = np.random.default_rng(seed)
    boots = np.array([hti(t[rng.integers(0, len(t), len(t))], empty=empty) for _ in range(n_boot)])
    boots = boots[~np.isnan(boots)]
    a = (1 - level) / 2
    lo, hi = (np.quantile(boots, [a, 1 - a]) if len(boots) else (np.nan, np.nan))
    return hti(t, empty=empty), float(lo), float(hi)


def logrank_groups(duration: Sequence[float], event: Sequence[int], group: Sequence[bool]) -> dict:
    """Kaplan–Meier fits of two groups and Mantel's log-rank test (lifelines).

    Returns ``{"p": ..., "statistic": ..., "n": (n_false, n_true), "km": {False: KaplanMeierFitter, True: ...}}``.
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
    return {"p": float(res.p_value), "statistic": float(res.test_statistic), "n": (int((~g).sum()), int(g.sum())),
            "km": km}


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


# --------------------------------------------------------------------------
# slides, labels and the survival set
# --------------------------------------------------------------------------
def label_slides(values: pd.DataFrame, slides: pd.DataFrame, *, ood_low: float = 0.2, ood_high: float = 0.8,
                 near: float = 0.1) -> pd.DataFrame:
    """Per-trait labels of every slide from its patient's bulk expression.

    Parameters
    ----------
    values : DataFrame, patients x traits (bulk expression, one value per patient)
    slides : DataFrame with ``image_id, patient``; a patient's slides share its labels

    Returns
    -------
    ``slides`` with, per trait ``t``: ``t:value``, ``t:percentile``, ``t:label``, ``t:ood``, ``t:ood_near``.
    Slides whose patient has no expression are dropped (logged).
    """
    missing = sorted(set(slides["patient"]) - set(values.index))
    if missing:
        log.warning("%d patients with slides have no expression and are left out (e.g. %s)", len(missing),
                    missing[:3])
    out = slides[slides["patient"].isin(values.index)].copy()
    pts = sorted(set(out["patient"]))
    for t in values.columns:
        lab = trait_labels(values.loc[pts, t], ood_low=ood_low, ood_high=ood_high, near=near)
        out[f"{t}:value"] = out["patient"].map(values[t])
        for col in lab.columns:
            out[f"{t}:{col}"] = out["patient"].map(lab[col])
    return out.reset_index(drop=True)


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


# --------------------------------------------------------------------------
# tile models: one per trait and split, selected by validation slide AUC
# --------------------------------------------------------------------------
def _per_slide(tile_slides: np.ndarray, index: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` random positions of ``index`` per slide (all when ``k <= 0``), sorted."""
    if k <= 0 or len(index) == 0:
        return np.sort(index)
    groups = pd.Series(index).groupby(tile_slides[index]).indices
    return np.sort(np.concatenate([index[g[rng.permutation(len(g))[:k]]] for _, g in sorted(groups.items())]))


def fit_trait_models(ds, slides: pd.DataFrame, *, traits: Sequence[str], splits: Sequence[tuple], arch: str,
                     config, work_dir, tiles_per_slide: int = 0, val_tiles_per_slide: int = 0,
                     colour_jitter: bool = False, device: str = "auto", seed: int = 0, progress: bool = True
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one binary tile model per trait and split; predict every tile with each.

    Tiles inherit their slide's label; OOD slides of the trait take no part. Each model keeps the epoch
    with the best slide-level AUC on its split's validation slides (slide score = percent of tiles called
    positive); equal AUCs, common with few validation slides, are separated by the validation tile accuracy
    (added as 1e-4 x accuracy, less than any AUC step). A finished model's predictions are saved in ``work_dir/<trait>/split<i>/`` and reused on a
    rerun; an interrupted training resumes from its checkpoint.

    Parameters
    ----------
    ds : :class:`~histo_utils.training.TileDataset` of all tiles (preloaded or not)
    slides : DataFrame indexed by ``image_id`` with ``patient`` and the columns of :func:`label_slides`
    traits : the traits to model
    splits : ``[(train_patients, validation_patients), ...]`` from :func:`split_patients`
    arch, config : network (:func:`histo_utils.models.build_model`) and
        :class:`~histo_utils.training.TrainConfig`
    tiles_per_slide, val_tiles_per_slide : tiles drawn per slide for training / selection (0: all)

    Returns
    -------
    prob : DataFrame, shape (n_tiles, n_traits * n_splits), columns ``(trait, split)``: P(high) of each tile
    history : one row per (trait, split, epoch) with the validation slide AUC
    """
    import torch

    from . import models, training

    work = Path(work_dir)
    tile_slides = ds.tiles["image_id"].to_numpy()
    unknown = set(tile_slides) - set(slides.index)
    if unknown:
        raise ValueError(f"{len(unknown)} tiled slides have no labels (e.g. {sorted(unknown)[:3]}); "
                         "drop their tiles first.")
    patient = slides.loc[tile_slides, "patient"].to_numpy()
    probs, hist = {}, []
    for t in traits:
        label = slides.loc[tile_slides, f"{t}:label"].to_numpy(int)
        ood = slides.loc[tile_slides, f"{t}:ood"].to_numpy(bool)
        for i, (train_p, val_p) in enumerate(splits):
            d = work / t / f"split{i}"
            pred_path = d / "tile_prob.npy"
            hist_path = d / "history.tsv"
            rng = np.random.default_rng([seed, i, len(hist)])
            tr = _per_slide(tile_slides, np.where(np.isin(patient, train_p) & ~ood)[0], tiles_per_slide, rng)
            va = _per_slide(tile_slides, np.where(np.isin(patient, val_p) & ~ood)[0], val_tiles_per_slide, rng)
            if len(tr) == 0 or len(va) == 0:
                raise ValueError(f"Trait {t}, split {i}: {len(tr)} training and {len(va)} validation tiles; "
                                 "the cohort is too small for these splits.")
            if pred_path.exists() and hist_path.exists():
                probs[(t, i)] = np.load(pred_path)
                hist.append(read_table(hist_path))
                continue
            va_slides, va_labels = tile_slides[va], label[va]
            slide_label = pd.Series(va_labels, index=va_slides).groupby(level=0).first()

            def auc(_model, p, _ids=va_slides, _lab=slide_label, _y=label[va]):
                # slide AUC; ties (a handful of validation slides saturate it) broken by tile accuracy
                s = slide_scores((p[:, 1] > 0.5).astype(int), _ids)
                return (slide_auc(s.to_numpy(), _lab.loc[s.index].to_numpy())
                        + 1e-4 * float(((p[:, 1] > 0.5) == _y).mean()))

            torch.manual_seed(config.seed + 101 * i)
            model = models.build_model(arch, 2)
            train_ds = ds.subset(tr, labels=label[tr]).with_augmentation(True, colour=colour_jitter)
            h = training.train_classifier(model, train_ds, ds.subset(va, labels=label[va]), config=config,
                                          checkpoint_dir=d / "checkpoints", device=device, progress=progress,
                                          run_key=f"{arch}|{t}|{i}|{len(tr)}|{len(va)}|{ds.input_px}",
                                          val_score=auc)
            p = training.predict_tiles(model, ds, batch_size=256, device=device, progress=progress)[:, 1]
            h = h.assign(trait=t, split=i, n_train_tiles=len(tr), n_val_tiles=len(va),
                         n_train_slides=len(set(tile_slides[tr])), n_val_slides=len(slide_label))
            with atomic_path(pred_path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, p.astype(np.float32))
            write_table(h, hist_path)
            probs[(t, i)] = p.astype(np.float32)
            hist.append(h)
            log.info("trait %s split %d: best validation slide AUC %.3f (epoch %d)", t, i, h.val_score.max(),
                     int(h.epoch[h.val_score.idxmax()]))
    prob = pd.DataFrame(probs, index=ds.tiles.index)
    prob.columns = pd.MultiIndex.from_tuples(prob.columns, names=["trait", "split"])
    return prob, pd.concat(hist, ignore_index=True)


def ensemble_predictions(prob: pd.DataFrame, history: pd.DataFrame, *, top: int = 3,
                         threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per trait, the ``top`` models by best validation slide AUC vote on every tile (majority).

    Returns
    -------
    calls : DataFrame (n_tiles, n_traits) of 0/1 ensemble calls
    members : the chosen (trait, split) with their validation AUC
    """
    best = history.groupby(["trait", "split"]).val_score.max().rename("val_auc").reset_index()
    members = (best.sort_values(["trait", "val_auc", "split"], ascending=[True, False, True])
               .groupby("trait").head(top).reset_index(drop=True))
    calls = {}
    for t, m in members.groupby("trait", sort=False):
        votes = np.stack([(prob[(t, int(s))].to_numpy() > threshold).astype(int) for s in m.split])
        calls[t] = ensemble_vote(votes)
    traits = list(dict.fromkeys(prob.columns.get_level_values(0)))
    return pd.DataFrame(calls, index=prob.index)[traits], members


def evaluate_slides(prob: pd.DataFrame, calls: pd.DataFrame, tile_slides: Sequence[str], slides: pd.DataFrame,
                    test_patients: Sequence[str], *, threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slide-level AUCs as in the paper's Table 1, and the ensemble slide scores.

    Sets per trait: ``test`` (test patients, not OOD), ``OOD-near`` (20-30th and 70-80th percentiles, labelled
    by the median) and ``OOD-all`` (every OOD slide). Each slide's score is the percent of its tiles called
    positive.

    Returns
    -------
    table : one row per (trait, set, model): model ``split<i>`` or ``ensemble``; ``auc``, ``n_slides``,
        ``spearman`` of the score with the expression percentile
    scores : one row per (slide, trait): ensemble ``score``, ``label``, ``percentile``, ``set``
    """
    from scipy.stats import spearmanr

    tile_slides = np.asarray(tile_slides)
    test_set = set(test_patients)
    rows, srows = [], []
    for t in calls.columns:
        lab = slides[f"{t}:label"]
        pct = slides[f"{t}:percentile"]
        in_test = slides["patient"].isin(test_set) & ~slides[f"{t}:ood"]
        sets = {"test": in_test, "OOD-near": slides[f"{t}:ood_near"], "OOD-all": slides[f"{t}:ood"]}
        models = {f"split{s}": (prob[(t, s)].to_numpy() > threshold).astype(int)
                  for s in prob[t].columns}
        models["ensemble"] = calls[t].to_numpy()
        for m, pred in models.items():
            sc = slide_scores(pred, tile_slides)
            for name, mask in sets.items():
                ids = [i for i in slides.index[mask.to_numpy(bool)] if i in sc.index]
                if not ids:
                    continue
                a = slide_auc(sc.loc[ids].to_numpy(), lab.loc[ids].to_numpy())
                rho = spearmanr(sc.loc[ids], pct.loc[ids]).statistic if len(ids) > 2 else np.nan
                rows.append({"trait": t, "set": name, "model": m, "auc": a, "spearman": float(rho),
                             "n_slides": len(ids), "n_high": int(lab.loc[ids].sum())})
                if m == "ensemble":
                    srows += [{"image_id": i, "trait": t, "set": name, "score": float(sc.loc[i]),
                               "label": int(lab.loc[i]), "percentile": float(pct.loc[i])} for i in ids]
    return pd.DataFrame(rows), pd.DataFrame(srows)


def table1(evaluation: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1: test AUC as 5-run mean (range), then ensemble test, OOD-near, OOD-all."""
    ev = evaluation
    runs = ev[(ev.set == "test") & (ev.model != "ensemble")].groupby("trait").auc.agg(["mean", "min", "max"])
    ens = ev[ev.model == "ensemble"].pivot(index="trait", columns="set", values="auc")
    out = pd.DataFrame({"test_runs_mean": runs["mean"], "test_runs_min": runs["min"], "test_runs_max": runs["max"]})
    for s in ("test", "OOD-near", "OOD-all"):
        out[f"{s}_ensemble"] = ens.get(s)
    return out.reset_index()


def smooth_calls(tiles: pd.DataFrame, calls: np.ndarray, *, size: int = 3) -> np.ndarray:
    """Majority filter of binary tile calls over each tile's ``size`` x ``size`` neighbourhood on its slide.

    Beyond the paper: isolated wrong calls make spurious trait combinations, and HTI (an entropy) rises
    steeply with small proportions; a neighbourhood vote removes salt-and-pepper errors while clones
    larger than the window keep their borders. Cells without a tile do not vote; ties keep the tile's call.

    Parameters
    ----------
    tiles : DataFrame with ``image_id, x, y, size0`` (one tile size)
    calls : array, shape (n_tiles, k), binary
    size : odd window side in tiles (1: no smoothing)

    Returns
    -------
    array, shape (n_tiles, k), binary
    """
    from scipy.ndimage import uniform_filter

    c = np.asarray(calls, dtype=float)
    if c.ndim != 2 or len(c) != len(tiles):
        raise ValueError(f"calls must be (n_tiles, k) with n_tiles = {len(tiles)}, got {c.shape}.")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number of tiles, got {size}.")
    out = c.copy()
    if size == 1:
        return out.astype(int)
    for _, idx in tiles.reset_index(drop=True).groupby("image_id").indices.items():
        r, q = _grid_index(tiles.iloc[idx])
        valid = np.zeros((r.max() + 1, q.max() + 1))
        valid[r, q] = 1
        n = uniform_filter(valid, size, mode="constant")[r, q]
        for j in range(c.shape[1]):
            g = np.zeros_like(valid)
            g[r, q] = c[idx, j]
            frac = uniform_filter(g, size, mode="constant")[r, q] / n
            out[idx, j] = np.where(np.isclose(frac, 0.5), c[idx, j], frac > 0.5)
    return out.astype(int)


def slide_hti(calls: pd.DataFrame, tile_slides: Sequence[str], *, n_boot: int = 0, seed: int = 0,
              empty: str = "exclude") -> pd.DataFrame:
    """HTI of every slide from its tiles' ensemble calls (a tensor cartography), optionally with a CI.

    Returns one row per slide: ``hti`` (NaN when no tile is positive for any trait), ``hti_low``,
    ``hti_high`` (bootstrap over tiles; NaN without ``n_boot``), ``n_tiles``, and the fraction of tiles in
    each combination (``comb_<code>``).
    """
    t = np.asarray(calls)
    k = t.shape[1]
    ids = np.asarray(tile_slides)
    rows = []
    for j, (iid, idx) in enumerate(sorted(pd.Series(np.arange(len(ids))).groupby(ids).indices.items())):
        tt = t[idx]
        counts = np.bincount(combination_codes(tt), minlength=2 ** k)
        if n_boot:
            h, lo, hi = hti_bootstrap(tt, n_boot=n_boot, seed=seed + j, empty=empty)
        else:
            h, lo, hi = hti_from_proportions(counts, k=k, empty=empty), np.nan, np.nan
        frac = counts / len(tt)
        rows.append({"image_id": iid, "hti": h, "hti_low": lo, "hti_high": hi, "n_tiles": len(idx),
                     **{f"comb_{c}": float(f) for c, f in enumerate(frac)}})
    return pd.DataFrame(rows).set_index("image_id")
