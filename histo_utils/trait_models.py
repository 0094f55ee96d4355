"""Tile models of bulk-expression traits (Levy-Jurgenson et al. 2020, Results and Methods).

Per trait, every slide is labelled high or low by its patient's bulk expression percentile, with an
out-of-distribution (OOD) band in the middle (:func:`trait_labels`, :func:`label_slides`); one binary tile
model per trait and patient split is trained (:func:`fit_trait_models`); the top models vote per tile
(:func:`ensemble_predictions`); slide-level AUCs give the paper's Table 1 (:func:`evaluate_slides`,
:func:`table1`). The patient splits are :func:`histo_utils.splits.split_patients`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import atomic_path, read_table, write_table
from .metrics import auc
from .errors import InputError
from . import models, training
from .distributed import forked_pool, forked_state, one_torch_thread
from .training import resolve_device

log = logging.getLogger(__name__)

__all__ = ["trait_labels", "label_slides", "ensemble_vote", "slide_scores", "fit_trait_models",
           "ensemble_predictions", "evaluate_slides", "table1", "held_out_slides", "slide_sets", "split_calls", "label_counts"]


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
        raise InputError(f"{int(values.isna().sum())} slides have no expression value; drop them first.")
    if not 0 <= ood_low < 0.5 < ood_high <= 1:
        raise InputError(f"Need 0 <= ood_low < 0.5 < ood_high <= 1, got {ood_low}, {ood_high}.")
    pct = (values.rank(method="average") - 1) / max(len(values) - 1, 1)
    eps = 1e-9  # band edges are inclusive of their rounding (0.8 - 0.1 is not 0.7 in floating point)
    ood = (pct > ood_low + eps) & (pct < ood_high - eps)
    near_band = (pct <= ood_low + near + eps) | (pct >= ood_high - near - eps)
    return pd.DataFrame({"percentile": pct, "label": (pct > 0.5).astype(int), "ood": ood,
                         "ood_near": near_band & ood})


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


def ensemble_vote(predictions: np.ndarray) -> np.ndarray:
    """Majority vote of binary tile predictions, shape (n_models, n_tiles) -> (n_tiles,); ties count as 0."""
    p = np.asarray(predictions)
    if p.ndim != 2:
        raise InputError(f"predictions must be (n_models, n_tiles), got shape {p.shape}.")
    return (p.sum(0) * 2 > p.shape[0]).astype(int)


def slide_scores(tile_pred: Sequence[int], slide_ids: Sequence[str]) -> pd.Series:
    """Slide score = percent of the slide's tiles predicted positive."""
    s = pd.Series(np.asarray(tile_pred, dtype=float), index=np.asarray(slide_ids))
    return 100.0 * s.groupby(level=0).mean()


#: training loss (cross-entropy, nats) below which a binary tile model has left the constant solution (log 2)
STUCK_LOSS = 0.98 * float(np.log(2))


