"""The written readings of notebooks 03, 05 and 09, formatted from the run's own tables.

A reading that types its numbers drifts as soon as a parameter or the code changes; these
functions read the tables the notebook has just written (its outputs declared in
:mod:`histo_utils.products`) and put
their numbers, and the claims that depend on them ("beats every comparison model"), into
Markdown that the notebook displays with ``IPython.display.Markdown``.

Every text that comes from data (tissue names, gene symbols, set names, IDs, trait and model names) goes
through :func:`histo_utils.text.md_text` before it is formatted into Markdown, here and in the other readings
(:func:`histo_utils.hti.reading`, :func:`histo_utils.truth.localisation_reading`,
:func:`histo_utils.truth.gsea_truth_reading`): the executed notebooks are rendered to HTML for the report,
and a label such as ``<img src=x onerror=...>`` must reach the page as text, not as an element.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from . import products
from .io import read_table
from .text import md_text

__all__ = ["confounder_reading", "radiogenomic_reading", "correlation_reading", "span"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def span(values, *, pct: bool = True) -> str:
    """``"lo–hi"`` of ``values`` (one value when they round alike), as percentages or to two decimals.

    Parameters
    ----------
    values : numbers (NaNs ignored)
    pct : format as percentages (else as plain numbers with two decimals)

    Returns
    -------
    str, e.g. ``"8–9 %"`` or ``"0.58–0.62"``
    """
    v = np.asarray(pd.Series(values, dtype=float).dropna())
    if pct:
        v = np.clip(v, 0, None)  # chance-adjusted fractions below 0 are "nothing above chance"
    if not len(v):
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}") if pct else (lambda x: f"{x:.2f}")
    lo, hi = f(v.min()), f(v.max())
    return (lo if lo == hi else f"{lo}–{hi}") + (" %" if pct else "")


def _trait(t: str) -> str:
    """A trait's name for a reading: ``lumen_size_feature`` -> ``lumen size``, escaped (:func:`md_text`)."""
    return md_text(str(t).removesuffix("_feature").replace("_", " "))


# ------------------------------------------------------------------------------------------------ 05
@products.reads("05_confounder_regression:variance_explained_overall",
                 "05_confounder_regression:shared_variance_residuals")
def confounder_reading(out_dir: str | os.PathLike, *, planted: bool = True,
                       notebook: str = "05_confounder_regression") -> str:
    """Reading of notebook 05 from its outputs ``variance_explained_overall`` and ``shared_variance_residuals``.

    Parameters
    ----------
    out_dir : the run's output directory
    planted : the data folder is the synthetic cohort (``truth/``): the reading names what was planted (no age
        effect, the centres' stain shift, the programs); False for a real download, which has no such truth
    notebook : folder of notebook 05's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    v = read_table(d.variance_explained_overall)
    adj = v.pivot_table(index=["table", "term"], columns="tissue", values="fraction_adjusted")
    raw = v.pivot_table(index=["table", "term"], columns="tissue", values="fraction_of_variance")
    tables = [t for t in ("expression", "image features") if t in adj.index.get_level_values(0)]
    lines = []
    total = ", ".join(f"{t} {_pct(raw.loc[(t, '(all)')].mean())}" for t in tables)
    lines.append(f"* Together the confounders explain, averaged over tissues: {total} of the variance "
                 "(Jones on GTEx: 51.1 % of expression and 40.6 % of image features).")
    for t in tables:
        terms = adj.loc[t].drop(index="(all)", errors="ignore")
        order = terms.drop(index="age" if planted else [], errors="ignore").mean(1).sort_values(ascending=False)
        first, second = order.index[0], order.index[1:3]
        age = f"; age, with no planted effect, {span(terms.loc['age'])}" if planted and "age" in terms.index else ""
        lines.append(f"* {t.capitalize()}, above chance (adjusted): **{md_text(first)}** explains the most "
                     f"({span(terms.loc[first])} per tissue), then "
                     + " and ".join(f"{md_text(s)} ({span(terms.loc[s])})" for s in second) + age + ".")
    if "image features" in adj.index.get_level_values(0) and ("image features", "centre") in adj.index:
        c = adj.loc[("image features", "centre")].sort_values(ascending=False)
        big = c[c >= 0.1]
        lines.append(("* The collection centre's stain shift was planted in the slides: it explains " if planted
                      else "* The collection centre (stain and scanner differences between sites) explains ")
                     + (f"{span(big)} of the image-feature variance above chance in "
                        f"{', '.join(md_text(t) for t in big.index)}"
                        if len(big) else f"at most {_pct(c.max())} of the image-feature variance above chance")
                     + ".")
    sv = d.shared_variance_residuals
    if sv.exists():
        s = read_table(sv)
        above = s.assign(image=s.image_p < 0.05, expression=s.expression_p < 0.05).groupby("var_fraction")[
            ["image", "expression"]].mean().sort_index(ascending=False)
        cells = "; ".join(f"{vf:.1%}: expression {_pct(r.expression)}, image {_pct(r.image)}"
                          for vf, r in above.iterrows())
        left = "what the programs carry" if planted else "the image–expression link beyond the confounders"
        lines.append(f"* After regression, the shared variance left is {left}. Fraction of "
                     f"tissue × network × patch × layer cells above the null (p < 0.05), by variance fraction: "
                     f"{cells} (of {len(s) // max(len(above), 1)} cells each; at 99.9 % the image side is "
                     "degenerate, see notebook 04).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ 09
@products.reads("09_radiogenomic_network:fold_auc", "09_radiogenomic_network:bootstrap_summary",
                 "09_radiogenomic_network:gene_masking", "09_radiogenomic_network:masking_truth",
                 "09_radiogenomic_network:saliency_truth")
def radiogenomic_reading(out_dir: str | os.PathLike, *, notebook: str = "09_radiogenomic_network") -> str:
    """Reading of notebook 09 from ``fold_auc``, ``bootstrap_summary``, ``gene_masking`` and ``saliency_truth``.

    Parameters
    ----------
    out_dir : the run's output directory
    notebook : folder of notebook 09's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    auc = read_table(d.fold_auc).groupby(["trait", "model"]).auc.mean().unstack()
    boot = read_table(d.bootstrap_summary)
    lines = []
    per = []
    beats_all = True
    for t, row in auc.iterrows():
        others = row.drop("nn")
        best = others.idxmax()
        beats_all &= bool(row["nn"] > others.max())
        per.append(f"{_trait(t)} {row['nn']:.2f} against {others.max():.2f} ({md_text(best)})")
    sure = boot[boot.low > 0].groupby("trait").model.apply(set)
    all_sure = [_trait(t) for t, m in sure.items() if m >= set(auc.columns.drop("nn"))]
    weakest = auc.drop(columns="nn").mean().idxmin()
    lines.append(f"* **Fig 2.** The network {'beats every comparison model on every trait' if beats_all else 'does not beat every comparison model on every trait'}"
                 f". Mean fold AUC, network against the best other model: {'; '.join(per)}. The paired bootstrap "
                 f"puts the difference above 0 (95 % interval) for every model on: "
                 f"{', '.join(all_sure) if all_sure else 'no trait'}. Weakest model on average: {md_text(weakest)}.")
    gm = read_table(d.gene_masking)
    if d.masking_truth.exists():  # synthetic cohort: each trait's planted set, its rank among all sets
        truth = read_table(d.masking_truth)
        own = truth.merge(gm[["trait", "gene_set", "auc"]], left_on=["trait", "planted_set"],
                          right_on=["trait", "gene_set"], how="left")
        decoy = gm[gm.gene_set.str.startswith("DECOY")].groupby("trait").auc.max()
        ranks = ", ".join(f"{_trait(r.trait)} rank {int(r['rank'])} of {int(r.n_sets)} (AUC {r.auc:.2f})"
                          for _, r in own.iterrows())
        lines.append(f"* **Gene masking** of the planted program's genes: {ranks}; the best decoy set reaches "
                     f"AUC {span(decoy, pct=False)}.")
    else:  # a real cohort: no planted set to find, the sets masking ranks first
        first = gm.sort_values(["trait", "rank"]).groupby("trait").head(1)
        n_sets = gm.groupby("trait").size()
        top = ", ".join(f"{_trait(r.trait)}: {md_text(r.gene_set)} (AUC {r.auc:.2f}, "
                        f"first of {int(n_sets[r.trait])} sets)"
                        for r in first.itertuples())
        lines.append(f"* **Gene masking** (no planted truth in this data folder): the gene set whose genes carry "
                     f"most of each trait's prediction is {top}.")
    st = d.saliency_truth
    if st.exists():
        s = read_table(st)
        lines.append(f"* **Gene saliency**, sample by sample: the planted set is enriched (FDR < 0.05, NES > 0) "
                     f"in the saliency ranking of {span(s.rate_positive)} of positive samples (by trait), a decoy "
                     f"set in at most {100 * s.decoy_rate_positive.max():.1f} %"
                     + (": most samples point at the right genes individually, not only on average."
                        if s.rate_positive.min() > 0.5 else "."))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ 03
