"""From the transcriptome to an image trait: networks, gene masking and gene saliency (Smedley et al. 2020).

* :class:`TraitNet`: a feed-forward network from all genes to a binary image trait, three hidden layers;
  :class:`Autoencoder` shares its first two layers, pre-trained on expression samples that are not used for
  the trait, and :func:`transfer_encoder` copies them into a trait network (the first can stay frozen).
* :func:`cross_validate`: the network and scikit-learn comparison models (gradient-boosted trees, random
  forest, SVM, logistic regression) under the same stratified folds, with the standardisation fitted inside
  each training fold; :func:`bootstrap_differences` resamples the pooled out-of-fold predictions to give the
  distribution of AUC(network) - AUC(model).
* :func:`gene_masking`: keep one gene set's values, replace all other genes by zeros (or the training mean),
  push through the network, record P(positive) (cohort-level radiogenomic associations).
* :func:`gene_saliency`: d P(positive) / d input per sample (patient-level radiogenomic traits, ranked and
  tested by GSEA).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import correlation, gtex, io, products
from .data import load_log_expression
from .distributed import forked_pool, forked_state, one_torch_thread
from .enrichment import prerank_many
from .errors import InputError, InputIndexError, InputKeyError
from .metrics import auc

log = logging.getLogger(__name__)

__all__ = ["NetConfig", "Autoencoder", "TraitNet", "pretrain_autoencoder", "transfer_encoder", "fit_trait_net",
           "predict_proba", "comparison_models", "cross_validate", "bootstrap_differences", "gene_masking",
           "rank_gene_sets", "gene_saliency", "Standardizer", "feature_traits", "binarize_traits", "compare_models",
           "summarize_comparison", "gene_set_columns", "mask_fill",
           "mask_gene_sets", "saliency_gsea", "saliency_rates", "pretraining_expression", "expression_only_samples", "choose_traits", "tracking_traits", "trait_definitions"]


@dataclass(frozen=True)
class NetConfig:
    """Sizes and training settings of the expression networks.

    Attributes
    ----------
    hidden : sizes of the trait network's three hidden layers (the autoencoder shares the first two)
    dropout : dropout between hidden layers
    epochs, ae_epochs : epochs of the trait network and of the autoencoder
    lr, weight_decay, batch_size : Adam's learning rate, its L2 penalty, samples per batch
    freeze_first : keep the pre-trained first layer frozen while fine-tuning (the paper)
    seed : seed of the initialisation and the batch order
    """

    hidden: tuple[int, int, int] = (256, 64, 16)
    dropout: float = 0.3
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    ae_epochs: int = 100
    freeze_first: bool = True
    seed: int = 0


class Standardizer:
    """Per-gene z-scores with the mean and SD of the data it was fitted on (SD 0 -> 1).

    Attributes
    ----------
    mean_, sd_ : arrays, shape (n_genes,), set by ``fit(x)`` on x of shape (n_samples, n_genes);
        ``transform(x)`` returns float32 z-scores of the same shape
    """

    def fit(self, x: np.ndarray) -> "Standardizer":
        self.mean_ = x.mean(0)
        sd = x.std(0)
        self.sd_ = np.where(sd > 1e-8, sd, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.sd_).astype(np.float32)


class Autoencoder(nn.Module):
    """genes -> h1 -> h2 -> h1 -> genes; the encoder is the trait network's first two layers."""

    def __init__(self, n_genes: int, hidden: Sequence[int]):
        super().__init__()
        h1, h2 = hidden[0], hidden[1]
        self.encoder = nn.Sequential(nn.Linear(n_genes, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, n_genes))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class TraitNet(nn.Module):
    """genes -> h1 -> h2 -> h3 -> 2 classes, ReLU and dropout between layers."""

    def __init__(self, n_genes: int, hidden: Sequence[int], dropout: float = 0.3):
        super().__init__()
        h1, h2, h3 = hidden
        self.layers = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(n_genes, h1), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(h1, h2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(h2, h3), nn.ReLU(),
                                    nn.Linear(h3, 2))

    def forward(self, x):
        return self.layers(x)

    @property
    def first(self) -> nn.Linear:
        return self.layers[1]