def _per_slide(tile_slides: np.ndarray, index: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` random positions of ``index`` per slide (all when ``k <= 0``), sorted."""
    if k <= 0 or len(index) == 0:
        return np.sort(index)
    groups = pd.Series(index).groupby(tile_slides[index]).indices
    return np.sort(np.concatenate([index[g[rng.permutation(len(g))[:k]]] for _, g in sorted(groups.items())]))


def _fit_one(job: dict) -> tuple[np.ndarray, pd.DataFrame]:
    """Train one (trait, split) tile model with its restarts and predict every tile (worker of
    :func:`fit_trait_models`; ``job["ds"]`` or, in a forked worker, the inherited dataset).

    Torch runs on one thread here (with the channels-last convolutions of :func:`histo_utils.training.to_device`),
    in the parent as in a worker, so a model's numbers do not depend on ``workers``.
    """
    import torch

    ds = job["ds"] if "ds" in job else forked_state()
    t, i, tr, va, label, config = job["trait"], job["split"], job["tr"], job["va"], job["label"], job["config"]
    d, arch, progress = Path(job["dir"]), job["arch"], job["progress"]
    tile_slides = ds.tiles["image_id"].to_numpy()
    va_slides, va_labels = tile_slides[va], label[va]
    slide_label = pd.Series(va_labels, index=va_slides).groupby(level=0).first()

    def val_auc(_model, p, _ids=va_slides, _lab=slide_label, _y=label[va]):
        # slide AUC; ties (a handful of validation slides saturate it) broken by tile accuracy
        s = slide_scores((p[:, 1] > 0.5).astype(int), _ids)
        return (auc(s.to_numpy(), _lab.loc[s.index].to_numpy())
                + 1e-4 * float(((p[:, 1] > 0.5) == _y).mean()))

    with one_torch_thread():
        train_ds = ds.subset(tr, labels=label[tr]).with_augmentation(True, colour=job["colour_jitter"])
        for attempt in range(job["restarts"] + 1):
            torch.manual_seed(config.seed + 101 * i + 7919 * attempt)
            model = models.build_model(arch, 2)  # channels-last in train_classifier (training.to_device)
            h = training.train_classifier(
                model, train_ds, ds.subset(va, labels=label[va]), config=config,
                checkpoint_dir=d / ("checkpoints" if attempt == 0 else f"checkpoints_restart{attempt}"),
                device=job["device"], progress=progress, val_score=val_auc,
                run_key=f"{arch}|{t}|{i}|{len(tr)}|{len(va)}|{ds.read_key}|{attempt}|channels_last")
            if h.train_loss.min() < STUCK_LOSS:
                break
            log.warning("trait %s split %d: training loss stayed at %.3f (log 2 = constant calls)%s", t, i,
                        h.train_loss.min(), "; restarting from new weights" if attempt < job["restarts"] else "")
        p = training.predict_tiles(model, ds, batch_size=256, device=job["device"], progress=progress)[:, 1]
    h = h.assign(attempt=attempt, trait=t, split=i, n_train_tiles=len(tr), n_val_tiles=len(va),
                 n_train_slides=len(set(tile_slides[tr])), n_val_slides=len(slide_label))
    p = p.astype(np.float32)
    with atomic_path(d / "tile_prob.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, p)
    write_table(h, d / "history.tsv")
    log.info("trait %s split %d: best validation slide AUC %.3f (epoch %d)", t, i, h.val_score.max(),
             int(h.epoch[h.val_score.idxmax()]))
    return p, h


def fit_trait_models(ds, slides: pd.DataFrame, *, traits: Sequence[str], splits: Sequence[tuple], arch: str,
                     config, work_dir, tiles_per_slide: int = 0, val_tiles_per_slide: int = 0,
                     colour_jitter: bool = False, device: str = "auto", seed: int = 0, progress: bool = True,
                     restarts: int = 0, workers: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one binary tile model per trait and split; predict every tile with each.

    Tiles inherit their slide's label; OOD slides of the trait take no part. Each model keeps the epoch
    with the best slide-level AUC on its split's validation slides (slide score = percent of tiles called
    positive); equal AUCs, common with few validation slides, are separated by the validation tile accuracy
    (added as 1e-4 x accuracy, less than any AUC step). A finished model's predictions are saved in
    ``work_dir/<key>/<trait>/split<i>/`` (``<key>``: a hash of the settings, tiles, labels and
    splits) and reused on a rerun with the same ones; an interrupted training resumes from its checkpoint.

    The models are independent: with ``workers`` > 1 they train in that many forked processes (the tiles are
    shared copy-on-write), each on one torch thread. A model runs on one thread in every case, so the numbers
    are the same for any ``workers`` (one thread per model is also faster than two threads on one model: these
    32-px batches are too small for two threads to share a convolution).

    Parameters
    ----------
    ds : :class:`~histo_utils.training.TileDataset` of all tiles (preloaded or not)
    slides : DataFrame indexed by ``image_id`` with ``patient`` and the columns of :func:`label_slides`
    traits : the traits to model
    splits : ``[(train_patients, validation_patients), ...]`` from :func:`histo_utils.splits.split_patients`
    arch, config : network (:func:`histo_utils.models.build_model`) and
        :class:`~histo_utils.training.TrainConfig`
    tiles_per_slide, val_tiles_per_slide : tiles drawn per slide for training / selection (0: all)
    restarts : a model whose training loss never fell below ``STUCK_LOSS`` (it stayed at the constant
        solution, loss log 2, until early stopping ended it) is trained again from new random weights, at
        most this many times; the last attempt is kept
    workers : processes training models at once (CPU; 1: in this process). With CUDA, use 1.

    Returns
    -------
    prob : DataFrame, shape (n_tiles, n_traits * n_splits), columns ``(trait, split)``: P(high) of each tile
    history : one row per (trait, split, epoch) of the kept attempt, with the validation slide AUC and
        ``attempt`` (0: first)
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}.")
    work = Path(work_dir)
    tile_slides = ds.tiles["image_id"].to_numpy()
    unknown = set(tile_slides) - set(slides.index)
    if unknown:
        raise InputError(f"{len(unknown)} tiled slides have no labels (e.g. {sorted(unknown)[:3]}); "
                         "drop their tiles first.")
    patient = slides.loc[tile_slides, "patient"].to_numpy()
    # finished models are filed under everything that made them: a rerun with other settings, tiles, labels,
    # splits or tile pixels trains anew instead of reusing their predictions
    made_by = json.dumps([arch, config.key(), ds.read_key, tiles_per_slide, val_tiles_per_slide, colour_jitter,
                          seed, restarts, [[sorted(map(str, a)), sorted(map(str, b))] for a, b in splits],
                          str(pd.util.hash_pandas_object(ds.tiles, index=False).sum()),
                          str(pd.util.hash_pandas_object(
                              slides.loc[sorted(set(tile_slides)), ["patient"] + [f"{t}:{c}" for t in traits
                                                                                  for c in ("label", "ood")]],
                              index=True).sum())],
                         default=str)
    work = work / hashlib.sha256(made_by.encode()).hexdigest()[:12]
    done, jobs = {}, []
    for t in traits:
        label = slides.loc[tile_slides, f"{t}:label"].to_numpy(int)
        ood = slides.loc[tile_slides, f"{t}:ood"].to_numpy(bool)
        for i, (train_p, val_p) in enumerate(splits):
            d = work / t / f"split{i}"
            rng = np.random.default_rng([seed, i, len(done) + len(jobs)])  # models before this one, in order
            tr = _per_slide(tile_slides, np.where(np.isin(patient, train_p) & ~ood)[0], tiles_per_slide, rng)
            va = _per_slide(tile_slides, np.where(np.isin(patient, val_p) & ~ood)[0], val_tiles_per_slide, rng)
            if len(tr) == 0 or len(va) == 0:
                raise InputError(f"Trait {t}, split {i}: {len(tr)} training and {len(va)} validation tiles; "
                                 "the cohort is too small for these splits.")
            if (d / "tile_prob.npy").exists() and (d / "history.tsv").exists():
                done[(t, i)] = (np.load(d / "tile_prob.npy"), read_table(d / "history.tsv"))
                continue
            jobs.append({"trait": t, "split": i, "tr": tr, "va": va, "label": label, "config": config,
                         "dir": str(d), "arch": arch, "colour_jitter": colour_jitter, "device": device,
                         "restarts": restarts, "progress": progress and workers == 1})
    n_proc = 1 if resolve_device(device).type == "cuda" else min(workers, len(jobs))  # one GPU: in turn
    if n_proc <= 1:
        for job in jobs:
            done[(job["trait"], job["split"])] = _fit_one({**job, "ds": ds})
    else:
        ds.close()  # open slide handles stay in this process; workers open their own
        with forked_pool(n_proc, ds) as pool:
            futures = {pool.submit(_fit_one, job): (job["trait"], job["split"]) for job in jobs}
            for fut in tqdm(futures, desc="tile models", unit="model", disable=not progress):
                done[futures[fut]] = fut.result()
    keys = [(t, i) for t in traits for i in range(len(splits))]
    prob = pd.DataFrame({k: done[k][0] for k in keys}, index=ds.tiles.index)
    prob.columns = pd.MultiIndex.from_tuples(prob.columns, names=["trait", "split"])
    return prob, pd.concat([done[k][1] for k in keys], ignore_index=True)


def ensemble_predictions(prob: pd.DataFrame, history: pd.DataFrame, *, top: int = 3,
                         threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per trait, the ``top`` models by best validation slide AUC vote on every tile (majority).

    Parameters
    ----------
    prob : DataFrame, shape (n_tiles, n_traits * n_splits), columns (trait, split): P(high)
    history : :func:`fit_trait_models` history (``trait, split, val_score``)
    top : models per trait
    threshold : P above which a model calls a tile high

    Returns
    -------
    calls : DataFrame, shape (n_tiles, n_traits), 0/1 ensemble calls
    members : DataFrame, the chosen (trait, split) with their validation AUC (``val_auc``)
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

    Parameters
    ----------
    prob : DataFrame, shape (n_tiles, n_traits * n_splits), columns (trait, split): P(high)
    calls : DataFrame, shape (n_tiles, n_traits), ensemble calls
    tile_slides : sequence, shape (n_tiles,): each tile's slide
    slides : DataFrame indexed by ``image_id`` with ``patient`` and the :func:`label_slides` columns
    test_patients : the held-out test patients
    threshold : P above which a model calls a tile high

    Returns
    -------
    table : DataFrame, one row per (trait, set, model): model ``split<i>`` or ``ensemble``; ``auc``,
        ``n_slides``, ``n_high``, ``spearman`` of the score with the expression percentile
    scores : DataFrame, one row per (slide, trait, set): ensemble ``score``, ``label``, ``percentile``
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
                a = auc(sc.loc[ids].to_numpy(), lab.loc[ids].to_numpy())
                rho = spearmanr(sc.loc[ids], pct.loc[ids]).statistic if len(ids) > 2 else np.nan
                rows.append({"trait": t, "set": name, "model": m, "auc": a, "spearman": float(rho),
                             "n_slides": len(ids), "n_high": int(lab.loc[ids].sum())})
                if m == "ensemble":
                    srows += [{"image_id": i, "trait": t, "set": name, "score": float(sc.loc[i]),
                               "label": int(lab.loc[i]), "percentile": float(pct.loc[i])} for i in ids]
    return pd.DataFrame(rows), pd.DataFrame(srows)


def table1(evaluation: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1: test AUC as 5-run mean (range), then ensemble test, OOD-near, OOD-all.

    Parameters
    ----------
    evaluation : :func:`evaluate_slides` table

    Returns
    -------
    DataFrame, one row per trait of ``evaluation`` (sorted): ``test_runs_mean, test_runs_min, test_runs_max,
    test_ensemble, OOD-near_ensemble, OOD-all_ensemble``; NaN where a set has no slide of both classes (a
    trait without evaluable test slides keeps its row).
    """
    ev = evaluation
    runs = ev[(ev.set == "test") & (ev.model != "ensemble")].groupby("trait").auc.agg(["mean", "min", "max"])
    ens = ev[ev.model == "ensemble"].pivot(index="trait", columns="set", values="auc")
    traits = pd.Index(sorted(ev.trait.unique()), name="trait")
    runs = runs.reindex(traits)
    out = pd.DataFrame({"test_runs_mean": runs["mean"], "test_runs_min": runs["min"], "test_runs_max": runs["max"]})
    for s in ("test", "OOD-near", "OOD-all"):
        out[f"{s}_ensemble"] = ens[s].reindex(traits) if s in ens else np.nan
    return out.reset_index()


def held_out_slides(slides: pd.DataFrame, splits: Sequence[tuple], *, traits: Sequence[str] | None = None
                    ) -> pd.Series:
    """Whether each slide took part in no model's training or validation.

    A slide is held out when, for every trait, its patient is in no training or validation set of any split
    or the slide is out of distribution (OOD) for that trait (:func:`fit_trait_models` never trains or
    selects on OOD slides). Test slides and the slides OOD for every trait are held out.

    Parameters
    ----------
    slides : DataFrame indexed by ``image_id`` with ``patient`` and, with ``traits``, the ``<trait>:ood``
        columns of :func:`label_slides`
    splits : ``[(train_patients, validation_patients), ...]``
    traits : the modelled traits; None counts only the patients (no slide of a split's patient is held out)

    Returns
    -------
    Series of bool indexed like ``slides``: True for test slides and the slides OOD for every trait.
    """
    used = slides["patient"].isin(set().union(*[set(a) | set(b) for a, b in splits]))
    if traits is None:
        return ~used
    seen = np.logical_or.reduce([used.to_numpy() & ~slides[f"{t}:ood"].to_numpy(bool) for t in traits])
    return pd.Series(~seen, index=slides.index)


def slide_sets(slides: pd.DataFrame, traits: Sequence[str], test_patients: Sequence[str],
               splits: Sequence[tuple]) -> pd.Series:
    """The part each slide played: ``test``, ``OOD`` (OOD for every trait), ``validation`` or ``train``.

    Parameters
    ----------
    slides : DataFrame indexed by ``image_id`` with ``patient`` and the ``<trait>:ood`` columns
    traits : the modelled traits
    test_patients, splits : from :func:`histo_utils.splits.split_patients`

    Returns
    -------
    Series of str indexed like ``slides``. ``validation``: in distribution for at least one trait and in the
    validation set of at least one split (such a patient also trains the other splits' models); ``train``:
    used for training only; ``unused``: a patient in no split nor the test set, in distribution for a trait
    (not made by :func:`histo_utils.splits.split_patients`, which places every patient).
    """
    held = held_out_slides(slides, splits, traits=traits).to_numpy()
    test = slides["patient"].isin(set(test_patients)).to_numpy()
    ood_all = np.logical_and.reduce([slides[f"{t}:ood"].to_numpy(bool) for t in traits])
    val = slides["patient"].isin(set().union(*[set(b) for _, b in splits])).to_numpy()
    out = np.select([test, held & ood_all, held, val], ["test", "OOD", "unused", "validation"], "train")
    return pd.Series(out, index=slides.index, name="set")


def label_counts(slides: pd.DataFrame, traits: Sequence[str], test_patients: Sequence[str],
                 splits: Sequence[tuple]) -> pd.DataFrame:
    """Slides per trait: in distribution, OOD-all, OOD-near, test, and the mean per training/validation split.

    Parameters
    ----------
    slides : DataFrame indexed by ``image_id`` with ``patient`` and the columns of :func:`label_slides`
    traits : the traits
    test_patients, splits : from :func:`histo_utils.splits.split_patients`

    Returns
    -------
    DataFrame, one row per trait.
    """
    rows = []
    is_test = slides.patient.isin(test_patients)
    for t in traits:
        ood = slides[f"{t}:ood"]
        rows.append({"trait": t, "in-distribution": int((~ood).sum()), "OOD-all": int(ood.sum()),
                     "OOD-near": int(slides[f"{t}:ood_near"].sum()), "test (in-dist.)": int((is_test & ~ood).sum()),
                     "train per split": int(np.mean([(slides.patient.isin(tr) & ~ood).sum() for tr, _ in splits])),
                     "validation per split": int(np.mean([(slides.patient.isin(va) & ~ood).sum()
                                                           for _, va in splits]))})
    return pd.DataFrame(rows)


def split_calls(prob: pd.DataFrame, traits: Sequence[str], *, threshold: float = 0.5) -> np.ndarray:
    """Every split model's 0/1 calls, stacked for :func:`histo_utils.hti.slide_hti` (``model_calls``).

    Parameters
    ----------
    prob : DataFrame, shape (n_tiles, n_traits * n_splits), columns (trait, split): P(high)
    traits : the traits, in the order of the ensemble calls' columns
    threshold : P above which a model calls a tile high

    Returns
    -------
    array of int, shape (n_tiles, n_traits, n_splits)
    """
    missing = [t for t in traits if t not in prob.columns.get_level_values(0)]
    if missing:
        raise InputError(f"prob has no models for traits {missing}; available: "
                         f"{sorted(set(prob.columns.get_level_values(0)))}.")
    return np.stack([(prob[t].to_numpy() > threshold).astype(int) for t in traits], 1)