@products.reads("03_feature_correlation:threshold_grid", "03_feature_correlation:reproducibility")
def correlation_reading(out_dir: str | os.PathLike, *, r_threshold: float, e_threshold: float,
                        notebook: str = "03_feature_correlation") -> str:
    """Reading of notebook 03 from its outputs ``threshold_grid`` and ``reproducibility``.

    Parameters
    ----------
    out_dir : the run's output directory
    r_threshold, e_threshold : the chosen ($R_T$, $E_T$)
    notebook : folder of notebook 03's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    g = read_table(d.threshold_grid)
    reproducibility = json.loads(d.reproducibility.read_text())
    at = g[np.isclose(g.R_T, r_threshold) & np.isclose(g.E_T, e_threshold)]
    lines = []
    if len(at):
        r = at.iloc[0]
        lo = g[np.isclose(g.E_T, e_threshold)].sort_values("R_T")
        lines.append(f"* At $R_T$ = {r_threshold:g}, $E_T$ = {e_threshold:g}: {int(r.pairs):,} pairs, {int(r.genes):,} "
                     f"genes, {int(r.features):,} features; from $R_T$ = {lo.R_T.iloc[0]:g} to {lo.R_T.iloc[-1]:g} "
                     f"the pairs fall from {int(lo.pairs.iloc[0]):,} to {int(lo.pairs.iloc[-1]):,}.")
    rc, zc = reproducibility.get("r_correlation", np.nan), reproducibility.get("z_correlation", np.nan)
    lines.append(f"* Reproducibility between splits ({md_text(reproducibility.get('n_samples_split', '?'))} and "
                 f"{md_text(reproducibility.get('n_samples_replicate', '?'))} samples) over all "
                 f"{int(reproducibility.get('n_pairs', 0)):,} pairs: r = {rc:.2f} (Fisher z: {zc:.2f}); Badea: 0.92 "
                 "with 334 test samples.")
    if "reported_z_correlation" in reproducibility:
        lines.append(f"* The {int(reproducibility.get('reported_pairs', 0)):,} reported pairs reproduce better: "
                     f"Fisher-z correlation {reproducibility['reported_z_correlation']:.2f}, same sign in "
                     f"{_pct(reproducibility.get('reported_sign_agreement', np.nan))} of them.")
    return "\n".join(lines)
