"""Planted truth of the gene-set enrichment (notebook 06, :mod:`histo_utils.enrichment`): where each planted
set ranks in the ranking that should find it, against the decoys.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..text import md_text

__all__ = ["gsea_recovery", "decoy_false_discoveries", "gsea_planted_vs_decoys", "gsea_truth_reading"]


def gsea_recovery(feature_gsea: pd.DataFrame, confounder_gsea: pd.DataFrame) -> pd.DataFrame:
    """Where GSEA puts each planted set in the ranking that should find it.

    A feature chosen because it tracks a program (``why`` = ``tracks program_<name>``) should rank
    ``PLANTED_PROGRAM_<NAME>`` first; the ischemic-time ranking the ischemia module, the RIN ranking the RIN
    module.

    Parameters
    ----------
    feature_gsea : GSEA table of the feature rankings (``list, why, term, rank, nes, fdr``)
    confounder_gsea : GSEA table of the confounder rankings (``list, term, rank, nes, fdr``)

    Returns
    -------
    DataFrame, one row per ranking: ``ranking, expected, why, rank, nes, fdr`` (NaN when the set was not
    tested).
    """
    rec = []
    for key, g in feature_gsea.groupby("list"):
        why = g.why.iloc[0]
        if why.startswith("tracks program_"):
            target = "PLANTED_PROGRAM_" + why.removeprefix("tracks program_").upper()
            row = g[g.term == target]
            rec.append({"ranking": key, "expected": target, "why": why,
                        "rank": int(row["rank"].iloc[0]) if len(row) else np.nan,
                        "nes": float(row.nes.iloc[0]) if len(row) else np.nan,
                        "fdr": float(row.fdr.iloc[0]) if len(row) else np.nan})
    for term, target in (("log_ischemic_time", "PLANTED_ISCHEMIA"), ("RIN", "PLANTED_RIN")):
        g = confounder_gsea[confounder_gsea.list == term]
        row = g[g.term == target]
        if len(row):
            rec.append({"ranking": f"confounder {term}", "expected": target, "why": "confounder",
                        "rank": int(row["rank"].iloc[0]), "nes": float(row.nes.iloc[0]),
                        "fdr": float(row.fdr.iloc[0])})
    return pd.DataFrame(rec)


def decoy_false_discoveries(gsea_tables: Sequence[pd.DataFrame], *, fdr: float = 0.05) -> dict:
    """How often the decoy sets (``DECOY*``, random genes) are called enriched.

    Parameters
    ----------
    gsea_tables : GSEA tables (``list, term, fdr``)
    fdr : FDR level

    Returns
    -------
    dict ``decoy tests``, ``decoys with FDR < <fdr>``, ``lists``
    """
    decoys = pd.concat(list(gsea_tables))
    decoys = decoys[decoys.term.str.startswith("DECOY")]
    return {"decoy tests": len(decoys), f"decoys with FDR < {fdr}": int((decoys.fdr < fdr).sum()),
            "lists": decoys.list.nunique()}


def gsea_planted_vs_decoys(feature_gsea: pd.DataFrame, confounder_gsea: pd.DataFrame) -> pd.DataFrame:
    """Per ranking that should find a planted set: that set's rank and NES, and the decoys' NES.

    Parameters
    ----------
    feature_gsea : GSEA table of the feature rankings (``list, why, term, rank, nes, fdr``)
    confounder_gsea : GSEA table of the confounder rankings (``list, term, rank, nes, fdr``)

    Returns
    -------
    DataFrame, one row per (ranking, tested set) of the rankings :func:`gsea_recovery` checks: ``ranking,
    expected, kind`` (``planted`` for the expected set, ``decoy`` for ``DECOY*``, ``other``), ``term, rank,
    nes, fdr, n_sets, decoys_above`` (decoys ranked above the expected set in that ranking).
    """
    rec = gsea_recovery(feature_gsea, confounder_gsea)
    conf = confounder_gsea.assign(list="confounder " + confounder_gsea.list.astype(str))
    both = pd.concat([feature_gsea, conf], ignore_index=True)
    out = []
    for r in rec.itertuples():
        g = both[both.list == r.ranking]
        kind = np.where(g.term == r.expected, "planted", np.where(g.term.str.startswith("DECOY"), "decoy", "other"))
        above = int(((kind == "decoy") & (g["rank"].to_numpy() < r.rank)).sum()) if np.isfinite(r.rank) else np.nan
        out.append(pd.DataFrame({"ranking": r.ranking, "expected": r.expected, "kind": kind,
                                 "term": g.term.to_numpy(), "rank": g["rank"].to_numpy(), "nes": g.nes.to_numpy(),
                                 "fdr": g.fdr.to_numpy(), "n_sets": len(g), "decoys_above": above}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["ranking", "expected", "kind", "term", "rank", "nes", "fdr", "n_sets", "decoys_above"])


def gsea_truth_reading(table: pd.DataFrame) -> str:
    """The written reading of notebook 06's planted-truth figure, formatted from its table.

    Parameters
    ----------
    table : :func:`gsea_planted_vs_decoys` output

    Returns
    -------
    str, Markdown (ranking and set names escaped: :func:`histo_utils.text.md_text`)
    """
    p = table[table.kind == "planted"]
    d = table[table.kind == "decoy"]
    first = table[table["rank"] == 1].set_index("ranking").term
    lines = [f"* {md_text(r.ranking)}: {md_text(r.expected)} ranks {r.rank:.0f} of {r.n_sets} (NES {r.nes:.2f}, "
             f"FDR {r.fdr:.3g})" + (f", after {md_text(first.get(r.ranking, '?'))}" if r.rank > 1 else "")
             + f"; decoys above it: {r.decoys_above}." for r in p.itertuples()]
    lines.append(f"* Decoys over these {p.ranking.nunique()} rankings: largest |NES| {d.nes.abs().max():.2f}, "
                 f"smallest FDR {d.fdr.min():.3g}.")
    return "\n".join(lines)
