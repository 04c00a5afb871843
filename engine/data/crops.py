"""Training crops made like inference makes them, from whole synthetic frames.

The realistic generator renders whole frames (the face anywhere, 10–90 % of the width);
a learned method sees ``engine.photo.align_crop(photo, landmarks, size, scale=1.25)`` crops
around *detected* landmarks (:meth:`engine.methods.base.LearnedMethod.predict_photo`). This
module turns a whole-frame item into such a crop, in one place:

* the crop is placed by :func:`engine.photo.face_frame` of the ground-truth landmarks, its
  centre and side then jittered like a detector's landmarks move them (``centre_jitter``:
  sd of the centre offset per axis relative to the face size, ``scale_bias`` / ``scale_jitter``:
  mean / sd of the log side; measured on the generator's own frames, docs/training.md), and cut by
  :func:`engine.photo.align_crop` from the uint8 frame (same interpolation and border as at
  inference); faces rolled beyond ``upright_deg`` are cropped upright, as ``predict_photo``
  does beyond 45°;
* the landmarks and every other ``(F, F)`` tensor of the item (occlusion masks) move with
  the crop (nearest neighbour for masks), and the ground-truth camera is mapped into the
  crop: for ``crop = A · photo`` (2×3 similarity, in-plane turn ``θ``),
  ``K_crop = A₃ · K · R_roll``, ``R_crop = R_rollᵀ · R``, ``t_crop = R_rollᵀ · t``, the exact
  inverse of :meth:`engine.photo.Crop.camera_to_image` (``R_roll`` = identity for crops that
  keep the roll), so the true projection lands on the cropped landmarks.

Configured by ``data.options.crop`` of a synthetic data set::

    data:
      image_size: 128              # the crop (the network's input)
      options:
        generator: realistic
        cache: runs/realistic224   # whole frames of crop.frame_size px
        crop: {frame_size: 224, scale: 1.25, centre_jitter: 0.02, scale_bias: -0.057, scale_jitter: 0.06}

One draw per item from a generator seeded ``[seed, split, index]`` (deterministic per
index, so exact resume holds); further random similarity jitter per epoch is the
augmentation's (:mod:`engine.data.augment`), which moves the camera the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from engine.errors import ConfigError

__all__ = ["CropConfig", "parse_crop", "crop_camera", "crop_item", "crop_box"]


@dataclass
class CropConfig:
    """Where a training crop is cut from a whole frame (see the module docstring)."""

    frame_size: int = 224  # side of the whole frames (rendered, or in the cache)
    scale: float = 1.25  # crop side / face size (predict_photo's default)
    centre_jitter: float = 0.0  # sd of the crop centre offset per axis, fraction of the face size
    scale_bias: float = 0.0  # mean of the log crop side (a detector's face frame vs the true landmarks')
    scale_jitter: float = 0.0  # sd of the log crop side
    upright_deg: float = 45.0  # faces rolled beyond this are cropped upright (predict_photo: 45°)
    seed: int = 0


def parse_crop(data: Mapping[str, Any] | CropConfig | None, where: str = "data.options.crop") -> CropConfig | None:
    """A :class:`CropConfig` from a config mapping (None = whole frames, no crop); unknown keys
    and out-of-range values are a :class:`ConfigError` naming the key."""
    if data is None or isinstance(data, CropConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{where}' must be a mapping (frame_size, scale, ...), got {data!r}")
    from engine.train.config import from_dict

    cfg = from_dict(CropConfig, dict(data), where + ".")
    if isinstance(cfg.frame_size, bool) or not isinstance(cfg.frame_size, int) or cfg.frame_size < 16:
        raise ConfigError(f"config key '{where}.frame_size' must be an integer >= 16 px, got {cfg.frame_size!r}")
    if not (math.isfinite(cfg.scale) and 0.5 <= cfg.scale <= 4.0):
        raise ConfigError(f"config key '{where}.scale' must be in [0.5, 4], got {cfg.scale!r}")
    for name in ("centre_jitter", "scale_jitter"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and 0 <= v < 0.5):
            raise ConfigError(f"config key '{where}.{name}' must be a finite number in [0, 0.5), got {v!r}")
    if not (math.isfinite(cfg.scale_bias) and abs(cfg.scale_bias) < 0.5):
        raise ConfigError(f"config key '{where}.scale_bias' must be a finite number in (-0.5, 0.5), got {cfg.scale_bias!r}")
    if not (math.isfinite(cfg.upright_deg) and 0 <= cfg.upright_deg <= 180):
        raise ConfigError(f"config key '{where}.upright_deg' must be in [0, 180] degrees, got {cfg.upright_deg!r}")
    return cfg


def crop_box(landmarks68: np.ndarray, cfg: CropConfig, rng: np.random.Generator | None = None
             ) -> tuple[np.ndarray, float | None]:
    """The box ``(x0, y0, x1, y1)`` (before ``cfg.scale``) and the explicit crop rotation
    (None = keep the roll) for a face's iBUG-68 points, jittered by ``rng``."""
    from engine.photo import face_frame

    centre, size, angle = face_frame(landmarks68)
    d = rng.normal(0.0, 1.0, 3) if rng is not None else np.zeros(3)
    centre = centre + d[:2] * cfg.centre_jitter * size
    size = size * math.exp(cfg.scale_bias + d[2] * cfg.scale_jitter)
    rotation = angle if abs(angle) > math.radians(cfg.upright_deg) else None
    h = 0.5 * size
    return np.array([centre[0] - h, centre[1] - h, centre[0] + h, centre[1] + h]), rotation


