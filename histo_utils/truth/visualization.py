"""Planted truth of the feature visualisation (notebook 07, :mod:`histo_utils.visualization`): does guided
backpropagation, or the feature map, of a program-tracking channel point at the planted structure?

:func:`channel_scores` (a channel's localisation score) is :mod:`histo_utils.visualization`'s, which plots
it; it is re-exported here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import InputError
from ..io import read_table
from ..text import md_text
from ..synthetic.cohort import load_cohort_params, render_truth
from ..visualization import channel_scores, crop_structures, feature_maps, firing_side, guided_backprop_features

__all__ = ["PROGRAM_STRUCTURE", "SCORE_TEXT", "PlantedStructures", "random_features", "tracker_strength_rank",
           "structure_localisation", "channel_scores", "tracker_localisation_rank", "program_panel_tiles", "localisation_tables", "localisation_reading"]

#: the structure each planted morphology program changes
PROGRAM_STRUCTURE = {"nuclear_density": "nuclei", "stroma_fraction": "stroma", "lumen_size": "lumen"}


class PlantedStructures:
    """The planted structure masks under a tile (synthetic GTEx-like cohort), one slide rendered at a time.

    Parameters
    ----------
    data_dir : the cohort's data directory (its parameters: :func:`histo_utils.synthetic.cohort.load_cohort_params`)
    truth_dir : its ``truth/`` folder (``samples.tsv``)
    input_px : side of the returned masks (the network input)

    Calling it with a tile row (``image_id, x, y, size0, tile_px, effective_mpp``) returns
    {structure: bool array (input_px, input_px)}; :meth:`structure_of` names the structure to show for a gene of a
    planted role (:func:`histo_utils.visualization.feature_panel_maps`).
    """

    def __init__(self, data_dir, truth_dir, *, input_px: int):
        self.params = load_cohort_params(data_dir)
        self.samples = read_table(Path(truth_dir) / "samples.tsv").drop_duplicates("image_id").set_index("image_id")
        self.input_px = input_px
        self._rendered = {}

    def __call__(self, tile_row) -> dict[str, np.ndarray]:
        iid = tile_row["image_id"]
        if iid not in self._rendered:
            self._rendered.clear()  # one slide at a time in memory
            self._rendered[iid] = render_truth(self.params, self.samples.loc[iid].to_dict() | {"image_id": iid})
        mpp0 = tile_row["effective_mpp"] * tile_row["tile_px"] / tile_row["size0"]
        return crop_structures(self._rendered[iid], tile_row, level0_mpp=mpp0, out_px=self.input_px)

    @staticmethod
    def structure_of(role: str) -> str:
        """The structure shown for a gene of planted ``role`` (``truth/genes.tsv``): the structure its program
        changes (:data:`PROGRAM_STRUCTURE`) for a program gene, nuclei for any other."""
        return PROGRAM_STRUCTURE[role.removeprefix("program_")] if role.startswith("program_") else "nuclei"


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


def tracker_strength_rank(loc: pd.DataFrame, trackers: dict[str, str]) -> pd.DataFrame:
    """Rank of each program tracker's localisation strength among the random channels.

    Strength = median over tiles of |AUROC - 0.5| (unsigned: orienting a random channel by its weak
    correlation pulls its AUROC toward 0.5).

    Parameters
    ----------
    loc : :func:`structure_localisation` table (``program, kind, feature, auroc``: the |gBP| AUROC)
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
    ``map_auroc`` is its AUROC against the mask as computed, *not* flipped by the sign of the channel's
    within-tissue correlation ``r_program`` with the program: > 0.5 the map fires on the structure, < 0.5 off
    it, 0.5 no relation. The sign of ``r_program`` (whether the channel's mean rises or falls as the program
    rises across samples) is a separate fact, kept in its own column. gBP: the AUROC of |gBP| (sum over
    colours), unsigned. Tiles whose mask is empty or full get NaN.

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
    ``feature, r_program, tile, tissue, mask_fraction, map_auroc, auroc`` (|gBP|).
    """
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
                             "map_auroc": a_map[k], "auroc": a_gbp[k]})
    return pd.DataFrame(rows).sort_values(["program", "kind", "feature", "tile"], kind="stable",
                                          ignore_index=True)


def _auroc_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` (k, n) against one boolean ``mask`` (n,) (Mann-Whitney, ties half).

    NaN for every row when the mask is all true or all false.
    """
    n1 = int(mask.sum())
    n0 = mask.size - n1
    if n1 == 0 or n0 == 0:
        return np.full(len(scores), np.nan)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, mask].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def tracker_localisation_rank(loc: pd.DataFrame, trackers: dict[str, str], *, by: Sequence[str] = ("program",),
                              column: str = "map_auroc") -> pd.DataFrame:
    """Rank of each program tracker's localisation score among the random channels: how strongly it fires *on*.

    A channel's score is its mean AUROC over the tiles of each tissue (tiles whose mask is empty or full left
    out), then the mean over tissues (each tissue counts once, however many tiles the draw gave it). The score
    is ranked as it is, unflipped: rank 1 = the tracker's map fires on the program's structure more than every
    random channel's map; a tracker that fires *off* the structure (score < 0.5) ranks low whatever the sign of
    its across-sample correlation ``r`` (reported beside the rank, not folded into it).

    Parameters
    ----------
    loc : :func:`structure_localisation` table
    trackers : program -> its tracking feature
    by : grouping of the rows (``("program",)`` or ``("program", "tissue")``); tiles with NaN AUROC (mask empty
        or full) are left out
    column : the AUROC column ranked

    Returns
    -------
    DataFrame, one row per group: ``by..., structure, tracker, score`` (the name of ``column``),
    ``tracker_auroc`` (the tracker's score), ``fires`` (``on``, ``off`` or ``neither``:
    :func:`histo_utils.visualization.firing_side`), ``r`` (the tracker's across-sample correlation with the
    program, ``r_program``), ``r_sign`` (+1 or -1; 0 when r is 0), ``random_median, random_max,
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
        trk = sel[(sel.kind == "tracks") & (sel.feature == trackers[prog])]
        r = float(trk.r_program.iloc[0]) if len(trk) else np.nan
        rows.append({**dict(zip(by, key)), "structure": PROGRAM_STRUCTURE[prog], "tracker": trackers[prog],
                     "score": column, "tracker_auroc": tr, "fires": firing_side(tr), "r": r,
                     "r_sign": int(np.sign(r)) if np.isfinite(r) else 0,
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

    Both rank the trackers among the random channels on the unflipped feature-map AUROC (``map_auroc``: where
    the map fires, > 0.5 on the structure), with the tracker's across-sample ``r`` and ``r_sign`` beside it.

    Parameters
    ----------
    loc : :func:`structure_localisation` table
    trackers : program -> its tracking feature

    Returns
    -------
    per_program : :func:`tracker_localisation_rank` (``program, structure, tracker, score, tracker_auroc, fires,
        r, r_sign, random_median, random_max, rank_among_random, n_random, n_tiles, mean_mask_fraction``) with
        the former |gBP| check's ``gbp_strength`` and ``gbp_rank`` (:func:`tracker_strength_rank`)
    per_tissue : :func:`tracker_localisation_rank` by program and tissue (the same columns and ``tissue``), with
        the |gBP| AUROC of the tracker (``gbp_tracker_auroc``) and the median of the random channels
        (``gbp_random_median``), unsigned
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


#: what each ranked score column is, as the Reading names it
SCORE_TEXT = {"map_auroc": "the AUROC of the channel's feature map against the program's true structure mask, "
                           "unflipped (above 0.5 the map fires on the structure, below 0.5 off it, 0.5 no "
                           "relation); the sign of the channel's across-sample correlation r with the program is "
                           "shown beside it, not folded into it",
              "auroc": "the AUROC of the channel's |gBP| against the program's true structure mask (unsigned)"}


def _fires(fires: str, structure: str) -> str:
    """``fires on the lumen``, ``fires off the lumen`` or ``fires neither on nor off the lumen``."""
    return f"fires {fires} the {structure}" if fires in ("on", "off") else f"fires neither on nor off the {structure}"


def _signed(x: float) -> str:
    """``x`` with two decimals and a typographic minus."""
    return f"{x:.2f}".replace("-", "\u2212")


def localisation_reading(per_program: pd.DataFrame, per_tissue: pd.DataFrame) -> str:
    """The written reading of notebook 07's localisation check, every number and ranking from the run's tables.

    It names the score ranked (the tables' ``score`` column, described by :data:`SCORE_TEXT`), then per program
    where the tracker's map fires (``fires``, ``tracker_auroc``), its across-sample ``r``, its rank among the
    random channels, which trackers rank first, and per tissue the same with the |gBP| columns; the tissues where
    the tracker's |gBP| AUROC is below 0.5 (its gradient points away from the structure) are listed.

    Parameters
    ----------
    per_program, per_tissue : :func:`localisation_tables` output

    Returns
    -------
    str, Markdown (program, feature, structure and tissue names escaped: :func:`histo_utils.text.md_text`)
    """
    scores = list(dict.fromkeys(per_program.score))
    lines = ["* Score ranked: " + "; ".join(f"{md_text(c)}, {SCORE_TEXT.get(c, md_text(c))}" for c in scores)
             + ". Rank 1 = the tracker's map fires on the structure more than every random channel's map."]
    lines += [f"* **{md_text(r.program)}** (tracker {md_text(r.tracker)}, across-sample r = {_signed(r.r)}): its "
              f"map {_fires(r.fires, md_text(r.structure))}, AUROC {r.tracker_auroc:.2f} over {r.n_tiles} tiles; "
              f"rank {r.rank_among_random:.0f} of {r.n_random + 1} among random channels (their median "
              f"{r.random_median:.2f}, best {r.random_max:.2f}); the former |gBP| strength ranks it "
              f"{r.gbp_rank:.0f} on the same tiles." for r in per_program.itertuples()]
    first = per_program[per_program.rank_among_random == 1]
    rest = per_program[per_program.rank_among_random != 1]
    lines.append("* Ranked first among the random channels on this score: "
                 + (", ".join(md_text(p) for p in first.program) or "no tracker")
                 + ("; not first: " + ", ".join(f"{md_text(r.program)} (rank {r.rank_among_random:.0f})"
                                                 for r in rest.itertuples()) if len(rest) else "") + ".")
    for prog, g in per_tissue.groupby("program", sort=False):
        parts = "; ".join(f"{md_text(t.tissue)}: {_fires(t.fires, md_text(t.structure))} (map AUROC "
                          f"{t.tracker_auroc:.2f}, rank {t.rank_among_random:.0f} of {t.n_random + 1}), |gBP| "
                          f"{t.gbp_tracker_auroc:.2f} vs random {t.gbp_random_median:.2f}, structure "
                          f"{t.mean_mask_fraction:.0%} of the tile" for t in g.itertuples())
        lines.append(f"* {md_text(prog)} by tissue — {parts}.")
    away = per_tissue[per_tissue.gbp_tracker_auroc < 0.5]
    lines.append("* Tracker |gBP| AUROC below 0.5 (gradient pointing away from the structure): "
                 + (", ".join(f"{md_text(t.program)} in {md_text(t.tissue)} ({t.gbp_tracker_auroc:.2f})"
                              for t in away.itertuples()) or "none") + ".")
    return "\n".join(lines)
