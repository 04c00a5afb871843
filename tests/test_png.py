"""engine.export.png: the fast PNG encoder gives files every reader decodes to the same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine.export.png import encode_png


@pytest.mark.parametrize("shape,mode", [((5, 7), "L"), ((5, 7, 1), "L"), ((3, 4, 2), "LA"), ((33, 17, 3), "RGB"),
                                        ((6, 2, 4), "RGBA"), ((1, 1, 3), "RGB")])
def test_png_round_trip(shape, mode):
    import cv2
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    data = encode_png(a)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == mode and im.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(im).reshape(shape), a)
    if mode == "RGB":  # a second decoder (libpng through OpenCV)
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(back[..., ::-1], a)


def test_png_compresses_smooth_images_and_refuses_other_inputs():
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    assert len(encode_png(ramp)) < ramp.nbytes / 20  # the Up filter turns a ramp's rows into zeros
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 5), np.uint8))
