"""Planted truth of the image features (notebook 02's slide features): what each feature carries of the
planted drivers, and the features that track each program.

Used by the checks of notebooks 03, 06, 07 and 09 (:mod:`histo_utils.truth.correlation`,
:mod:`~histo_utils.truth.visualization`, :mod:`~histo_utils.truth.radiogenomics`); the within-tissue
correlations are :mod:`histo_utils.correlation`'s.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..correlation import group_r2, within_group_r
from ..data import feature_layer
from ..errors import InputError

__all__ = ["feature_truth", "train_validation_feature_truth", "program_trackers", "tracking_by_layer"]


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
    s = samples.loc[features.index]
    tissue = s[tissue_col].to_numpy()
    x = features.to_numpy(dtype=np.float64)
    out = pd.DataFrame({"eta2_tissue": group_r2(x, tissue)}, index=features.columns)
    drivers = s[[c for c in s.columns if c.startswith("program_")]].assign(ischemia=s["ischemic_severity"])
    r = within_group_r(features, drivers, groups=tissue)
    return out.join(r.add_prefix("r_"))


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
    return (ftruth.filter(like="r_").abs().assign(layer=feature_layer(ftruth.index)).groupby("layer").max()
            .reindex(list(layers)))
