"""Planted truth of the synthetic cohort: what each method should recover, and how well it did.

Gene roles (``truth/genes.tsv``) fall into groups by how they reach an image:

``program``  program modules: expression and slide morphology share the latent program (direct coupling)
``tissue``   tissue-specific genes: coupled to image features through the tissue only (indirect)
``ischemia`` stress module: ischemic time drives it and also fades the slide (a shared confounder)
``null``     everything else (noise, low, constant, RIN module, sex genes): no path to the image
"""
from __future__ import annotations

from typing import Iterable, Sequence

from pathlib import Path

import numpy as np
import pandas as pd
from .errors import InputError, MissingInputError

__all__ = ["gene_groups", "gene_recovery", "feature_truth", "pair_is_planted", "planted_unique_fraction",
           "IMAGE_LINKED", "decoupled_log_expression", "planted_vs_recovered", "planted_agreement", "r2_by_role",
           "scan_recovery", "indirect_by_group", "best_within_tissue_r", "tracking_by_layer",
           "planted_summary", "read_true_mask", "tissue_field", "program_extremes", "stain_fading",
           "true_combination_map", "tile_accuracy", "hti_agreement",
           "train_validation_feature_truth", "program_trackers", "gsea_recovery", "decoy_false_discoveries",
           "PROGRAM_STRUCTURE", "PlantedStructures", "random_features", "gbp_localisation", "localisation_summary",
           "tracker_strength_rank", "structure_localisation", "tracker_localisation_rank", "program_panel_tiles",
           "localisation_reading", "localisation_tables", "channel_scores", "gsea_planted_vs_decoys", "gsea_truth_reading", "program_traits", "planted_sets", "masking_truth", "saliency_truth"]

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


# --------------------------------------------------------------------------
# controls: the same cohort with paths from slide to expression cut
# --------------------------------------------------------------------------
def decoupled_log_expression(data_dir, *, decouple: bool | str = True) -> pd.DataFrame:
    """log2(1 + TPM) of the synthetic cohort in ``data_dir`` redrawn with its coupling to the slides cut.

    Parameters
    ----------
    data_dir : path
        Data directory of a synthetic cohort (its ``truth/`` holds the parameters).
    decouple : True or "programs"
        ``True``: programs, ischemia, RIN and centre drawn independently of what painted the slides
        (notebook 04); ``"programs"``: only the programs, confounders kept (notebook 05). See
        :func:`histo_utils.synthetic.cohort.simulate_expression`.

    Returns
    -------
    DataFrame, shape (n_samples, n_genes), index SAMPID: same samples, genes and noise as the planted cohort.
    """
    from .synthetic.cohort import design_cohort, load_cohort_params, simulate_expression

    params = load_cohort_params(data_dir)
    tpm, _, _ = simulate_expression(params, *design_cohort(params), decouple=decouple)
    tpm.attrs = {}
    download = Path(data_dir) / "truth" / "download.json"
    if download.exists():  # written in GTEx v8's layout (synthetic.formats): a few samples carry six-part IDs
        import json

        tpm = tpm.rename(columns=json.loads(download.read_text()).get("renamed_six_part", {}))
    return np.log2(1.0 + tpm.T)


# --------------------------------------------------------------------------
# notebook 05: planted confounder effects against the variance partition
# --------------------------------------------------------------------------
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
    from .confounders import expressed_genes, log_ischemic_time

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


# --------------------------------------------------------------------------
# notebook 03: gene-feature scans against the planted truth
# --------------------------------------------------------------------------
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


def tracking_by_layer(ftruth: pd.DataFrame, layers: Sequence[str]) -> pd.DataFrame:
    """The best within-tissue |r| of any channel of each layer with each planted driver.

    Parameters
    ----------
    ftruth : DataFrame of :func:`feature_truth`, indexed by ``layer_channel`` feature names
    layers : layer order of the rows

    Returns
    -------
    DataFrame, shape (n_layers, n_drivers), columns ``r_program_*``, ``r_ischemia``
    """
    from .data import feature_layer

    return (ftruth.filter(like="r_").abs().assign(layer=feature_layer(ftruth.index)).groupby("layer").max()
            .reindex(list(layers)))


