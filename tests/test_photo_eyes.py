"""Iris / sclera colour from the photo inside the iBUG-68 eye contours (engine.photo.eyes)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.photo.eyes import DEFAULT_IRIS, estimate_eye_colours, eye_pixels

IRIS = np.array([0.30, 0.52, 0.38])  # green-ish, far from the default brown


def _eye(img: np.ndarray, centre: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Paint one open eye (white corners, iris ring of IRIS, black pupil, a highlight) into
    ``img`` (float) and return its 6 contour landmarks (iBUG order: outer corner, two upper,
    inner corner, two lower)."""
    cx, cy = centre
    w, h = 30.0, 11.0  # half width, half height of the opening
    contour = np.array([[cx - w, cy], [cx - 0.35 * w, cy - h], [cx + 0.35 * w, cy - h],
                        [cx + w, cy], [cx + 0.35 * w, cy + h], [cx - 0.35 * w, cy + h]])
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    r = np.hypot(xx - cx, yy - cy)
    sclera = np.array([0.92, 0.90, 0.88])
    img[r < 40] = sclera + rng.normal(0, 0.01, (int((r < 40).sum()), 3))
    ring = r < 12.5
    img[ring] = IRIS + rng.normal(0, 0.02, (int(ring.sum()), 3))
    img[r < 4.0] = 0.02  # pupil
    img[(np.hypot(xx - cx - 3, yy - cy + 3) < 1.5)] = 1.0  # specular highlight
    return contour


def test_iris_colour_of_a_synthetic_eye_pair():
    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 0.7) * np.array([0.9, 0.7, 0.6])  # skin
    lm = np.zeros((68, 2))
    lm[:] = [150, 150]
    lm[36:42] = _eye(img, (90.0, 80.0), rng)
    lm[42:48] = _eye(img, (210.0, 80.0), rng)
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    est = estimate_eye_colours(u8, lm)
    assert est.source == "photo" and est.eyes_used == 2
    assert np.abs(np.array(est.iris_rgb) - IRIS).max() < 0.05, est.iris_rgb
    assert min(est.sclera_rgb) > 0.8  # the corners' white
    assert est.to_json()["source"] == "photo" and len(est.to_json()["iris_rgb"]) == 3
    # float input gives the same answer
    assert np.allclose(estimate_eye_colours(u8 / 255.0, lm).iris_rgb, est.iris_rgb, atol=1e-6)


def test_one_usable_eye_and_the_default():
    rng = np.random.default_rng(1)
    img = np.full((200, 300, 3), 0.5)
    lm = np.full((68, 2), 150.0)
    lm[36:42] = _eye(img, (90.0, 80.0), rng)
    lm[42:48] = [[200, 80], [205, 80], [210, 80], [215, 80], [210, 80.2], [205, 80.2]]  # closed eye
    est = estimate_eye_colours(img, lm)
    assert est.source == "photo" and est.eyes_used == 1
    assert np.abs(np.array(est.iris_rgb) - IRIS).max() < 0.05
    lm[36:42] = lm[42:48] - [120, 0]  # both closed
    est = estimate_eye_colours(img, lm)
    assert est.source == "default" and est.iris_rgb == DEFAULT_IRIS
    lm[36:48] = np.nan  # no landmarks at all: still the default, no error
    assert estimate_eye_colours(img, lm).source == "default"
    lm[36:48] = -500.0  # off the image
    assert estimate_eye_colours(img, lm).source == "default"
    with pytest.raises(ValueError):
        estimate_eye_colours(img, lm[:10])


def test_eye_pixels_takes_pixel_centres_inside():
    img = np.arange(10 * 10 * 3, dtype=np.float64).reshape(10, 10, 3) / 300.0
    square = np.array([[2.0, 2.0], [5.0, 2.0], [5.0, 5.0], [2.0, 5.0]])  # pixels 2..4 x 2..4
    px = eye_pixels(img, square)
    assert len(px) == 9
    assert np.allclose(np.sort(px[:, 0]), np.sort(img[2:5, 2:5, 0].ravel()))


def test_unlit_colours_take_the_light_out():
    """A warm, dim light on the eyes: dividing by the estimate's shading there gives the iris
    back its own colour and the sclera (its chroma mostly cut, its luma floored) near white;
    default colours (no photo) are kept as they are."""
    from engine.photo.eyes import DEFAULT_SCLERA, SCLERA_MIN_LUMA, EyeColours

    light = np.array([0.9, 0.6, 0.4])
    lit = EyeColours(tuple(IRIS * light), tuple(np.array([0.88, 0.86, 0.84]) * light), "photo", 2)
    out = lit.unlit(light)
    assert np.allclose(out.iris_rgb, IRIS, atol=1e-6)
    sclera = np.array(out.sclera_rgb)
    assert np.ptp(sclera) < 0.05 and sclera @ np.array([0.299, 0.587, 0.114]) >= SCLERA_MIN_LUMA - 1e-6
    tinted = np.array(lit.sclera_rgb)
    assert np.ptp(tinted) > 0.3  # what the photo showed: orange
    default = EyeColours(DEFAULT_IRIS, DEFAULT_SCLERA, "default", 0)
    assert default.unlit(light) is default
    assert out.to_json()["source"] == "photo"
