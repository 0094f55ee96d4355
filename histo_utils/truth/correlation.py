"""Planted truth of the gene–feature scans (notebook 03, :mod:`histo_utils.correlation`): gene roles, recall
and precision of the genes and pairs found, Badea's Table 7 by gene group.

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

from ..errors import InputError

__all__ = ["IMAGE_LINKED", "gene_groups", "gene_recovery", "pair_is_planted", "scan_recovery", "indirect_by_group",
           "best_within_tissue_r"]

#: gene groups with a planted path to the image
IMAGE_LINKED = ("program", "tissue", "ischemia")


def gene_groups(genes: pd.DataFrame) -> pd.DataFrame:
    """Group and detail of every gene of ``truth/genes.tsv``.

    Parameters
    ----------
    genes : DataFrame with ``Name`` and ``role``

    Returns
    -------
    DataFrame indexed by ``Name`` with ``role`` (as planted, e.g. ``program_lumen_size``),
    ``group`` (program, tissue, ischemia, null) and ``target`` (the program or tissue, else "").
    """
    if "role" not in genes or "Name" not in genes:
        raise InputError("genes table needs 'Name' and 'role' columns (truth/genes.tsv of a synthetic cohort).")
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
        raise InputError(f"{len(unknown)} found genes are not in the truth table (e.g. {list(unknown[:3])}).")
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


def scan_recovery(scans: dict, groups: pd.DataFrame, ftruth: pd.DataFrame, *, tested: Sequence[str],
                  r_cut: float = 0.3, eta2_cut: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall per planted gene role and pair precision of one or more gene–feature scans.

    Parameters
    ----------
    scans : dict, method label -> (pairs found, positive groups): the pairs a DataFrame with ``feature``
        and ``gene``; the positive groups those the method should find (e.g. ``("program", "ischemia")``
        for a within-tissue scan)
    groups : DataFrame of :func:`gene_groups`
    ftruth : DataFrame of :func:`feature_truth` (what each feature carries)
    tested : the genes the scans could report
    r_cut, eta2_cut : of :func:`pair_is_planted`

    Returns
    -------
    summary : DataFrame indexed by ``method``: :func:`gene_recovery`'s summary with ``pairs,
        pair_precision, noise_genes_found, program_recall, tissue_recall``
    per_role : DataFrame, :func:`gene_recovery`'s per-role table of every method (``method`` column)
    """
    rows, per_role = [], []
    for label, (found, positive) in scans.items():
        pr, summ = gene_recovery(found.gene, groups, tested=tested, positive=positive)
        g_ = groups.loc[found.gene]
        planted_pair = pair_is_planted(g_.group, g_.target, found.feature, ftruth, r_cut=r_cut, eta2_cut=eta2_cut)
        summ.update({"method": label, "pairs": len(found), "pair_precision": float(planted_pair.mean())
                     if len(found) else float("nan"),
                     "noise_genes_found": int(pr.loc[pr.role == "noise", "found"].sum()),
                     "program_recall": pr.loc[pr.group == "program", "found"].sum()
                     / max(pr.loc[pr.group == "program", "tested"].sum(), 1),
                     "tissue_recall": pr.loc[pr.group == "tissue", "found"].sum()
                     / max(pr.loc[pr.group == "tissue", "tested"].sum(), 1)})
        rows.append(summ)
        per_role.append(pr.assign(method=label))
    return pd.DataFrame(rows).set_index("method"), pd.concat(per_role, ignore_index=True)


def indirect_by_group(pairs: pd.DataFrame, groups: pd.DataFrame, *, alphas: Sequence[float] = (0.01, 0.05)
                      ) -> pd.DataFrame:
    """Badea's Table 7 against the truth: per planted gene group, the share of pairs whose gene–tissue–feature
    independence is not rejected (the pair is explained by the tissue).

    Parameters
    ----------
    pairs : DataFrame with ``gene`` and ``p_g_t_f`` (:func:`histo_utils.correlation.indirect_dependencies`)
    groups : DataFrame of :func:`gene_groups`
    alphas : levels of the test

    Returns
    -------
    DataFrame indexed by group: ``pairs`` and ``g–t–f at α=<alpha>`` per level
    """
    p = pairs.assign(group=groups.group.reindex(pairs.gene).to_numpy())
    return p.groupby("group").agg(pairs=("gene", "size"),
                                  **{f"g–t–f at α={a}": ("p_g_t_f", lambda v, a=a: (v > a).mean()) for a in alphas})


def best_within_tissue_r(scan, expression_columns: Sequence[str], tested: Sequence[str], groups: pd.DataFrame,
                         found: Sequence[str]) -> pd.DataFrame:
    """Each tested gene's strongest within-tissue correlation with any feature, and whether it was found.

    Parameters
    ----------
    scan : :class:`histo_utils.correlation.ScanResult` of the within-tissue scan (pairs kept at
        ``|r| >= scan.r_keep``)
    expression_columns : the scan's gene names (column order)
    tested : genes to report (those passing the expression floor)
    groups : DataFrame of :func:`gene_groups`
    found : genes with a significant within-tissue pair

    Returns
    -------
    DataFrame indexed by gene: ``best_abs_r_within`` (``scan.r_keep`` when no pair was kept), ``group``,
    ``found``
    """
    best = (scan.pairs.assign(gene=pd.Index(expression_columns)[scan.pairs.gene], abs_r=scan.pairs.r.abs())
            .groupby("gene").abs_r.max().reindex(tested).fillna(scan.r_keep))
    return best.to_frame("best_abs_r_within").assign(group=groups.group.reindex(best.index).to_numpy(),
                                                    found=lambda d: d.index.isin(pd.Index(found)))
