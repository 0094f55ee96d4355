"""The written readings of notebooks 00–06 and 09, formatted from the run's own tables.

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
from pathlib import Path

import numpy as np
import pandas as pd

from . import products
from .crossvariance import technical_share
from .io import read_table
from .text import md_text

__all__ = ["cohort_reading", "tiling_reading", "training_reading", "correlation_reading", "crossvariance_reading",
           "confounder_reading", "gsea_reading", "radiogenomic_reading", "span"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _range(counts) -> str:
    """``"6,039–41,290"`` of whole numbers, one number when they are all equal."""
    lo, hi = int(min(counts)), int(max(counts))
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


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
                 "05_confounder_regression:shared_variance_residuals", "04_pca_cross_variance:shared_variance")
def confounder_reading(out_dir: str | os.PathLike, *, planted: bool = True,
                       notebook: str = "05_confounder_regression") -> str:
    """Reading of notebook 05 from its outputs ``variance_explained_overall`` and ``shared_variance_residuals``,
    and the technical part of the shared variance against notebook 04's ``shared_variance``
    (:func:`histo_utils.crossvariance.technical_share`: the excess over chance that the regression removes).

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
        total = products.outputs(out_dir, "04_pca_cross_variance").shared_variance
        if total.exists():
            lines.append(_technical_line(technical_share(read_table(total), s)))
    return "\n".join(lines)


