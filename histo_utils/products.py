"""What each notebook writes, declared once: the contracts between the notebooks.

Every file or folder a notebook leaves under ``<out_dir>/<notebook>/`` and every figure it saves under
``<out_dir>/figures/<notebook>/`` is declared here, with a key, its file name (or a template such as
``residual_features_{name}.parquet``), its kind, the columns its readers rely on and one line saying what it
is. Notebooks, readers and the runner take file names from here; none types them.

In a notebook::

    out = products.outputs(out_dir, NB)                      # this notebook's outputs
    io.write_table(pairs, out.pairs)                          # <out_dir>/03_feature_correlation/pairs.parquet
    io.write_table(table, out.residual_features(name=key.name))
    d03 = products.outputs(out_dir, "03_feature_correlation")   # another notebook's results
    pairs = io.read_table(d03.pairs)

A key that is not declared is refused with the notebook, the key and the declared keys
(:class:`ProductKeyError`); so is a figure name :func:`histo_utils.plotting.save_figure` is given for a
declared notebook.

**What a notebook reads** is derived, not declared by hand (:func:`notebook_reads`): the products of other
notebooks its code names through ``products.outputs(out_dir, "NN_...")``, the products read by the package
functions it calls with ``out_dir`` (declared on each function with :func:`reads`, e.g. ``data.load_tiling``
reads ``01_tiling:tiles`` and ``01_tiling:samples``), and the folders an earlier notebook writes where one
of its parameters points (notebook 00 writes ``data_dir``). The runner (:mod:`histo_utils.run`) uses it for
staleness and ``--only``; :func:`data_flow` writes it out (ARCHITECTURE.md's data flow).
"""
from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .errors import InputError, InputKeyError

__all__ = ["Product", "Notebook", "NOTEBOOKS", "Outputs", "Template", "ProductKeyError", "outputs", "declared",
           "product", "file_name", "check_figure", "figure_names", "reads", "reads_of", "parameter_folders",
           "NotebookReads", "notebook_reads", "data_flow", "FEATURE_PROVENANCE", "FEATURE_PROVENANCE_REQUIRED",
           "FEATURE_TABLE_ENTRY",
           "check_fields", "KINDS", "FIGURES_DIR", "figure_folder", "STUDIES"]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
#: Kinds of product: a table (``io.read_table``), a JSON file, a folder, a figure (PNG + CSV), a model checkpoint,
#: an AnnData file
KINDS = ("table", "json", "folder", "figure", "model", "anndata")
_DECLARATION = "histo_utils/products.py"


class ProductKeyError(InputKeyError, AttributeError):
    """A product (file, folder or figure) that is not declared for a notebook, or a notebook not declared.

    Also an ``AttributeError``: ``out.pairs`` on an :class:`Outputs` fails as a missing attribute would.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------
# declarations
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Product:
    """One output of a notebook.

    Attributes
    ----------
    key : str
        How code names it (``out.<key>``); a figure's key is its file stem.
    name : str
        File or folder name under ``<out_dir>/<notebook>/`` (``/`` for a sub-folder), possibly a template with
        ``{fields}``; a figure's stem under ``<out_dir>/figures/<notebook>/``; empty for a folder named by a
        parameter.
    kind : str
        One of :data:`KINDS`.
    description : str
        One line: what it holds.
    columns : tuple of str
        The columns (JSON: the keys) its readers rely on.
    parameter : str, optional
        A folder the notebook writes where this parameter points (``data_dir`` of notebook 00), not under
        ``<out_dir>/<notebook>/``.
    when : str, optional
        The notebook's boolean parameter that makes it write this (``write_tiles``); None: always.
    truth : bool
        Written only when the data folder holds a planted truth (the synthetic cohorts).
    notebook : str
        The notebook that writes it (set by :class:`Notebook`).
    """

    key: str
    name: str
    kind: str
    description: str
    columns: tuple[str, ...] = ()
    parameter: str | None = None
    when: str | None = None
    truth: bool = False
    notebook: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """The template's fields (``("name",)`` for ``residual_features_{name}.parquet``), () for a plain name."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.name) if f)

    @property
    def is_template(self) -> bool:
        return bool(self.fields)

    def pattern(self) -> re.Pattern:
        """A regular expression matching the file names this product takes (its template filled)."""
        parts = []
        for literal, f, _, _ in string.Formatter().parse(self.name):
            parts.append(re.escape(literal))
            if f:
                parts.append(r"[^/]+?")
        return re.compile("".join(parts) + "$")

    def format(self, **values) -> str:
        """The file name with the template's fields filled (checked: all given, none extra, no ``/``)."""
        fields = self.fields
        missing = [f for f in fields if f not in values]
        extra = [k for k in values if k not in fields]
        if missing or extra:
            raise InputError(f"Output '{self.key}' of notebook {self.notebook} is named '{self.name}': give "
                             f"{', '.join(f'{f}=...' for f in fields) or 'no field'}"
                             + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else "")
                             + ".")
        for k, v in values.items():
            if "/" in str(v) or str(v) in ("", ".", ".."):
                raise InputError(f"Output '{self.key}' of notebook {self.notebook}: {k}={v!r} cannot be part of a "
                                 "file name (empty, '.', '..' or a '/').")
        return self.name.format(**{k: str(v) for k, v in values.items()})


def table(key: str, name: str, description: str, *, columns: Iterable[str] = (), truth: bool = False,
          when: str | None = None) -> Product:
    """A table (``.tsv``, ``.parquet``; read with :func:`histo_utils.io.read_table`)."""
    return Product(key, name, "table", description, tuple(columns), when=when, truth=truth)


