"""Analysis-by-synthesis fitting (landmarks + MoFA photometric term + priors).

``fit_photo(model, image, landmarks68, FitConfig()) -> FaceParams``; see docs/fitting.md.
"""

from engine.fitting.config import FitConfig, changed_fields, fit_config
from engine.fitting.fitter import PhotoFit, fit_photo, model_cache, work_crop

__all__ = ["FitConfig", "PhotoFit", "changed_fields", "fit_config", "fit_photo", "model_cache", "work_crop"]
