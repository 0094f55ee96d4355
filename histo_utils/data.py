"""Image features and expression on the same samples: what notebooks 03–06 start from."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .tiling import load_tiling

log = logging.getLogger(__name__)

__all__ = ["load_log_expression", "load_features", "features_by_sample", "PairedData", "paired_tables",
           "feature_layer"]


def load_log_expression(path: str | os.PathLike, *, samples=None) -> tuple[pd.DataFrame, pd.Series]:
    """log2(1 + TPM) of a GCT file, samples as rows.

    Returns
    -------
    log_expression : DataFrame, shape (n_samples, n_genes), columns ``Name`` (Ensembl ID)
    symbols : Series, Name -> gene symbol (GCT ``Description``)
    """
    tpm = io.read_gct(path, samples=samples)
    symbols = tpm.attrs.pop("description")
    tpm.attrs = {}
    if (tpm.to_numpy() < 0).any():
        raise ValueError(f"Expression file '{path}' has negative values: expected TPM (>= 0), "
                         f"not log-transformed data.")
    return np.log2(1.0 + tpm.T), symbols


def load_features(out_dir: str | os.PathLike, *, network: str = "trained", tile_px: int = 256,
                  notebook: str = "02_training") -> pd.DataFrame:
    """A slide × feature table written by notebook 02 (index: image ID; columns ``layer_channel``)."""
    path = Path(out_dir) / notebook / f"features_{network}_{tile_px}px.parquet"
    if not path.exists():
        have = sorted(p.name for p in path.parent.glob("features_*px.parquet")) if path.parent.exists() else []
        raise FileNotFoundError(f"Feature table '{path}' does not exist. Available: {have or 'none'}; "
                                f"run notebook {notebook} with feature_tile_px including {tile_px}.")
    return io.read_table(path)


def features_by_sample(features: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Re-index a slide × feature table from image ID to the RNA sample ID (SAMPID)."""
    m = samples.drop_duplicates("image_id").set_index("image_id")["SAMPID"]
    missing = features.index.difference(m.index)
    if len(missing):
        raise ValueError(f"{len(missing)} feature rows have no sample in the samples table "
                         f"(e.g. {list(missing[:3])}); use the samples.tsv of the same run.")
    out = features.copy()
    out.index = pd.Index(m.loc[features.index].to_numpy(), name="SAMPID")
    return out


def feature_layer(names) -> np.ndarray:
    """The layer part of ``layer_channel`` feature names."""
    return np.array([str(n).rsplit("_", 1)[0] for n in names])


@dataclass
class PairedData:
    """Features and log expression of the samples that have both, with their annotation.

    Attributes
    ----------
    features : DataFrame, shape (n_samples, n_features), index SAMPID
    expression : DataFrame, shape (n_samples, n_genes), log2(1 + TPM), index SAMPID
    samples : DataFrame indexed by SAMPID (tissue ``SMTS``, ``split``, ``image_id``, ...)
    symbols : Series, gene Name -> symbol
    """

    features: pd.DataFrame
    expression: pd.DataFrame
    samples: pd.DataFrame
    symbols: pd.Series

    def split(self, name: str | list[str]) -> "PairedData":
        names = [name] if isinstance(name, str) else list(name)
        keep = self.samples.index[self.samples["split"].isin(names)]
        if len(keep) == 0:
            raise ValueError(f"Split {name!r} has no samples. Available splits: "
                             f"{sorted(self.samples['split'].unique())}.")
        return PairedData(self.features.loc[keep], self.expression.loc[keep], self.samples.loc[keep],
                          self.symbols)


def paired_tables(out_dir: str | os.PathLike, data_dir: str | os.PathLike, *, network: str = "trained",
                  tile_px: int = 256, expression: pd.DataFrame | None = None,
                  symbols: pd.Series | None = None) -> PairedData:
    """Features of notebook 02 and the expression of the same samples, in the same order.

    Slides without an RNA sample and RNA samples without a slide are left out
    (logged): only samples with both can be correlated.
    """
    from .correlation import match_samples

    _, samples = load_tiling(out_dir)
    feats = features_by_sample(load_features(out_dir, network=network, tile_px=tile_px), samples)
    if expression is None:
        files = io.locate_gtex_files(data_dir)
        expression, symbols = load_log_expression(files.expression)
    f, e = match_samples(feats, expression, on_mismatch="intersect")
    s = samples.drop_duplicates("SAMPID").set_index("SAMPID").loc[f.index]
    log.info("%d samples with image features (%s, %d px) and expression", len(f), network, tile_px)
    return PairedData(f, e, s, symbols)