def json_file(key: str, name: str, description: str, *, columns: Iterable[str] = (), truth: bool = False) -> Product:
    """A JSON file; ``columns``: the keys its readers rely on."""
    return Product(key, name, "json", description, tuple(columns), truth=truth)


def folder(key: str, name: str, description: str, *, parameter: str | None = None,
           when: str | None = None) -> Product:
    """A folder (a cache, checkpoints, per-slide files), or with ``parameter`` the folder that parameter names."""
    return Product(key, name, "folder", description, parameter=parameter, when=when)


def model(key: str, name: str, description: str) -> Product:
    """A model checkpoint (PyTorch ``.pt``)."""
    return Product(key, name, "model", description)


def anndata(key: str, name: str, description: str) -> Product:
    """An AnnData file (``.h5ad``)."""
    return Product(key, name, "anndata", description)


def figure(name: str, description: str, *, truth: bool = False, when: str | None = None) -> Product:
    """A figure saved by :func:`histo_utils.plotting.save_figure`: ``<name>.png`` and ``<name>.csv``."""
    return Product(name, name, "figure", description, when=when, truth=truth)


@dataclass(frozen=True)
class Notebook:
    """The declared outputs of one notebook: its files and folders, and its figures (two name spaces)."""

    stem: str
    title: str
    files: Mapping[str, Product] = field(default_factory=dict)
    figures: Mapping[str, Product] = field(default_factory=dict)

    @classmethod
    def declare(cls, stem: str, title: str, *products: Product) -> "Notebook":
        """Collect ``products`` (refused: a key, a figure name or a file name declared twice)."""
        files: dict[str, Product] = {}
        figures: dict[str, Product] = {}
        names: dict[str, str] = {}
        for p in products:
            if p.kind not in KINDS:
                raise InputError(f"{stem}: output '{p.key}' has kind {p.kind!r}; kinds: {list(KINDS)}.")
            p = Product(**{**p.__dict__, "notebook": stem})
            space = figures if p.kind == "figure" else files
            if p.key in space:
                raise InputError(f"{stem}: {'figure' if p.kind == 'figure' else 'output'} '{p.key}' declared twice "
                                 f"in {_DECLARATION}.")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", p.key):
                raise InputError(f"{stem}: key {p.key!r} is not a Python name in lower case (letters, digits, _).")
            if p.kind != "figure" and p.name:
                if p.name in names:
                    raise InputError(f"{stem}: file '{p.name}' declared twice (keys '{names[p.name]}' and '{p.key}').")
                names[p.name] = p.key
            space[p.key] = p
        return cls(stem, title, files, figures)

    def get(self, key: str) -> Product:
        """The file or folder ``key``; :class:`ProductKeyError` names the notebook, the key and the declared keys."""
        if key not in self.files:
            hint = difflib.get_close_matches(key, list(self.files), n=1)
            raise ProductKeyError(
                f"Notebook {self.stem} declares no output '{key}' in {_DECLARATION}."
                + (f" Did you mean '{hint[0]}'?" if hint else "")
                + f" Declared: {sorted(self.files)}.")
        return self.files[key]


#: The keys of notebook 02's ``features_provenance.json`` (the catalogue of feature tables), what each holds;
#: :data:`FEATURE_PROVENANCE_REQUIRED`: those every reader of the catalogue needs.
FEATURE_PROVENANCE: dict[str, str] = {
    "arch": "the first network's architecture (the one trained for notebooks 07 and the 'trained' tables)",
    "archs": "every architecture trained, in order",
    "frozen": "whether the networks were used as loaded (no training)",
    "checkpoint": "path of the first network's best checkpoint",
    "best_epoch": "the first network's best validation epoch",
    "best_epochs": "architecture -> best validation epoch",
    "p": "exponent of the spatial aggregate",
    "aggregation": "tile-to-slide aggregation of every table (sum, mean or median)",
    "input_px": "side of the network input",
    "tile_read": "how tiles were read (auto or table)",
    "classes": "the tissue classes, in the classifier's order",
    "tables": "feature-table file name -> its entry (FEATURE_TABLE_ENTRY)",
}
FEATURE_PROVENANCE_REQUIRED = ("aggregation", "tables")
#: The keys of each entry of the provenance's ``tables`` that the catalogue reads
FEATURE_TABLE_ENTRY = ("network", "tile_px")

_SAMPLE_COLUMNS = ("image_id", "SAMPID", "subject_id", "split", "path")
#: 07's localisation ranks: ``tracker_auroc`` is the unflipped map AUROC (> 0.5 fires on the structure), ranked
#: among the random channels as ``rank_among_random``; ``r``/``r_sign``: the tracker's across-sample correlation
_LOCALISATION_RANK_COLUMNS = ("program", "structure", "tracker", "score", "tracker_auroc", "fires", "r", "r_sign",
                              "random_median", "random_max", "rank_among_random", "n_random", "n_tiles")
_GRID_COLUMNS = ("network", "tile_px", "aggregation", "tissue", "layer", "var_fraction", "image_shared",
                 "image_p", "expression_shared", "expression_p")

