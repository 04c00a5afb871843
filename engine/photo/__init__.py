"""Photo intake: robust image loading and face crops that keep their transform.

``load_image(path) -> Photo`` (RGB uint8, EXIF applied, original size kept) and
``align_crop(rgb, landmarks68_or_box, size=224) -> Crop`` with ``to_image``/``to_crop``.
See docs/photo_intake.md.
"""

from engine.photo.crop import Crop, align_crop, crop_matrix, face_frame, landmark_box
from engine.photo.io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, Photo, display_name, downscale, load_image

__all__ = [
    "Crop", "align_crop", "crop_matrix", "face_frame", "landmark_box",
    "DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "Photo", "display_name", "downscale", "load_image",
]