def _technical_line(both: pd.DataFrame) -> str:
    """The technical part of the shared variance by variance fraction (:func:`technical_share`), in words."""
    cells = "; ".join(f"{vf:.1%}: expression {c.expression_technical.mean():+.3f} "
                      f"({_pct((c.expression_technical < 0).mean())} of cells below 0), image "
                      f"{c.image_technical.mean():+.3f} ({_pct((c.image_technical < 0).mean())} below 0)"
                      for vf, c in both.groupby("var_fraction", sort=False))
    plain = pd.concat([both.expression_plain_drop, both.image_plain_drop])
    return (f"* **Technical part of the shared variance** (the excess over chance that the regression removes, "
            f"mean over {len(both):,} tissue × table × layer × fraction cells): {cells}. A cell below 0 has more "
            "link above chance after regression than before (noise of the two permutation nulls, or a confounder "
            f"that masked the link). The plain drop S_total − S_residual would be below 0 in "
            f"{_pct((plain < 0).mean())} of the values, because the residual space raises the chance level.")


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
        others = row.drop("nn").dropna().sort_values(ascending=False)
        beaten, lost = others[others < row["nn"]], others[others >= row["nn"]]
        beats_all &= not len(lost)
        per.append(f"{_trait(t)}: network {row['nn']:.3f}"
                   + (f", beats {', '.join(f'{md_text(m)} {a:.3f}' for m, a in beaten.items())}" if len(beaten)
                      else "")
                   + (f", loses to {', '.join(f'{md_text(m)} {a:.3f}' for m, a in lost.items())}" if len(lost)
                      else ""))
    sure = boot[boot.low > 0].groupby("trait").model.apply(set)
    all_sure = [_trait(t) for t, m in sure.items() if m >= set(auc.columns.drop("nn"))]
    weakest = auc.drop(columns="nn").mean().idxmin()
    verdict = "beats" if beats_all else "does not beat"
    lines.append(f"* **Fig 2.** The network {verdict} every comparison model on every trait"
                 f". Mean fold AUC by trait, the network against each comparison model: {'; '.join(per)}. "
                 f"The paired bootstrap puts the difference above 0 (95 % interval) for every model on: "
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
@products.reads("03_feature_correlation:threshold_grid", "03_feature_correlation:reproducibility",
                 "02_training:layer_tracking")
def correlation_reading(out_dir: str | os.PathLike, *, r_threshold: float, e_threshold: float,
                        notebook: str = "03_feature_correlation") -> str:
    """Reading of notebook 03 from its outputs ``threshold_grid`` and ``reproducibility`` (and, planted, notebook
    02's ``layer_tracking``: how well the best channel tracks each program).

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
    tracking = products.outputs(out_dir, "02_training").layer_tracking
    if tracking.exists():
        best = _layer_tracking(read_table(tracking))
        best = best[~best.index.get_level_values("network").str.startswith("untrained")]
        lines.append(f"* The planted program genes reach the image through a channel that tracks their program only "
                     f"partly: best channel |r| within tissue {span(best.abs_r, pct=False)} (trained networks, by "
                     "program and tile size, notebook 02), so a gene–feature correlation is about the product of "
                     "the two links.")
    if "reported_z_correlation" in reproducibility:
        lines.append(f"* The {int(reproducibility.get('reported_pairs', 0)):,} reported pairs reproduce better: "
                     f"Fisher-z correlation {reproducibility['reported_z_correlation']:.2f}, same sign in "
                     f"{_pct(reproducibility.get('reported_sign_agreement', np.nan))} of them.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ shared
def _figure_table(out: products.Outputs, name: str) -> pd.DataFrame | None:
    """The table behind a declared figure of ``out``'s notebook (``<name>.csv``), None when it was not drawn."""
    path = out.figure(name).with_suffix(".csv")
    return read_table(path) if path.exists() else None


def _chance_r(n: int) -> float:
    """The 95 % band of a Pearson r under no association with ``n`` samples, ``2 / sqrt(n)``."""
    return 2 / np.sqrt(max(n, 1))


def _centred(x: pd.Series, group: pd.Series) -> pd.Series:
    return x - x.groupby(group).transform("mean")


def _residual_on(y: pd.Series, x: np.ndarray) -> np.ndarray:
    """``y`` (n,) minus its least-squares fit on ``x`` (n, k)."""
    y = np.asarray(y, dtype=float)
    return y - x @ np.linalg.lstsq(x, y, rcond=None)[0]


# ------------------------------------------------------------------------------------------------ 00
#: the driver of each planted module that is not named after it (program modules are: program_x <- program_x)
_OWN_DRIVER = {"ischemia": "log_ischemic_time", "rin": "SMRIN"}


@products.reads("00_synthetic_cohort:planted_summary")
def cohort_reading(out_dir: str | os.PathLike, *, truth_dir: str | os.PathLike | None = None,
                   notebook: str = "00_synthetic_cohort") -> str:
    """Reading of notebook 00 from the tables behind its figures ``planted_expression_coupling`` and
    ``ischemia_fading`` (and the planted gene coefficients of ``truth_dir/genes.tsv`` when given).

    Wording that depends on a value: a correlation is called "near zero" / "no association beyond" when
    :math:`|r| < 2/\\sqrt{n}` (the 95 % band of r under no association with :math:`n` samples); slides "fade
    with ischemic time" only when that r is negative and outside the band.

    Parameters
    ----------
    out_dir : the run's output directory
    truth_dir : the cohort's ``truth/`` folder (``genes.tsv``: the single genes' loadings and noise SDs); None
        leaves that sentence out
    notebook : folder of notebook 00's outputs

    Returns
    -------
    Markdown bullets
    """
    out = products.outputs(out_dir, notebook)
    lines = []
    c = _figure_table(out, "planted_expression_coupling")
    fading = _figure_table(out, "ischemia_fading")
    if c is not None:
        own = c.driver == c.module.map(lambda m: _OWN_DRIVER.get(m, m))
        diag, off = c[own], c[~own].groupby(["module", "driver"]).r.mean()
        low = diag.loc[diag.r.idxmin()]
        genes = ""
        if truth_dir is not None and (Path(truth_dir) / "genes.tsv").exists():
            g = read_table(Path(truth_dir) / "genes.tsv")
            load = g.filter(like="loading_").abs().max(axis=1)
            module = load > 0
            genes = (f"; single genes are noisier, with |loadings| {span(load[module], pct=False)} against noise "
                     f"SDs {span(g.noise_sd[module], pct=False)} on the log2 scale")
        lines.append(f"* **Expression side.** Each module's mean tracks its own driver within tissue at r = "
                     f"{span(diag.r, pct=False)} (module × tissue; lowest: {md_text(low.module)} in "
                     f"{md_text(low.tissue)}){genes}.")
        worst = off.abs().idxmax()
        lines.append(f"* Off the diagonal (mean over tissues) |r| stays at or below {off.abs().max():.2f}; the "
                     f"largest is {md_text(worst[0])} against {md_text(worst[1])} (r = {off[worst]:+.2f}).")
    if fading is not None:
        n = len(fading)
        r_isch = np.corrcoef(fading.log_isch, fading.od_centred)[0, 1]
        r_rin = np.corrcoef(fading.SMRIN, fading.od_centred)[0, 1]
        r_conf = np.corrcoef(_centred(fading.log_isch, fading.SMTS), _centred(fading.SMRIN, fading.SMTS))[0, 1]
        x = np.column_stack([np.ones(n), fading.log_isch])
        partial = np.corrcoef(_residual_on(fading.od_centred, x), _residual_on(fading.SMRIN, x))[0, 1]
        band = _chance_r(n)
        verb = ("fade with ischemic time" if r_isch < -band else
                "darken with ischemic time" if r_isch > band else "show no association with ischemic time")
        rin = (f"not with RIN beyond what RIN shares with ischemic time (partial r = {partial:+.2f}, within "
               f"±{band:.2f})" if abs(partial) < band else
               f"and with RIN beyond what it shares with ischemic time (partial r = {partial:+.2f})")
        lines.append(f"* **Image side.** Over {n} slides (optical density with tissue means removed) the slides "
                     f"{verb} "
                     f"(r = {r_isch:+.2f} with log ischemic time; r = {r_rin:+.2f} with RIN), {rin}. RIN and log "
                     f"ischemic time correlate at r = {r_conf:+.2f} within tissue.")
    return "\n".join(lines) if lines else "No figure tables of notebook 00 in this run."


# ------------------------------------------------------------------------------------------------ 01
#: join-report problem -> the planted sample problem of notebook 00's ``planted_summary`` it should recover
_PLANTED_PROBLEM = {"slide without expression": "slide without RNA", "expression without slide": "RNA without slide",
                    "extra RNA sample for one image (dropped)": "extra RNA aliquot"}
#: Dice thresholds of the mask wording (see :func:`tiling_reading`)
DICE_NEAR_PERFECT, DICE_FAILURE = 0.95, 0.8


def _dice_verdict(g: pd.DataFrame) -> str:
    """One method's masks in words, by tissue (thresholds :data:`DICE_NEAR_PERFECT`, :data:`DICE_FAILURE`)."""
    parts = []
    for t, s in g.groupby("SMTS"):
        fail = s.dice < DICE_FAILURE
        if fail.any():
            parts.append(f"{md_text(t)}: fails on {int(fail.sum())} of {len(s)} slides (Dice down to "
                         f"{s.dice.min():.3f}: much of the tissue missed or glass kept, more than an outline; median "
                         f"{s.dice.median():.3f})")
        elif s.dice.median() >= DICE_NEAR_PERFECT:
            parts.append(f"{md_text(t)}: near-perfect (median {s.dice.median():.3f}, min {s.dice.min():.3f})")
        else:
            parts.append(f"{md_text(t)}: outline-level disagreement (median {s.dice.median():.3f}, "
                         f"min {s.dice.min():.3f})")
    return "; ".join(parts)


@products.reads("01_tiling:slides", "01_tiling:join_report", "01_tiling:samples", "01_tiling:tissue_grouping",
                 "01_tiling:mask_agreement", "00_synthetic_cohort:planted_summary")
def tiling_reading(out_dir: str | os.PathLike, *, planted: bool = True, threshold: str | None = None,
                   notebook: str = "01_tiling") -> str:
    """Reading of notebook 01 from ``slides``, ``join_report``, ``samples``, ``tissue_grouping`` and (planted)
    ``mask_agreement`` and notebook 00's ``planted_summary``.

    The masks are described per method and tissue by their Dice against the planted mask: "near-perfect" when
    the median is at least 0.95 and no slide is below 0.8; "outline-level disagreement" when no slide is below
    0.8 (a Dice of 0.8–0.95 is what a halo of a few blur widths around the outline costs); "fails on k slides"
    when k slides are below 0.8 (a Dice that low means a large part of the tissue missed or glass kept).

    Parameters
    ----------
    out_dir : the run's output directory
    planted : the data folder is a synthetic cohort (``truth/``): compare the join with what notebook 00
        planted and read the mask agreement; False for a real download
    threshold : the mask threshold the run used (``multiotsu`` or ``otsu``), named in the text
    notebook : folder of notebook 01's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    sl = read_table(d.slides)
    bad = sl[sl.status != "ok"]
    lines = [f"* {int((sl.status == 'ok').sum())} of {len(sl)} slide files were tiled; {len(bad)} skipped"
             + (": " + ", ".join(f"{md_text(r.image_id)} ({md_text(r.stage)})" for r in bad.head(5).itertuples())
                + (" …" if len(bad) > 5 else "") if len(bad) else "") + "."]
    join = read_table(d.join_report).set_index("problem")["count"]
    text = "; ".join(f"{md_text(p)}: {int(n)}" for p, n in join.items())
    if planted and products.outputs(out_dir, "00_synthetic_cohort").planted_summary.exists():
        plan = read_table(products.outputs(out_dir, "00_synthetic_cohort").planted_summary)
        plan = plan[plan.kind == "samples"].set_index("what")["count"]
        pairs = [(int(join[p]), int(plan[q])) for p, q in _PLANTED_PROBLEM.items() if p in join and q in plan]
        pairs.append((len(bad), int(plan.get("damaged slide file", 0))))
        same = all(a == b for a, b in pairs)
        text += (". Against the planted problems (slides without RNA, RNA without slide, extra aliquots, damaged "
                 f"slides: {', '.join(str(b) for _, b in pairs)}): "
                 + ("the same counts" if same else "the counts differ (found "
                    + ", ".join(str(a) for a, _ in pairs) + ")"))
    lines.append(f"* Join report — {text}.")
    samples = read_table(d.samples)
    label = json.loads(d.tissue_grouping.read_text()).get("label_column", "SMTS")
    frac = pd.crosstab(samples[label], samples.split, normalize="index")
    shared = int((samples.groupby("subject_id").split.nunique() > 1).sum())
    lines.append(f"* Split by subject: {shared} donors in more than one split; per tissue "
                 + ", ".join(f"{md_text(s)} {span(frac[s])}" for s in ("train", "validation", "test")
                             if s in frac) + f" of the samples ({frac.shape[0]} tissues).")
    if planted and d.mask_agreement.exists():
        agree = read_table(d.mask_agreement)
        agree = agree[agree.SMTS != "(no RNA)"] if (agree.SMTS != "(no RNA)").any() else agree
        for method, g in agree.groupby("threshold"):
            used = " (used)" if method == threshold else ""
            lines.append(f"* Mask against the planted tissue, **{md_text(method)}**{used} — {_dice_verdict(g)}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ 02
def _layer_name(layer) -> str:
    """A layer label as the feature tables name it: ``3`` (not ``3.0`` after a round trip through a table)."""
    return str(int(layer)) if isinstance(layer, (int, float, np.number)) and float(layer).is_integer() \
        else md_text(str(layer))


def _layer_tracking(lp: pd.DataFrame) -> pd.DataFrame:
    """Per (network, tile_px, program): best |r| over layers, its layer, and the layers above the shuffled
    maximum of the same layer (``layers_above``, ``layers``)."""
    real = lp[~lp.network.str.endswith(" (shuffled)")]
    shuf = lp[lp.network.str.endswith(" (shuffled)")].assign(network=lambda x: x.network.str.removesuffix(
        " (shuffled)"))
    m = real.merge(shuf[["network", "tile_px", "program", "layer", "abs_r"]], how="left",
                   on=["network", "tile_px", "program", "layer"], suffixes=("", "_shuffled"))
    m["above"] = m.abs_r > m.abs_r_shuffled
    best = m.loc[m.groupby(["network", "tile_px", "program"]).abs_r.idxmax()]
    return best.set_index(["network", "tile_px", "program"])[["abs_r", "layer"]].join(
        m.groupby(["network", "tile_px", "program"]).agg(layers_above=("above", "sum"), layers=("above", "size")))


@products.reads("02_training:accuracy", "02_training:layer_tracking")
def training_reading(out_dir: str | os.PathLike, *, notebook: str = "02_training") -> str:
    """Reading of notebook 02 from ``accuracy`` and (planted) ``layer_tracking``.

    Majority voting "removes most tile errors" of a network only when its slide accuracy is above its tile
    accuracy on the split; otherwise the text says it does not help there.

    Parameters
    ----------
    out_dir : the run's output directory
    notebook : folder of notebook 02's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    acc = read_table(d.accuracy)
    split = "test" if (acc.split == "test").any() else "validation"
    a = acc[acc.split == split]
    whole = a[a["class"] == "(all)"].pivot_table(index="arch", columns="level", values="accuracy", sort=False)
    per = "; ".join(f"{md_text(n)} {r.tile:.3f} → {r.slide:.3f}" for n, r in whole.iterrows())
    helps = whole.slide > whole.tile
    lines = [f"* **Tables 2–3**, {split} split, tile → slide accuracy (majority vote): {per}. Voting "
             + ("raises the accuracy of every network" if helps.all() else
                "does not raise the accuracy of " + ", ".join(md_text(n) for n in whole.index[~helps]))
             + "."]
    tiles = a[(a.level == "tile") & (a["class"] != "(all)")]
    if len(tiles):
        worst = tiles.loc[tiles.groupby("arch").accuracy.idxmin()]
        lines.append("* Tissue most confused at the tile level: " + "; ".join(
            f"{md_text(r.arch)}: {md_text(r['class'])} ({r.accuracy:.3f} of {int(r.n)} tiles)"
            for _, r in worst.iterrows()) + ".")
    if d.layer_tracking.exists():
        best = _layer_tracking(read_table(d.layer_tracking))
        for (net, px), g in best.groupby(level=["network", "tile_px"]):
            lines.append(f"* **{md_text(net)}** ({px} px), best channel |r| with each program within tissue: "
                         + "; ".join(f"{_trait(p.removeprefix('program_'))} {r.abs_r:.2f} (layer {_layer_name(r.layer)}"
                                     f", above the shuffled maximum in {int(r.layers_above)} of {int(r.layers)} "
                                     "layers)" for (_, _, p), r in g.iterrows()) + ".")
        if "trained" in best.index.get_level_values(0) and "untrained" in best.index.get_level_values(0):
            gain = (best.loc["trained"].abs_r - best.loc["untrained"].abs_r).dropna()
            lines.append(f"* Training changes the best |r| by {span(gain, pct=False)} over the random-weight network "
                         "(by program and tile size).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ 04
#: a side "separates from its null" when more than this fraction of its cells has p < 0.05 (0.05 by chance)
ABOVE_CHANCE = 0.1


def _grid_side(g: pd.DataFrame, side: str) -> str:
    above = (g[f"{side}_p"] < 0.05).mean()
    s, null = g[f"{side}_shared"].mean(), g[f"{side}_null_mean"].mean()
    verdict = "separates from its null" if above > ABOVE_CHANCE else "does not separate from its null"
    return f"{side} {s:.3f} against null {null:.3f}, {_pct(above)} of cells with p < 0.05 ({verdict})"


@products.reads("04_pca_cross_variance:shared_variance", "04_pca_cross_variance:decoupled_control")
def crossvariance_reading(out_dir: str | os.PathLike, *, notebook: str = "04_pca_cross_variance") -> str:
    """Reading of notebook 04 from ``shared_variance`` (the all-layers cells) and (planted) ``decoupled_control``.

    A side "separates from its null" at a variance fraction when more than :data:`ABOVE_CHANCE` of its
    tissue × table cells have a permutation p < 0.05 (5 % would by chance); the image side is called
    saturated where both its value and its null exceed 0.95 (the expression side keeps nearly n − 1 PCs).

    Parameters
    ----------
    out_dir : the run's output directory
    notebook : folder of notebook 04's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    g = read_table(d.shared_variance)
    g = g[g.layer.astype(str) == "all"]
    lines = []
    for vf, c in g.groupby("var_fraction", sort=False):
        sat = c.image_shared.mean() > 0.95 and c.image_null_mean.mean() > 0.95
        pcs = (c.n_pc_expression / (c.n_samples - 1)).mean()
        lines.append(f"* {vf:.1%} of the variance ({len(c)} tissue × table cells; the expression side keeps "
                     f"{_pct(pcs)} of n − 1 PCs): S_{_grid_side(c, 'image')}; S_{_grid_side(c, 'expression')}"
                     + (". The image side is saturated: value and null both near 1, it says nothing"
                        if sat else "") + ".")
    if d.decoupled_control.exists():
        ctl = read_table(d.decoupled_control)
        parts = []
        for (cohort, vf), c in ctl.groupby(["cohort", "var_fraction"], sort=False):
            above = max((c.image_p < 0.05).mean(), (c.expression_p < 0.05).mean())
            parts.append(f"{md_text(cohort)} at {vf:.1%}: excess expression {c.expression_excess.mean():+.3f}, "
                         f"image {c.image_excess.mean():+.3f}, cells with p < 0.05 expression "
                         f"{_pct((c.expression_p < 0.05).mean())}, image {_pct((c.image_p < 0.05).mean())}"
                         f" ({'no more than chance' if above <= ABOVE_CHANCE else 'more than chance'})")
        lines.append("* **Decoupled control** (same features, expression redrawn with the slide paths cut): "
                     + "; ".join(parts) + ".")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ 06
def _found(r, *, fdr: float) -> str:
    """A planted set's place in its ranking, in words: first (FDR), rank k, or not tested."""
    if pd.isna(r["rank"]):
        return f"{md_text(r.expected)} not tested"
    where = "first" if r["rank"] == 1 else f"rank {int(r['rank'])}"
    return (f"{md_text(r.expected)} {where} (NES {r.nes:+.2f}, FDR {r.fdr:.3g}"
            + ("" if r.fdr < fdr else f", not below {fdr:g}") + ")")


@products.reads("06_gsea:association_counts", "06_gsea:planted_recovery", "06_gsea:annotation_ora")
def gsea_reading(out_dir: str | os.PathLike, *, planted: bool = True, gsea_fdr: float = 0.05,
                 notebook: str = "06_gsea") -> str:
    """Reading of notebook 06 from ``association_counts`` and, on a synthetic cohort, ``planted_recovery`` and
    ``annotation_ora`` (the planted sets against the decoys: :func:`histo_utils.truth.gsea_truth_reading`).

    Parameters
    ----------
    out_dir : the run's output directory
    planted : the data folder is a synthetic cohort (``truth/``): say where the planted sets rank
    gsea_fdr : the FDR level a planted set is held to
    notebook : folder of notebook 06's tables

    Returns
    -------
    Markdown bullets
    """
    d = products.outputs(out_dir, notebook)
    counts = read_table(d.association_counts)
    lines = []
    for table, g in counts.groupby("table", sort=False):
        pooled = g[g.scope == "pooled"]
        per = g[g.scope != "pooled"]
        text = [f"pooled over tissues {int(r.associations_bh):,} of {int(r.tests):,} tests"
                for r in pooled.itertuples()]
        if len(per):
            text.append(f"per tissue {_range(per.associations_bh)} of {_range(per.tests)} tests ({len(per)} tissues, "
                        f"{_range(per.samples)} samples)")
        lines.append(f"* **{md_text(table)}**, gene–feature pairs of the residuals surviving BH: "
                     + "; ".join(text) + ".")
    if planted and d.planted_recovery.exists():
        rec = read_table(d.planted_recovery)
        conf = rec.why == "confounder"
        lines.append("* GSEA of the features that track a planted program: " + "; ".join(
            f"{md_text(r.ranking)}: {_found(r, fdr=gsea_fdr)}" for _, r in rec[~conf].iterrows()) + ".")
        if conf.any():
            lines.append("* Q3A, each confounder's ranking: " + "; ".join(
                f"{md_text(str(r.ranking).removeprefix('confounder '))}: {_found(r, fdr=gsea_fdr)}"
                for _, r in rec[conf].iterrows()) + ".")
    if planted and d.annotation_ora.exists():
        ora = read_table(d.annotation_ora)
        tissue_sets = ora[ora.term.astype(str).str.startswith("PLANTED_TISSUE")]
        if len(tissue_sets):
            lines.append(f"* Badea's filter: {int((tissue_sets.q < 0.05).sum())} of {len(tissue_sets)} planted "
                         "tissue sets are over-represented among notebook 03's correlated genes (q < 0.05); "
                         f"among all {len(ora)} annotation sets tested, {int((ora.q < 0.05).sum())} are.")
    return "\n".join(lines)
