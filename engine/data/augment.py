"""Training-time augmentation of face items, for every data source.

Configured by ``data.options.augment`` (or a mixed source's ``options.augment``)::

    data:
      options:
        augment: {scale: 0.1, shift: 0.05, rotation_deg: 10, flip: 0.5,
                  brightness: 0.2, contrast: 0.2, saturation: 0.2, colour: 0.05,
                  blur: 0.2, blur_sigma: [0.5, 1.5], noise: 0.01, repeats: 1, seed: 0}

:class:`AugmentedFaces` wraps any data set of items ``{"image": (3,S,S) or (T,3,S,S) in
[0, 1], "landmarks": (68,2) or (T,68,2) px, ...}``; ``build_dataset`` applies it to the
training split. One draw per item (a clip's frames move together), from a generator seeded
with ``[seed, index]``, so items stay deterministic per index (exact resume); ``repeats``
> 1 makes an epoch show each source item that many times with different draws.

* geometry: a similarity about the image centre (scale ``1 ± scale``, shift ``± shift`` of
  the size, rotation ``± rotation_deg``), applied to the image, the landmarks, any other
  ``(…, S, S)`` tensor of the item (nearest neighbour) and a synthetic item's camera
  (``gt_K``, ``gt_R``, ``gt_t``: ``K' = [[s·f, 0, A·c], [0, s·f, ·], [0, 0, 1]]``,
  ``R' = R_z R``, ``t' = R_z t``, exact for square pixels), so ground-truth projections
  still land on the warped landmarks;
* horizontal flip with probability ``flip``: the image is mirrored, landmarks mirrored
  (``u → S − u``) and re-indexed with the iBUG-68 mirror permutation
  (:data:`IBUG68_MIRROR`, an involution), ``landmarks_valid`` permuted alike. Items with 3-D
  ground truth (``gt_*`` keys) are never flipped: a mirrored head is not in the model's
  identity space;
* colour: brightness (gain ``1 ± brightness``), contrast and saturation (blend with the
  mean grey / the luma by ``1 ± …``), per-channel gain ``1 ± colour`` (white balance),
  Gaussian blur with probability ``blur`` (sigma drawn from ``blur_sigma`` px), Gaussian
  noise of std ``noise``; results clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import ConfigError


def _ibug68_mirror() -> tuple[int, ...]:
    """Index of each iBUG-68 point's left/right counterpart (points on the midline map to themselves)."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw line
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose base
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes (corners, lids)
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: iBUG-68 mirror permutation: after a horizontal flip, point ``i`` is the flipped ``IBUG68_MIRROR[i]``.
IBUG68_MIRROR = _ibug68_mirror()


@dataclass
class AugmentConfig:
    """Ranges of the random augmentation (0 = off); see the module docstring."""

    scale: float = 0.0
    shift: float = 0.0
    rotation_deg: float = 0.0
    flip: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    colour: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise: float = 0.0
    repeats: int = 1
    seed: int = 0

    @property
    def geometric(self) -> bool:
        return bool(self.scale or self.shift or self.rotation_deg)


