"""Every figure of the notebooks: one function per figure, drawing only from a result passed in.

The computing is done by the method modules (tests, fits, bootstraps, network passes: e.g.
:func:`histo_utils.survival.logrank_comparisons`, :func:`histo_utils.visualization.feature_panel_maps`);
a function here draws the result it is given and returns the figure (and, where the notebook saves one, the
table behind it), which the notebook saves with :func:`histo_utils.plotting.save_figure`. Nothing here runs a
test, a fit, a network or a random draw; the only randomness is the seeded, cosmetic jitter of strip plots
(:func:`histo_utils.plotting.seeded_jitter`).

One submodule per method, every public name re-exported here (``figures.count_heatmaps(...)``):

=================  ====  ==========================================================================
submodule          NB    figures
=================  ====  ==========================================================================
``cohort``         00    confounders of the synthetic cohort, stain fading
``tiling``         01    tiles and slides per tissue, scanner resolution
``training``       02    classifier training curves, confusion matrices, layer-program tracking
``correlation``    03    expression floor, correlation histogram, counts, reproducibility, power
``crossvariance``  04    PC cross-correlations, shared variance against its null
``confounders``    05    variance partition, diagnostics, residuals, technical shared variance
``enrichment``     06    association counts, running enrichment scores, heatmaps, planted vs decoys
``visualization``  07    feature panels, linked view, program panels, localisation
``hti``            08    planted clones, cartographies, estimated vs true HTI
``trait_models``   08    tile-model training curves, Table 1, slide score distributions
``survival``       08    Kaplan-Meier panels, HTI by bulk label and subtype, Cox estimates
``radiogenomics``  09    model comparison, autoencoder loss, gene masking, saliency GSEA
=================  ====  ==========================================================================
"""
from __future__ import annotations

from . import (cohort, confounders, correlation, crossvariance, enrichment, hti, radiogenomics, survival, tiling,
               training, trait_models, visualization)
from .cohort import confounder_overview, fading_scatter
from .tiling import tiles_and_slides_per_tissue, resolution_overview
from .training import training_curves, layer_tracking_lines, confusion_heatmaps
from .correlation import (expression_floor_histogram, correlation_histogram, count_heatmaps, network_comparison_bars,
                          stacked_layer_bars, reproducibility_scatter, within_tissue_power)
from .crossvariance import pc_cross_heatmaps, shared_vs_null_dots, excess_by_layer, excess_strips
from .confounders import (variance_bars, confounder_diagnostics, residual_grid, bars_by_tissue, technical_scatter,
                          planted_scatter_and_roles)
from .enrichment import association_counts, enrichment_curves, annotated_heatmap, planted_vs_decoys
from .visualization import feature_panels, linked_view, program_panels, localisation
from .hti import (COMBINATION_COLOURS, TRAIT_MAP_COLOURS, SET_COLOURS, combination_cmap, planted_clones, cartographies,
                  hti_vs_truth)
from .trait_models import trait_training_curves, table1_auc, score_distributions
from .survival import km_curve, km_panel, logrank_panels, bulk_survival, hti_by_subtype, cox_hazard_ratios, KM_COLOURS
from .radiogenomics import model_comparison, training_loss, gene_masking, saliency_heatmap

__all__ = ["confounder_overview", "fading_scatter", "tiles_and_slides_per_tissue", "resolution_overview",
           "training_curves", "layer_tracking_lines", "confusion_heatmaps", "expression_floor_histogram",
           "correlation_histogram", "count_heatmaps", "network_comparison_bars", "stacked_layer_bars",
           "reproducibility_scatter", "within_tissue_power", "pc_cross_heatmaps", "shared_vs_null_dots",
           "excess_by_layer", "excess_strips", "variance_bars", "confounder_diagnostics", "residual_grid",
           "bars_by_tissue", "technical_scatter", "planted_scatter_and_roles", "association_counts",
           "enrichment_curves", "annotated_heatmap", "planted_vs_decoys", "feature_panels", "linked_view",
           "program_panels", "localisation", "COMBINATION_COLOURS", "TRAIT_MAP_COLOURS", "SET_COLOURS",
           "combination_cmap", "planted_clones", "cartographies", "hti_vs_truth", "trait_training_curves", "table1_auc",
           "score_distributions", "km_curve", "km_panel", "logrank_panels", "bulk_survival", "hti_by_subtype",
           "cox_hazard_ratios", "KM_COLOURS", "model_comparison", "training_loss", "gene_masking", "saliency_heatmap"]


#: the submodules, in the order of the notebooks
SUBMODULES = (cohort, tiling, training, correlation, crossvariance, confounders, enrichment,
              visualization, hti, trait_models, survival, radiogenomics)
