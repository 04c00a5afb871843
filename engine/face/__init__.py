"""One face decoder: ``FaceParams`` (what every predictor returns) -> ``FaceDecoder`` ->
``Decoded`` (geometry, projection, landmarks, shading, visibility, images).

See docs/architecture.md for how the fitter, the learned methods, the synthetic generator
and the output writers share it.
"""

from engine.face.decoder import Decoded, FaceDecoder, ReflectanceModel
from engine.face.params import FaceParams, stack_params
from engine.face.reflectance import LaplacianReflectance, laplacian_basis

__all__ = ["Decoded", "FaceDecoder", "FaceParams", "LaplacianReflectance", "ReflectanceModel", "laplacian_basis",
           "stack_params"]
