"""Aligned face chips as dlib makes them (``get_face_chip_details`` + ``extract_image_chips``),
in torch, differentiable with respect to the image (and to the landmarks).

dlib fits a similarity transform (least squares) from a mean-face template, scaled into a
``size``×``size`` chip with ``padding`` (0.25 for the face-recognition network), to the
landmarks: the 5 points of dlib's 5-point predictor, or 33 of the iBUG-68 points (17–67
without the eyebrows 17–26 and the lower lip 55–59, 65–67). It then samples the chip with
bilinear interpolation. Here the sampling is ``grid_sample`` (so an identity loss can
back-propagate into a rendering); where dlib would shrink the face by more than 2× it first
builds an image pyramid, which we approximate with 2×2 average pooling (``antialias``).

Pixel convention: the engine's (``docs/conventions.md``): pixel centres at integer + 0.5,
for both the landmarks and the chip. dlib puts pixel centres at integers; the conversion is
done here. Chips are float (B, C, size, size) in the input's range; dlib's uint8 chips
truncate (``floor``) the interpolated value, which :func:`extract_face_chip` can mimic with
``quantize=True`` (not differentiable).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# dlib's 5-point template (points: right eye outer, right eye inner, left eye outer,
# left eye inner, nose bottom; as dlib's shape_predictor_5_face_landmarks orders them)
TEMPLATE_5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])

# dlib's mean face for iBUG-68 points 17..67
_MEAN_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689]
_MEAN_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182]
# the iBUG-68 points dlib aligns on: no eyebrows (17-26), no lower lip (55-59, 65-67)
INDICES_68 = np.array([i for i in range(17, 68)
                       if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])
TEMPLATE_68 = np.stack([np.array(_MEAN_X), np.array(_MEAN_Y)], axis=1)[INDICES_68 - 17]


def chip_template(num_points: int, size: int = 150, padding: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(indices into the landmarks, (N, 2) template points in dlib chip pixels)."""
    if num_points == 5:
        idx, tmpl = np.arange(5), TEMPLATE_5
    elif num_points == 68:
        idx, tmpl = INDICES_68, TEMPLATE_68
    else:
        raise ValueError(f"dlib aligns faces from 5 or 68 landmarks, got {num_points}")
    return idx, (padding + tmpl) / (2 * padding + 1) * size


def similarity_transform(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity ``dst ≈ s·R·src + t`` (no reflection): (B, N, 2) × 2 ->
    (B, 2, 3) ``[[a, -b, tx], [b, a, ty]]`` (what dlib's ``find_similarity_transform``
    computes for non-degenerate points; differentiable)."""
    ms, md = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    xs, xd = src - ms, dst - md
    denom = (xs ** 2).sum(dim=(1, 2))
    a = (xs * xd).sum(dim=(1, 2)) / denom
    b = (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0]).sum(dim=1) / denom
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = md[:, 0] - (rot @ ms[:, 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], dim=-1)


def face_chip_transform(landmarks: Tensor, size: int = 150, padding: float = 0.25) -> Tensor:
    """(B, 2, 3) affine map from chip pixel coordinates to image pixel coordinates (both in
    the engine's convention, centres at +0.5), as dlib's ``get_face_chip_details`` +
    ``extract_image_chips`` place a chip. ``landmarks``: (B, 5, 2) dlib 5-point or
    (B, 68, 2) iBUG-68 points in image pixels (engine convention)."""
    if landmarks.dim() != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (B, N, 2), got {tuple(landmarks.shape)}")
    idx, tmpl = chip_template(landmarks.shape[1], size, padding)
    pts = landmarks[:, torch.as_tensor(idx, device=landmarks.device)] - 0.5  # dlib pixels
    src = torch.as_tensor(tmpl, dtype=landmarks.dtype, device=landmarks.device).expand_as(pts)
    tform = similarity_transform(src, pts)
    rot_scaled = tform[:, :, :2]
    scale = torch.linalg.vector_norm(rot_scaled[:, :, 0], dim=-1)  # (B,)
    rot = rot_scaled / scale[:, None, None]
    # dlib: rect = centered_drect(tform(size/2, size/2), size·s, size·s) (width-1 between the
    # corner pixels), rotated about its centre; chip corner pixels (0,0), (size-1, 0), ...
    half = torch.full_like(scale, size / 2.0)
    centre = (rot_scaled @ torch.stack([half, half], -1)[..., None])[..., 0] + tform[:, :, 2]
    step = (size * scale - 1) / (size - 1)  # image pixels per chip pixel
    lin = rot * step[:, None, None]
    mid = (size - 1) / 2.0
    # chip (dlib px) q -> centre + lin·(q - mid); engine px: q = x - 0.5, image + 0.5
    offset = centre - (lin @ torch.full_like(centre, mid + 0.5)[..., None])[..., 0] + 0.5
    return torch.cat([lin, offset[..., None]], dim=-1)


def _pyramid_levels(transform: Tensor, size: int) -> list[int]:
    """How many 2× reductions dlib's ``extract_image_chips`` applies first (its pyramid
    level + 1): while the chip's footprint shrunk by 2 still has more pixels than the chip."""
    scale = torch.linalg.vector_norm(transform[:, :, 0], dim=-1).detach().cpu().tolist()
    levels = []
    for s in scale:
        side, n = size * s + 1.0, 0  # footprint side ≈ (size-1)·step + 1 ≈ size·s
        while (side / 2.0) ** 2 > size * size:
            side /= 2.0
            n += 1
        levels.append(n)
    return levels


def extract_face_chip(images: Tensor, transform: Tensor, size: int = 150, antialias: bool = True,
                      quantize: bool = False) -> Tensor:
    """Sample (B, C, size, size) chips from (B, C, H, W) ``images`` with the (B, 2, 3) maps of
    :func:`face_chip_transform` (bilinear, zeros outside the image; differentiable unless
    ``quantize``, which floors 0..1 images to dlib's uint8 levels)."""
    if images.dim() != 4 or transform.shape != (images.shape[0], 2, 3):
        raise ValueError(f"images (B, C, H, W) and transform (B, 2, 3) expected, got "
                         f"{tuple(images.shape)} and {tuple(transform.shape)}")
    b = images.shape[0]
    levels = _pyramid_levels(transform, size) if antialias else [0] * b
    coords = (torch.arange(size, device=images.device, dtype=transform.dtype) + 0.5)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    chip_pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(-1, 3)  # (S², 3)
    out = []
    for i in range(b):
        img = images[i:i + 1]
        pts = chip_pts @ transform[i].T  # (S², 2) image pixels, engine convention
        for _ in range(levels[i]):
            img = F.avg_pool2d(img, 2, 2, ceil_mode=True)
            pts = pts / 2.0
        h, w = img.shape[-2:]
        grid = torch.stack([pts[:, 0] * (2.0 / w) - 1.0, pts[:, 1] * (2.0 / h) - 1.0], dim=-1)
        grid = grid.reshape(1, size, size, 2).to(img.dtype)
        out.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    chips = torch.cat(out, dim=0)
    if quantize:
        chips = torch.floor(chips * 255.0 + 1e-4).clamp(0, 255) / 255.0
    return chips


def face_chip(images: Tensor, landmarks: Tensor, size: int = 150, padding: float = 0.25,
              antialias: bool = True) -> Tensor:
    """dlib's ``get_face_chip(img, shape, size, padding)`` for a batch: (B, C, H, W) images
    and (B, 5|68, 2) landmarks (engine pixel convention) -> (B, C, size, size)."""
    return extract_face_chip(images, face_chip_transform(landmarks, size, padding), size, antialias)