_DECLARED = (
    Notebook.declare(
        "00_synthetic_cohort", "the synthetic GTEx-like cohort",
        folder("cohort", "", "the cohort in the GTEx layout (slides, expression GCT, annotations, GMT, truth/)",
               parameter="data_dir"),
        table("planted_summary", "planted_summary.tsv", "counts of planted gene roles, sample problems, samples"),
        figure("planted_summary", "what was planted, counted"),
        figure("tissue_gallery", "one slide per tissue at two magnifications"),
        figure("programs_low_high", "tiles at the low and high ends of each morphology program"),
        figure("planted_expression_coupling", "module scores against their drivers"),
        figure("confounders", "the confounders of the samples"),
        figure("ischemia_fading", "stain fading against ischemic time and RIN"),
    ),
    Notebook.declare(
        "01_tiling", "tissue masks, tiles, the slide-RNA join, subject splits",
        table("join_report", "join_report.tsv", "what the slide-RNA join left out, by problem",
              columns=("problem", "count", "examples")),
        table("duplicate_rna", "duplicate_rna.tsv", "slides whose RNA sample has another slide"),
        table("tissues_without_slides", "tissues_without_slides.tsv", "tissues with RNA and no slide"),
        folder("per_slide", "per_slide", "the tiling cache: mask, thumbnail, tiles and info of each slide"),
        table("tiles_per_size", "per_slide/tiles_per_size.tsv", "slides and tiles of each tile size",
              columns=("tile_px", "tiles")),
        table("slides", "slides.tsv", "every slide file: tiled or skipped, and why",
              columns=("image_id", "status", "stage", "error")),
        table("resolution", "resolution.tsv", "each slide's resolution against the cohort's"),
        table("samples", "samples.tsv", "the usable slide-sample pairs with their split and annotations",
              columns=_SAMPLE_COLUMNS),
        json_file("tissue_grouping", "tissue_grouping.json", "the run's tissue label column",
                  columns=("label_column",)),
        table("tiles", "tiles.parquet", "every kept tile of every usable slide",
              columns=("image_id", "tile_px", "x", "y", "level", "read_px", "size0", "effective_mpp")),
        folder("coords", "coords", "tile coordinates per slide as CLAM/HEST/TRIDENT read them"),
        table("mask_agreement", "mask_agreement.tsv", "Dice of the tissue masks against the planted masks",
              truth=True),
        folder("tile_images", "tile_images", "every tile as a JPEG file", when="write_tiles"),
        figure("slide_resolution", "slides' resolutions, flagged outliers"),
        figure("tiles_per_tissue_split", "tiles and slides per tissue and split"),
        figure("masks_and_tiles", "example slides with their mask and tiles"),
        figure("mask_agreement", "mask Dice against the planted truth", truth=True),
    ),
    Notebook.declare(
        "02_training", "tissue classifier and slide features",
        table("history", "history.tsv", "training history of every network"),
        folder("checkpoints", "checkpoints", "per-architecture checkpoints (best.pt, last.pt)"),
        model("checkpoint", "checkpoints/{arch}/best.pt", "a network's best checkpoint (validation accuracy)"),
        table("tile_predictions", "tile_predictions.parquet", "class predictions of the scored tiles"),
        table("accuracy", "accuracy.tsv", "tile and slide accuracy by split and class",
              columns=("arch", "level", "split", "class", "accuracy")),
        folder("feature_cache", "feature_cache", "per-slide tile features (resumable)"),
        table("features", "features_{network}_{tile_px}px.parquet", "slide x feature table (index image_id)"),
        anndata("features_h5ad", "features_{network}_{tile_px}px.h5ad", "the same table as AnnData"),
        json_file("provenance", "features_provenance.json", "the catalogue of feature tables and how they were made",
                  columns=tuple(FEATURE_PROVENANCE)),
        figure("training_curves", "loss and accuracy by epoch"),
        figure("confusion_test", "confusion matrices on the test split"),
        table("layer_tracking", "layer_tracking.tsv", "best-tracking channel of each layer and program: trained, "
              "untrained and shuffled", truth=True, columns=("network", "tile_px", "layer", "program", "abs_r")),
        figure("layer_program_correlation", "best-tracking channel per layer", truth=True),
    ),
    Notebook.declare(
        "03_feature_correlation", "gene x feature correlations (Badea)",
        table("expression_floor", "expression_floor.tsv", "each gene's tissue of maximal median expression",
              columns=("Name", "max_tissue", "max_median")),
        table("threshold_grid", "threshold_grid.tsv", "significant pairs, genes, features by (R_T, E_T)",
              columns=("R_T", "E_T", "pairs", "genes", "features")),
        table("tables_by_network", "tables_by_network.tsv", "significant counts of every feature table"),
        table("network_comparison", "network_comparison.tsv", "networks compared (Badea's Tables 2-4)"),
        table("batch_norm_effect", "batch_norm_effect.tsv", "the effect of batch normalisation"),
        json_file("reproducibility", "reproducibility.json", "correlations reproduced on a second split",
                  columns=("n_pairs", "n_samples_split", "n_samples_replicate", "r_correlation", "z_correlation")),
        table("indirect_dependencies", "indirect_dependencies.tsv", "conditional independence tests (Table 7)"),
        table("pairs", "pairs.parquet", "gene-feature pairs of the pooled scan with permutation p-values",
              columns=("feature", "gene", "r", "q", "symbol", "layer", "max_median", "perm_p")),
        table("within_tissue_pairs", "within_tissue_pairs.parquet", "pairs significant within tissues",
              columns=("feature", "gene", "r", "q", "symbol", "layer")),
        table("recovery_summary", "recovery_summary.tsv", "planted links found by each scan", truth=True),
        table("recovery_by_role", "recovery_by_role.tsv", "planted links found, by gene role", truth=True),
        table("recovery_indirect", "recovery_indirect.tsv", "Table 7 by planted gene group", truth=True),
        figure("expression_floor", "the expression floor E_T"),
        figure("correlations_and_pvalues", "correlations and their permutation p-values"),
        figure("threshold_grid", "significant pairs by (R_T, E_T)"),
        figure("network_comparison", "networks compared"),
        figure("genes_per_layer", "correlated genes per layer"),
        figure("reproducibility", "correlations on two splits"),
        figure("within_tissue_power", "best within-tissue correlation of each planted gene", truth=True),
        figure("programs_by_layer", "within-tissue genes and program tracking by layer", truth=True),
    ),
    Notebook.declare(
        "04_pca_cross_variance", "shared variance of principal components (Jones Q1)",
        table("cross_correlation", "cross_correlation_{tissue}.tsv", "image PC x expression PC correlations"),
        table("shared_variance", "shared_variance.tsv", "shared variance against its null, the grid",
              columns=_GRID_COLUMNS),
        table("decoupled_control", "decoupled_control.tsv", "the grid on the cohort with the coupling off",
              truth=True),
        figure("pc_cross_correlation", "PC cross-correlations"),
        figure("shared_variance_by_tissue", "shared variance against its null by tissue"),
        figure("shared_variance_by_layer", "excess shared variance by layer", when="per_layer"),
        figure("planted_vs_decoupled", "excess shared variance, planted against decoupled", truth=True),
    ),
    Notebook.declare(
        "05_confounder_regression", "residuals, variance partition (Jones Q2)",
        table("confounder_levels", "confounder_levels.tsv", "levels of each confounder, pooled or merged"),
        table("designs", "designs.tsv", "each tissue's design: fitted or why not",
              columns=("tissue", "status", "terms", "left_out_terms")),
        table("residual_expression", "residual_expression.parquet", "expression with the confounders regressed out"),
        table("residual_features", "residual_features_{name}.parquet", "a feature table with the confounders "
              "regressed out"),
        table("variance_by_confounder_genes", "variance_by_confounder_genes.parquet", "variance of each gene "
              "explained by each confounder", columns=("tissue", "gene", "term", "unique_r2")),
        table("variance_by_confounder_features", "variance_by_confounder_features.parquet", "the same for features"),
        table("variance_explained_overall", "variance_explained_overall.tsv", "variance explained by term",
              columns=("tissue", "table", "term", "fraction_of_variance", "fraction_adjusted")),
        table("model_choice", "model_choice.tsv", "the three model choices compared"),
        table("shared_variance_residuals", "shared_variance_residuals.tsv", "the grid of notebook 04 on residuals",
              columns=_GRID_COLUMNS),
        table("planted_vs_recovered", "planted_vs_recovered.tsv", "planted against recovered variance", truth=True),
        table("confounder_only_control", "confounder_only_control.tsv", "shared variance of confounders alone",
              truth=True),
        figure("variance_by_confounder", "variance explained by each confounder"),
        figure("confounder_scatter", "the strongest gene and feature of each confounder"),
        figure("residuals_vs_fitted", "residuals against fitted values"),
        figure("model_choice", "model choices compared"),
        figure("total_vs_technical_shared_variance", "total against technical shared variance"),
        figure("planted_vs_recovered", "planted against recovered variance", truth=True),
        figure("confounder_only_control", "confounders alone, before and after regression", truth=True),
    ),
    Notebook.declare(
        "06_gsea", "gene-set enrichment of image-associated genes (Jones Q3)",
        table("associations", "associations.parquet", "gene-feature associations of the residual tables"),
        table("association_counts", "association_counts.tsv", "associations by table and scope"),
        table("gsea_features", "gsea_features.tsv", "GSEA of the chosen features' gene rankings"),
        table("gene_set_coverage", "gene_set_coverage.tsv", "genes of each set in the ranking"),
        table("enriched_overlap", "enriched_overlap.tsv", "Jaccard of the enriched sets of the lists"),
        table("gsea_confounders", "gsea_confounders.tsv", "GSEA of each confounder's ranking"),
        table("annotation_filter", "annotation_filter.tsv", "Badea's filter: correlated genes in annotation sets"),
        table("annotation_ora", "annotation_ora.tsv", "over-representation of the correlated genes"),
        table("planted_recovery", "planted_recovery.tsv", "planted sets found", truth=True),
        figure("association_counts", "associations by table and scope"),
        figure("enrichment_plots", "enrichment curves of the top sets"),
        figure("enriched_overlap", "overlap of the enriched sets"),
        figure("gsea_confounders", "NES of the sets in each confounder's ranking"),
        figure("planted_vs_decoys", "planted sets against decoys", truth=True),
    ),
    Notebook.declare(
        "07_visualization", "what a feature looks at",
        table("features", "features.tsv", "representative tiles of the chosen features"),
        table("localisation", "localisation.tsv", "where each channel's map fires on the planted structures",
              truth=True, columns=("program", "kind", "feature", "r_program", "tile", "tissue", "map_auroc", "auroc")),
        table("localisation_rank", "localisation_rank.tsv", "each tracker's unflipped map AUROC ranked among random "
              "channels", truth=True, columns=_LOCALISATION_RANK_COLUMNS),
        table("localisation_by_tissue", "localisation_by_tissue.tsv", "the same by tissue", truth=True,
              columns=("tissue", *_LOCALISATION_RANK_COLUMNS, "gbp_tracker_auroc")),
        figure("localisation", "localisation AUROC, tracking against random features", truth=True),
        figure("program_panels", "the program-tracking features", truth=True),
        figure("feature_panels", "the chosen features: tiles, saliency, synthetic images"),
        figure("linked_view_gene", "the features linked to one gene"),
    ),
    Notebook.declare(
        "08_hti_survival", "cartographies, HTI, survival (tumour cohort)",
        folder("tumour_cohort", "", "the synthetic tumour cohort in the TCGA layout", parameter="tumour_dir",
               when="make_synthetic"),
        json_file("tumour_files", "tumour_files.json", "which files of the tumour folder were read, and why"),
        folder("tiles", "tiles", "the tiling cache of the tumour slides"),
        table("slides", "slides.tsv", "every tumour slide: tiled or skipped, and why",
              columns=("image_id", "status", "stage", "error")),
        table("slide_labels", "slide_labels.tsv", "each slide's trait labels and set"),
        json_file("splits", "splits.json", "test patients and the train/validation splits",
                  columns=("test", "splits")),
        folder("models", "models", "the per-trait tile models"),
        table("history", "history.tsv", "training history of every tile model"),
        table("evaluation", "evaluation.tsv", "slide-level AUC and correlations by trait, set, model"),
        table("table1", "table1.tsv", "the paper's Table 1"),
        table("ensemble_members", "ensemble_members.tsv", "the models of each trait's ensemble"),
        table("tile_accuracy", "tile_accuracy.tsv", "tile calls against the planted clones", truth=True),
        table("slide_hti", "slide_hti.tsv", "each slide's HTI (the paper's and the corrected) with its interval",
              columns=("image_id", "hti", "hti0", "hti_low", "hti_high", "hti_corrected", "hti_corrected_low",
                       "hti_corrected_high")),
        table("validation_errors", "validation_errors.tsv",
              "each split model's denoised tile calls against the labels of its validation slides",
              columns=("trait", "split", "image_id", "label", "n_tiles", "against")),
        table("error_rates", "error_rates.tsv", "the tile-call error rates the corrected HTI corrects for",
              columns=("trait", "fpr", "fnr", "used", "n_low", "n_high")),
        table("hti_agreement", "hti_agreement.tsv", "the paper's and the corrected HTI against the planted HTI",
              truth=True, columns=("set", "hti", "n", "pearson", "mean_abs_error", "ci_coverage", "ci_width",
                                   "low_true_mean")),
        table("survival", "survival.tsv", "the survival table of the test and OOD patients"),
        table("logrank", "logrank.tsv", "log-rank tests of the HTI groups"),
        table("cox", "cox.tsv", "Cox model of HTI, age and stage"),
        figure("planted_clones", "the planted clones", truth=True),
        figure("training_curves", "training of the tile models"),
        figure("table1_auc", "Table 1"),
        figure("score_distributions", "slide scores by label"),
        figure("cartographies", "tile calls on example slides"),
        figure("hti_vs_truth", "HTI against the planted HTI", truth=True),
        figure("survival_hti", "survival by HTI group"),
        figure("survival_bulk", "survival by bulk expression"),
        figure("hti_by_subtype", "HTI by subtype"),
        figure("cox_hazard_ratios", "Cox hazard ratios"),
    ),
    Notebook.declare(
        "09_radiogenomic_network", "expression -> image trait networks",
        table("traits", "traits.tsv", "the image traits: feature, tissue thresholds, planted program"),
        table("trait_labels", "trait_labels.tsv", "each sample's trait labels"),
        table("fold_auc", "fold_auc.tsv", "AUC of every model, trait and fold", columns=("trait", "model", "fold", "auc")),
        table("bootstrap_differences", "bootstrap_differences.tsv", "bootstrap AUC differences, network - model"),
        table("out_of_fold", "out_of_fold.tsv", "out-of-fold predictions"),
        table("bootstrap_summary", "bootstrap_summary.tsv", "the differences summarised",
              columns=("trait", "model", "low")),
        table("gene_masking", "gene_masking.tsv", "AUC with each gene set masked",
              columns=("trait", "gene_set", "auc", "rank")),
        table("masking_truth", "masking_truth.tsv", "rank of the planted set", truth=True,
              columns=("trait", "planted_set", "rank", "n_sets")),
        table("saliency_gsea", "saliency_gsea.tsv", "per-sample GSEA of the saliency rankings"),
        table("saliency_rates", "saliency_rates.tsv", "share of samples with each set enriched"),
        table("saliency_truth", "saliency_truth.tsv", "planted sets in the saliency rankings", truth=True,
              columns=("trait", "rate_positive", "decoy_rate_positive")),
        figure("autoencoder_training", "the autoencoder's loss"),
        figure("model_comparison", "the network against the comparison models"),
        figure("gene_masking", "AUC with gene sets masked"),
        figure("saliency_gsea_heatmap", "saliency enrichment by sample"),
    ),
)

