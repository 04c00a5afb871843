"""Eye colours from the photo: iris and sclera inside the iBUG-68 eye contours.

:func:`estimate_eye_colours` rasterises each eye's landmark polygon (points 36–41: the
subject's right eye, 42–47: the left), ranks its pixels by luma and takes

* the iris: the per-channel median of the pixels between the 15th and 60th luma
  percentile — the brightest pixels are sclera and specular highlights, the darkest the
  pupil and lashes;
* the sclera: the per-channel median of the brightest 20 %, brightened to a luma of at least
  :data:`SCLERA_MIN_LUMA` (a shaded or lash-covered eye corner is not a grey eyeball).

Both eyes are averaged when both are usable; an eye whose polygon covers fewer than
:data:`MIN_EYE_PIXELS` pixels (closed, tiny, off the image, not finite) is skipped, and
with neither usable the colours fall back to :data:`DEFAULT_IRIS` / :data:`DEFAULT_SCLERA`.
Colours are sRGB in [0, 1], as the photo's pixels (shading included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: iBUG-68 contours of the two eyes (subject's right eye first, as the landmark scheme).
EYE_CONTOURS = (tuple(range(36, 42)), tuple(range(42, 48)))
DEFAULT_IRIS = (0.35, 0.24, 0.15)  # neutral brown, sRGB
DEFAULT_SCLERA = (0.85, 0.82, 0.78)  # off-white, sRGB
MIN_EYE_PIXELS = 24  # fewer pixels inside an eye contour: no estimate from that eye
IRIS_PERCENTILES = (15.0, 60.0)  # luma band of the iris pixels
SCLERA_FRACTION = 0.2  # the brightest fifth of an eye's pixels
SCLERA_MIN_LUMA = 0.6
SCLERA_CHROMA = 0.25  # share of the photo's sclera chroma :meth:`EyeColours.unlit` keeps
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class EyeColours:
    """Iris and sclera colour (sRGB, 3 floats in [0, 1]) and where they came from:
    ``"photo"`` (``eyes_used`` of the two contours were usable) or ``"default"``."""

    iris_rgb: tuple[float, float, float]
    sclera_rgb: tuple[float, float, float]
    source: str
    eyes_used: int

    def unlit(self, shading) -> "EyeColours":
        """The colours with the light taken out, as the texture's albedo is: the photo's
        colours divided by the estimate's shading at the eyes (``shading`` (3,) sRGB-space, as
        :func:`engine.texture.bake_albedo` divides the photo), the sclera kept at a luma of at
        least :data:`SCLERA_MIN_LUMA`. A coloured or dim light no longer tints the eyes (a
        yellow or green sclera). Default colours (no photo) are returned as they are."""
        if self.source != "photo":
            return self
        s = np.clip(np.asarray(shading, np.float64), 0.08, None)
        iris = np.clip(np.asarray(self.iris_rgb) / s, 0.0, 1.0)
        sclera = np.asarray(self.sclera_rgb) / s
        luma = float(sclera @ _LUMA)
        # a sclera is nearly neutral: what chroma the photo gives it is mostly the light's
        # colour left in the estimate and eyelid skin among its pixels
        sclera = luma + SCLERA_CHROMA * (sclera - luma)
        if luma < SCLERA_MIN_LUMA:
            sclera = sclera * SCLERA_MIN_LUMA / max(luma, 1e-3)
        return EyeColours(tuple(float(c) for c in iris), tuple(float(c) for c in np.clip(sclera, 0.0, 1.0)),
                          self.source, self.eyes_used)

    def to_json(self) -> dict:
        return {"iris_rgb": [round(float(c), 4) for c in self.iris_rgb],
                "sclera_rgb": [round(float(c), 4) for c in self.sclera_rgb],
                "source": self.source, "eyes_used": int(self.eyes_used)}


def eye_pixels(rgb: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Pixels ``(N, 3)`` float in [0, 1] whose centres lie inside ``polygon (K, 2)`` (pixel-edge
    coordinates: pixel (i, j) covers [j, j+1) x [i, i+1)). Empty for a non-finite polygon."""
    from matplotlib.path import Path

    poly = np.asarray(polygon, np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or not np.isfinite(poly).all():
        return np.zeros((0, 3))
    H, W = rgb.shape[:2]
    lo = np.floor(poly.min(0)).astype(int)
    hi = np.ceil(poly.max(0)).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], W), min(hi[1], H)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 3))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    mask = Path(poly).contains_points(centres).reshape(yy.shape)
    region = rgb[y0:y1, x0:x1]
    px = region[mask].astype(np.float64)
    return px / 255.0 if rgb.dtype == np.uint8 else px


def _one_eye(px: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(iris, sclera) sRGB of one eye's pixels, or None when there are too few."""
    if len(px) < MIN_EYE_PIXELS:
        return None
    luma = px @ _LUMA
    lo, hi = np.percentile(luma, IRIS_PERCENTILES)
    iris_px = px[(luma >= lo) & (luma <= hi)]
    if len(iris_px) == 0:
        return None
    iris = np.median(iris_px, axis=0)
    bright = px[luma >= np.percentile(luma, 100.0 * (1.0 - SCLERA_FRACTION))]
    sclera = np.median(bright, axis=0)
    s_luma = float(sclera @ _LUMA)
    if s_luma < SCLERA_MIN_LUMA:
        sclera = sclera * SCLERA_MIN_LUMA / max(s_luma, 1e-3) if s_luma > 0.05 else np.array(DEFAULT_SCLERA)
    return np.clip(iris, 0.0, 1.0), np.clip(sclera, 0.0, 1.0)


def estimate_eye_colours(rgb: np.ndarray, landmarks68: np.ndarray) -> EyeColours:
    """Iris and sclera colour of the face whose iBUG-68 landmarks ``(68, 2+)`` (pixel-edge
    coordinates of ``rgb``) are given; ``rgb (H, W, 3)`` uint8 or float in [0, 1]."""
    lm = np.asarray(landmarks68, np.float64)
    if lm.ndim != 2 or lm.shape[0] != 68 or lm.shape[1] < 2:
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"rgb must be (H, W, 3), got {img.shape}")
    img = img[..., :3]
    found = [e for e in (_one_eye(eye_pixels(img, lm[list(idx), :2])) for idx in EYE_CONTOURS) if e is not None]
    if not found:
        return EyeColours(DEFAULT_IRIS, DEFAULT_SCLERA, "default", 0)
    iris = np.mean([f[0] for f in found], axis=0)
    sclera = np.mean([f[1] for f in found], axis=0)
    return EyeColours(tuple(float(c) for c in iris), tuple(float(c) for c in sclera), "photo", len(found))
