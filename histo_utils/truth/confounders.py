"""Planted truth of the confounder regression (notebook 05, :mod:`histo_utils.confounders`): the planted
confounder effects against the variance partition.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..confounders import expressed_genes, log_ischemic_time, residualize

__all__ = ["planted_unique_fraction", "planted_vs_recovered", "planted_agreement", "r2_by_role"]


def planted_unique_fraction(loading: pd.Series, driver: np.ndarray, design, term: str,
                            y: pd.DataFrame) -> pd.Series:
    """The type-II variance fraction a planted linear effect should give each column.

    A column ``y = loading * driver + ...`` regressed on the design gets for ``term`` (the design's
    version of the driver) the unique sum of squares ``loading² · SS(driver | other terms)``; divided
    by the column's total sum of squares this is what
    :func:`histo_utils.confounders.variance_partition` should report as ``unique_r2``.

    Parameters
    ----------
    loading : Series, column -> planted coefficient (log2 units per unit of driver)
    driver : array, shape (n_samples,), the planted driver in the design's sample order
    design : :class:`histo_utils.confounders.Design`
    term : the design term that carries the driver
    y : DataFrame, shape (n_samples, n_columns)
    """
    others = design.columns([t for t in design.terms if t != term])
    d_res = residualize(np.asarray(driver, dtype=np.float64)[:, None], design.matrix[others].to_numpy())
    tss = ((y - y.mean()) ** 2).sum()
    return (loading.reindex(y.columns).fillna(0.0) ** 2) * float((d_res ** 2).sum()) / tss


def planted_vs_recovered(genes: pd.DataFrame, truth_samples: pd.DataFrame, log_expression: pd.DataFrame,
                         samples: pd.DataFrame, designs: dict, gene_partition: pd.DataFrame, *,
                         gene_min_mean: float = 1.0) -> pd.DataFrame:
    """Planted type-II fraction of every ischemia- and RIN-module gene against the recovered unique R².

    The planted fraction is :func:`planted_unique_fraction` of the gene's planted loading on the planted
    driver (standardised log ischemic time, RIN − 7). The generator floors log expression at a detection
    limit: a gene whose samples sit on the floor (> 5 % of them) is no longer linear in the driver and is
    flagged ``at_floor``.

    Parameters
    ----------
    genes : DataFrame, ``truth/genes.tsv`` (``Name, role, loading_ischemia, loading_rin``)
    truth_samples : DataFrame, ``truth/samples.tsv`` (``has_rna, SMTSISCH``)
    log_expression : DataFrame, shape (n_samples, n_genes), index SAMPID
    samples : DataFrame indexed by SAMPID with ``SMTSISCH`` and ``SMRIN``
    designs : dict, tissue -> :class:`histo_utils.confounders.Design`
    gene_partition : DataFrame, :attr:`histo_utils.confounders.VarianceByConfounder.genes`
    gene_min_mean : as in the regression (:func:`histo_utils.confounders.expressed_genes`)

    Returns
    -------
    DataFrame, one row per tissue × term × module gene: ``tissue, term, gene, planted, recovered, at_floor``
    """
    genes = genes.set_index("Name")
    roles = genes.role
    rna = truth_samples[truth_samples.has_rna]
    lt = np.log1p(rna.SMTSISCH.clip(lower=0))
    z_mean, z_sd = lt.mean(), lt.std(ddof=0)
    comp = []
    for t, d in designs.items():
        e = expressed_genes(log_expression, d, min_mean=gene_min_mean)
        idx = d.matrix.index
        drivers = {"log_ischemic_time": ((log_ischemic_time(samples.loc[idx, "SMTSISCH"]) - z_mean) / z_sd,
                                         genes.loading_ischemia, "ischemia"),
                   "RIN": (samples.loc[idx, "SMRIN"].to_numpy() - 7.0, genes.loading_rin, "rin")}
        for term, (drv, load, role) in drivers.items():
            if term not in d.terms:
                continue
            cols = e.columns[roles.reindex(e.columns).to_numpy() == role]
            planted = planted_unique_fraction(load, drv, d, term, e[cols])
            got = gene_partition[(gene_partition.tissue == t) & (gene_partition.term == term)].set_index(
                "gene").unique_r2_adj
            floor_frac = (e[cols] <= e[cols].min() + 1e-9).mean().to_numpy()
            comp.append(pd.DataFrame({"tissue": t, "term": term, "gene": cols, "planted": planted.to_numpy(),
                                      "recovered": got.reindex(cols).to_numpy(), "at_floor": floor_frac > 0.05}))
    return pd.concat(comp, ignore_index=True)


def planted_agreement(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per term, how well the recovered fractions follow the planted ones (genes off the floor).

    Parameters
    ----------
    comparison : DataFrame of :func:`planted_vs_recovered`

    Returns
    -------
    DataFrame indexed by term: ``genes, left_out_at_floor, r, r_within_tissue_median, median_planted,
    median_recovered``
    """
    return comparison.groupby("term").apply(lambda d: pd.Series({
        "genes": int((~d.at_floor).sum()), "left_out_at_floor": int(d.at_floor.sum()),
        "r": np.corrcoef(d.planted[~d.at_floor], d.recovered[~d.at_floor])[0, 1],
        "r_within_tissue_median": d[~d.at_floor].groupby("tissue").apply(
            lambda g: np.corrcoef(g.planted, g.recovered)[0, 1], include_groups=False).median(),
        "median_planted": d.planted[~d.at_floor].median(), "median_recovered": d.recovered[~d.at_floor].median()}),
        include_groups=False)


def r2_by_role(gene_partition: pd.DataFrame, genes: pd.DataFrame) -> pd.DataFrame:
    """Mean chance-corrected unique R² of each confounder term by planted gene role.

    Parameters
    ----------
    gene_partition : DataFrame, :attr:`histo_utils.confounders.VarianceByConfounder.genes`
    genes : DataFrame, ``truth/genes.tsv``

    Returns
    -------
    DataFrame, roles (``program``, ``tissue``, module roles, ...) × terms.
    """
    roles = genes.set_index("Name").role
    role = roles.reindex(gene_partition.gene).str.replace(r"^(program|tissue)_.*", r"\1", regex=True).to_numpy()
    vp = gene_partition.assign(role=role)
    return vp[vp.term != "(all)"].pivot_table(index="role", columns="term", values="unique_r2_adj", aggfunc="mean")