#: Every notebook's declared outputs, by notebook name, in order
NOTEBOOKS: dict[str, Notebook] = {nb.stem: nb for nb in _DECLARED}

#: Studies over several runs, declared like a notebook (tables under ``<out_dir>/<study>/``, figures under
#: ``<out_dir>/figures/<study>/``) but not run by the runner: ``robustness`` (:mod:`histo_utils.robustness`)
STUDIES: dict[str, Notebook] = {nb.stem: nb for nb in (
    Notebook.declare(
        "robustness", "every headline number of the seed-dependent notebooks, one run per seed",
        table("headlines", "headlines.csv", "each headline of each seed's run against its goal",
              columns=("seed", "notebook", "headline", "value", "goal", "threshold", "direction", "holds")),
        table("summary", "summary.csv", "each headline's spread over the seeds and in how many it holds",
              columns=("notebook", "headline", "n_seeds", "n_runs", "min", "max", "mean", "sd", "goal", "threshold",
                       "direction", "n_holds", "holds_every_seed")),
        figure("headlines", "each headline per seed, its goal as a line"),
    ),
)}


def declared(notebook: str) -> Notebook:
    """The declarations of ``notebook`` (``"03_feature_correlation"``); refused when it is not declared."""
    try:
        return NOTEBOOKS[notebook] if notebook in NOTEBOOKS else STUDIES[notebook]
    except (KeyError, TypeError):
        hint = difflib.get_close_matches(str(notebook), list(NOTEBOOKS), n=1)
        raise ProductKeyError(f"Notebook {notebook!r} has no declared outputs in {_DECLARATION}."
                              + (f" Did you mean '{hint[0]}'?" if hint else "")
                              + f" Declared notebooks: {list(NOTEBOOKS)}.") from None