def crop_camera(crop, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A photo camera ``K, R, t`` as the camera of ``crop`` (an :class:`engine.photo.Crop`):
    the inverse of :meth:`engine.photo.Crop.camera_to_image`."""
    A = np.vstack([crop.matrix, [0.0, 0.0, 1.0]])
    c, s = math.cos(crop.rotation), math.sin(crop.rotation)
    R_roll = np.eye(3)
    R_roll[:2, :2] = [[c, s], [-s, c]]  # image_from_crop's rotation, as in camera_to_image
    K_crop = A @ K.double().numpy() @ R_roll
    K_crop[np.abs(K_crop) < 1e-9] = 0.0
    Rr = torch.tensor(R_roll.T, dtype=R.dtype)
    return torch.tensor(K_crop, dtype=K.dtype), Rr @ R, t @ Rr.T


def _warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``(F, F[, C])`` array cut by the crop ``matrix`` (pixel edges), nearest neighbour, border 0."""
    import cv2

    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    m = (shift_out @ np.vstack([matrix, [0, 0, 1]]) @ shift_in)[:2]
    return cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def crop_item(item: Mapping[str, Any], size: int, cfg: CropConfig, rng: np.random.Generator | None = None
              ) -> dict[str, Any]:
    """The ``size``-px crop of a whole-frame item ``{"image": (3, F, F) in [0, 1] (or uint8), "landmarks":
    (68, 2), ["gt_K", "gt_R", "gt_t"], other (F, F) tensors, ...}`` (see the module docstring).
    Adds ``crop_matrix (2, 3)`` (crop = matrix · frame pixels)."""
    from engine.photo import align_crop

    out = dict(item)
    img = item["image"]
    F = img.shape[-1]
    box, rotation = crop_box(item["landmarks"].double().numpy(), cfg, rng)
    if img.dtype == torch.uint8:
        frame = img.permute(1, 2, 0).numpy()
    else:
        frame = (img.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    crop = align_crop(frame, box, size=size, scale=cfg.scale, rotation=rotation)
    dtype = torch.float32 if img.dtype == torch.uint8 else img.dtype
    out["image"] = torch.from_numpy(crop.image).permute(2, 0, 1).to(dtype) / 255.0
    out["landmarks"] = torch.from_numpy(crop.to_crop(item["landmarks"].double().numpy())).to(item["landmarks"].dtype)
    for k, v in item.items():
        if k != "image" and torch.is_tensor(v) and v.dim() == 2 and tuple(v.shape) == (F, F):
            arr = v.numpy().astype(np.uint8) if v.dtype == torch.bool else v.float().numpy()
            out[k] = torch.from_numpy(_warp_mask(arr, crop.matrix, size)).to(v.dtype)
    if all(k in item for k in ("gt_K", "gt_R", "gt_t")):
        out["gt_K"], out["gt_R"], out["gt_t"] = crop_camera(crop, item["gt_K"], item["gt_R"], item["gt_t"])
    out["crop_matrix"] = torch.from_numpy(crop.matrix.astype(np.float32))
    return out
