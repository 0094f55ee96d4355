"""Planted truth of the synthetic cohort itself: what notebook 00 shows of it, and the same cohort with its
coupling to the slides cut (the controls of notebooks 04 and 05).

The planted tissue masks (``truth/masks``), fields of view on tissue, the slides at the ends of each planted
program, stain fading against the confounders (:mod:`histo_utils.tiling`, :mod:`histo_utils.slides`,
:mod:`histo_utils.stain`); the expression redrawn by the generator (:mod:`histo_utils.synthetic.cohort`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import MissingInputError
from ..slides import read_field_of_view, read_thumbnail
from ..stain import mean_optical_density
from ..synthetic.cohort import design_cohort, load_cohort_params, simulate_expression
from ..tiling import deepest_point

__all__ = ["planted_summary", "read_true_mask", "tissue_field", "program_extremes", "stain_fading",
           "decoupled_log_expression"]


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
    from PIL import Image
    from tqdm.auto import tqdm

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
    params = load_cohort_params(data_dir)
    tpm, _, _ = simulate_expression(params, *design_cohort(params), decouple=decouple)
    tpm.attrs = {}
    download = Path(data_dir) / "truth" / "download.json"
    if download.exists():  # written in GTEx v8's layout (synthetic.formats): a few samples carry six-part IDs
        tpm = tpm.rename(columns=json.loads(download.read_text()).get("renamed_six_part", {}))
    return np.log2(1.0 + tpm.T)
