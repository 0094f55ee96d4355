"""Planted truth of the radiogenomic network (notebook 09, :mod:`histo_utils.radiogenomics`): traits from the
planted programs, gene masking and saliency against the planted sets.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .features import program_trackers

__all__ = ["program_traits", "planted_sets", "masking_truth", "saliency_truth"]


def program_traits(ftruth: pd.DataFrame, programs: Sequence[str]) -> pd.DataFrame:
    """One trait per planted program: the feature that tracks it best within tissue.

    Parameters
    ----------
    ftruth : :func:`feature_truth` output
    programs : program names (e.g. ``nuclear_density``)

    Returns
    -------
    DataFrame ``trait`` (``<program>_feature``), ``program, feature, r_within_tissue``.
    """
    chosen = program_trackers(ftruth, programs)
    return pd.DataFrame([{"trait": f"{p}_feature", "program": p, "feature": f,
                          "r_within_tissue": ftruth.loc[f, f"r_program_{p}"]} for p, f in chosen.items()])


def planted_sets(trait_info: pd.DataFrame) -> dict[str, str]:
    """The gene set of the program each trait was built from.

    Parameters
    ----------
    trait_info : ``trait, program`` (:func:`program_traits`)

    Returns
    -------
    dict, trait -> ``PLANTED_PROGRAM_<NAME>``; traits without a program are left out.
    """
    return {r.trait: f"PLANTED_PROGRAM_{r.program.upper()}" for r in trait_info.itertuples() if r.program}


def masking_truth(masking: pd.DataFrame, target: dict[str, str]) -> pd.DataFrame:
    """Rank of each trait's planted set in gene masking, with the best decoy's rank.

    Parameters
    ----------
    masking : gene-masking table (``trait, gene_set, rank``)
    target : trait -> planted set (:func:`planted_sets`)

    Returns
    -------
    DataFrame, one row per trait: ``trait, planted_set, rank, n_sets, best_decoy_rank``.
    """
    return pd.DataFrame([{"trait": t, "planted_set": s,
                          "rank": int(masking[(masking.trait == t) & (masking.gene_set == s)]["rank"].iloc[0]),
                          "n_sets": int((masking.trait == t).sum()),
                          "best_decoy_rank": int(masking[(masking.trait == t)
                                                         & masking.gene_set.str.startswith("DECOY")]["rank"].min())}
                         for t, s in target.items()])


def saliency_truth(sal: pd.DataFrame, rates: pd.DataFrame, target: dict[str, str]) -> pd.DataFrame:
    """How often each trait's planted set is enriched in the saliency of positive and negative samples.

    Parameters
    ----------
    sal : per-sample saliency GSEA (``trait, SAMPID, positive, term, nes``)
    rates : :func:`histo_utils.radiogenomics.saliency_rates` output
    target : trait -> planted set (:func:`planted_sets`)

    Returns
    -------
    DataFrame, one row per trait: ``trait, planted_set, rate_positive, rate_negative, decoy_rate_positive,
    median_rank_in_positive`` (the set's median NES rank in the positive samples' tables).
    """
    rows = []
    for t, s in target.items():
        r = rates[rates.trait == t]
        pos = sal[(sal.trait == t) & (sal.positive == 1)]
        ranks = pos.assign(r=pos.groupby("SAMPID").nes.rank(ascending=False))
        rows.append({"trait": t, "planted_set": s,
                     "rate_positive": float(r[(r.term == s) & (r.positive == 1)].rate.sum()),
                     "rate_negative": float(r[(r.term == s) & (r.positive == 0)].rate.sum()),
                     "decoy_rate_positive": float(r[(r.kind == "decoy") & (r.positive == 1)].rate.mean()),
                     "median_rank_in_positive": float(ranks[ranks.term == s].r.median())})
    return pd.DataFrame(rows)