def product(notebook: str, key: str) -> Product:
    """The declared file or folder ``key`` of ``notebook``."""
    return declared(notebook).get(key)


def file_name(notebook: str, key: str, **values) -> str:
    """The file name (relative to ``<out_dir>/<notebook>/``) of a product, its template filled with ``values``."""
    return product(notebook, key).format(**values)


def figure_names(notebook: str) -> list[str]:
    """The figures declared for ``notebook``, in declaration order."""
    return list(declared(notebook).figures)


def check_figure(notebook: str, name: str) -> None:
    """Refuse a figure name not declared for ``notebook`` (a notebook that is not declared at all is not checked).

    Raises
    ------
    ProductKeyError
        ``Figure 'x' is not declared for notebook 03_feature_correlation in histo_utils/products.py: ...``
    """
    nb = NOTEBOOKS.get(notebook) or STUDIES.get(notebook)
    if nb is None or name in nb.figures:
        return
    hint = difflib.get_close_matches(name, list(nb.figures), n=1)
    raise ProductKeyError(f"Figure '{name}' is not declared for notebook {notebook} in {_DECLARATION}: declare it "
                          "there (figure(name, description) under the notebook)."
                          + (f" Did you mean '{hint[0]}'?" if hint else "") + f" Declared: {list(nb.figures)}.")


