"""Planted truth of the synthetic cohort: what each method should recover, and how well it did.

One submodule per method checked; each imports its method module, never the reverse (no module outside this
package imports it):

``cohort``         the planted cohort itself: notebook 00's summary, fields, program extremes, stain fading; the
                   cohort redrawn with its coupling cut (the controls of 04 and 05)
``features``       what each image feature carries of the planted drivers; the program trackers (02, used by all)
``correlation``    gene roles; recall and precision of the gene–feature scans, Table 7 by gene group (03)
``confounders``    planted confounder effects against the variance partition (05)
``enrichment``     each planted set in the GSEA ranking that should find it, against the decoys (06)
``visualization``  does gBP or the feature map of a program tracker point at the planted structure? (07)
``hti``            tile calls and HTI against the true clones of the tumour cohort (08)
``radiogenomics``  traits from the planted programs; masking and saliency against the planted sets (09)

Every public name is re-exported here (``truth.feature_truth(...)``).

Gene roles (``truth/genes.tsv``) fall into groups by how they reach an image:

``program``  program modules: expression and slide morphology share the latent program (direct coupling)
``tissue``   tissue-specific genes: coupled to image features through the tissue only (indirect)
``ischemia`` stress module: ischemic time drives it and also fades the slide (a shared confounder)
``null``     everything else (noise, low, constant, RIN module, sex genes): no path to the image
"""
from __future__ import annotations

from .cohort import (decoupled_log_expression, planted_summary, program_extremes, read_true_mask, stain_fading,
                     tissue_field)
from .confounders import planted_agreement, planted_unique_fraction, planted_vs_recovered, r2_by_role
from .correlation import (IMAGE_LINKED, best_within_tissue_r, gene_groups, gene_recovery, indirect_by_group,
                          pair_is_planted, scan_recovery)
from .enrichment import decoy_false_discoveries, gsea_planted_vs_decoys, gsea_recovery, gsea_truth_reading
from .features import feature_truth, program_trackers, tracking_by_layer, train_validation_feature_truth
from .hti import hti_agreement, tile_accuracy, true_combination_map
from .radiogenomics import masking_truth, planted_sets, program_traits, saliency_truth
from .visualization import (PROGRAM_STRUCTURE, PlantedStructures, channel_scores, localisation_reading,
                            localisation_tables, program_panel_tiles, random_features, structure_localisation,
                            tracker_localisation_rank, tracker_strength_rank)

__all__ = ["gene_groups", "gene_recovery", "feature_truth", "pair_is_planted", "planted_unique_fraction",
           "IMAGE_LINKED", "decoupled_log_expression", "planted_vs_recovered", "planted_agreement", "r2_by_role",
           "scan_recovery", "indirect_by_group", "best_within_tissue_r", "tracking_by_layer",
           "planted_summary", "read_true_mask", "tissue_field", "program_extremes", "stain_fading",
           "true_combination_map", "tile_accuracy", "hti_agreement",
           "train_validation_feature_truth", "program_trackers", "gsea_recovery", "decoy_false_discoveries",
           "PROGRAM_STRUCTURE", "PlantedStructures", "random_features",
           "tracker_strength_rank", "structure_localisation", "tracker_localisation_rank", "program_panel_tiles",
           "localisation_reading", "localisation_tables", "channel_scores", "gsea_planted_vs_decoys",
           "gsea_truth_reading", "program_traits", "planted_sets", "masking_truth", "saliency_truth"]
