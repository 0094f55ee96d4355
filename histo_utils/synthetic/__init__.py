"""The embedded default data: a synthetic GTEx-like cohort with planted truth.

:mod:`~histo_utils.synthetic.histology` paints H&E slides whose look follows
latent programs; :mod:`~histo_utils.synthetic.cohort` draws donors, samples,
expression and confounders and writes everything in GTEx's own formats.
"""
from .cohort import (FILE_NAMES, CohortParams, design_cohort, expression_only_log, load_cohort_params, make_cohort,
                     planted_coupling, render_truth, simulate_expression)
from .histology import PROGRAMS, TISSUES, RenderedSlide, SlideSpec, render_slide

__all__ = ["FILE_NAMES", "CohortParams", "design_cohort", "expression_only_log", "load_cohort_params", "make_cohort",
           "planted_coupling", "render_truth", "simulate_expression", "PROGRAMS", "TISSUES", "RenderedSlide",
           "SlideSpec", "render_slide"]
