"""Planted truth of the synthetic cohort: what each method should recover, and how well it did.

Gene roles (``truth/genes.tsv``) fall into groups by how they reach an image:

``program``  program modules: expression and slide morphology share the latent program (direct coupling)
``tissue``   tissue-specific genes: coupled to image features through the tissue only (indirect)
``ischemia`` stress module: ischemic time drives it and also fades the slide (a shared confounder)
``null``     everything else (noise, low, constant, RIN module, sex genes): no path to the image
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["gene_groups", "gene_recovery", "feature_truth", "pair_is_planted", "planted_unique_fraction",
           "IMAGE_LINKED"]

#: gene groups with a planted path to the image
IMAGE_LINKED = ("program", "tissue", "ischemia")


def gene_groups(genes: pd.DataFrame) -> pd.DataFrame:
    """Group and detail of every gene of ``truth/genes.tsv``.

    Returns
    -------
    DataFrame indexed by ``Name`` with ``role`` (as planted, e.g. ``program_lumen_size``),
    ``group`` (program, tissue, ischemia, null) and ``target`` (the program or tissue, else "").
    """
    if "role" not in genes or "Name" not in genes:
        raise ValueError("genes table needs 'Name' and 'role' columns (truth/genes.tsv of a synthetic cohort).")
    role = genes.set_index("Name")["role"].astype(str)
    group = role.str.split("_", n=1).str[0]
    group = group.where(group.isin(IMAGE_LINKED), "null")
    target = role.str.split("_", n=1).str[1].fillna("").where(group.isin(["program", "tissue"]), "")
    return pd.DataFrame({"role": role, "group": group, "target": target})


def gene_recovery(found: Iterable[str], groups: pd.DataFrame, *, tested: Sequence[str] | None = None,
                  positive: Sequence[str] = IMAGE_LINKED) -> tuple[pd.DataFrame, dict]:
    """Recall per planted role and precision of a set of genes found.

    Parameters
    ----------
    found : gene names reported by a method
    groups : output of :func:`gene_groups`
    tested : the genes the method could report (recall is over these); all genes when None
    positive : groups counted as true findings

    Returns
    -------
    per_role : DataFrame, one row per role with ``group, planted, tested, found, recall``
    summary : dict with ``found``, ``true``, ``false``, ``precision`` and ``recall`` (over tested positive genes)
    """
    g = groups if tested is None else groups.loc[groups.index.intersection(pd.Index(tested))]
    found = pd.Index(pd.unique(np.asarray(list(found), dtype=object)))
    unknown = found.difference(groups.index)
    if len(unknown):
        raise ValueError(f"{len(unknown)} found genes are not in the truth table (e.g. {list(unknown[:3])}).")
    is_found = g.index.isin(found)
    per_role = (g.assign(found=is_found).groupby("role")
                .agg(group=("group", "first"), tested=("found", "size"), found=("found", "sum")))
    per_role.insert(1, "planted", groups.groupby("role").size().reindex(per_role.index))
    per_role["recall"] = per_role["found"] / per_role["tested"]
    pos = g["group"].isin(positive)
    n_true = int((is_found & pos).sum())
    summary = {"found": int(is_found.sum()), "true": n_true, "false": int((is_found & ~pos).sum()),
               "precision": n_true / is_found.sum() if is_found.any() else float("nan"),
               "recall": n_true / pos.sum() if pos.any() else float("nan")}
    return per_role.reset_index(), summary


def feature_truth(features: pd.DataFrame, samples: pd.DataFrame, *, tissue_col: str = "SMTS") -> pd.DataFrame:
    """What each image feature carries of the planted variables, measured on the given slides.

    Parameters
    ----------
    features : DataFrame, shape (n_slides, n_features)
    samples : DataFrame indexed like ``features`` with the tissue and the truth columns
        ``program_*`` and ``ischemic_severity`` (``truth/samples.tsv``)

    Returns
    -------
    DataFrame indexed by feature: ``eta2_tissue`` (variance fraction explained by tissue) and, for every
    program and ``ischemia``, the within-tissue Pearson r (tissue means removed from both).
    """
    from .correlation import group_r2, standardize

    s = samples.loc[features.index]
    tissue = s[tissue_col].to_numpy()
    x = features.to_numpy(dtype=np.float64)
    out = pd.DataFrame({"eta2_tissue": group_r2(x, tissue)}, index=features.columns)
    drivers = {c: s[c] for c in s.columns if c.startswith("program_")}
    drivers["ischemia"] = s["ischemic_severity"]
    zf = standardize(x, groups=tissue)
    for name, v in drivers.items():
        zd = standardize(v.to_numpy(dtype=np.float64)[:, None], groups=tissue)
        out[f"r_{name}"] = (zf * zd).sum(0)
    return out


def pair_is_planted(gene_group: Sequence[str], gene_target: Sequence[str], feature: Sequence[str],
                    ftruth: pd.DataFrame, *, r_cut: float = 0.3, eta2_cut: float = 0.5) -> np.ndarray:
    """Whether each gene–feature pair has a planted path from the gene's driver to the feature.

    tissue genes: the feature separates tissues (``eta2_tissue >= eta2_cut``); program genes: the
    feature tracks that program within tissue (``|r| >= r_cut``); ischemia genes: it tracks ischemic
    severity within tissue. Everything else: False.
    """
    gene_group = np.asarray(gene_group, dtype=object)
    gene_target = np.asarray(gene_target, dtype=object)
    ft = ftruth.loc[np.asarray(feature)]
    out = np.zeros(len(gene_group), bool)
    out |= (gene_group == "tissue") & (ft["eta2_tissue"].to_numpy() >= eta2_cut)
    for prog in [c[2:] for c in ftruth.columns if c.startswith("r_program_")]:
        name = prog.removeprefix("program_")
        out |= (gene_group == "program") & (gene_target == name) & (ft[f"r_{prog}"].abs().to_numpy() >= r_cut)
    out |= (gene_group == "ischemia") & (ft["r_ischemia"].abs().to_numpy() >= r_cut)
    return out


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
    from .confounders import residualize

    others = design.columns([t for t in design.terms if t != term])
    d_res = residualize(np.asarray(driver, dtype=np.float64)[:, None], design.matrix[others].to_numpy())
    tss = ((y - y.mean()) ** 2).sum()
    return (loading.reindex(y.columns).fillna(0.0) ** 2) * float((d_res ** 2).sum()) / tss
