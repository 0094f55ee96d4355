"""Shared variance between image features and expression through their principal components (Jones, Q1).

Both tables are reduced to principal components separately (kept until a
fraction of their variance is reached), then every image PC is correlated with
every expression PC. With ``lambda_i`` the fraction of the image features'
variance carried by image PC ``i`` and ``r_ij`` its correlation with
expression PC ``j``,

    S_image = sum_i lambda_i sum_j r_ij^2.

Because the expression PCs are uncorrelated, ``sum_j r_ij^2`` is the R² of
image PC ``i`` regressed on all kept expression PCs, so ``S_image`` is the
fraction of the image features' variance that a linear function of the kept
expression PCs reproduces (over the kept image PCs); ``S_expression`` is the
same with the roles exchanged. With ``n`` samples a regression on ``n - 1``
PCs fits anything (R² = 1), so the number means something only next to its
null: the same computation with the pairing of image and expression rows
shuffled (:func:`shared_variance_null`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .distributed import one_blas_thread
from .errors import InputError
from .correlation import drop_constant
from .data import feature_layer, FeatureKey

log = logging.getLogger(__name__)

__all__ = ["pca", "PCA", "cross_correlation", "shared_variance", "shared_variance_of_pcas", "SharedVariance",
           "shared_variance_null", "shuffle_expression", "ShuffledExpression", "shared_variance_test", "shared_variance_with_null", "SharedVarianceTest",
           "select_columns", "shared_variance_grid", "shared_variance_by_tissue", "summarize_against_null",
           "technical_share", "GRID_KEYS"]


@dataclass
class PCA:
    """Principal components of a samples × variables table.

    Attributes
    ----------
    scores : array, shape (n_samples, k)
    explained : array, shape (k,), fraction of the total variance of each component
    total_explained : float, sum of ``explained``
    """

    scores: np.ndarray
    explained: np.ndarray

    @property
    def n_components(self) -> int:
        return self.scores.shape[1]

    @property
    def total_explained(self) -> float:
        return float(self.explained.sum())


def pca(x, *, var_fraction: float = 0.999, max_components: int | None = None, name: str = "table") -> PCA:
    """PCA by SVD of the centred table, keeping components until ``var_fraction`` of the variance.

    Parameters
    ----------
    x : array or DataFrame, shape (n_samples, n_variables)
    var_fraction : keep the fewest components whose variance fractions sum to at least this, in (0, 1]
    max_components : at most this many; a request above ``n_samples - 1`` (the most components
        with variance that n samples have) is lowered to it, with a warning

    Returns
    -------
    PCA
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D (samples x variables), got shape {x.shape}.")
    if not 0 < var_fraction <= 1:
        raise InputError(f"var_fraction must be in (0, 1], got {var_fraction}.")
    _check_table(x, name)
    n = len(x)
    limit = n - 1
    if max_components is not None:
        if max_components < 1:
            raise InputError(f"max_components must be >= 1, got {max_components}.")
        if max_components > limit:
            log.warning("%s: %d components requested but %d samples have at most %d; using %d.", name,
                        max_components, n, limit, limit)
        limit = min(limit, max_components)
    return _SVD.of(x, name=name).truncate(var_fraction, limit=limit)


@dataclass
class _SVD:
    """Thin SVD of a centred table, from which :func:`pca` keeps components for any variance fraction
    (one SVD serves every fraction of a grid)."""

    u: np.ndarray  # (n_samples, r)
    s: np.ndarray  # (r,)
    frac: np.ndarray  # (r,) variance fraction of each component

    @classmethod
    def of(cls, x: np.ndarray, *, name: str = "table") -> "_SVD":
        xc = x - x.mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        var = s ** 2
        total = var.sum()
        if total <= 0:
            raise InputError(f"{name} has no variance.")
        return cls(u, s, var / total)

    def truncate(self, var_fraction: float, *, limit: int) -> PCA:
        k = int(np.searchsorted(np.cumsum(self.frac), var_fraction - 1e-12) + 1)
        k = max(1, min(k, limit, int((self.frac > 1e-12).sum())))
        return PCA(scores=self.u[:, :k] * self.s[:k], explained=self.frac[:k])


