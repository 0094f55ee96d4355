"""Headline numbers across seeds: the seed-dependent notebooks run once per seed, each headline's spread.

Usage::

    python -m histo_utils.robustness --profile default --seeds 0 1 2 --out runs/robustness --publish figures
    python -m histo_utils.robustness --profile default --seeds 0 1 2 --reuse 0=runs/default --publish figures

Each seed runs the profile with its ``common.seed`` replaced, into ``<out>/seed_<n>/`` (the derived profile is
written there as ``<profile>_seed<n>.yaml``); the runner (:func:`histo_utils.run.run_profile`) skips the
notebooks a seed has already finished, so a rerun of the same command resumes. ``--reuse SEED=DIR`` takes a
finished run folder for one seed (the ``make figures`` run is seed 0 of the default profile) as it is, without
running anything in it; its stamps must record that seed. A seed whose run fails does not stop the others:
the tables are written with what it finished (a headline it lacks does not hold there), nothing is published,
and the command exits with status 2 (rerun it to resume).

Then the headlines of every seed's run are read from its tables (one function per notebook, :data:`EXTRACTORS`)
and written to ``<out>/robustness/`` (declared in :data:`histo_utils.products.STUDIES`):

- ``headlines.csv``, one row per seed and headline: ``seed, notebook, headline, value, goal, threshold,
  direction, holds`` (``goal`` the text, e.g. ``≥ 0.8``; ``direction`` one of ``>=``, ``<=``, ``>``, ``<``;
  ``holds`` empty for a headline without a goal);
- ``summary.csv``, one row per headline: ``notebook, headline, n_seeds`` (seeds with a value), ``n_runs``
  (seeds of the study), ``min, max, mean, sd, goal, threshold, direction, n_holds, holds_every_seed`` (a
  seed without a value does not hold);
- the figure ``<out>/figures/robustness/headlines.png`` (one panel per headline, a point per seed, the goal as
  a line) with ``headlines.csv`` as its table.

``--publish DIR`` copies the figure, its table and ``summary.csv`` to ``DIR/robustness/`` (as the runner's
``--publish`` copies each notebook's figures to ``DIR/<notebook>/``); the repository's copy,
``figures/robustness/``, is what :func:`across_seeds` reads for the notebooks' Readings.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from . import products, run
from .errors import InputError, MissingInputError
from .hti import HOMOGENEOUS, HTI_GOALS
from .figures import robustness as robustness_figures
from .io import atomic_open, read_table, write_table
from .plotting import save_figure, set_style
from .progress import QuietPapermill
from .text import md_text
from .truth import gsea_planted_vs_decoys

log = logging.getLogger("histo_utils.robustness")

__all__ = ["Goal", "STUDY", "EXTRACTORS", "DEFAULT_SUMMARY", "training_headlines", "correlation_headlines",
           "gsea_headlines", "visualization_headlines", "hti_survival_headlines", "radiogenomic_headlines",
           "run_headlines", "seed_headlines", "summarise", "seed_folder", "derive_profile", "parse_reuse",
           "check_reused", "run_seeds", "write_study", "publish_study", "across_seeds", "main",
           "ReusedRunMismatch", "HTI_COLUMNS"]

#: The study's name: its declarations in :data:`histo_utils.products.STUDIES`, its folders under ``<out>``
STUDY = "robustness"
#: The published summary of the repository (``make robustness``), read by :func:`across_seeds`
DEFAULT_SUMMARY = products.ROOT / products.FIGURES_DIR / STUDY / products.file_name(STUDY, "summary")
_HEADLINE_COLUMNS = products.product(STUDY, "headlines").columns
_SUMMARY_COLUMNS = products.product(STUDY, "summary").columns
_SYMBOLS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}


class ReusedRunMismatch(InputError):
    """A run folder given with ``--reuse SEED=DIR`` was not run with that seed."""


@dataclass(frozen=True)
class Goal:
    """What a headline should reach: ``value <direction> threshold`` (``direction`` one of ``>=, <=, >, <``)."""

    direction: str
    threshold: float

    def __post_init__(self):
        if self.direction not in _SYMBOLS:
            raise InputError(f"Goal direction {self.direction!r}: use one of {list(_SYMBOLS)}.")

    @property
    def text(self) -> str:
        """``≥ 0.8``, ``< 0.05``, ``≤ 1``."""
        return f"{_SYMBOLS[self.direction]} {self.threshold:g}"

    def holds(self, value: float) -> bool:
        """Whether ``value`` reaches the goal (NaN never does)."""
        if value is None or not np.isfinite(value):
            return False
        return {">=": value >= self.threshold, "<=": value <= self.threshold, ">": value > self.threshold,
                "<": value < self.threshold}[self.direction]


#: The goals the notebooks' Readings and planted-truth sections hold their headlines to (issue 30, item 3)
FIRST = Goal("<=", 1)                # a planted set / tracker ranked first
NO_DECOY_ABOVE = Goal("<=", 0)       # no decoy ranked above the planted set
YES = Goal(">=", 1)                  # a 0/1 headline that should be 1
LOGRANK_P = Goal("<", 0.05)          # 08: the HTI split separates survival
TABLE1_AUC = Goal(">=", 0.9)         # 08: Table 1's 5-run mean test AUC (hti.reading)
TILE_AUC = Goal(">=", 0.85)          # 08: tile AUC against the planted clones (hti.reading)

#: 08's held-out set in ``hti_agreement.tsv`` and its headline columns: column -> (name, goal)
HTI_SET = "test + OOD slides"
_HTI_NAMES = {"pearson": "HTI r", "ci_coverage": "HTI interval coverage", "ci_width": "HTI interval width",
              "low_true_mean": f"mean HTI where true HTI < {HOMOGENEOUS:g}"}
HTI_COLUMNS: dict[str, tuple[str, Goal]] = {c: (_HTI_NAMES[c], Goal(rel, v)) for c, (rel, v) in HTI_GOALS.items()}


def _row(notebook: str, headline: str, value, goal: Goal | None = None) -> dict:
    return {"notebook": notebook, "headline": headline, "value": float(value),
            "goal": goal.text if goal else "", "threshold": goal.threshold if goal else np.nan,
            "direction": goal.direction if goal else ""}


def _frame(rows: Iterable[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["notebook", "headline", "value", "goal", "threshold", "direction"])


# ------------------------------------------------------------------------------------------------ per notebook
@products.reads("02_training:accuracy")
def training_headlines(run_dir: str | os.PathLike) -> pd.DataFrame:
    """02: test tile and test slide accuracy of each network (``accuracy.tsv``, class ``(all)``); no goal.

    Parameters
    ----------
    run_dir : one seed's run folder

    Returns
    -------
    DataFrame, one row per headline: ``notebook, headline, value, goal, threshold, direction``
    """
    nb = "02_training"
    acc = read_table(products.outputs(run_dir, nb).accuracy)
    acc = acc[(acc.split == "test") & (acc["class"] == "(all)")]
    return _frame(_row(nb, f"test {r.level} accuracy, {r.arch}", r.accuracy)
                  for r in acc.sort_values(["arch", "level"], ascending=[True, False]).itertuples())


@products.reads("03_feature_correlation:recovery_summary")
def correlation_headlines(run_dir: str | os.PathLike) -> pd.DataFrame:
    """03: recall and precision of the planted gene-feature links, per scan (``recovery_summary.tsv``); no goal.

    Parameters
    ----------
    run_dir : one seed's run folder

    Returns
    -------
    DataFrame, one row per headline (see :func:`training_headlines`)
    """
    nb = "03_feature_correlation"
    rec = read_table(products.outputs(run_dir, nb).recovery_summary)
    return _frame(_row(nb, f"planted {what}, {r.method}", getattr(r, what))
                  for r in rec.itertuples() for what in ("recall", "precision"))


@products.reads("06_gsea:gsea_features", "06_gsea:gsea_confounders")
def gsea_headlines(run_dir: str | os.PathLike) -> pd.DataFrame:
    """06: rank of each planted set in the ranking that should find it, and the decoys ranked above it.

    The rankings of program-tracking features are named by their table (``trained_256px``), not by the feature
    (another seed chooses another channel). Goals: rank 1 (06's planted-truth section: "that program's set
    should come first") and no decoy above it.

    Parameters
    ----------
    run_dir : one seed's run folder

    Returns
    -------
    DataFrame, one row per headline (see :func:`training_headlines`)
    """
    nb = "06_gsea"
    d06 = products.outputs(run_dir, nb)
    table = gsea_planted_vs_decoys(read_table(d06.gsea_features), read_table(d06.gsea_confounders))
    planted = table[table.kind == "planted"]
    rows = []
    for r in planted.itertuples():
        where = r.ranking if r.ranking.startswith("confounder ") else r.ranking.split("/", 1)[0]
        rows += [_row(nb, f"rank of {r.expected}, {where}", r.rank, FIRST),
                 _row(nb, f"decoys above {r.expected}, {where}", r.decoys_above, NO_DECOY_ABOVE)]
    return _frame(rows)


@products.reads("07_visualization:localisation_rank")
def visualization_headlines(run_dir: str | os.PathLike) -> pd.DataFrame:
    """07: each program's tracker ranked among random channels (goal: first), and its map AUROC (no goal).

    Parameters
    ----------
    run_dir : one seed's run folder

    Returns
    -------
    DataFrame, one row per headline (see :func:`training_headlines`)
    """
    nb = "07_visualization"
    loc = read_table(products.outputs(run_dir, nb).localisation_rank)
    rows = []
    for r in loc.itertuples():
        rows += [_row(nb, f"tracker rank among random channels, {r.program}", r.rank_among_random, FIRST),
                 _row(nb, f"tracker map AUROC, {r.program}", r.tracker_auroc)]
    return _frame(rows)


@products.reads("08_hti_survival:hti_agreement", "08_hti_survival:cox", "08_hti_survival:logrank",
                "08_hti_survival:table1", "08_hti_survival:tile_accuracy")
def hti_survival_headlines(run_dir: str | os.PathLike) -> pd.DataFrame:
    """08: HTI against the truth, Cox, log-rank, Table 1 and tile AUC, each with the goal of 08's Reading.

    - per HTI estimator (``hti_agreement.tsv``, set ``test + OOD slides``): the columns of :data:`HTI_COLUMNS`
      that the table has (a missing column is left out, logged; an empty value, e.g. r of a constant estimate,
      is kept as NaN: it never holds);
    - per Cox fit (``cox.tsv``, covariate ``HTI``): the coefficient (no goal) and whether its 95 % interval
      covers the planted coefficient (1/0, goal 1);
    - per log-rank comparison (``logrank.tsv``): p (goal < 0.05);
    - per trait: Table 1's 5-run mean test AUC (goal ≥ 0.9) and the tile AUC on test + OOD slides (≥ 0.85).

    Parameters
    ----------
    run_dir : one seed's run folder

    Returns
    -------
    DataFrame, one row per headline (see :func:`training_headlines`)
    """
    nb = "08_hti_survival"
    d08 = products.outputs(run_dir, nb)
    rows = []
    agree = read_table(d08.hti_agreement)
    missing = [c for c in HTI_COLUMNS if c not in agree.columns]
    if missing:
        log.info("%s: hti_agreement.tsv has no %s; those headlines are left out", run_dir, ", ".join(missing))
    for r in agree[agree.set == HTI_SET].itertuples():
        for column, (name, goal) in HTI_COLUMNS.items():
            if column in agree.columns:
                rows.append(_row(nb, f"{name}, {r.hti}", getattr(r, column), goal))
    cox = read_table(d08.cox)
    for r in cox[cox.covariate == "HTI"].to_dict("records"):
        rows.append(_row(nb, f"Cox HTI coefficient, {r['fit']}", r["coef"]))
        planted = r.get("planted_coef", np.nan)
        if pd.notna(planted):
            low, high = r["coef lower 95%"], r["coef upper 95%"]
            covers = float(low <= planted <= high) if pd.notna(low) and pd.notna(high) else np.nan  # no fit: NaN
            rows.append(_row(nb, f"Cox 95 % CI covers the planted {planted:g}, {r['fit']}", covers, YES))
    rows += [_row(nb, f"log-rank p, {r.comparison}", r.p, LOGRANK_P)
             for r in read_table(d08.logrank).itertuples()]
    rows += [_row(nb, f"Table 1 5-run mean test AUC, {r.trait}", r.test_runs_mean, TABLE1_AUC)
             for r in read_table(d08.table1).itertuples()]
    tiles = read_table(d08.tile_accuracy)
    rows += [_row(nb, f"tile AUC, {r.trait}", r.tile_auc, TILE_AUC)
             for r in tiles[tiles.set == HTI_SET].itertuples()]
    return _frame(rows)


@products.reads("09_radiogenomic_network:masking_truth", "09_radiogenomic_network:fold_auc")
def radiogenomic_headlines(run_dir: str | os.PathLike, *, network: str = "nn") -> pd.DataFrame:
    """09: masking rank of each trait's planted set (goal: first), mean AUC of every model, network beats all.

    Parameters
    ----------
    run_dir : one seed's run folder
    network : the network's name in ``fold_auc.tsv`` (the others are its comparison models)

    Returns
    -------
    DataFrame, one row per headline (see :func:`training_headlines`); "network beats every baseline" is 1 when
    the network's mean AUC over the folds is above every other model's (goal 1)
    """
    nb = "09_radiogenomic_network"
    d09 = products.outputs(run_dir, nb)
    rows = [_row(nb, f"masking rank of {r.planted_set}, {r.trait}", r.rank, FIRST)
            for r in read_table(d09.masking_truth).itertuples()]
    auc = read_table(d09.fold_auc).groupby(["trait", "model"], sort=False).auc.mean()
    for trait, by_model in auc.groupby(level="trait", sort=False):
        by_model = by_model.droplevel("trait")
        rows += [_row(nb, f"mean AUC {model}, {trait}", value) for model, value in by_model.items()]
        others = by_model.drop(network, errors="ignore")
        if network in by_model.index and len(others):
            rows.append(_row(nb, f"{network} beats every baseline, {trait}",
                             float(by_model[network] > others.max()), YES))
    return _frame(rows)


#: One function per seed-dependent notebook, reading that notebook's headlines from a run folder
EXTRACTORS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "02_training": training_headlines, "03_feature_correlation": correlation_headlines,
    "06_gsea": gsea_headlines, "07_visualization": visualization_headlines,
    "08_hti_survival": hti_survival_headlines, "09_radiogenomic_network": radiogenomic_headlines}


# ------------------------------------------------------------------------------------------------ collecting
def run_headlines(run_dir: str | os.PathLike, *, notebooks: Sequence[str] | None = None) -> pd.DataFrame:
    """Every headline of one run folder (:data:`EXTRACTORS`); a notebook whose tables are missing is logged, skipped.

    Parameters
    ----------
    run_dir : a run folder (``<out>/seed_<n>/``, or a reused one)
    notebooks : the notebooks to read (default: every one of :data:`EXTRACTORS`)

    Returns
    -------
    DataFrame, one row per headline: ``notebook, headline, value, goal, threshold, direction``
    """
    frames = []
    for nb in notebooks or EXTRACTORS:
        try:
            found = EXTRACTORS[nb](Path(run_dir))
        except (FileNotFoundError, KeyError, AttributeError) as e:
            log.warning("%s: no headlines of %s (%s: %s)", run_dir, nb, type(e).__name__, e)
            continue
        log.info("%s: %d headlines of %s", run_dir, len(found), nb)
        frames.append(found)
    return pd.concat(frames, ignore_index=True) if frames else _frame([])


def seed_headlines(runs: Mapping[int, str | os.PathLike], *, notebooks: Sequence[str] | None = None
                   ) -> pd.DataFrame:
    """The long table of the study: every headline of every seed's run, with whether it holds.

    Parameters
    ----------
    runs : seed -> its run folder
    notebooks : passed to :func:`run_headlines`

    Returns
    -------
    DataFrame, one row per (seed, headline): ``seed, notebook, headline, value, goal, threshold, direction,
    holds`` (``holds`` True/False for a headline with a goal, else missing)
    """
    frames = [f.assign(seed=int(seed)) for seed, d in runs.items()
              if len(f := run_headlines(d, notebooks=notebooks))]
    table = pd.concat(frames, ignore_index=True) if frames else _frame([]).assign(seed=[])
    holds = [Goal(d, t).holds(v) if d else pd.NA
             for v, d, t in zip(table.value, table.direction, table.threshold)]
    return table.assign(holds=pd.array(holds, dtype="boolean"))[list(_HEADLINE_COLUMNS)]


def summarise(headlines: pd.DataFrame, *, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per headline: its spread over the seeds and in how many it holds.

    Parameters
    ----------
    headlines : :func:`seed_headlines` (``seed, notebook, headline, value, goal, threshold, direction, holds``)
    seeds : the seeds of the study (default: those in ``headlines``); a seed without a value of a headline
        (its notebook failed, its table lacks the row) counts as a seed where the headline does not hold

    Returns
    -------
    DataFrame ``notebook, headline, n_seeds, n_runs, min, max, mean, sd, goal, threshold, direction, n_holds,
    holds_every_seed``: ``n_seeds`` the seeds with a value, ``n_runs`` the seeds of the study, ``sd`` the
    sample standard deviation (NaN for one seed); ``n_holds`` and ``holds_every_seed`` (``n_holds == n_runs``)
    missing for a headline without a goal. In the order of ``headlines``.
    """
    n_runs = len(set(seeds) if seeds is not None else set(headlines.seed))
    rows = []
    for (nb, name), g in headlines.groupby(["notebook", "headline"], sort=False):
        v = g.value.astype(float)
        goal = g.goal.iloc[0] if isinstance(g.goal.iloc[0], str) else ""  # "" (NaN once read back): no goal
        n_holds = int(g.holds.fillna(False).astype(bool).sum()) if goal else pd.NA
        rows.append({"notebook": nb, "headline": name, "n_seeds": int(v.notna().sum()), "n_runs": n_runs,
                     "min": v.min(), "max": v.max(), "mean": v.mean(), "sd": v.std(ddof=1),
                     "goal": goal, "threshold": g.threshold.iloc[0], "direction": g.direction.iloc[0],
                     "n_holds": n_holds, "holds_every_seed": (n_holds == n_runs) if goal else pd.NA})
    out = pd.DataFrame(rows, columns=list(_SUMMARY_COLUMNS))
    return out.astype({"n_holds": "Int64", "holds_every_seed": "boolean"})


# ------------------------------------------------------------------------------------------------ running
def seed_folder(out: str | os.PathLike, seed: int) -> Path:
    """``<out>/seed_<n>/``: one seed's run folder."""
    return Path(out) / f"seed_{int(seed)}"


def derive_profile(profile: str | os.PathLike, seed: int, folder: str | os.PathLike) -> Path:
    """Write the profile with ``common.seed`` replaced to ``<folder>/<profile>_seed<n>.yaml`` (kept when unchanged).

    Parameters
    ----------
    profile : the profile file (``params/default.yaml``)
    seed : the seed
    folder : where the derived file goes (the seed's run folder)

    Returns
    -------
    Path of the derived profile
    """
    profile = Path(profile)
    raw = run.read_profile_yaml(profile)
    raw["common"] = {**(raw.get("common") or {}), "seed": int(seed)}
    text = (f"# {profile.name} with common.seed = {int(seed)}, written by python -m histo_utils.robustness\n"
            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    path = Path(folder) / f"{profile.stem}_seed{int(seed)}.yaml"
    if not (path.is_file() and path.read_text() == text):
        with atomic_open(path, "w") as fh:
            fh.write(text)
    return path


def parse_reuse(values: Sequence[str] | None) -> dict[int, Path]:
    """``["0=runs/default"]`` -> ``{0: Path("runs/default")}`` (``--reuse``); refused: no ``=``, a seed twice.

    Raises
    ------
    InputError
        A value that is not ``SEED=DIR`` with an integer seed, or a seed given twice.
    """
    found: dict[int, Path] = {}
    for v in values or ():
        seed, sep, folder = str(v).partition("=")
        if not sep or not folder or not re.fullmatch(r"-?\d+", seed.strip()):
            raise InputError(f"--reuse {v!r}: write SEED=DIR, e.g. --reuse 0=runs/default.")
        if int(seed) in found:
            raise InputError(f"--reuse names seed {int(seed)} twice.")
        found[int(seed)] = Path(folder)
    return found


def check_reused(folder: str | os.PathLike, seed: int, *, profile: run.Profile | None = None) -> list[str]:
    """Refuse a reused run folder whose stamps record another seed; returns the notebooks it has finished.

    Parameters
    ----------
    folder : the run folder given with ``--reuse SEED=DIR``
    seed : the seed it stands for
    profile : the study's profile with ``common.seed`` set to ``seed``; a finished notebook whose recorded
        parameters differ from the profile's is logged (warning), not refused

    Returns
    -------
    list of str, the notebooks with a stamp (``.runner/<notebook>.json``) in the folder

    Raises
    ------
    MissingInputError
        The folder does not exist.
    ReusedRunMismatch
        A stamp records a ``seed`` parameter other than ``seed``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"--reuse {seed}={folder}: the folder does not exist; give a finished run folder "
                                "(e.g. runs/default after make figures).")
    finished, differ = [], []
    for stamp in sorted((folder / ".runner").glob("*.json")):
        params = (json.loads(stamp.read_text()) or {}).get("parameters", {})
        if "seed" in params and int(params["seed"]) != int(seed):
            raise ReusedRunMismatch(f"--reuse {seed}={folder}: {stamp.stem} ran with seed {params['seed']}, not "
                                    f"{seed}. Give the folder under the seed it ran with.")
        finished.append(stamp.stem)
        if profile is not None and stamp.stem in profile.notebooks:
            wanted = json.loads(json.dumps(run.resolve_parameters(profile, stamp.stem, folder.resolve()),
                                           default=str))
            if {k: v for k, v in params.items() if k != "out_dir"} != {k: v for k, v in wanted.items()
                                                                       if k != "out_dir"}:
                differ.append(stamp.stem)
    if differ:
        log.warning("--reuse %d=%s: %s ran with other parameters than profile '%s' gives them; their headlines "
                    "are taken as they are", seed, folder, ", ".join(differ), profile.name)
    return finished


def run_seeds(profile: str | os.PathLike, seeds: Sequence[int], out: str | os.PathLike, *,
              reuse: Mapping[int, str | os.PathLike] | None = None, only: Sequence[str] | None = None
              ) -> tuple[dict[int, Path], dict[int, str]]:
    """Run the profile once per seed into ``<out>/seed_<n>/`` (resumed when it ran before), or reuse a folder.

    Parameters
    ----------
    profile : the profile file
    seeds : the seeds, in order
    out : the study's folder
    reuse : seed -> an existing run folder taken as it is (:func:`check_reused`)
    only : passed to the runner's ``--only`` (default: every notebook of the profile)

    Returns
    -------
    runs : seed -> its run folder (every seed, also those that failed: their finished notebooks count)
    failed : seed -> why its run stopped (:class:`histo_utils.run.NotebookFailed` and the like)
    """
    reuse = dict(reuse or {})
    runs, failed = {}, {}
    for seed in seeds:
        if seed in reuse:
            folder = Path(reuse[seed])
            prof = run.load_profile(Path(profile))
            prof.common["seed"] = int(seed)
            finished = check_reused(folder, seed, profile=prof)
            log.info("seed %d: reusing %s as it is (%d notebooks finished there; nothing is run)", seed, folder,
                     len(finished))
            unfinished = [nb for nb in EXTRACTORS if nb in prof.notebooks and nb not in finished]
            if unfinished:
                log.warning("seed %d: %s has not finished %s; their headlines count as missing in seed %d", seed,
                            folder, ", ".join(unfinished), seed)
            runs[seed] = folder
            continue
        folder = seed_folder(out, seed)
        folder.mkdir(parents=True, exist_ok=True)
        derived = derive_profile(profile, seed, folder)
        log.info("seed %d: running %s into %s", seed, derived.name, folder)
        runs[seed] = folder
        try:
            records = run.run_profile(run.load_profile(derived), folder, only=only)
        except (run.NotebookFailed, run.OutputLocked, run.OutputUnwritable) as e:
            log.error("seed %d: %s", seed, e)
            failed[seed] = str(e).splitlines()[0]
            continue
        for r in records:
            log.info("seed %d: %-28s %-8s %7.1f s", seed, r["notebook"], r["status"], r["seconds"])
    return runs, failed


# ------------------------------------------------------------------------------------------------ writing
def write_study(headlines: pd.DataFrame, summary: pd.DataFrame, out: str | os.PathLike) -> dict[str, Path]:
    """Write the long table and the summary (atomically) and the figure of the study under ``out``.

    Parameters
    ----------
    headlines : :func:`seed_headlines`
    summary : :func:`summarise`
    out : the study's folder: tables to ``<out>/robustness/``, the figure to ``<out>/figures/robustness/``

    Returns
    -------
    dict ``headlines, summary, figure`` -> the paths written
    """
    o = products.outputs(out, STUDY)
    paths = {"headlines": write_table(headlines, o.headlines), "summary": write_table(summary, o.summary)}
    fig = robustness_figures.headline_panels(headlines)
    paths["figure"] = save_figure(fig, headlines, out, STUDY, "headlines",
                                  empty="no headline table was found in any seed's run")
    return paths


def publish_study(out: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the study's figure, its table and ``summary.csv`` to ``<dest>/robustness/`` (replacing it).

    Returns
    -------
    Path of ``<dest>/robustness/``
    """
    out, dest = Path(out), Path(dest)
    target, tmp = dest / STUDY, dest / f".{STUDY}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(products.figure_folder(out, STUDY), tmp)
        shutil.copy2(products.outputs(out, STUDY).summary, tmp / products.file_name(STUDY, "summary"))
    except BaseException:  # the published folder stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


# ------------------------------------------------------------------------------------------------ readings
def _num(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 0.01:
        return f"{x:.1e}"
    return f"{x:.2f}".rstrip("0").rstrip(".") if abs(x - round(x)) > 1e-9 else f"{x:.0f}"


def across_seeds(notebook: str, *, planted: bool = True, summary: str | os.PathLike = DEFAULT_SUMMARY) -> str:
    """One Markdown paragraph for a notebook's Reading: each headline's spread across the seeds, and its goal.

    Parameters
    ----------
    notebook : the notebook (``"08_hti_survival"``)
    planted : whether this run is on the synthetic cohort; the published study is of the synthetic default
        profile, so for a real cohort (False) it says that the study does not apply
    summary : the study's ``summary.csv`` (default: the published one, :data:`DEFAULT_SUMMARY`)

    Returns
    -------
    str, Markdown: ``**Across seeds** (n seeds, python -m histo_utils.robustness): <headline> <min>–<max>
    (n seeds), holds in every seed / holds in k of n seeds (goal ≥ 0.8); ...``; a sentence saying so when no
    robustness run is published or it has no headline of the notebook. Headline names are escaped
    (:func:`histo_utils.text.md_text`).
    """
    if not planted:
        return ("The published robustness study across seeds is of the synthetic default profile: it does not "
                "apply to this cohort.")
    path = Path(summary)
    if not path.is_file():
        return (f"No robustness run across seeds is published ({md_text(path.name)} not found): the numbers "
                "above are those of one seed (`make robustness` reruns the notebooks with three).")
    table = read_table(path)
    rows = table[table.notebook == notebook]
    if rows.empty:
        return f"The robustness run across seeds has no headline of {md_text(notebook)}."
    parts = []
    for r in rows.itertuples():
        n_runs = int(r.n_runs)
        spread = _num(r.min) if _num(r.min) == _num(r.max) else f"{_num(r.min)}–{_num(r.max)}"
        over = f"{n_runs} seeds" if int(r.n_seeds) == n_runs else f"{int(r.n_seeds)} of {n_runs} seeds"
        text = f"{md_text(r.headline)}: {spread} over {over}"
        if isinstance(r.goal, str) and r.goal:
            n_holds = int(r.n_holds) if pd.notna(r.n_holds) else 0
            verdict = "holds in every seed" if n_holds == n_runs else f"holds in {n_holds} of {n_runs} seeds"
            text += f", {verdict} (goal {md_text(r.goal)})"
        parts.append(text)
    return (f"**Across {int(rows.n_runs.max())} seeds** (the published robustness study of the default profile, "
            "`make robustness`): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m histo_utils.robustness", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--profile", default=None, help="profile name in params/ (default: default)")
    src.add_argument("--params", type=Path, default=None, help="a profile file anywhere")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds (default: 0 1 2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the study's folder: seed_<n>/ runs and robustness/ tables "
                         "(default runs/robustness_<profile>)")
    ap.add_argument("--reuse", nargs="+", metavar="SEED=DIR", default=None,
                    help="take a finished run folder for a seed as it is, e.g. 0=runs/default "
                         "(the make figures run)")
    ap.add_argument("--only", nargs="+", metavar="NN",
                    help="run only these notebooks in each seed (and what they need)")
    ap.add_argument("--publish", type=Path, default=None,
                    help="copy the figure, its table and summary.csv to <PUBLISH>/robustness/ "
                         "(make robustness: figures)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:  # papermill's per-notebook INFO lines, as the runner drops them
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietPapermill())
    profile = args.params or run.PARAMS_DIR / f"{args.profile or 'default'}.yaml"
    out = args.out or run.ROOT / "runs" / f"robustness_{profile.stem}"
    seeds = list(dict.fromkeys(args.seeds))
    try:
        reuse = parse_reuse(args.reuse)
        stray = sorted(set(reuse) - set(seeds))
        if stray:
            raise InputError(f"--reuse names seed(s) {stray} that are not among --seeds {seeds}.")
        run.load_profile(profile)  # refused before any seed runs
        runs, failed = run_seeds(profile, seeds, out, reuse=reuse, only=args.only)
        headlines = seed_headlines(runs)
        summary = summarise(headlines, seeds=seeds)
        set_style()
        paths = write_study(headlines, summary, out)
        held = summary.dropna(subset=["n_holds"])
        log.info("%d headlines over %d seeds; %d of %d with a goal hold in every seed; tables in %s",
                 len(summary), len(seeds), int(held.holds_every_seed.sum()), len(held), paths["summary"].parent)
        if failed:
            log.error("not published: the run of seed(s) %s failed (%s); rerun the same command to resume",
                      sorted(failed), "; ".join(f"{s}: {m}" for s, m in failed.items()))
            return 2
        if args.publish:
            log.info("published %s", publish_study(out, args.publish))
    except (InputError, MissingInputError) as e:
        log.error("%s", e)
        return 2
    except run.RunInterrupted as e:
        log.error("Stopped by %s; rerun the same command to resume.", e)
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