def check_fields(found: Mapping, required: Iterable[str], *, what: str, fix: str) -> None:
    """Refuse a JSON object (dict) that lacks one of ``required``: ``<what> lacks ['key']: <fix>``."""
    missing = sorted(set(required) - set(found))
    if missing:
        raise InputError(f"{what} lacks {missing}: {fix}")


def parameter_folders() -> dict[str, dict[str, str | None]]:
    """The folders notebooks write where a parameter points: ``notebook -> {parameter: switch}``.

    ``switch``: the notebook's boolean parameter that makes it write the folder (None: always). The runner's
    :data:`histo_utils.run.NOTEBOOK_WRITES`.
    """
    found: dict[str, dict[str, str | None]] = {}
    for nb in NOTEBOOKS.values():
        for p in nb.files.values():
            if p.parameter:
                found.setdefault(nb.stem, {})[p.parameter] = p.when
    return found


# --------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------
#: the folder of a run (``<out_dir>/figures/``) that holds each notebook's figures, one sub-folder per notebook
FIGURES_DIR = "figures"


def figure_folder(out_dir: str | os.PathLike, notebook: str) -> Path:
    """``<out_dir>/figures/<notebook>/``: where :func:`histo_utils.plotting.save_figure` puts a notebook's figures
    (any notebook name; not created)."""
    return Path(out_dir) / FIGURES_DIR / notebook


class Template:
    """A templated output of a notebook: call it with the template's fields to get the path.

    >>> out = outputs("/run", "05_confounder_regression")
    >>> out.residual_features(name="trained_256px")
    PosixPath('/run/05_confounder_regression/residual_features_trained_256px.parquet')
    """

    __slots__ = ("product", "folder")

    def __init__(self, product: Product, folder: Path):
        self.product, self.folder = product, folder

    def __call__(self, **values) -> Path:
        return self.folder / self.product.format(**values)

    def __fspath__(self):
        raise InputError(f"Output '{self.product.key}' of notebook {self.product.notebook} is a template "
                         f"('{self.product.name}'): call it, e.g. out.{self.product.key}("
                         + ", ".join(f"{f}=..." for f in self.product.fields) + ").")

    def glob(self) -> list[Path]:
        """The files of this template that exist, sorted."""
        pat = self.product.pattern()
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*") if pat.match(p.relative_to(self.folder).as_posix()))

    def __repr__(self) -> str:
        return f"Template({self.folder / self.product.name})"


class Outputs:
    """The declared outputs of one notebook of one run, by key: ``out.pairs`` is a Path.

    A templated output is a :class:`Template` (``out.residual_features(name=...)``); a figure's PNG is
    ``out.figure("name")``; the notebook's folder is ``out.folder`` (created). A key not declared for the
    notebook raises :class:`ProductKeyError` naming the notebook, the key and the declared keys.
    """

    __slots__ = ("_out_dir", "_notebook")

    def __init__(self, out_dir: str | os.PathLike, notebook: str):
        self._notebook = declared(notebook)
        self._out_dir = Path(out_dir)

    @property
    def notebook(self) -> str:
        return self._notebook.stem

    @property
    def folder(self) -> Path:
        """``<out_dir>/<notebook>/``, created (where the notebook's functions write their declared outputs)."""
        p = self._out_dir / self._notebook.stem
        p.mkdir(parents=True, exist_ok=True)
        return p

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key: str):
        p = self._notebook.get(key)
        if p.parameter:
            raise ProductKeyError(f"Output '{key}' of notebook {self.notebook} is the folder its parameter "
                                  f"'{p.parameter}' names, not a file of {self._out_dir / self.notebook}: use the "
                                  "parameter.")
        folder = self._out_dir / self._notebook.stem
        return Template(p, folder) if p.is_template else folder / p.name

    def figure(self, name: str) -> Path:
        """``<out_dir>/figures/<notebook>/<name>.png`` of a declared figure (its table: ``.with_suffix('.csv')``)."""
        if name not in self._notebook.figures:
            check_figure(self.notebook, name)
        return figure_folder(self._out_dir, self.notebook) / f"{name}.png"

    def __dir__(self):
        return sorted({*self._notebook.files, "figure", "folder", "notebook"})

    def __repr__(self) -> str:
        return f"Outputs({str(self._out_dir)!r}, {self.notebook!r})"


