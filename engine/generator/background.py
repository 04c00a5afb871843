"""Backgrounds behind the head (sRGB, ``(S, S, 3)`` float32 in [0, 1]).

Kinds (weights in ``RealisticConfig.background_weights``):

* ``photo`` — a random crop (scaled, flipped, colour-jittered; grey pictures tinted) of a
  picture that ships with scikit-image (coffee, cat, rocket, Hubble field, motorcycle,
  bricks, grass, gravel, coins, moon, a page of text, ...; the ones showing people are left
  out);
* ``room`` — a wall with a floor line, windows, doors and shelves as soft rectangles;
* ``noise`` — coloured multi-octave noise;
* ``bokeh`` — out-of-focus lights (blurred discs) on a dark gradient;
* ``studio`` — a smooth radial backdrop.

The camera's depth of field is applied by the caller (a Gaussian blur whose width grows with
the focal length, see :func:`background_blur_px`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("photo", "room", "noise", "bokeh", "studio")
#: scikit-image's bundled pictures used as backgrounds (no people: astronaut, camera and the
#: LFW faces are excluded on purpose)
PHOTOS = ("coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "motorcycle_left.png", "color.png",
          "ihc.png", "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png", "page.png", "text.png",
          "clock_motion.png", "chessboard_RGB.png", "cell.png")
_PHOTO_CACHE: dict[str, np.ndarray] = {}
MAX_PHOTO_SIDE = 512


def _photos() -> list[np.ndarray]:
    """The bundled pictures as float32 RGB (loaded once; missing files are skipped)."""
    if not _PHOTO_CACHE:
        from PIL import Image

        try:
            import skimage.data

            folder = Path(skimage.data.__file__).parent
        except ImportError:
            folder = None
        for name in PHOTOS:
            p = folder / name if folder is not None else None
            if p is None or not p.is_file():
                continue
            im = Image.open(p).convert("RGB")
            im.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.Resampling.LANCZOS)  # crops are resized anyway
            _PHOTO_CACHE[name] = np.asarray(im, np.float32) / 255.0
        if not _PHOTO_CACHE:
            _PHOTO_CACHE["_none"] = np.zeros((0, 0, 3), np.float32)
    return [v for v in _PHOTO_CACHE.values() if v.size]


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Multi-octave value noise ``(size, size)`` roughly in [-1, 1]."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        out += amp * _resize(rng.uniform(-1, 1, (cells, cells)).astype(np.float32), size)
        total += amp
        amp *= 0.55
    return out / total


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    from engine.generator.tones import lab_to_srgb

    lab = np.stack([rng.uniform(15, 90, n), rng.uniform(-30, 30, n), rng.uniform(-30, 40, n)], 1)
    return lab_to_srgb(lab).astype(np.float32)


def _photo(rng: np.random.Generator, size: int) -> np.ndarray:
    photos = _photos()
    if not photos:
        return _studio(rng, size)
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.25, 1.0) * min(h, w))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = _resize(img[y0:y0 + side, x0:x0 + side], size)
    if rng.uniform() < 0.5:
        patch = patch[:, ::-1]
    grey = np.ptp(patch.reshape(-1, 3).mean(0)) < 0.02 and np.abs(patch[..., 0] - patch[..., 2]).mean() < 0.02
    if grey:  # tint grey pictures
        patch = patch.mean(-1, keepdims=True) * _palette(rng, 1)[0] * 1.3
    patch = patch * rng.uniform(0.6, 1.2, 3).astype(np.float32) ** 0.3 * rng.uniform(0.6, 1.2)
    return np.ascontiguousarray(np.clip(patch, 0, 1), np.float32)


def _room(rng: np.random.Generator, size: int) -> np.ndarray:
    wall, floor, *others = _palette(rng, 6)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = wall[None, None] * (1 + 0.25 * (yy - 0.5) * rng.uniform(-1, 1)) * np.ones((size, size, 1), np.float32)
    horizon = rng.uniform(0.55, 1.1)
    img = np.where(yy > horizon, floor[None, None] * np.ones_like(img), img)
    for _ in range(int(rng.integers(1, 5))):
        x0, x1 = np.sort(rng.uniform(-0.1, 1.1, 2))
        y0, y1 = np.sort(rng.uniform(-0.1, 1.0, 2))
        c = others[int(rng.integers(len(others)))] if rng.uniform() < 0.7 else np.full(3, rng.uniform(0.85, 1.0), np.float32)
        sl = (slice(int(y0 * size), max(int(y1 * size), int(y0 * size) + 1)), slice(int(x0 * size), max(int(x1 * size), int(x0 * size) + 1)))
        img[sl] = c
    img = img * (1 + 0.06 * _noise(rng, size, 3))[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def _noise_bg(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = _palette(rng, 2)
    w = (0.5 + 0.5 * _noise(rng, size, int(rng.integers(2, 6))))[..., None]
    return np.clip(a * (1 - w) + b * w, 0, 1).astype(np.float32)


def _bokeh(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    base = _palette(rng, 1)[0] * rng.uniform(0.05, 0.35)
    img = np.ones((size, size, 3), np.float32) * base
    layer = np.zeros_like(img)
    for _ in range(int(rng.integers(8, 40))):
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        r = int(rng.uniform(0.02, 0.09) * size) + 1
        col = tuple(float(x) for x in _palette(rng, 1)[0] * rng.uniform(0.4, 1.0))
        cv2.circle(layer, c, r, col, -1)
    layer = cv2.GaussianBlur(layer, (0, 0), size * 0.006 + 0.5)
    return np.clip(img + layer, 0, 1)


def _studio(rng: np.random.Generator, size: int) -> np.ndarray:
    c = _palette(rng, 1)[0]
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.2, 0.8, 2)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    w = np.clip(1 - rng.uniform(0.3, 0.9) * r, 0.1, 1)[..., None].astype(np.float32)
    return np.clip(c * w, 0, 1).astype(np.float32)


def sample_background(rng: np.random.Generator, size: int, weights: dict[str, float]) -> tuple[str, np.ndarray]:
    """(kind, sRGB image ``(size, size, 3)``)."""
    kinds = [k for k in KINDS if weights.get(k, 0) > 0] or ["studio"]
    w = np.array([weights.get(k, 1.0) for k in kinds], float)
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    fn = {"photo": _photo, "room": _room, "noise": _noise_bg, "bokeh": _bokeh, "studio": _studio}[kind]
    return kind, fn(rng, size)


def background_blur_px(rng: np.random.Generator, focal_mm: float, distance_m: float, image_size: int) -> float:
    """Gaussian sigma (pixels) of the background's defocus: grows with the focal length and
    with nearness of the subject (a random aperture from f/1.8 to f/16)."""
    f_number = float(np.exp(rng.uniform(np.log(1.8), np.log(16))))
    f = focal_mm / 1000.0
    # blur circle of a far background focused at distance d: f² / (N (d − f)), on a 36 mm sensor
    coc_mm = (f * f / (f_number * max(distance_m - f, 0.05))) * 1000.0
    return float(np.clip(coc_mm / 36.0 * image_size * 0.5, 0.0, image_size * 0.04))