# --------------------------------------------------------------------------
# notebook 00: what the synthetic cohort planted
# --------------------------------------------------------------------------
def planted_summary(genes: pd.DataFrame, truth_samples: pd.DataFrame) -> pd.DataFrame:
    """Counts of what was planted: gene roles, sample problems and samples per tissue.

    Parameters
    ----------
    genes : DataFrame, ``truth/genes.tsv`` (``role``)
    truth_samples : DataFrame, ``truth/samples.tsv`` (``has_rna, has_slide, duplicate_of, corrupt, SMTS``)

    Returns
    -------
    DataFrame, ``kind`` (genes, samples, tissue), ``what``, ``count``
    """
    return pd.concat([
        genes["role"].str.replace(r"^tissue_.*", "tissue-specific", regex=True).value_counts()
        .rename_axis("what").reset_index(name="count").assign(kind="genes"),
        pd.DataFrame({"kind": "samples", "what": ["slide without RNA", "RNA without slide", "extra RNA aliquot",
                                                 "damaged slide file"],
                      "count": [int((~truth_samples.has_rna).sum()), int((~truth_samples.has_slide).sum()),
                                int((truth_samples.duplicate_of.fillna("") != "").sum()),
                                int(truth_samples.corrupt.sum())]}),
        truth_samples.groupby("SMTS").size().rename_axis("what").reset_index(name="count").assign(kind="tissue"),
    ], ignore_index=True)[["kind", "what", "count"]]


def read_true_mask(truth_dir, image_id: str) -> np.ndarray:
    """The planted tissue mask of a slide (``truth/masks/<image_id>.png``), boolean, thumbnail resolution.

    Parameters
    ----------
    truth_dir : path of the cohort's ``truth/`` folder
    image_id : histology image ID

    Returns
    -------
    array of bool, shape (height, width)
    """
    from pathlib import Path

    from PIL import Image

    path = Path(truth_dir) / "masks" / f"{image_id}.png"
    if not path.exists():
        raise MissingInputError(f"True mask '{path}' does not exist: is '{truth_dir}' the truth/ folder of a "
                                f"synthetic cohort that has slide {image_id}?")
    return np.asarray(Image.open(path)) > 127


def tissue_field(slides_dir, truth_dir, image_id: str, *, size_um: float, out_mpp: float) -> np.ndarray:
    """A square field of view of a synthetic slide centred on its deepest tissue point (never on glass).

    Parameters
    ----------
    slides_dir, truth_dir : the cohort's ``slides/`` and ``truth/`` folders
    image_id : histology image ID
    size_um, out_mpp : side in microns and resolution of the field (:func:`histo_utils.slides.read_field_of_view`)

    Returns
    -------
    array of uint8, shape (n, n, 3), RGB
    """
    from pathlib import Path

    from .slides import read_field_of_view
    from .tiling import deepest_point

    return read_field_of_view(Path(slides_dir) / f"{image_id}.svs", size_um=size_um, out_mpp=out_mpp,
                              center_frac=deepest_point(read_true_mask(truth_dir, image_id)))


def program_extremes(truth_samples: pd.DataFrame, programs: Sequence[str]) -> pd.DataFrame:
    """In each tissue, the slides with the lowest and the highest value of each planted program.

    Parameters
    ----------
    truth_samples : DataFrame, one row per slide (``image_id, SMTS, program_<name>``)
    programs : program names (e.g. :data:`histo_utils.synthetic.PROGRAMS`)

    Returns
    -------
    DataFrame, ``tissue, program, end`` (low, high), ``image_id, value``; tissues sorted, then programs
    """
    rows = []
    for t in sorted(truth_samples.SMTS.unique()):
        sub = truth_samples[truth_samples.SMTS == t]
        for k in programs:
            for end in ("low", "high"):
                row = sub.loc[sub[f"program_{k}"].idxmin() if end == "low" else sub[f"program_{k}"].idxmax()]
                rows.append({"tissue": t, "program": k, "end": end, "image_id": row.image_id,
                             "value": row[f"program_{k}"]})
    return pd.DataFrame(rows)


def stain_fading(truth_samples: pd.DataFrame, slides_dir, truth_dir, *, thumbnail_px: int = 320) -> pd.DataFrame:
    """Mean optical density of each slide's tissue (planted mask) on a thumbnail, against its confounders.

    Parameters
    ----------
    truth_samples : DataFrame, one row per readable slide (``image_id, SMTS, SMTSISCH, SMRIN, SMCENTER``)
    slides_dir, truth_dir : the cohort's ``slides/`` and ``truth/`` folders
    thumbnail_px : longest side of the thumbnail

    Returns
    -------
    DataFrame, one row per slide: ``image_id, SMTS, SMTSISCH, SMRIN, SMCENTER, od_mean, od_centred`` (minus
    the tissue mean), ``log_isch`` (log(1 + max(t, 0)))
    """
    from pathlib import Path

    from PIL import Image
    from tqdm.auto import tqdm

    from .slides import read_thumbnail
    from .stain import mean_optical_density

    rows = []
    for row in tqdm(list(truth_samples.itertuples()), desc="stain density"):
        thumb, _ = read_thumbnail(Path(slides_dir) / f"{row.image_id}.svs", max_px=thumbnail_px)
        mask = np.asarray(Image.fromarray(read_true_mask(truth_dir, row.image_id)).resize(thumb.shape[1::-1],
                                                                                         Image.NEAREST))
        od = mean_optical_density(thumb, mask)
        rows.append({"image_id": row.image_id, "SMTS": row.SMTS, "SMTSISCH": row.SMTSISCH, "SMRIN": row.SMRIN,
                     "SMCENTER": row.SMCENTER, "od_mean": float(od.mean())})
    fading = pd.DataFrame(rows)
    fading["od_centred"] = fading.od_mean - fading.groupby("SMTS").od_mean.transform("mean")
    fading["log_isch"] = np.log1p(fading.SMTSISCH.clip(lower=0))
    return fading


