"""Analysis-by-synthesis fitting (landmarks + MoFA photometric term + priors).

``fit_photo(model, image, landmarks68, FitConfig()) -> FitResult``; see docs/fitting.md.
"""

from engine.fitting.config import FitConfig
from engine.fitting.fitter import FitResult, fit_photo, model_cache, sample_image, vertex_visibility

__all__ = ["FitConfig", "FitResult", "fit_photo", "model_cache", "sample_image", "vertex_visibility"]