def parse_augment(data: Mapping[str, Any] | AugmentConfig | None, where: str = "data.options.augment") -> AugmentConfig | None:
    """An :class:`AugmentConfig` from a config mapping (None/empty = no augmentation);
    unknown keys and out-of-range values are a :class:`ConfigError` naming the key."""
    if data is None or isinstance(data, AugmentConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{where}' must be a mapping of augmentation ranges, got {data!r}")
    if not data:
        return None
    from engine.train.config import from_dict

    cfg = from_dict(AugmentConfig, dict(data), where + ".")
    for name in ("scale", "shift", "brightness", "contrast", "saturation", "colour", "noise"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and 0 <= v < 1):
            raise ConfigError(f"config key '{where}.{name}' must be a finite number in [0, 1), got {v!r}")
    for name in ("flip", "blur"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise ConfigError(f"config key '{where}.{name}' is a probability in [0, 1], got {v!r}")
    if not (math.isfinite(cfg.rotation_deg) and 0 <= cfg.rotation_deg <= 90):
        raise ConfigError(f"config key '{where}.rotation_deg' must be in [0, 90] degrees, got {cfg.rotation_deg!r}")
    lo, hi = (tuple(cfg.blur_sigma) + (None, None))[:2]
    if len(cfg.blur_sigma) != 2 or not (0 < lo <= hi < 20):
        raise ConfigError(f"config key '{where}.blur_sigma' must be two sigmas 0 < low <= high < 20 px, "
                          f"got {list(cfg.blur_sigma)}")
    if isinstance(cfg.repeats, bool) or not isinstance(cfg.repeats, int) or cfg.repeats < 1:
        raise ConfigError(f"config key '{where}.repeats' must be an integer >= 1, got {cfg.repeats!r}")
    return cfg


def similarity(size: tuple[int, int], scale: float = 1.0, angle: float = 0.0,
               shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """2×3 matrix (pixel-edge coordinates) scaling by ``scale`` and rotating by ``angle``
    (radians, counter-clockwise on screen) about the image centre, then shifting by ``shift`` px."""
    H, W = size
    c = np.array([W / 2.0, H / 2.0])
    # v points down, so a counter-clockwise turn on screen is a clockwise one in (u, v)
    ca, sa = math.cos(angle), math.sin(angle)
    M = scale * np.array([[ca, sa], [-sa, ca]])
    return np.hstack([M, (c + np.asarray(shift) - M @ c)[:, None]])


def _warp(img: np.ndarray, A: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Warp ``(H, W, C)`` float32 by ``A`` (pixel edges) with OpenCV (pixel centres)."""
    import cv2

    H, W = img.shape[:2]
    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    m = (shift_out @ np.vstack([A, [0, 0, 1]]) @ shift_in)[:2]
    out = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(img.shape)


def _apply_points(A: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(A, dtype=pts.dtype)
    return pts @ a[:, :2].T + a[:, 2]


def _camera(item: dict[str, Any], A: np.ndarray) -> None:
    """Move a synthetic item's camera with the image warp ``A`` (square pixels)."""
    K, R, t = item["gt_K"], item["gt_R"], item["gt_t"]
    s = float(np.hypot(A[0, 0], A[1, 0]))
    ang = math.atan2(-A[0, 1], A[0, 0])  # A's 2-D rotation, as a rotation about the optical axis
    ca, sa = math.cos(ang), math.sin(ang)
    Rz = torch.tensor([[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]], dtype=R.dtype)
    K2 = K.clone()
    K2[..., 0, 0] = K[..., 0, 0] * s
    K2[..., 1, 1] = K[..., 1, 1] * s
    pp = _apply_points(A, K[..., :2, 2])
    K2[..., 0, 2], K2[..., 1, 2] = pp[..., 0], pp[..., 1]
    item["gt_K"], item["gt_R"] = K2, Rz @ R
    item["gt_t"] = t @ Rz.T


#: item keys in UV space (not image-aligned, whatever their size): never warped or flipped
UV_SPACE_KEYS = frozenset({"gt_displacement"})


def _image_aligned(key: str, value: Any, H: int, W: int) -> bool:
    """Whether an item entry is a per-pixel map of the ``H × W`` image (warped with it)."""
    return (key != "image" and key not in UV_SPACE_KEYS and torch.is_tensor(value) and value.dim() >= 2
            and tuple(value.shape[-2:]) == (H, W))


def augment_item(item: Mapping[str, Any], cfg: AugmentConfig, rng: np.random.Generator) -> dict[str, Any]:
    """One random augmentation of an item (see the module docstring); returns a new dict."""
    out = dict(item)
    img = out["image"]
    H, W = img.shape[-2:]
    has_gt = any(k.startswith("gt_") for k in out)
    # draw everything up front so the draws do not depend on the item's content
    s = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    ang = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    sh = rng.uniform(-cfg.shift, cfg.shift, 2) * np.array([W, H])
    flip = rng.uniform() < cfg.flip
    gain = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    sat = 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
    wb = 1.0 + rng.uniform(-cfg.colour, cfg.colour, 3)
    blur = rng.uniform() < cfg.blur
    sigma = rng.uniform(*cfg.blur_sigma)
    noise_seed = int(rng.integers(0, 2**31))
    if flip and has_gt:
        flip = False
    lead = img.shape[:-3]
    x = img.reshape(-1, *img.shape[-3:]).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)  # (N, H, W, 3)
    if cfg.geometric:
        A = similarity((H, W), s, ang, tuple(sh))
        x = np.stack([_warp(f, A) for f in x])
        out["landmarks"] = _apply_points(A, out["landmarks"])
        for k, v in item.items():
            if _image_aligned(k, v, H, W):
                flat = v.reshape(-1, H, W).permute(1, 2, 0).contiguous().numpy()
                warped = _warp(flat.astype(np.float32), A, nearest=True)
                out[k] = torch.from_numpy(warped.reshape(H, W, -1)).permute(2, 0, 1).reshape(v.shape).to(v.dtype)
        if all(k in out for k in ("gt_K", "gt_R", "gt_t")):
            _camera(out, A)
    if flip:
        x = x[:, :, ::-1]
        perm = torch.tensor(IBUG68_MIRROR)
        lm = out["landmarks"].clone()
        lm[..., 0] = W - lm[..., 0]
        out["landmarks"] = lm[..., perm, :]
        if "landmarks_valid" in out:
            out["landmarks_valid"] = out["landmarks_valid"][..., perm]
        for k, v in item.items():
            if _image_aligned(k, v, H, W):
                out[k] = out[k].flip(-1)
    # colour, in display space as the images are stored
    if cfg.saturation:
        luma = (x @ np.array([0.2126, 0.7152, 0.0722], np.float32))[..., None]
        x = luma + (x - luma) * sat
    if cfg.brightness or cfg.colour:
        x = x * (gain * wb).astype(np.float32)
    if cfg.contrast:
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = mean + (x - mean) * contrast
    if blur:
        import cv2

        x = np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE) for f in x])
    if cfg.noise:
        x = x + np.random.default_rng(noise_seed).normal(0, cfg.noise, x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    out["image"] = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).reshape(*lead, 3, H, W).to(img.dtype)
    return out


class AugmentedFaces(Dataset):
    """``dataset`` with a random augmentation per item (deterministic per index);
    ``len = repeats × len(dataset)``, item ``i`` augments ``dataset[i mod len(dataset)]``."""

    def __init__(self, dataset: Dataset, cfg: AugmentConfig | Mapping[str, Any]) -> None:
        parsed = parse_augment(cfg)
        self.dataset = dataset
        self.cfg = parsed if parsed is not None else AugmentConfig()

    def __len__(self) -> int:
        return len(self.dataset) * self.cfg.repeats

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        item = self.dataset[i % len(self.dataset)]
        return augment_item(item, self.cfg, np.random.default_rng([self.cfg.seed, i]))

    def __getattr__(self, name: str) -> Any:  # the wrapped data set's attributes (skipped, paths, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


__all__ = ["IBUG68_MIRROR", "AugmentConfig", "AugmentedFaces", "augment_item", "parse_augment", "similarity"]