def outputs(out_dir: str | os.PathLike, notebook: str) -> Outputs:
    """The declared outputs of ``notebook`` in the run ``out_dir``: ``outputs(out_dir, NB).pairs`` is a Path.

    Parameters
    ----------
    out_dir : the run's output directory
    notebook : the notebook's name (``"03_feature_correlation"``)

    Returns
    -------
    Outputs
    """
    return Outputs(out_dir, notebook)


# --------------------------------------------------------------------------
# what the package's functions read
# --------------------------------------------------------------------------
#: ``module.function`` -> the products of notebooks it reads (``(notebook, key)``): filled by :func:`reads`
READS: dict[str, tuple[tuple[str, str], ...]] = {}


def _refs(refs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for ref in refs:
        nb, sep, key = str(ref).partition(":")
        if not sep:
            raise InputError(f"Product reference {ref!r}: write '<notebook>:<key>', e.g. '01_tiling:samples'.")
        product(nb, key)  # refused when not declared
        out.append((nb, key))
    return tuple(out)


def reads(*refs: str) -> Callable:
    """Declare the products of notebooks a function reads (decorator); ``@reads()``: it reads none.

    The runner finds the function's calls in a notebook (``data.load_tiling(out_dir)``) and counts these
    products as the notebook's inputs. Declare every product the function opens, also through the functions
    it calls.

    Examples
    --------
    >>> @reads("01_tiling:tiles", "01_tiling:samples")      # doctest: +SKIP
    ... def load_tiling(out_dir): ...
    """
    parsed = _refs(refs)

    def mark(fn):
        READS[f"{fn.__module__}.{fn.__qualname__}"] = parsed
        fn.__product_reads__ = parsed
        return fn

    return mark


def reads_of(qualified: str) -> tuple[tuple[str, str], ...] | None:
    """What a package function (``histo_utils.data.load_tiling``) reads; None when it declares nothing.

    Read from the source of its module, not by importing it: the runner derives every notebook's inputs
    before it runs one, and importing the modules a notebook calls would load torch and matplotlib into the
    runner (seconds at every start). A declaration the source does not show plainly (a function defined
    elsewhere and re-exported, refs built at run time) is found by importing the module, which registers its
    :func:`reads` decorators.
    """
    if qualified in READS:
        return READS[qualified]
    module, _, name = qualified.rpartition(".")
    found = _source_reads(module).get(name, _UNSEEN)
    if found is not _UNSEEN:
        return found
    while "." in module:
        try:
            importlib.import_module(module)
            break
        except ImportError:
            module = module.rsplit(".", 1)[0]
    return READS.get(qualified)


_UNSEEN = object()


@functools.lru_cache(maxsize=None)
def _source_reads(module: str) -> dict[str, tuple[tuple[str, str], ...] | None]:
    """The functions a package module defines at its top level -> their :func:`reads` declaration (None: none).

    Only what the source shows plainly: ``@products.reads("01_tiling:tiles", *_CONSTANT)`` with string
    literals and module-level tuples of them. A function whose declaration is not plain is left out (the
    caller then imports the module); so is everything of a module that is not a package file.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.origin or not spec.origin.endswith(".py") or not module.startswith("histo_utils."):
        return {}
    tree = ast.parse(Path(spec.origin).read_text())
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                constants[node.targets[0].id] = value
    out: dict[str, tuple[tuple[str, str], ...] | None] = {}
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        out[node.name] = None
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and ast.unparse(dec.func) in ("products.reads", "reads")):
                continue
            refs = []
            for arg in dec.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    refs.append(arg.value)
                elif isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name) and arg.value.id in constants:
                    refs.extend(constants[arg.value.id])
                else:
                    refs = None
                    break
            if refs is None or dec.keywords:
                del out[node.name]  # not plain: the import finds it
            else:
                out[node.name] = _refs(refs)
            break
    return out


# --------------------------------------------------------------------------
# what a notebook reads: derived from its code
# --------------------------------------------------------------------------
@dataclass
class NotebookReads:
    """What a notebook reads of other notebooks, derived from its code (:func:`notebook_reads`).

    Attributes
    ----------
    notebook : str
    reads : dict, notebook -> keys of its products (declaration order); the notebook itself left out
    unknown : list of str, calls given ``out_dir`` that declare no reads (``module.function`` or the
        source): their reads cannot be known, the runner then counts every earlier notebook
    """

    notebook: str
    reads: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def upstream(self) -> list[str]:
        return sorted(self.reads)

    def add(self, notebook: str, keys: Iterable[str]) -> None:
        if notebook == self.notebook:
            return
        have = self.reads.setdefault(notebook, [])
        order = list(declared(notebook).files)
        for k in keys:
            if k not in have:
                have.append(k)
        have.sort(key=order.index)


def _code_cells(path: Path) -> tuple[list[str], set[str]]:
    """The code of a notebook's cells (IPython magics left out) and the names of its ``parameters`` cell."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    sources, params = [], set()
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        src = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in c.source.splitlines())
        sources.append(src)
        if "parameters" in c.metadata.get("tags", []):
            for node in ast.parse(src).body:
                targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
                params.update(t.id for t in targets if isinstance(t, ast.Name))
    return sources, params


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name of what the code imports from histo_utils."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "histo_utils":
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "histo_utils":  # import histo_utils.data [as d]
                    names[a.asname or "histo_utils"] = a.name if a.asname else "histo_utils"
    return names