# --------------------------------------------------------------------------
# the synthetic tumour cohort (notebook 08)
# --------------------------------------------------------------------------
def true_combination_map(truth_dir, clones: pd.DataFrame, image_id: str, traits: Sequence[str]) -> np.ndarray:
    """The clone map of a synthetic tumour slide recoloured by each clone's combination code.

    Parameters
    ----------
    truth_dir : the tumour cohort's ``truth/`` folder (``clone_maps/<image_id>.png``: clone number + 1)
    clones : ``truth/clones.tsv`` with ``image_id, clone`` and ``state_<trait>`` columns
    image_id : the slide
    traits : the traits, in the column order of the calls

    Returns
    -------
    array of int, shape (H, W) of the painted map: :func:`histo_utils.hti.combination_codes` of each pixel's clone
    """
    from pathlib import Path

    from PIL import Image

    from .hti import combination_codes

    lab = np.asarray(Image.open(Path(truth_dir) / "clone_maps" / f"{image_id}.png")).astype(int) - 1
    cl = clones[clones.image_id == image_id].set_index("clone")
    return combination_codes(cl[[f"state_{t}" for t in traits]].to_numpy())[lab]


def tile_accuracy(calls: pd.DataFrame, smoothed: np.ndarray, prob: pd.DataFrame, true_calls: pd.DataFrame,
                  held: np.ndarray) -> pd.DataFrame:
    """Tile calls against the true clone state under each tile, on all tiles and on the held-out slides' tiles.

    Parameters
    ----------
    calls : DataFrame, shape (n_tiles, k), ensemble 0/1 calls, one column per trait
    smoothed : array, shape (n_tiles, k), the majority-filtered calls
    prob : DataFrame, shape (n_tiles, k * n_splits), columns (trait, split): P(high) of every model
    true_calls : DataFrame with ``true_<trait>`` columns, one row per tile
        (:func:`histo_utils.synthetic.tumour.tile_truth`)
    held : array of bool, shape (n_tiles,): tiles of slides that took part in no training or validation

    Returns
    -------
    DataFrame, one row per (trait, set): ``tile_accuracy``, ``tile_accuracy_smoothed``, ``tile_auc`` (mean
    P of the models against the truth, :func:`histo_utils.metrics.auc`), ``n_tiles``.
    """
    from .metrics import auc

    return pd.DataFrame([{"trait": t, "set": name,
                          "tile_accuracy": float((calls.loc[m, t] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_accuracy_smoothed": float((smoothed[m, j] == true_calls.loc[m, f"true_{t}"]).mean()),
                          "tile_auc": auc(prob.loc[m, t].mean(1).to_numpy(), true_calls.loc[m, f"true_{t}"].to_numpy()),
                          "n_tiles": int(m.sum())}
                         for j, t in enumerate(calls.columns)
                         for name, m in (("all tiles", np.ones(len(calls), bool)),
                                         ("test + OOD slides", np.asarray(held, bool)))])


def hti_agreement(slide_table: pd.DataFrame, held: pd.Series) -> pd.DataFrame:
    """Estimated HTI (raw and smoothed) against the true HTI of the clone areas, per set of slides.

    Parameters
    ----------
    slide_table : DataFrame indexed by ``image_id`` with ``true_hti, hti0, hti_low, hti_high, hti_smooth,
        tile_truth_hti`` (the HTI of the true tile states)
    held : Series of bool indexed by ``image_id``: slides that took part in no training or validation

    Returns
    -------
    DataFrame, one row per (set, hti) with more than two slides: ``n, pearson, spearman,
    pearson_tile_truth, mean_abs_error, ci_coverage`` (bootstrap interval covering the truth; raw HTI only).
    """
    from scipy import stats

    d = slide_table.dropna(subset=["true_hti"])
    d = d.assign(true0=d.true_hti.fillna(0))
    h = held.reindex(d.index).to_numpy(bool)
    return pd.DataFrame([{"set": name, "hti": col, "n": int(m.sum()),
                          "pearson": stats.pearsonr(d.true0[m], d[col][m]).statistic,
                          "spearman": stats.spearmanr(d.true0[m], d[col][m]).statistic,
                          "pearson_tile_truth": stats.pearsonr(d.true0[m], d.tile_truth_hti.fillna(0)[m]).statistic,
                          "mean_abs_error": float((d.true0[m] - d[col][m]).abs().mean()),
                          "ci_coverage": (float(((d.true0[m] >= d.hti_low[m] - 1e-9)
                                                 & (d.true0[m] <= d.hti_high[m] + 1e-9)).mean())
                                          if col == "hti0" else np.nan)}
                         for name, m in (("test + OOD slides", h), ("training/validation slides", ~h))
                         for col in ("hti0", "hti_smooth") if m.sum() > 2])


# --------------------------------------------------------------------------
# the GTEx-like cohort: features that track the planted programs, GSEA recovery (notebooks 06, 07, 09)
# --------------------------------------------------------------------------
def train_validation_feature_truth(features: pd.DataFrame, samples: pd.DataFrame,
                                   truth_samples: pd.DataFrame) -> pd.DataFrame:
    """:func:`feature_truth` on the training and validation slides only, constant features left out.

    Parameters
    ----------
    features : DataFrame, shape (n_samples, n_features), index SAMPID
    samples : notebook 01's slide-sample table (``SAMPID``, ``split``)
    truth_samples : ``truth/samples.tsv`` (one row per slide; duplicates of a SAMPID are dropped)

    Returns
    -------
    DataFrame indexed by feature: :func:`feature_truth`'s columns.
    """
    tv = features.loc[features.index.isin(samples.SAMPID[samples.split.isin(["train", "validation"])])]
    return feature_truth(tv.loc[:, tv.std() > 0], truth_samples.drop_duplicates("SAMPID").set_index("SAMPID"))


def program_trackers(ftruth: pd.DataFrame, programs: Sequence[str] | None = None) -> dict[str, str]:
    """The feature that best tracks each planted program within tissue (largest |r|).

    Parameters
    ----------
    ftruth : :func:`feature_truth` output (``r_program_<name>`` columns)
    programs : program names (e.g. ``nuclear_density``); None: every program of ``ftruth``

    Returns
    -------
    dict, program name -> feature
    """
    if programs is None:
        programs = [c.removeprefix("r_program_") for c in ftruth.columns if c.startswith("r_program_")]
    missing = [p for p in programs if f"r_program_{p}" not in ftruth]
    if missing:
        raise InputError(f"Programs {missing} not planted; available: "
                         f"{[c.removeprefix('r_program_') for c in ftruth.columns if c.startswith('r_program_')]}.")
    return {p: ftruth[f"r_program_{p}"].abs().idxmax() for p in programs}


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


# --------------------------------------------------------------------------
# notebook 07: does guided backpropagation point at the planted structure?
# --------------------------------------------------------------------------
#: the structure each planted morphology program changes
PROGRAM_STRUCTURE = {"nuclear_density": "nuclei", "stroma_fraction": "stroma", "lumen_size": "lumen"}


class PlantedStructures:
    """The planted structure masks under a tile (synthetic GTEx-like cohort), one slide rendered at a time.

    Parameters
    ----------
    data_dir : the cohort's data directory (its parameters: :func:`histo_utils.synthetic.cohort.load_cohort_params`)
    truth_dir : its ``truth/`` folder (``samples.tsv``)
    out_px : side of the returned masks (the network input)

    Calling it with a tile row (``image_id, x, y, size0, tile_px, effective_mpp``) returns
    {structure: bool array (out_px, out_px)}.
    """

    def __init__(self, data_dir, truth_dir, *, out_px: int):
        from pathlib import Path

        from .io import read_table
        from .synthetic.cohort import load_cohort_params

        self.params = load_cohort_params(data_dir)
        self.samples = read_table(Path(truth_dir) / "samples.tsv").drop_duplicates("image_id").set_index("image_id")
        self.out_px = out_px
        self._rendered = {}

    def __call__(self, tile_row) -> dict[str, np.ndarray]:
        from .synthetic.cohort import render_truth
        from .visualization import crop_structures

        iid = tile_row["image_id"]
        if iid not in self._rendered:
            self._rendered.clear()  # one slide at a time in memory
            self._rendered[iid] = render_truth(self.params, self.samples.loc[iid].to_dict() | {"image_id": iid})
        mpp0 = tile_row["effective_mpp"] * tile_row["tile_px"] / tile_row["size0"]
        return crop_structures(self._rendered[iid], tile_row, level0_mpp=mpp0, out_px=self.out_px)


def random_features(ftruth: pd.DataFrame, exclude: Iterable[str], n: int, *, seed: int = 0) -> list[str]:
    """Features drawn at random among those of ``ftruth`` not in ``exclude`` (e.g. the program trackers).

    Parameters
    ----------
    ftruth : :func:`feature_truth` output (its index: the features)
    exclude : features never drawn
    n : features drawn, without replacement (fewer when fewer are left)
    seed : seed of ``default_rng``

    Returns
    -------
    list of ``min(n, available)`` feature names
    """
    rng = np.random.default_rng(seed)
    excluded = set(exclude)
    pool = [f for f in ftruth.index if f not in excluded]
    return list(rng.choice(pool, size=min(n, len(pool)), replace=False))


def gbp_localisation(model, layers: dict, images, masks: Sequence[dict], tiles: Sequence[int], ftruth: pd.DataFrame,
                     trackers: dict[str, str], random: Sequence[str], *, device: str = "cpu") -> pd.DataFrame:
    """AUROC of each channel's |gBP| against the true mask of each program's structure, tile by tile.

    The AUROC is oriented by the sign of the channel's within-tissue correlation with the program: a
    channel that falls as the program rises should point away from the structure (1 - AUROC).

    Parameters
    ----------
    model, layers : the network and its feature layers
    images : tensor, shape (n_tiles, 3, H, W), normalised tiles
    masks : per tile, {structure: bool array (H, W)} (:class:`PlantedStructures`)
    tiles : the tiles' indices (reported in the ``tile`` column)
    ftruth : :func:`feature_truth` output of the features (``r_program_<name>``)
    trackers : program -> its tracking feature (:func:`program_trackers`)
    random : random features compared with the trackers (:func:`random_features`)

    Returns
    -------
    DataFrame, one row per (program, feature, tile): ``program, structure, kind`` (``tracks`` or
    ``random``), ``feature, r_program, tile, auroc, auroc_oriented``.
    """
    from .visualization import feature_channel, guided_backprop, localisation_auroc

    rows = []
    for prog, structure in PROGRAM_STRUCTURE.items():
        for kind, flist in (("tracks", [trackers[prog]]), ("random", random)):
            for f in flist:
                module, ch = feature_channel(f, layers)
                g = np.abs(guided_backprop(model, module, ch, images, device=device)).sum(1)
                sign = np.sign(ftruth.loc[f, f"r_program_{prog}"]) or 1.0
                for j, i in enumerate(tiles):
                    a = localisation_auroc(g[j], masks[j][structure])
                    rows.append({"program": prog, "structure": structure, "kind": kind, "feature": f,
                                 "r_program": ftruth.loc[f, f"r_program_{prog}"], "tile": int(i),
                                 "auroc": a, "auroc_oriented": a if sign > 0 else 1 - a})
    return pd.DataFrame(rows)


def localisation_summary(loc: pd.DataFrame) -> pd.DataFrame:
    """Per program and kind: median, min, max and number of the channels' median oriented AUROCs.

    Parameters
    ----------
    loc : :func:`gbp_localisation` table

    Returns
    -------
    DataFrame indexed by (program, kind): ``median, min, max, size``.
    """
    return (loc.groupby(["program", "kind", "feature"]).auroc_oriented.median().rename("median_auroc")
            .reset_index().groupby(["program", "kind"]).median_auroc.agg(["median", "min", "max", "size"]))


def tracker_strength_rank(loc: pd.DataFrame, trackers: dict[str, str]) -> pd.DataFrame:
    """Rank of each program tracker's localisation strength among the random channels.

    Strength = median over tiles of |AUROC - 0.5| (unsigned: orienting a random channel by its weak
    correlation pulls its AUROC toward 0.5).

    Parameters
    ----------
    loc : :func:`gbp_localisation` table
    trackers : program -> its tracking feature

    Returns
    -------
    DataFrame, one row per program: ``program, tracker, tracker_strength, rank_among_random`` (1 = stronger
    than every random channel), ``n_random``.
    """
    strength = loc.assign(strength=(loc.auroc - 0.5).abs()).groupby(["program", "kind", "feature"]).strength.median()
    n_random = loc[loc.kind == "random"].feature.nunique()
    return pd.DataFrame([{"program": prog, "tracker": trackers[prog],
                          "tracker_strength": strength.loc[(prog, "tracks", trackers[prog])],
                          "rank_among_random": 1 + int((strength.loc[(prog, "random")] >
                                                        strength.loc[(prog, "tracks", trackers[prog])]).sum()),
                          "n_random": n_random} for prog in PROGRAM_STRUCTURE])


def structure_localisation(model, layers: dict, images, masks: Sequence[dict], tiles: pd.DataFrame,
                           ftruth: pd.DataFrame, trackers: dict[str, str], random: Sequence[str], *,
                           device: str = "cpu") -> pd.DataFrame:
    """Where each channel fires and where its gBP points, against the true mask of each program's structure.

    Feature map: the channel's output upsampled to the tile (:func:`histo_utils.visualization.feature_maps`);
    its AUROC against the mask is oriented by the sign of the channel's within-tissue correlation with the
    program (a channel whose mean falls as the program, and so the structure's area, rises should be *low* on
    the structure): oriented AUROC = AUROC of ``sign(r) * map``. gBP: the AUROC of |gBP| (sum over colours),
    unsigned, as in :func:`gbp_localisation`. Tiles whose mask is empty or full get NaN.

    Parameters
    ----------
    model, layers : the network and its feature layers
    images : tensor, shape (n_tiles, 3, H, W), normalised tiles
    masks : per tile, {structure: bool array (H, W)} (:class:`PlantedStructures`)
    tiles : the tiles' rows (index reported as ``tile``; ``tissue``, the run's tissue label, when present)
    ftruth : :func:`feature_truth` output of the features (``r_program_<name>``)
    trackers : program -> its tracking feature (:func:`program_trackers`)
    random : random features compared with the trackers (:func:`random_features`)

    Returns
    -------
    DataFrame, one row per (program, feature, tile): ``program, structure, kind`` (``tracks`` or ``random``),
    ``feature, r_program, tile, tissue, mask_fraction, map_auroc, map_auroc_oriented, auroc`` (|gBP|),
    ``auroc_oriented`` (|gBP| AUROC oriented as before, for :func:`localisation_summary`).
    """
    from .visualization import feature_maps, guided_backprop_features

    if len(masks) != len(tiles) or len(images) != len(tiles):
        raise InputError(f"{len(images)} images, {len(masks)} masks and {len(tiles)} tile rows: give one of each "
                         "per tile.")
    feats = list(dict.fromkeys([*trackers.values(), *random]))
    maps = feature_maps(model, layers, feats, images, device=device)  # (n_feats, n_tiles, H, W)
    gbp = guided_backprop_features(model, layers, feats, images, device=device, reduce="abs_sum")
    tissue = tiles["tissue"].to_numpy() if "tissue" in tiles else np.full(len(tiles), "")
    rows = []
    for j, i in enumerate(tiles.index):
        for prog, structure in PROGRAM_STRUCTURE.items():
            m = np.asarray(masks[j][structure], bool).ravel()
            a_map = _auroc_rows(maps[:, j].reshape(len(feats), -1), m)
            a_gbp = _auroc_rows(gbp[:, j].reshape(len(feats), -1), m)
            for k, f in enumerate(feats):
                kind = "tracks" if trackers.get(prog) == f else ("random" if f in random else None)
                if kind is None:
                    continue
                r = float(ftruth.loc[f, f"r_program_{prog}"])
                rows.append({"program": prog, "structure": structure, "kind": kind, "feature": f, "r_program": r,
                             "tile": int(i), "tissue": tissue[j], "mask_fraction": float(m.mean()),
                             "map_auroc": a_map[k], "map_auroc_oriented": a_map[k] if r >= 0 else 1 - a_map[k],
                             "auroc": a_gbp[k], "auroc_oriented": a_gbp[k] if r >= 0 else 1 - a_gbp[k]})
    return pd.DataFrame(rows).sort_values(["program", "kind", "feature", "tile"], kind="stable",
                                          ignore_index=True)


def _auroc_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` (k, n) against one boolean ``mask`` (n,) (Mann-Whitney, ties half).

    NaN for every row when the mask is all true or all false.
    """
    from scipy.stats import rankdata

    n1 = int(mask.sum())
    n0 = mask.size - n1
    if n1 == 0 or n0 == 0:
        return np.full(len(scores), np.nan)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, mask].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def channel_scores(loc: pd.DataFrame, *, column: str = "map_auroc_oriented", per_tissue: bool = False) -> pd.DataFrame:
    """Each channel's localisation score per program: mean AUROC over a tissue's tiles, then mean over tissues.

    Parameters
    ----------
    loc : :func:`structure_localisation` table (tiles with NaN in ``column`` are left out)
    column : the AUROC column
    per_tissue : keep one score per tissue (no mean over tissues)

    Returns
    -------
    DataFrame ``program, [tissue,] kind, feature, <column>``
    """
    d = loc.dropna(subset=[column])
    score = d.groupby(["program", "tissue", "kind", "feature"], sort=False)[column].mean()
    if not per_tissue:
        score = score.groupby(["program", "kind", "feature"], sort=False).mean()
    return score.reset_index()


def tracker_localisation_rank(loc: pd.DataFrame, trackers: dict[str, str], *, by: Sequence[str] = ("program",),
                              column: str = "map_auroc_oriented") -> pd.DataFrame:
    """Rank of each program tracker's oriented feature-map AUROC among the random channels.

    A channel's score is its mean AUROC over the tiles of each tissue (tiles whose mask is empty or full left
    out), then the mean over tissues (each tissue counts once, however many tiles the draw gave it).

    Parameters
    ----------
    loc : :func:`structure_localisation` table
    trackers : program -> its tracking feature
    by : grouping of the rows (``("program",)`` or ``("program", "tissue")``); tiles with NaN AUROC (mask empty
        or full) are left out
    column : the AUROC column ranked

    Returns
    -------
    DataFrame, one row per group: ``by..., tracker, tracker_auroc, random_median, random_max,
    rank_among_random`` (1 = above every random channel; ties count against the tracker), ``n_random, n_tiles,
    mean_mask_fraction`` (of the structure over the group's tiles).
    """
    by = list(by)
    if by not in (["program"], ["program", "tissue"]):
        raise InputError(f"by={by}: group by ('program',) or ('program', 'tissue').")
    d = loc.dropna(subset=[column])
    score = channel_scores(loc, column=column, per_tissue="tissue" in by)
    rows = []
    for key, g in score.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        prog = key[0]
        sel = d[np.logical_and.reduce([d[c] == k for c, k in zip(by, key)])]
        tr = g[(g.kind == "tracks") & (g.feature == trackers[prog])][column]
        tr = float(tr.iloc[0]) if len(tr) else np.nan
        rnd = g[g.kind == "random"][column]
        rows.append({**dict(zip(by, key)), "tracker": trackers[prog], "tracker_auroc": tr,
                     "random_median": rnd.median(), "random_max": rnd.max(),
                     "rank_among_random": 1 + int((rnd >= tr).sum()) if np.isfinite(tr) else np.nan,
                     "n_random": len(rnd), "n_tiles": sel.tile.nunique(),
                     "mean_mask_fraction": sel.drop_duplicates("tile").mask_fraction.mean()})
    return pd.DataFrame(rows)


def program_panel_tiles(tiles: pd.DataFrame, values: pd.DataFrame, ftruth: pd.DataFrame, trackers: dict[str, str],
                        masks: Sequence[dict], *, min_fraction: float = 0.02,
                        max_fraction: float = 0.6) -> tuple[pd.DataFrame, dict]:
    """A representative tile per program: where its tracker says the program is strongest, with the structure in view.

    Among tiles whose true masks are known (e.g. the localisation tiles), taken by decreasing oriented tracker
    value (``sign(r) * value``: for a tracker that falls as the program rises, its lowest values), the first
    whose structure mask covers between ``min_fraction`` and ``max_fraction`` of the tile (a mask that is
    empty or fills the tile shows nothing); if none does, the tile whose coverage is closest to that range.

    Parameters
    ----------
    tiles : candidate tiles, index = dataset index, ``image_id, x, y`` (``tissue`` when known)
    values : DataFrame indexed like the tile dataset, one column per tracker (feature values)
    ftruth : :func:`feature_truth` output (``r_program_<name>``)
    trackers : program -> tracking feature
    masks : per row of ``tiles``, {structure: bool array (H, W)} (:class:`PlantedStructures`)
    min_fraction, max_fraction : accepted mask coverage

    Returns
    -------
    panels : DataFrame, one row per program: ``program, structure, feature, r_program, tile, image_id, tissue, x, y,
        value, mask_fraction``
    masks : program -> bool array, the structure mask under its tile
    """
    if len(tiles) == 0 or len(masks) != len(tiles):
        raise InputError(f"{len(tiles)} candidate tiles and {len(masks)} masks: give at least one tile and one "
                         "mask dict per tile.")
    pos = {i: j for j, i in enumerate(tiles.index)}
    rows, chosen_masks = [], {}
    for prog, f in trackers.items():
        structure = PROGRAM_STRUCTURE[prog]
        r = float(ftruth.loc[f, f"r_program_{prog}"])
        order = (values.loc[tiles.index, f] * (1.0 if r >= 0 else -1.0)).sort_values(ascending=False, kind="stable")
        cover = pd.Series([float(np.mean(masks[pos[i]][structure])) for i in order.index], index=order.index)
        off = (min_fraction - cover).clip(lower=0) + (cover - max_fraction).clip(lower=0)
        i = off.index[int(np.argmin(off.to_numpy()))]  # first tile in range, else the nearest to it
        t = tiles.loc[i]
        rows.append({"program": prog, "structure": structure, "feature": f, "r_program": r, "tile": int(i),
                     "image_id": t.image_id, "tissue": t.get("tissue", ""), "x": t.x, "y": t.y,
                     "value": float(values.loc[i, f]), "mask_fraction": cover.loc[i]})
        chosen_masks[prog] = np.asarray(masks[pos[i]][structure], bool)
    return pd.DataFrame(rows), chosen_masks


def localisation_tables(loc: pd.DataFrame, trackers: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notebook 07's localisation results: per program and per program and tissue.

    Parameters
    ----------
    loc : :func:`structure_localisation` table
    trackers : program -> its tracking feature

    Returns
    -------
    per_program : :func:`tracker_localisation_rank` (oriented feature-map AUROC) with the former |gBP| check's
        ``gbp_strength`` and ``gbp_rank`` (:func:`tracker_strength_rank`)
    per_tissue : :func:`tracker_localisation_rank` by program and tissue, with the |gBP| AUROC of the tracker
        (``gbp_tracker_auroc``) and the median of the random channels (``gbp_random_median``), unsigned
    """
    before = tracker_strength_rank(loc, trackers).set_index("program")
    per_program = tracker_localisation_rank(loc, trackers)
    per_program["gbp_strength"] = per_program.program.map(before.tracker_strength)
    per_program["gbp_rank"] = per_program.program.map(before.rank_among_random)
    per_tissue = tracker_localisation_rank(loc, trackers, by=("program", "tissue"))
    gbp = tracker_localisation_rank(loc, trackers, by=("program", "tissue"), column="auroc")
    per_tissue = per_tissue.merge(gbp[["program", "tissue", "tracker_auroc", "random_median"]].rename(
        columns={"tracker_auroc": "gbp_tracker_auroc", "random_median": "gbp_random_median"}),
        on=["program", "tissue"], how="left")
    return per_program, per_tissue


def localisation_reading(per_program: pd.DataFrame, per_tissue: pd.DataFrame) -> str:
    """The written reading of notebook 07's localisation check, its numbers formatted from the run's tables.

    Parameters
    ----------
    per_program, per_tissue : :func:`localisation_tables` output

    Returns
    -------
    str, Markdown (program, feature and tissue names escaped: :func:`histo_utils.readings.md_text`)
    """
    from .readings import md_text

    lines = [f"* **{md_text(r.program)}** (tracker {md_text(r.tracker)}): oriented feature-map AUROC "
             f"{r.tracker_auroc:.2f} over "
             f"{r.n_tiles} tiles, rank {r.rank_among_random:.0f} of {r.n_random + 1} among random channels "
             f"(their median {r.random_median:.2f}, best {r.random_max:.2f}); the former |gBP| strength ranks it "
             f"{r.gbp_rank:.0f} on the same tiles." for r in per_program.itertuples()]
    for prog, g in per_tissue.groupby("program", sort=False):
        parts = "; ".join(f"{md_text(t.tissue)}: map {t.tracker_auroc:.2f} (rank {t.rank_among_random:.0f}), |gBP| "
                          f"{t.gbp_tracker_auroc:.2f} vs random {t.gbp_random_median:.2f}, structure "
                          f"{t.mean_mask_fraction:.0%} of the tile" for t in g.itertuples())
        lines.append(f"* {md_text(prog)} by tissue — {parts}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# notebook 06: each planted set against the decoys of its ranking
# --------------------------------------------------------------------------
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
    str, Markdown (ranking and set names escaped: :func:`histo_utils.readings.md_text`)
    """
    from .readings import md_text

    p = table[table.kind == "planted"]
    d = table[table.kind == "decoy"]
    first = table[table["rank"] == 1].set_index("ranking").term
    lines = [f"* {md_text(r.ranking)}: {md_text(r.expected)} ranks {r.rank:.0f} of {r.n_sets} (NES {r.nes:.2f}, "
             f"FDR {r.fdr:.3g})" + (f", after {md_text(first.get(r.ranking, '?'))}" if r.rank > 1 else "")
             + f"; decoys above it: {r.decoys_above}." for r in p.itertuples()]
    lines.append(f"* Decoys over these {p.ranking.nunique()} rankings: largest |NES| {d.nes.abs().max():.2f}, "
                 f"smallest FDR {d.fdr.min():.3g}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# notebook 09: traits from planted programs, masking and saliency against the planted sets
# --------------------------------------------------------------------------
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
