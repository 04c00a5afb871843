"""Real example photos that ship with our dependencies (no download): the faces the learned
methods are judged on besides the ray-traced validation set (docs/evaluation.md).

``EXAMPLE_PHOTOS`` names them; :func:`example_image` returns one as RGB uint8 ``(H, W, 3)``.

* ``astronaut``: Eileen Collins, NASA portrait (public domain), from scikit-image's data;
* ``grace_hopper``: Grace Hopper, US Navy portrait (public domain), from matplotlib's sample
  data (matplotlib comes with MediaPipe, the default detector).
"""

from __future__ import annotations

import numpy as np

from engine.errors import UserError

__all__ = ["EXAMPLE_PHOTOS", "example_image"]

EXAMPLE_PHOTOS = ("astronaut", "grace_hopper")


def example_image(name: str) -> np.ndarray:
    """The example photo ``name`` (one of ``EXAMPLE_PHOTOS``) as RGB uint8 ``(H, W, 3)``."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[..., :3])
    if name == "grace_hopper":
        try:
            from matplotlib import cbook
        except ImportError:
            raise UserError("the grace_hopper example needs matplotlib (installed by ./setup.sh with "
                            "MediaPipe)") from None
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            return np.asarray(im.convert("RGB")).copy()
    raise UserError(f"unknown example {name!r}; available: {', '.join(EXAMPLE_PHOTOS)}")