def _qualified(node: ast.AST, names: Mapping[str, str]) -> str | None:
    """``data.load_tiling`` -> ``histo_utils.data.load_tiling`` (None: not something imported from histo_utils)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    return ".".join([names[node.id], *reversed(parts)])


def _mentions(node: ast.AST, name: str) -> bool:
    """Whether ``name`` appears in an expression, not counting calls nested in it (they are scanned themselves)."""
    if isinstance(node, ast.Name):
        return node.id == name
    if isinstance(node, ast.Call):
        return False
    return any(_mentions(c, name) for c in ast.iter_child_nodes(node))


_OUTPUTS_ATTRIBUTES = {"folder", "figure", "notebook"}


def notebook_reads(path: str | os.PathLike, *, stem: str | None = None) -> NotebookReads:
    """What a notebook reads of the other notebooks' products, from its code and the declarations.

    Counted as read:

    - ``products.outputs(out_dir, "NN_...")`` of another notebook: the keys the code takes from it
      (``d03.pairs``; every product of that notebook when the object is passed on whole);
    - every call given ``out_dir`` (as an argument or inside one, ``f"{out_dir}/cache"``): the products its
      function declares with :func:`reads` (``data.load_tiling(out_dir)``: ``01_tiling:tiles, samples``). A
      call that declares nothing is listed in ``unknown``;
    - the folder an earlier notebook writes where one of this notebook's parameters points (notebook 00's
      ``data_dir``: every notebook with a ``data_dir`` parameter reads ``00_synthetic_cohort:cohort``).

    Parameters
    ----------
    path : the notebook file
    stem : its name (default: the file's stem)

    Returns
    -------
    NotebookReads (also of a notebook whose own outputs are not declared here: what it reads of the declared
    ones). Code that opens another notebook's files by hand (``Path(out_dir) / ...``) is a call given
    ``out_dir`` that declares no reads: listed in ``unknown``.

    Raises
    ------
    ProductKeyError
        The code names a notebook or a key that is not declared (it would fail when it runs).
    """
    path = Path(path)
    stem = stem or path.stem
    sources, params = _code_cells(path)
    tree = ast.parse("\n".join(sources))
    names = _imports(tree)
    strings = {t.id: node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
               for t in node.targets if isinstance(t, ast.Name)}
    found = NotebookReads(stem)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    holders: dict[str, str] = {}  # variable -> the notebook whose outputs it holds
    outputs_calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _qualified(node.func, names) == "histo_utils.products.outputs":
            arg = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "notebook"), None)
            target = (arg.value if isinstance(arg, ast.Constant) else strings.get(getattr(arg, "id", None)))
            if not isinstance(target, str):
                found.unknown.append(f"products.outputs with notebook {ast.unparse(arg) if arg else '?'}")
                continue
            declared(target)
            outputs_calls.append(node)
            parent = parents.get(node)
            if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name):
                holders[parent.targets[0].id] = target
            elif isinstance(parent, ast.Attribute):
                _use(found, target, parent.attr)
            else:
                found.add(target, declared(target).files)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in holders and isinstance(node.ctx, ast.Load):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                _use(found, holders[node.id], parent.attr)
            else:
                found.add(holders[node.id], declared(holders[node.id]).files)
        if isinstance(node, ast.Call) and node not in outputs_calls:
            given = [*node.args, *(k.value for k in node.keywords)]
            if not any(_mentions(a, "out_dir") for a in given):
                continue
            qualified = _qualified(node.func, names)
            refs = reads_of(qualified) if qualified else None
            if refs is None:
                found.unknown.append(qualified or ast.unparse(node.func))
                continue
            for nb, key in refs:
                found.add(nb, [key])
    for nb in NOTEBOOKS.values():
        for p in nb.files.values():
            if p.parameter and p.parameter in params:
                found.add(nb.stem, [p.key])
    found.unknown = list(dict.fromkeys(found.unknown))
    return found


def _use(found: NotebookReads, notebook: str, attr: str) -> None:
    if attr in _OUTPUTS_ATTRIBUTES:
        if attr != "notebook":
            found.add(notebook, declared(notebook).files)
        return
    declared(notebook).get(attr)  # a misspelt key is refused before the run
    found.add(notebook, [attr])


def data_flow(notebooks_dir: str | os.PathLike | None = None) -> str:
    """The edges between the notebooks, one line each: ``01_tiling → 02_training: samples, tiles, ...``.

    Derived with :func:`notebook_reads` from the notebooks in ``notebooks_dir`` (default ``notebooks/``); a
    folder named by a parameter is shown with it (``cohort (data_dir)``). ARCHITECTURE.md's data flow is this
    text (``tests/test_products.py`` checks it).
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    edges = []
    for stem in NOTEBOOKS:
        path = folder / f"{stem}.ipynb"
        if not path.exists():
            continue
        found = notebook_reads(path)
        for src, keys in found.reads.items():
            shown = [f"{k} ({NOTEBOOKS[src].files[k].parameter})" if NOTEBOOKS[src].files[k].parameter else k
                     for k in keys]
            edges.append((src, stem, ", ".join(shown)))
    return "\n".join(f"{src} → {dst}: {keys}" for src, dst, keys in sorted(edges))
