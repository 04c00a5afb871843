"""Aligned crops keep an exact, invertible similarity transform."""

from __future__ import annotations

import numpy as np
import pytest

from engine.photo import align_crop, face_frame


def synthetic_landmarks(centre=(300.0, 200.0), iod=80.0, angle=0.0) -> np.ndarray:
    """A rough frontal iBUG-68 layout (eyes, nose, mouth, jaw) around ``centre``."""
    rng = np.random.default_rng(3)
    pts = rng.normal(scale=0.05, size=(68, 2))
    pts[0:17] = np.stack([np.linspace(-0.9, 0.9, 17), 0.2 + 0.9 * np.cos(np.linspace(-1.3, 1.3, 17))], 1)
    pts[17:27] = np.stack([np.linspace(-0.8, 0.8, 10), np.full(10, -0.45)], 1)
    pts[27:36] = np.stack([np.zeros(9), np.linspace(-0.2, 0.45, 9)], 1)
    pts[36:42] = [-0.5, 0.0] + pts[36:42] * 2
    pts[42:48] = [0.5, 0.0] + pts[42:48] * 2
    pts[36], pts[45] = [-0.75, 0.0], [0.75, 0.0]
    pts[48:68] = np.stack([np.linspace(-0.4, 0.4, 20), np.full(20, 0.8)], 1)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T * (iod / 1.5) + centre


def test_round_trip_is_exact():
    rgb = np.zeros((400, 600, 3), np.uint8)
    lm = synthetic_landmarks(angle=0.4)
    for kw in ({}, {"rotate": True}, {"rotation": -0.2}, {"size": 112, "scale": 2.0}):
        crop = align_crop(rgb, lm, **kw)
        pts = np.random.default_rng(0).uniform(0, 500, (10, 2))
        assert np.allclose(crop.to_image(crop.to_crop(pts)), pts)
        assert crop.image.shape == (crop.size, crop.size, 3)
        m = crop.matrix[:, :2]
        assert np.allclose(m @ m.T, crop.scale ** 2 * np.eye(2))   # similarity, no shear


def test_pixel_lands_where_the_matrix_says():
    """A single bright pixel must appear at matrix @ its centre (pixel edges at integers)."""
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[120, 140] = 255                     # centre at (140.5, 120.5)
    for box, size in (((100, 80, 200, 180), 200), ((100, 80, 200, 180), 300)):
        crop = align_crop(rgb, np.array(box, float), size=size, scale=1.0, border="constant")
        expect = crop.to_crop(np.array([[140.5, 120.5]]))[0]
        img = crop.image[..., 0].astype(float)
        ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
        centroid = np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum() + 0.5
        assert np.allclose(centroid, expect, atol=0.05), (centroid, expect)


def test_downscaling_crop_is_antialiased_and_placed():
    rgb = np.zeros((2000, 2000, 3), np.uint8)
    rgb[1000:1100, 900:1000] = 255          # 100 px white square
    crop = align_crop(rgb, np.array([500.0, 500.0, 1500.0, 1500.0]), size=100, scale=1.0)
    assert crop.scale == pytest.approx(0.1)
    img = crop.image[..., 0].astype(float)
    ys, xs = np.mgrid[:100, :100]
    centroid = np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum() + 0.5
    assert np.allclose(centroid, crop.to_crop(np.array([[950.0, 1050.0]]))[0], atol=0.1)
    assert img.sum() == pytest.approx(100 * 255, rel=0.05)   # area preserved


def test_pose_preserved_by_default_and_levelled_on_request():
    lm = synthetic_landmarks(angle=0.5)
    rgb = np.zeros((400, 600, 3), np.uint8)
    kept = align_crop(rgb, lm)
    assert kept.rotation == pytest.approx(0.0)
    levelled = align_crop(rgb, lm, rotate=True)
    eyes = levelled.to_crop(np.stack([lm[36:42].mean(0), lm[42:48].mean(0)]))
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and eyes[0, 0] < eyes[1, 0]
    inside = levelled.to_crop(lm)
    assert (inside > 0).all() and (inside < 224).all()
    _, _, angle = face_frame(lm)
    d = lm[42:48].mean(0) - lm[36:42].mean(0)
    assert angle == pytest.approx(np.arctan2(d[1], d[0]))
    assert angle == pytest.approx(0.5, abs=0.1)


def test_bad_shape_rejected():
    with pytest.raises(ValueError):
        align_crop(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)))


def test_resized_crop_is_the_same_region():
    """Crop.resized: the matrix of align_crop at the new size, and a bright square lands where it says."""
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[100:140, 120:160] = 255  # centre (140, 120)
    box = np.array((80, 60, 200, 180), float)
    big = align_crop(rgb, box, size=240, scale=1.5)
    small = big.resized(60)
    ref = align_crop(rgb, box, size=60, scale=1.5)
    assert small.size == 60 and small.image.shape == (60, 60, 3)
    assert np.allclose(small.matrix, ref.matrix) and np.allclose(small.inverse, ref.inverse)
    img = small.image[..., 0].astype(float)
    ys, xs = np.mgrid[:60, :60]
    centroid = np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum() + 0.5
    assert np.allclose(centroid, small.to_crop(np.array([[140.0, 120.0]]))[0], atol=0.1)
    assert np.abs(small.image.astype(int) - ref.image.astype(int)).mean() < 3