def _check_table(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise InputError(f"{name} has NaN or infinite values; impute or drop them before the PCA.")
    if len(x) < 3:
        raise InputError(f"{name} has {len(x)} samples; a PCA needs at least 3.")


def cross_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlations between the columns of ``a`` (n, ka) and ``b`` (n, kb); shape (ka, kb)."""
    za = a - a.mean(0)
    zb = b - b.mean(0)
    za = za / np.linalg.norm(za, axis=0)
    zb = zb / np.linalg.norm(zb, axis=0)
    return za.T @ zb


@dataclass
class SharedVariance:
    """Result of :func:`shared_variance` (fractions in [0, 1])."""

    image: float
    expression: float
    n_pc_image: int
    n_pc_expression: int
    image_pca_explained: float
    expression_pca_explained: float
    cross: np.ndarray  # (n_pc_image, n_pc_expression) correlations

    def cross_table(self) -> pd.DataFrame:
        """``cross`` labelled: rows ``image_PC1..``, columns ``expression_PC1..``."""
        return pd.DataFrame(self.cross, index=[f"image_PC{i + 1}" for i in range(self.n_pc_image)],
                            columns=[f"expression_PC{j + 1}" for j in range(self.n_pc_expression)])


def _shared(cross: np.ndarray, lam_i: np.ndarray, lam_e: np.ndarray) -> tuple[float, float]:
    r2 = cross ** 2
    return float(lam_i @ r2.sum(1)), float(lam_e @ r2.sum(0))


def shared_variance(image, expression, *, var_fraction: float = 0.999, max_components: int | None = None
                    ) -> SharedVariance:
    """Shared variance of image features and expression over the same samples (Jones Q1 steps 1–3).

    Parameters
    ----------
    image : array or DataFrame, shape (n_samples, n_features)
    expression : array or DataFrame, shape (n_samples, n_genes), same samples in the same order
    var_fraction, max_components : passed to :func:`pca` for both tables

    Returns
    -------
    SharedVariance
        ``image = sum_i lambda_i sum_j r_ij^2`` with ``lambda_i`` the variance fraction of image PC
        ``i``; ``expression`` the symmetric quantity.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> latent = rng.normal(size=(50, 1))
    >>> res = shared_variance(latent @ rng.normal(size=(1, 20)), latent @ rng.normal(size=(1, 30)), var_fraction=0.9)
    >>> round(res.image, 3), res.n_pc_image
    (1.0, 1)
    """
    image_pca = pca(image, var_fraction=var_fraction, max_components=max_components, name="image features")
    expression_pca = pca(expression, var_fraction=var_fraction, max_components=max_components, name="expression")
    return shared_variance_of_pcas(image_pca, expression_pca)


def shared_variance_of_pcas(image_pca: PCA, expression_pca: PCA) -> SharedVariance:
    """:func:`shared_variance` of PCAs already computed (to reuse one PCA across calls).

    Parameters
    ----------
    image_pca : PCA, scores shape (n_samples, n_pc_image)
    expression_pca : PCA, scores shape (n_samples, n_pc_expression), same samples in the same order

    Returns
    -------
    SharedVariance
    """
    if len(image_pca.scores) != len(expression_pca.scores):
        raise InputError(f"image features have {len(image_pca.scores)} samples and expression "
                         f"{len(expression_pca.scores)}: align them first (data.match_samples).")
    cross = cross_correlation(image_pca.scores, expression_pca.scores)
    si, se = _shared(cross, image_pca.explained, expression_pca.explained)
    return SharedVariance(si, se, image_pca.n_components, expression_pca.n_components,
                          image_pca.total_explained, expression_pca.total_explained, cross)


def _residual_maker(design) -> np.ndarray | None:
    """I - Q Q^T for an orthonormal basis Q of the design's column space (None: no design)."""
    if design is None:
        return None
    x = np.asarray(design, dtype=np.float64)
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    q = u[:, : int((sv > sv[0] * max(x.shape) * np.finfo(float).eps).sum())]
    return np.eye(len(x)) - q @ q.T


def _normalized_columns(a: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit norm along axis -2 (a stack of (n, k) tables); columns without
    variance become 0 (they then add nothing to a sum of squared correlations)."""
    z = a - a.mean(-2, keepdims=True)
    norm = np.linalg.norm(z, axis=-2, keepdims=True)
    return np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)


@dataclass
class ShuffledExpression:
    """The expression side of the shuffled-pairing null, computed once and reused for every image PCA
    of the same samples (all tables and layers of a tissue share it; only the pairing is permuted).

    Attributes
    ----------
    z : array, shape (n_shuffles, n_samples, k), the shuffled (and, with a design, re-projected and
        rotated) expression scores, each column centred and of unit norm; unused columns are 0
    explained : array, shape (n_shuffles, k), variance fraction of each column (0 for unused ones)
    """

    z: np.ndarray
    explained: np.ndarray

    @property
    def n_shuffles(self) -> int:
        return self.z.shape[0]


def shuffle_expression(expression_pca: PCA, *, n_shuffles: int = 200, seed: int = 0,
                       design=None) -> ShuffledExpression:
    """Shuffle the rows of the expression scores ``n_shuffles`` times (the null of :func:`shared_variance_null`).

    The permutations are drawn as ``rng.permutation(n)`` one after another from
    ``numpy.random.default_rng(seed)``, so the same seed gives the same shuffles for every image table.

    Parameters
    ----------
    expression_pca : PCA, scores shape (n_samples, k)
    n_shuffles, seed : number of shuffles and their seed
    design : array, shape (n_samples, n_columns), optional; see :func:`shared_variance_null`

    Returns
    -------
    ShuffledExpression, stacks of shape (n_shuffles, n_samples, k)
    """
    if n_shuffles < 1:
        raise InputError(f"n_shuffles must be >= 1, got {n_shuffles}.")
    rng = np.random.default_rng(seed)
    scores = expression_pca.scores
    n, k = scores.shape
    m = _residual_maker(design)
    if m is not None and m.shape[0] != n:
        raise InputError(f"design has {m.shape[0]} rows for {n} samples.")
    perms = np.stack([rng.permutation(n) for _ in range(n_shuffles)])
    shuffled = scores[perms]  # (B, n, k)
    lam = np.broadcast_to(expression_pca.explained, (n_shuffles, k)).copy()
    if m is not None:
        u, sv, _ = np.linalg.svd(m @ shuffled, full_matrices=False)  # batched over the shuffles
        keep = sv > sv[:, :1] * n * np.finfo(float).eps
        shuffled = u * np.where(keep, sv, 0.0)[:, None, :]
        kept_var = np.where(keep, sv ** 2, 0.0)
        lam = kept_var / kept_var.sum(1, keepdims=True) * float(np.sum(expression_pca.explained))
    return ShuffledExpression(_normalized_columns(shuffled), lam)


def shared_variance_null(image_pca: PCA, expression_pca: PCA | None = None, *, n_shuffles: int = 200,
                         seed: int = 0, design=None, shuffled: ShuffledExpression | None = None) -> pd.DataFrame:
    """Shared variance with the sample pairing shuffled, ``n_shuffles`` times.

    Shuffling the rows of the expression table permutes the rows of its PC
    scores and leaves its PCA otherwise unchanged, so the PCAs are reused; all
    shuffles are computed at once (one batched product, and with a design one
    batched SVD), and ``shuffled`` lets several image tables share them.

    Parameters
    ----------
    image_pca : PCA, scores shape (n_samples, n_pc_image)
    expression_pca : PCA, scores shape (n_samples, n_pc_expression); not needed when ``shuffled`` is given
    n_shuffles, seed : number of shuffles and their seed (ignored when ``shuffled`` is given)
    design : array, shape (n_samples, n_columns), optional
        When both tables are residuals of a regression on this design (notebook 05), they live in the
        same (n - rank)-dimensional residual space, which a plain shuffle breaks: the shuffled scores are
        projected back onto that space (Freedman–Lane), or the null would be too low. The projected
        scores are no longer uncorrelated, so they are rotated to their own principal components (with
        their own variance fractions, scaled to the observed PCA's total): the null table is what
        residualising a shuffled table and taking its PCA would give, and its shared variances stay
        within [0, 1] like the observed ones.
    shuffled : the expression side already shuffled (:func:`shuffle_expression`), reused as it is

    Returns
    -------
    DataFrame with columns ``image, expression``, one row per shuffle.
    """
    if shuffled is None:
        if expression_pca is None:
            raise InputError("shared_variance_null needs expression_pca or shuffled.")
        shuffled = shuffle_expression(expression_pca, n_shuffles=n_shuffles, seed=seed, design=design)
    n = len(image_pca.scores)
    if shuffled.z.shape[1] != n:
        raise InputError(f"image features have {n} samples and the shuffled expression {shuffled.z.shape[1]}: "
                         f"align them first (data.match_samples).")
    zi = _normalized_columns(image_pca.scores)
    r2 = np.matmul(zi.T, shuffled.z) ** 2  # (B, n_pc_image, k)
    image = r2.sum(2) @ image_pca.explained
    expression = np.einsum("bj,bj->b", r2.sum(1), shuffled.explained)
    return pd.DataFrame({"image": image, "expression": expression})


@dataclass(frozen=True)
class SharedVarianceTest:
    """Observed shared variance of both sides with its shuffled-pairing null (:func:`shared_variance_test`).

    ``*_p`` is the permutation p-value ``(1 + #{null >= observed}) / (1 + n_shuffles)``; ``*_excess`` the
    observed value minus the null mean; ``*_null_q95`` the null's 95th percentile.
    """

    n_samples: int
    n_pc_image: int
    n_pc_expression: int
    image_shared: float
    image_null_mean: float
    image_null_q95: float
    image_excess: float
    image_p: float
    expression_shared: float
    expression_null_mean: float
    expression_null_q95: float
    expression_excess: float
    expression_p: float

    def as_record(self) -> dict:
        """The fields as a flat dict in the order above (one row of a result table)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def shared_variance_test(image_pca: PCA, expression_pca: PCA, *, n_shuffles: int = 200, seed: int = 0,
                         design=None, shuffled: ShuffledExpression | None = None) -> SharedVarianceTest:
    """Shared variance of two PCAs with its shuffled-pairing null (:func:`shared_variance_null`).

    Parameters
    ----------
    image_pca : PCA, scores shape (n_samples, n_pc_image)
    expression_pca : PCA, scores shape (n_samples, n_pc_expression), same samples in the same order
    n_shuffles, seed, design, shuffled : passed to :func:`shared_variance_null` (``shuffled``: the
        expression side of ``expression_pca`` shuffled once by :func:`shuffle_expression` for several tables)

    Returns
    -------
    SharedVarianceTest
    """
    obs = shared_variance_of_pcas(image_pca, expression_pca)
    if shuffled is None:
        shuffled = shuffle_expression(expression_pca, n_shuffles=n_shuffles, seed=seed, design=design)
    null = shared_variance_null(image_pca, shuffled=shuffled)
    rec = {"n_samples": len(image_pca.scores), "n_pc_image": obs.n_pc_image,
           "n_pc_expression": obs.n_pc_expression}
    for side in ("image", "expression"):
        v = getattr(obs, side)
        values = null[side].to_numpy()
        rec[f"{side}_shared"] = v
        rec[f"{side}_null_mean"] = float(values.mean())
        rec[f"{side}_null_q95"] = float(np.quantile(values, 0.95))
        rec[f"{side}_excess"] = v - float(values.mean())
        rec[f"{side}_p"] = float((1 + (values >= v - 1e-12).sum()) / (1 + shuffled.n_shuffles))
    return SharedVarianceTest(**rec)


def shared_variance_with_null(image, expression, *, var_fraction: float = 0.999, n_shuffles: int = 200,
                              seed: int = 0, max_components: int | None = None, design=None) -> SharedVarianceTest:
    """:func:`shared_variance` of two tables with its shuffled-pairing null.

    Parameters
    ----------
    image : array, shape (n_samples, n_features)
    expression : array, shape (n_samples, n_genes), same samples in the same order
    var_fraction, max_components : passed to :func:`pca` for both tables
    n_shuffles, seed, design : passed to :func:`shared_variance_null`

    Returns
    -------
    SharedVarianceTest
    """
    ipca = pca(image, var_fraction=var_fraction, max_components=max_components, name="image features")
    epca = pca(expression, var_fraction=var_fraction, max_components=max_components, name="expression")
    return shared_variance_test(ipca, epca, n_shuffles=n_shuffles, seed=seed, design=design)


def select_columns(x: pd.DataFrame, *, top: int | None = None, min_mean: float | None = None) -> pd.DataFrame:
    """Columns with mean at least ``min_mean``, then the ``top`` most variable (Jones: 2,000 genes, 500 features).

    Columns without variance (:func:`histo_utils.correlation.drop_constant`) and columns without any value
    (a gene left out of this tissue's residual table) are always left out.

    Parameters
    ----------
    x : DataFrame, shape (n_samples, n_columns)
    top : keep at most this many columns, the most variable (None: all)
    min_mean : floor on a column's mean (None: no floor)

    Returns
    -------
    DataFrame, shape (n_samples, n_kept), columns in their original order unless ``top`` reorders them by
    variance
    """
    x = drop_constant(x.dropna(axis=1, how="all"))[0]
    if min_mean is not None:
        x = x.loc[:, x.mean() >= min_mean]
    if top and x.shape[1] > top:
        x = x[x.var().sort_values(ascending=False, kind="stable").index[:top]]
    return x


@one_blas_thread  # many small SVDs: threads cost more than they save
def shared_variance_grid(feature_tables: dict, expression: pd.DataFrame, tissue: pd.Series, *,
                         layers: bool = True, var_fractions=(0.999,), n_shuffles: int = 200, seed: int = 0,
                         top_features: int | None = 500, top_genes: int | None = 2000,
                         gene_min_mean: float | None = 1.0, scale_features: bool = True,
                         min_samples: int = 10, designs: dict | None = None,
                         progress: bool = False) -> pd.DataFrame:
    """Shared variance with its null for every tissue × feature table × layer × variance fraction.

    Parameters
    ----------
    feature_tables : dict, key -> DataFrame (n_samples, n_features), index = sample IDs, columns
        ``layer_channel``; a :class:`~histo_utils.data.FeatureKey` key gives the output columns
        ``network, tile_px, aggregation`` (other keys a ``table`` column)
    expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index = sample IDs
    tissue : Series, sample ID -> tissue; each tissue is analysed on its own
    layers : also each layer on its own (besides all layers together, ``layer="all"``)
    var_fractions : PCA variance fractions to keep (Jones: 99.9 % and 95 %)
    n_shuffles : shuffles of the image–expression pairing for the null
    top_features, top_genes, gene_min_mean : column selection per tissue (:func:`select_columns`)
    scale_features : standardise features before the PCA (layers differ in scale by orders of magnitude)
    min_samples : tissues with fewer samples are skipped (logged)
    designs : dict, tissue -> design DataFrame (indexed by sample), when the tables are residuals of a
        regression on it: the null then stays in the residual space (:func:`shared_variance_null`)

    Returns
    -------
    DataFrame, one row per tissue × table × layer × fraction: the key fields, ``tissue, layer,
    var_fraction`` and the record of :func:`shared_variance_with_null`. BLAS runs on one thread here: its
    threads slow the many small SVDs down (15x on a loaded 2-core machine).
    """
    from tqdm.auto import tqdm


    rows = []
    null_cache: dict = {}  # (tissue, samples, var_fraction) -> (expression PCA, shuffled expression side)
    jobs = [(key, t) for key in feature_tables for t in sorted(tissue.unique())]
    for key, t in tqdm(jobs, desc="shared variance", disable=not progress):
        table = feature_tables[key]
        ids = table.index.intersection(tissue.index[tissue == t]).intersection(expression.index)
        if len(ids) < min_samples:
            log.warning("Tissue %s: %d samples with features and expression, fewer than %d; skipped.", t,
                        len(ids), min_samples)
            continue
        if designs is not None:
            ids = ids.intersection(designs[t].index)
        design = None if designs is None else designs[t].loc[ids].to_numpy(dtype=np.float64)
        f_all = table.loc[ids]
        layer_of = pd.Series(feature_layer(f_all.columns), index=f_all.columns)
        groups = {"all": f_all.columns}
        if layers:
            groups.update({lay: cols for lay, cols in layer_of.groupby(layer_of, sort=False).groups.items()})
        image_svds = {}
        for lay, cols in groups.items():
            f = select_columns(f_all[cols], top=top_features)
            if f.shape[1] == 0:
                continue
            x = f.to_numpy(dtype=np.float64)
            if scale_features:
                x = (x - x.mean(0)) / x.std(0)
            _check_table(x, "image features")
            image_svds[lay] = (f.shape[1], _SVD.of(x, name="image features"))
        for vf in var_fractions:
            ckey = (t, tuple(ids), vf)
            if ckey not in null_cache:
                e = select_columns(expression.loc[ids], top=top_genes, min_mean=gene_min_mean)
                epca = pca(e.to_numpy(), var_fraction=vf, name=f"expression ({t})")
                null_cache[ckey] = (e.shape[1], epca, shuffle_expression(epca, n_shuffles=n_shuffles, seed=seed,
                                                                         design=design))
            n_genes, epca, shuffled = null_cache[ckey]
            for lay, (n_features, svd) in image_svds.items():
                ipca = svd.truncate(vf, limit=len(ids) - 1)
                rec = shared_variance_test(ipca, epca, shuffled=shuffled).as_record()
                key_fields = key.fields() if isinstance(key, FeatureKey) else {"table": key}
                rows.append({**key_fields, "tissue": t, "layer": lay, "var_fraction": vf,
                             "n_features": n_features, "n_genes": n_genes, **rec})
    return pd.DataFrame(rows)


def shared_variance_by_tissue(features: pd.DataFrame, expression: pd.DataFrame, tissue: pd.Series, *,
                              var_fraction: float = 0.999, top_features: int | None = None,
                              top_genes: int | None = None, gene_min_mean: float | None = None
                              ) -> dict[str, SharedVariance]:
    """:func:`shared_variance` of standardised features and expression within each tissue.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features), index sample ID
    expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index sample ID
    tissue : Series, sample ID -> tissue (its samples are the ones analysed)
    var_fraction : PCA variance fraction of both sides
    top_features, top_genes, gene_min_mean : column selection per tissue (:func:`select_columns`)

    Returns
    -------
    dict, tissue (sorted) -> SharedVariance (``cross_table()`` gives the labelled PC cross-correlations)

    Examples
    --------
    >>> by_tissue = shared_variance_by_tissue(features, log_expr, tissue, var_fraction=0.95)   # doctest: +SKIP
    >>> by_tissue["Liver"].expression                                                          # doctest: +SKIP
    """
    out = {}
    for t in sorted(tissue.unique()):
        ids = features.index.intersection(tissue.index[tissue == t])
        f = select_columns(features.loc[ids], top=top_features)
        e = select_columns(expression.loc[ids], top=top_genes, min_mean=gene_min_mean)
        out[t] = shared_variance(((f - f.mean()) / f.std()).to_numpy(), e.to_numpy(), var_fraction=var_fraction)
    return out


def summarize_against_null(grid: pd.DataFrame, by: list[str], *, alpha: float = 0.05) -> pd.DataFrame:
    """Mean shared variance, null and excess of a grid (:func:`shared_variance_grid`) per group, and how
    many of the group's rows lie above their null (permutation p < ``alpha``).

    Parameters
    ----------
    grid : DataFrame of :func:`shared_variance_grid`
    by : columns to group by (e.g. ``["var_fraction", "network", "tile_px"]``)
    alpha : level of the permutation test

    Returns
    -------
    DataFrame indexed by ``by``: ``rows, image_shared, image_null, image_excess, image_above_null,
    expression_shared, expression_null, expression_excess, expression_above_null``
    """
    aggs = {"rows": ("tissue", "size")}
    for side in ("image", "expression"):
        aggs.update({f"{side}_shared": (f"{side}_shared", "mean"), f"{side}_null": (f"{side}_null_mean", "mean"),
                     f"{side}_excess": (f"{side}_excess", "mean"),
                     f"{side}_above_null": (f"{side}_p", lambda p: int((p < alpha).sum()))})
    return grid.groupby(by).agg(**aggs)


#: the grid columns that name one cell of notebook 04's and 05's shared-variance grids
GRID_KEYS = ("network", "tile_px", "aggregation", "tissue", "layer", "var_fraction")


def technical_share(total: pd.DataFrame, residual: pd.DataFrame) -> pd.DataFrame:
    """The technical part of the shared variance of each grid cell: the excess over chance that regressing the
    confounders out removes (Jones Q2.3), ``excess_total - excess_residual``.

    Why not the plain drop ``S_total - S_residual``: the two values are in-sample R²s of different spaces. The
    residual tables live in the ``n - rank(design)`` dimensional residual space and keep about as many PCs as
    the raw ones, so the chance level of their shared variance (the Freedman–Lane null of notebook 05) is
    higher than the raw tables' (the plain-shuffle null of notebook 04); the plain drop mixes the change of
    chance level with the change of link and is negative in most cells of a 40-sample tissue (88.5 % of the
    default run's cells) even where the confounders carry part of the link. Each value is therefore first taken
    against its own null, ``excess = S - null mean``, and the technical part is what the regression removes of
    that excess. It is 0 in expectation when the confounders carry nothing and positive when they carry part
    of the link; it is negative in a cell only when the link above chance is larger after regression than
    before — sampling noise of two permutation means (a few hundredths at 40 samples), or a confounder that
    masked the link (suppression); ``plain_drop`` keeps the old difference for comparison.

    Parameters
    ----------
    total, residual : DataFrames of :func:`shared_variance_grid` on the raw tables
        (notebook 04) and on the residual tables (notebook 05), with ``{side}_shared``,
        ``{side}_null_mean`` and the columns of :data:`GRID_KEYS`

    Returns
    -------
    DataFrame, the cells present in both, the grids' columns suffixed ``_total`` and ``_residual``, and per
    side (``image``, ``expression``): ``{side}_excess_total``, ``{side}_excess_residual`` (value minus own
    null mean), ``{side}_technical`` (their difference) and ``{side}_plain_drop`` (``shared_total -
    shared_residual``)
    """
    both = total.merge(residual, on=list(GRID_KEYS), suffixes=("_total", "_residual"))
    for side in ("image", "expression"):
        for part in ("total", "residual"):
            both[f"{side}_excess_{part}"] = both[f"{side}_shared_{part}"] - both[f"{side}_null_mean_{part}"]
        both[f"{side}_technical"] = both[f"{side}_excess_total"] - both[f"{side}_excess_residual"]
        both[f"{side}_plain_drop"] = both[f"{side}_shared_total"] - both[f"{side}_shared_residual"]
    return both