def _batches(n: int, size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        yield perm[i:i + size]


def pretrain_autoencoder(x: np.ndarray, *, config: NetConfig = NetConfig(), progress: bool = False
                         ) -> tuple[Autoencoder, pd.DataFrame]:
    """Train an autoencoder (mean squared reconstruction error) on standardised expression.

    Parameters
    ----------
    x : array, shape (n_samples, n_genes), standardised expression of samples not used for the traits
    config : sizes (``hidden``), ``ae_epochs``, ``lr``, ``batch_size`` and ``seed``
    progress : show a progress bar

    Returns
    -------
    model : :class:`Autoencoder`
    history : DataFrame ``epoch, loss``
    """
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"Autoencoder input must be (n_samples >= 2, n_genes), got {x.shape}.")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    ae = Autoencoder(x.shape[1], config.hidden)
    opt = torch.optim.Adam(ae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    hist = []
    for epoch in tqdm(range(config.ae_epochs), desc="autoencoder", disable=not progress, leave=False):
        ae.train()
        tot = 0.0
        for idx in _batches(len(xt), config.batch_size, gen):
            opt.zero_grad()
            loss = ((ae(xt[idx]) - xt[idx]) ** 2).mean()
            loss.backward()
            opt.step()
            tot += float(loss) * len(idx)
        hist.append({"epoch": epoch + 1, "loss": tot / len(xt)})
    ae.eval()
    return ae, pd.DataFrame(hist)


def transfer_encoder(net: TraitNet, ae: Autoencoder, *, freeze_first: bool = True) -> TraitNet:
    """Copy the autoencoder's two encoder layers into the trait network; optionally freeze the first."""
    enc = [m for m in ae.encoder if isinstance(m, nn.Linear)]
    tgt = [net.layers[1], net.layers[4]]
    for src, dst in zip(enc, tgt):
        if src.weight.shape != dst.weight.shape:
            raise InputError(f"Autoencoder layer {tuple(src.weight.shape)} does not fit the network's "
                             f"{tuple(dst.weight.shape)}; use the same genes and hidden sizes.")
        dst.load_state_dict(src.state_dict())
    for p in net.first.parameters():
        p.requires_grad_(not freeze_first)
    return net


def fit_trait_net(x: np.ndarray, y: np.ndarray, *, config: NetConfig = NetConfig(), encoder: Autoencoder | None = None,
                  seed: int | None = None) -> TraitNet:
    """Train a :class:`TraitNet` on standardised expression ``x`` (n, genes) and binary ``y`` (n,).

    With ``encoder`` the first two layers start from the autoencoder's (the first frozen when
    ``config.freeze_first``); classes are weighted by their inverse frequency.
    """
    y = np.asarray(y).astype(int)
    if set(np.unique(y)) - {0, 1} or len(np.unique(y)) < 2:
        raise InputError(f"y must hold both classes 0 and 1, got {sorted(set(np.unique(y)))}.")
    s = config.seed if seed is None else seed
    torch.manual_seed(s)
    gen = torch.Generator().manual_seed(s)
    net = TraitNet(x.shape[1], config.hidden, config.dropout)
    if encoder is not None:
        transfer_encoder(net, encoder, freeze_first=config.freeze_first)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    w = torch.tensor(len(y) / (2.0 * np.bincount(y, minlength=2)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=w)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y)
    for _ in range(config.epochs):
        net.train()
        for idx in _batches(len(xt), config.batch_size, gen):
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    return net


@torch.no_grad()
def predict_proba(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """P(positive class) of each sample, shape (n,)."""
    net.eval()
    return torch.softmax(net(torch.from_numpy(np.asarray(x, np.float32))), 1)[:, 1].numpy()


def comparison_models(seed: int = 0, *, n_jobs: int = 1) -> dict[str, Callable[[], object]]:
    """Factories of the paper's comparison models (scikit-learn; histogram gradient boosting in place of XGBoost).

    Parameters
    ----------
    seed : random state of the models
    n_jobs : processes of the random forest

    Returns
    -------
    dict, name (``gbt, rf, svm, logit``) -> a function returning a new unfitted model
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {
        "gbt": lambda: HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed),
        "rf": lambda: RandomForestClassifier(n_estimators=300, max_features="sqrt", random_state=seed, n_jobs=n_jobs),
        "svm": lambda: SVC(kernel="rbf", C=1.0, probability=True, random_state=seed),
        "logit": lambda: LogisticRegression(C=0.05, max_iter=2000),
    }


def _fit_fold(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, fold: int, *, config: NetConfig,
              encoder: Autoencoder | None, models: Mapping[str, Callable[[], object]]) -> dict[str, np.ndarray]:
    """The out-of-fold P(positive) of the network and every comparison model for one fold, shape (len(te),) each.

    Runs on one thread (torch, BLAS and OpenMP; a model's ``n_jobs`` set to 1): these networks and models are
    too small for two threads to share, and the numbers are then the same in this process or a worker.
    """
    from threadpoolctl import threadpool_limits

    with one_torch_thread(), threadpool_limits(1):
        sc = Standardizer().fit(x[tr])
        xtr, xte = sc.transform(x[tr]), sc.transform(x[te])
        net = fit_trait_net(xtr, y[tr], config=config, encoder=encoder, seed=config.seed + fold)
        out = {"nn": predict_proba(net, xte)}
        for name, make in models.items():
            m = make()
            if "n_jobs" in m.get_params():
                m.set_params(n_jobs=1)  # same trees, no processes inside a worker
            out[name] = m.fit(xtr, y[tr]).predict_proba(xte)[:, 1]
    return out


def _fold_job(job: tuple) -> dict[str, np.ndarray]:
    """Worker of :func:`compare_models`: one (trait, fold); ``(x, models, config, encoder)`` inherited."""
    x, models, config, encoder = forked_state()
    y, tr, te, fold = job
    return _fit_fold(x, y, tr, te, fold, config=config, encoder=encoder, models=models)


def _fold_table(y: np.ndarray, folds: Sequence[tuple], preds: Sequence[Mapping[str, np.ndarray]],
                names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold AUCs and the out-of-fold table of :func:`cross_validate` from each fold's predictions."""
    oof = pd.DataFrame({"y": y, "fold": -1})
    for name in names:
        oof[name] = np.nan
    rows = []
    for f, ((_, te), pred) in enumerate(zip(folds, preds)):
        oof.loc[te, "fold"] = f
        for name in names:
            oof.loc[te, name] = pred[name]
            rows.append({"model": name, "fold": f, "auc": auc(oof.loc[te, name].to_numpy(), y[te]),
                         "n_test": len(te)})
    return pd.DataFrame(rows), oof


def cross_validate(x: np.ndarray, y: np.ndarray, *, n_folds: int = 10, seed: int = 0, config: NetConfig = NetConfig(),
                   encoder: Autoencoder | None = None, models: Mapping[str, Callable[[], object]] | None = None,
                   progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified k-fold cross-validation of the network (``nn``) and the comparison models, same folds.

    ``x`` is log expression (n, genes), standardised inside each fold with the training fold's statistics.
    Each fold runs on one thread (:func:`_fit_fold`); :func:`compare_models` runs folds in parallel processes
    with the same numbers.

    Returns
    -------
    auc : one row per (model, fold) with the fold's AUC
    oof : out-of-fold P(positive), one row per sample, one column per model, plus ``y`` and ``fold``
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    models = dict(comparison_models(seed) if models is None else models)
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y))
    preds = [_fit_fold(x, y, tr, te, f, config=config, encoder=encoder, models=models)
             for f, (tr, te) in enumerate(tqdm(folds, desc="folds", disable=not progress, leave=False))]
    return _fold_table(y, folds, preds, ["nn", *models])


def bootstrap_differences(oof: pd.DataFrame, *, reference: str = "nn", n_boot: int = 100, seed: int = 0
                          ) -> pd.DataFrame:
    """AUC(reference) - AUC(model) on bootstrap resamples of the pooled out-of-fold predictions.

    Each resample draws samples with replacement (stratified by class, so both classes are present) and
    scores every model on the same draw: a paired comparison. Returns one row per (resample, model).
    """
    rng = np.random.default_rng(seed)
    y = oof["y"].to_numpy()
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    others = [c for c in oof.columns if c not in ("y", "fold", reference)]
    rows = []
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        ref = auc(oof[reference].to_numpy()[idx], y[idx])
        for m in others:
            a = auc(oof[m].to_numpy()[idx], y[idx])
            rows.append({"resample": b, "model": m, "auc_reference": ref, "auc_model": a, "difference": ref - a})
    return pd.DataFrame(rows)


def predict_log_odds(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """log P(positive) / P(negative) of each sample, shape (n,): the difference of the two logits.

    Monotone in :func:`predict_proba` but without its float32 saturation (P rounds to exactly 1 beyond
    log-odds of about 17), so rankings of far-from-data inputs keep their order.
    """
    net.eval()
    with torch.no_grad():
        z = net(torch.from_numpy(np.asarray(x, np.float32))).double()
    return (z[:, 1] - z[:, 0]).numpy()


def gene_masking(net: nn.Module, x: np.ndarray, gene_sets: Mapping[str, Sequence[int]], *,
                 fill: np.ndarray | float = 0.0, output: str = "probability") -> pd.DataFrame:
    """P(positive) (or its log-odds) of every sample when only one gene set's values are kept.

    Parameters
    ----------
    net : trained network on standardised inputs
    x : standardised expression, shape (n_samples, n_genes)
    gene_sets : name -> column indices of the set's genes in ``x``
    fill : value of all other genes in the network's input space, scalar or shape (n_genes,): the paper
        replaced them with zeros (on its expression scale: pass ``-mean / sd`` for a zero on the log scale);
        0 here is the training mean
    output : ``probability`` (P(positive), as the paper) or ``log_odds`` (:func:`predict_log_odds`; use it to
        rank sets when the masked inputs drive the network into saturation, where P ties at 0 or 1)

    Returns
    -------
    DataFrame, shape (n_samples, n_sets)
    """
    if output not in ("probability", "log_odds"):
        raise InputError(f"output must be 'probability' or 'log_odds', got '{output}'.")
    predict = predict_proba if output == "probability" else predict_log_odds
    x = np.asarray(x, np.float32)
    base = np.broadcast_to(np.asarray(fill, np.float32), x.shape[1:])
    out = {}
    for name, idx in gene_sets.items():
        idx = np.asarray(idx, dtype=int)
        if len(idx) and (idx.min() < 0 or idx.max() >= x.shape[1]):
            raise InputIndexError(f"Gene set '{name}' has indices outside 0..{x.shape[1] - 1}.")
        masked = np.tile(base, (len(x), 1))
        masked[:, idx] = x[:, idx]
        out[name] = predict(net, masked)
    return pd.DataFrame(out)


def rank_gene_sets(masked: pd.DataFrame, y: Sequence[int], *, scores: str = "probability") -> pd.DataFrame:
    """Cohort-level radiogenomic associations: gene sets ranked by how well their masked outputs separate
    the classes (AUC of the masked output against the trait), with the mean P in each class.

    ``scores`` says what ``masked`` holds: ``probability`` or ``log_odds`` (:func:`gene_masking`'s
    ``output``); the AUC is the same up to ties, which log-odds do not have when P saturates.
    """
    from scipy.special import expit

    if scores not in ("probability", "log_odds"):
        raise InputError(f"scores must be 'probability' or 'log_odds', got '{scores}'.")
    y = np.asarray(y).astype(int)
    prob = masked if scores == "probability" else masked.apply(expit)
    rows = [{"gene_set": c, "auc": auc(masked[c].to_numpy(), y),
             "mean_p_positive": float(prob[c][y == 1].mean()), "mean_p_negative": float(prob[c][y == 0].mean())}
            for c in masked.columns]
    out = pd.DataFrame(rows).sort_values("auc", ascending=False).reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def gene_saliency(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """d P(positive) / d x for every sample and gene, shape (n_samples, n_genes) (class saliency)."""
    net.eval()
    xt = torch.from_numpy(np.asarray(x, np.float32)).requires_grad_(True)
    p = torch.softmax(net(xt), 1)[:, 1]
    (grad,) = torch.autograd.grad(p.sum(), xt)  # samples are independent in eval mode
    return grad.numpy()


# --------------------------------------------------------------------------
# notebook 09: traits, the model comparison, masking and saliency over every trait
# --------------------------------------------------------------------------
def feature_traits(features: Sequence[str], available: Sequence[str]) -> pd.DataFrame:
    """Trait definitions from named image features (real data): ``trait`` = ``<feature>_high``.

    Parameters
    ----------
    features : ``layer_channel`` names, each a column of the feature table
    available : the feature table's columns

    Returns
    -------
    DataFrame ``trait, program`` (empty), ``feature, r_within_tissue`` (NaN: not oriented).
    """
    if not features:
        raise InputError("Real data: list the image features that define the traits in trait_features.")
    missing = [f for f in features if f not in set(available)]
    if missing:
        raise InputKeyError(f"trait_features {missing} are not columns of the feature table; e.g. {list(available)[:3]}.")
    return pd.DataFrame({"trait": [f"{f}_high" for f in features], "program": "", "feature": list(features),
                         "r_within_tissue": np.nan})


def binarize_traits(features: pd.DataFrame, tissue: pd.Series, trait_info: pd.DataFrame) -> pd.DataFrame:
    """Binary traits: a sample is positive when its feature is above its tissue's median.

    A feature that tracks its program negatively (``r_within_tissue`` < 0) is flipped first, so that
    positive means "more of the program"; NaN ``r_within_tissue`` keeps the sign.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features)
    tissue : Series, sample -> tissue, indexed like ``features``
    trait_info : ``trait, feature, r_within_tissue`` (:func:`feature_traits`, :func:`tracking_traits` or
        :func:`choose_traits`)

    Returns
    -------
    DataFrame, shape (n_samples, n_traits), 0/1, indexed like ``features``.
    """
    traits = {}
    for r in trait_info.itertuples():
        v = features[r.feature] * (np.sign(r.r_within_tissue) if np.isfinite(r.r_within_tissue) else 1)
        traits[r.trait] = (v > v.groupby(tissue).transform("median")).astype(int)
    return pd.DataFrame(traits)


def compare_models(x: np.ndarray, traits: pd.DataFrame, *, n_folds: int = 10, n_boot: int = 100, seed: int = 0,
                   config: NetConfig = NetConfig(), encoder: Autoencoder | None = None,
                   models: Mapping[str, Callable[[], object]] | None = None, workers: int = 1
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`cross_validate` and :func:`bootstrap_differences` for every trait (Smedley et al.'s Fig 2).

    The (trait, fold) fits are independent: with ``workers`` > 1 they run in that many forked processes, one
    thread each, with the same numbers as ``workers=1`` (and as :func:`cross_validate`).

    Parameters
    ----------
    x : array, shape (n_samples, n_genes), log expression
    traits : DataFrame, shape (n_samples, n_traits), 0/1 (index: sample)
    n_folds, n_boot, seed, config, encoder, models : as for :func:`cross_validate` and
        :func:`bootstrap_differences`
    workers : processes fitting folds at once (1: in this process)

    Returns
    -------
    fold_auc : one row per (trait, model, fold): ``auc``
    out_of_fold : one row per (trait, sample): the out-of-fold P of every model, ``y``, ``fold``, ``SAMPID``
    bootstrap : one row per (trait, resample, model): AUC(nn) - AUC(model)

    Examples
    --------
    >>> fold_auc, oof, boots = compare_models(x, traits, n_folds=5, n_boot=50, encoder=ae)   # doctest: +SKIP
    """
    from sklearn.model_selection import StratifiedKFold

    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}.")
    models = dict(comparison_models(seed) if models is None else models)
    names = ["nn", *models]
    ys = {t: traits[t].to_numpy().astype(int) for t in traits.columns}
    folds = {t: list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y))
             for t, y in ys.items()}
    jobs = [(ys[t], tr, te, f) for t in traits.columns for f, (tr, te) in enumerate(folds[t])]
    if workers == 1:
        preds = [_fit_fold(x, y, tr, te, f, config=config, encoder=encoder, models=models) for y, tr, te, f in jobs]
    else:
        with forked_pool(min(workers, len(jobs)), (x, models, config, encoder)) as pool:
            preds = list(pool.map(_fold_job, jobs))
    fold_auc, oofs, boots = [], {}, []
    for k, t in enumerate(traits.columns):
        auc_t, oof = _fold_table(ys[t], folds[t], preds[k * n_folds:(k + 1) * n_folds], names)
        fold_auc.append(auc_t.assign(trait=t))
        oofs[t] = oof.assign(SAMPID=traits.index)
        boots.append(bootstrap_differences(oof, n_boot=n_boot, seed=seed).assign(trait=t))
    return (pd.concat(fold_auc, ignore_index=True), pd.concat(oofs, names=["trait"]).reset_index(level=0),
            pd.concat(boots, ignore_index=True))


def summarize_comparison(fold_auc: pd.DataFrame, bootstrap: pd.DataFrame, order: Sequence[str]
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean fold AUC per trait and model, and the bootstrap differences per trait and model.

    Parameters
    ----------
    fold_auc : :func:`compare_models` fold AUCs
    bootstrap : :func:`compare_models` bootstrap differences
    order : model columns of the summary, in order

    Returns
    -------
    summary : DataFrame, traits x models: mean fold AUC
    diff : DataFrame ``trait, model, mean, low, high`` (95 % interval), ``p_nn_better`` (fraction of resamples
        with AUC(nn) > AUC(model))
    """
    summary = fold_auc.groupby(["trait", "model"]).auc.agg(["mean", "std"]).unstack("model")["mean"][list(order)]
    diff = bootstrap.groupby(["trait", "model"]).difference.agg(
        mean="mean", low=lambda d: d.quantile(0.025), high=lambda d: d.quantile(0.975),
        p_nn_better=lambda d: (d > 0).mean()).reset_index()
    return summary, diff


def gene_set_columns(gene_sets: Mapping[str, Sequence[str]], genes: Sequence[str], *, min_size: int = 5
                     ) -> dict[str, list[int]]:
    """Column indices of each gene set's genes among ``genes``.

    Parameters
    ----------
    gene_sets : dict, set -> symbols
    genes : the symbols of the expression columns (n_genes)
    min_size : sets with fewer genes present are dropped

    Returns
    -------
    dict, set -> list of column indices in 0..n_genes-1
    """
    col = {s: i for i, s in enumerate(genes)}
    sets = {k: [col[g] for g in v if g in col] for k, v in gene_sets.items()}
    return {k: v for k, v in sets.items() if len(v) >= min_size}


def mask_fill(scaler: Standardizer, how: str) -> np.ndarray | float:
    """The masked genes' value in the network's standardised input space.

    Parameters
    ----------
    scaler : the :class:`Standardizer` fitted on the network's training data
    how : ``zero``: a zero on the log2(1 + TPM) scale (the paper), i.e. ``-mean / sd`` per gene;
        ``mean``: the training mean, 0

    Returns
    -------
    array, shape (n_genes,), or 0.0
    """
    if how not in ("zero", "mean"):
        raise InputError(f"mask_fill must be 'zero' or 'mean', got '{how}'.")
    return -scaler.mean_ / scaler.sd_ if how == "zero" else 0.0


def mask_gene_sets(z: np.ndarray, traits: pd.DataFrame, gene_sets: Mapping[str, Sequence[int]], *,
                   fill: np.ndarray | float, config: NetConfig = NetConfig(), encoder: Autoencoder | None = None
                   ) -> tuple[dict[str, TraitNet], pd.DataFrame]:
    """One network per trait trained on all samples, then :func:`gene_masking` ranked by :func:`rank_gene_sets`.

    Parameters
    ----------
    z : array, shape (n_samples, n_genes), standardised expression
    traits : DataFrame, shape (n_samples, n_traits), 0/1
    gene_sets : name -> column indices (:func:`gene_set_columns`)
    fill : :func:`mask_fill`

    Returns
    -------
    nets : trait -> trained network
    masking : one row per (trait, gene set): ``gene_set, auc, mean_p_positive, mean_p_negative, rank, trait,
        planted`` (a ``PLANTED*`` set), ranked on the log-odds
    """
    nets, masking = {}, []
    for t in traits.columns:
        nets[t] = fit_trait_net(z, traits[t].to_numpy(), config=config, encoder=encoder)
        masked = gene_masking(nets[t], z, gene_sets, fill=fill, output="log_odds")
        masking.append(rank_gene_sets(masked, traits[t].to_numpy(), scores="log_odds").assign(trait=t))
    masking = pd.concat(masking, ignore_index=True)
    masking["planted"] = masking.gene_set.str.startswith("PLANTED")
    return nets, masking


def saliency_gsea(nets: Mapping[str, nn.Module], z: np.ndarray, traits: pd.DataFrame, symbols: Sequence[str],
                  gene_sets: Mapping[str, Sequence[str]], *, workers: int = 1, permutations: int = 1000,
                  min_size: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per trait and sample, the genes ranked by :func:`gene_saliency` and tested by preranked GSEA.

    Parameters
    ----------
    nets : trait -> trained network
    z : array, shape (n_samples, n_genes), standardised expression
    traits : DataFrame, shape (n_samples, n_traits), 0/1 (index: sample ID)
    symbols : the genes' symbols, length n_genes
    gene_sets : set -> symbols

    Returns
    -------
    DataFrame, one row per (trait, sample, set): :func:`histo_utils.enrichment.prerank` columns, ``SAMPID``,
    ``trait``, ``positive`` (the sample's class).
    """
    rows = []
    for t in traits.columns:
        sal = gene_saliency(nets[t], z)
        rankings = {s: pd.Series(sal[i], index=np.asarray(symbols)) for i, s in enumerate(traits.index)}
        res, _ = prerank_many(rankings, gene_sets, workers=workers, permutations=permutations, min_size=min_size,
                              seed=seed, curves=False)
        rows.append(res.rename(columns={"list": "SAMPID"}).assign(
            trait=t, positive=lambda d: d.SAMPID.map(traits[t]).astype(int)))
    return pd.concat(rows, ignore_index=True)


def saliency_rates(sal: pd.DataFrame, *, fdr: float = 0.05) -> pd.DataFrame:
    """Fraction of samples in which each set is enriched (FDR < fdr, NES > 0), per trait, set and class.

    Parameters
    ----------
    sal : :func:`saliency_gsea` table (``trait, term, positive, nes, fdr``)
    fdr : FDR level

    Returns
    -------
    DataFrame ``trait, term, kind`` (``decoy`` for ``DECOY*`` sets, else ``planted``), ``positive, rate``.
    """
    enriched = (sal.fdr < fdr) & (sal.nes > 0)
    return (sal.assign(enriched=enriched, kind=np.where(sal.term.str.startswith("DECOY"), "decoy", "planted"))
            .groupby(["trait", "term", "kind", "positive"]).enriched.mean().rename("rate").reset_index())


@products.reads("01_tiling:slides")
def expression_only_samples(out_dir: str | os.PathLike, expression_path: str | os.PathLike) -> list[str]:
    """The samples of the expression file whose histology image has no slide in the data (notebook 01's join).

    A sample is expression-only when its image ID (first three dash parts) is not among the slide files
    notebook 01 listed (``01_tiling/slides.tsv``, usable or not): on GTEx v8, whole blood, cultured cells and
    the tissue samples whose slide was not downloaded. These are the autoencoder's pre-training samples; no
    trait sample (they all have a slide) is among them.

    Parameters
    ----------
    out_dir : output directory of the run (notebook 01 done)
    expression_path : the TPM GCT (``GTExFiles.expression``)

    Returns
    -------
    list of sample IDs, in the file's column order
    """
    slides = set(io.read_table(products.outputs(out_dir, "01_tiling").slides).image_id)
    return [s for s in io.read_gct_samples(expression_path, check=False) if gtex.image_id(s) not in slides]


@products.reads("01_tiling:slides")
def pretraining_expression(genes: Sequence[str], trait_samples: Sequence[str], *, gct: str = "", data_dir=None,
                           n_samples: int = 400, stream: int = 1, source: str = "auto",
                           out_dir: str | os.PathLike | None = None,
                           simulate: Callable[..., pd.DataFrame] | None = None) -> pd.DataFrame:
    """log2(1 + TPM) of the expression-only samples the autoencoder is pre-trained on.

    Parameters
    ----------
    genes : the genes of the trait network's input (all must be present)
    trait_samples : the trait samples' IDs; none may be a pre-training sample
    gct : a GCT of expression-only samples (an override; empty: ``source`` decides)
    data_dir : the data directory (GTEx layout)
    n_samples : simulated samples (``source`` ``simulate``)
    stream : random stream of the simulation
    source : where the samples come from when ``gct`` is empty: ``join`` (the samples of the data's
        expression file without a slide, :func:`expression_only_samples`: real data), ``simulate`` (new donors
        from the synthetic cohort's gene model, drawn by ``simulate``), or ``auto`` (``simulate`` when
        ``data_dir`` holds a synthetic cohort, else ``join``)
    out_dir : output directory of the run (for ``join``: notebook 01's slide list; the run's cache)
    simulate : for ``source`` ``simulate``: the synthetic cohort's generator of expression-only samples, called as
        ``simulate(data_dir, n_samples, stream=stream)`` and returning log2(1 + TPM), samples x genes
        (:func:`histo_utils.synthetic.expression_only_log`; this module does not import the generator)

    Returns
    -------
    DataFrame, shape (n_pretrain, n_genes), columns ``genes``
    """
    if source not in ("auto", "join", "simulate"):
        raise InputError(f"source must be auto, join or simulate, not '{source}'.")
    synthetic = data_dir is not None and (Path(data_dir) / "truth" / "cohort.json").exists()
    if not gct and source == "auto":
        source = "simulate" if synthetic else "join"
    if gct or source == "join":
        if gct:
            pre_log, _ = load_log_expression(gct)
        else:
            if out_dir is None:
                raise InputError("source 'join' needs out_dir (the run with notebook 01's slide list).")
            expression = gtex.locate_gtex_files(data_dir).expression
            ids = expression_only_samples(out_dir, expression)
            if not ids:
                raise InputError(f"No sample of '{expression}' lacks a slide: nothing to pre-train the autoencoder "
                                 "on. Give pretrain_gct (expression-only samples) or simulate them (synthetic).")
            log.info("Autoencoder pre-trained on the %d expression-only samples of the join", len(ids))
            pre_log, _ = load_log_expression(expression, samples=ids, cache_dir=Path(out_dir) / "cache")
        overlap = pre_log.index.intersection(pd.Index(trait_samples))
        if len(overlap):
            raise InputError(f"{len(overlap)} pre-training samples are also trait samples (e.g. {list(overlap[:3])}); "
                             "the autoencoder must not see them.")
    else:
        if not synthetic:
            raise InputError(f"'{data_dir}' holds no synthetic cohort (truth/cohort.json) to simulate pre-training "
                             "samples from: use source 'join' or give pretrain_gct.")
        if simulate is None:
            raise InputError(f"'{data_dir}' holds a synthetic cohort: simulating its pre-training samples needs "
                             "simulate=histo_utils.synthetic.expression_only_log (the generator); or use source "
                             "'join' or give pretrain_gct.")
        pre_log = simulate(data_dir, n_samples, stream=stream)
    missing = pd.Index(genes).difference(pre_log.columns)
    if len(missing):
        raise InputError(f"{len(missing)} genes of the trait samples are absent from the pre-training expression "
                         f"(e.g. {list(missing[:3])}).")
    return pre_log[genes]


def choose_traits(features: pd.DataFrame, expression: pd.DataFrame, tissue: Sequence, *, n_traits: int = 3,
                  fdr: float = 0.05, max_overlap: float = 0.5, block_size: int = 2048) -> pd.DataFrame:
    """Trait features chosen from the data, as the default profile chooses them from the planted truth.

    On the synthetic cohort a trait is the image feature that tracks one planted expression program best
    within tissue (:func:`tracking_traits`). Without a planted truth the programs are found
    the same way round: every feature is correlated with every gene within tissue (partial correlation given
    the tissue, BH at ``fdr``; :func:`histo_utils.correlation.scan_pairs`); the features are ranked by how
    many genes they correlate with (a feature that tracks a program correlates with its whole gene module;
    ties by the strongest |r|), and taken greedily, skipping a feature whose genes overlap a chosen one's by
    more than ``max_overlap`` (Jaccard: the same module again), until ``n_traits`` are chosen. A trait is
    oriented by the sign of its feature's median within-tissue r, so that "high" means more of its genes.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features)
    expression : DataFrame, shape (n_samples, n_genes), the same samples
    tissue : sequence, length n_samples, the tissue of each sample
    n_traits, fdr, max_overlap, block_size : as above; genes per block of the scan

    Returns
    -------
    DataFrame ``trait`` (``<feature>_high``), ``program`` (empty), ``feature``, ``r_within_tissue`` (median r of
    its pairs), ``genes`` (genes correlated within tissue)
    """
    if len(features) != len(expression) or not features.index.equals(expression.index):
        raise InputError("features and expression must have the same samples in the same order "
                         "(data.paired_tables gives both).")
    f, _ = correlation.drop_constant(features, what="feature")
    g, _ = correlation.drop_constant(expression, what="gene")
    scan = correlation.scan_pairs(f, g, groups=np.asarray(tissue), r_min=1.0, fdr_keep=fdr, block_size=block_size)
    pairs = correlation.named_pairs(scan.pairs, f, g)
    pairs = pairs[pairs.q < fdr]
    if pairs.empty:
        raise InputError(f"No image feature correlates with any gene within tissue at BH q < {fdr} "
                         f"({len(f)} samples): name the trait features in trait_features.")
    per = pairs.assign(abs_r=pairs.r.abs()).groupby("feature").agg(
        genes=("gene", "nunique"), best=("abs_r", "max"), r_within_tissue=("r", "median"))
    per = per.sort_values(["genes", "best"], ascending=False)
    gene_sets = pairs.groupby("feature").gene.agg(set)
    chosen: list[str] = []
    for feat in per.index:
        mine = gene_sets[feat]
        if all(len(mine & gene_sets[c]) / len(mine | gene_sets[c]) <= max_overlap for c in chosen):
            chosen.append(feat)
        if len(chosen) == n_traits:
            break
    if len(chosen) < n_traits:
        log.warning("Only %d distinct traits found (asked %d)", len(chosen), n_traits)
    out = per.loc[chosen].reset_index()
    return pd.DataFrame({"trait": [f"{f}_high" for f in out.feature], "program": "", "feature": out.feature,
                         "r_within_tissue": out.r_within_tissue.to_numpy(), "genes": out.genes.to_numpy()})


def tracking_traits(features: pd.DataFrame, drivers: pd.DataFrame, groups: Sequence) -> pd.DataFrame:
    """One trait per driver (a sample variable, e.g. a planted program): the feature that tracks it best within groups.

    Every feature is correlated with every driver within groups (both centred within each group,
    :func:`histo_utils.correlation.standardize`; a feature without variance within groups gets NaN and is never
    chosen); a driver's trait is the feature of largest |r|, which :func:`binarize_traits` orients by the sign
    of that r.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features)
    drivers : DataFrame indexed like ``features``, one column per driver (its name: the trait's ``program``)
    groups : sequence, length n_samples, the group (tissue) of each sample

    Returns
    -------
    DataFrame ``trait`` (``<driver>_feature``), ``program`` (the driver), ``feature``, ``r_within_tissue``
    """
    if not drivers.index.equals(features.index):
        raise InputError("drivers must have the samples of features in the same order.")
    r = correlation.within_group_r(features, drivers, groups=groups)
    best = r.abs().idxmax()
    return pd.DataFrame({"trait": [f"{name}_feature" for name in r.columns], "program": list(r.columns),
                         "feature": best.to_numpy(), "r_within_tissue": [r.at[best[n], n] for n in r.columns]})


def trait_definitions(features: pd.DataFrame, expression: pd.DataFrame, tissue: pd.Series, *,
                      trait_features: Sequence[str] = (), truth_dir: str | os.PathLike | None = None,
                      programs: Sequence[str] = (), n_traits: int = 3, fdr: float = 0.05) -> pd.DataFrame:
    """The traits of notebook 09: named features, else the planted programs' trackers, else chosen from the data.

    Parameters
    ----------
    features, expression : DataFrames, shape (n_samples, ...), the paired samples
    tissue : Series, sample -> tissue
    trait_features : image features (``layer_channel``) that define the traits (:func:`feature_traits`)
    truth_dir : the synthetic cohort's truth (``truth/``): one trait per planted program in ``programs``, the
        feature that tracks it best within the planted tissue (``samples.tsv``: ``program_<name>``, ``SMTS``;
        :func:`tracking_traits`, the same traits as :func:`histo_utils.truth.program_traits`)
    programs : planted programs (synthetic)
    n_traits, fdr : for real data without ``trait_features``: :func:`choose_traits`

    Returns
    -------
    DataFrame ``trait, program, feature, r_within_tissue``
    """
    if trait_features:
        return feature_traits(trait_features, features.columns)
    if truth_dir is not None:
        planted = io.read_table(Path(truth_dir) / "samples.tsv").drop_duplicates("SAMPID").set_index("SAMPID")
        planted = planted.loc[features.index]
        have = [c.removeprefix("program_") for c in planted.columns if c.startswith("program_")]
        missing = [p for p in programs if p not in have]
        if missing:
            raise InputError(f"Programs {missing} not planted; available: {have}.")
        drivers = pd.DataFrame({p: planted[f"program_{p}"] for p in dict.fromkeys(programs)}, index=planted.index)
        return tracking_traits(features, drivers, planted["SMTS"].to_numpy())
    log.info("No trait_features and no planted truth: choosing %d traits from the within-tissue correlations",
             n_traits)
    return choose_traits(features, expression, tissue.reindex(features.index).to_numpy(), n_traits=n_traits, fdr=fdr)
