"""Head pose and camera of a realistic sample.

Head pose (pitch, yaw, roll) is drawn either uniformly over the full ranges (probability
``wide_pose_probability``) or from a normal around frontal; the camera is a pinhole with a
35-mm-equivalent focal length drawn log-uniformly (``f_px = f_mm / 36 mm · W``) and a face
whose width (iBUG jaw points 0–16, metres) fills ``face_fraction`` of the image width
(log-uniform), which sets the distance (never closer than ``min_distance_m``); the face is
then placed anywhere in the frame that keeps its centre at least half a face from the edges.
The global head pose is the camera's ``R, t`` (docs/conventions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.render.camera import frontal_rotation
from engine.render.rotation import euler_to_matrix

SENSOR_WIDTH_MM = 36.0


@dataclass
class Shot:
    """Sampled head angles (pitch, yaw, roll; radians, XYZ Euler of the head seen from a
    frontal camera), focal length, face fraction and the image point the face is aimed at."""

    angles: np.ndarray
    focal_mm: float
    face_fraction: float
    aim_px: np.ndarray


def _angle(rng: np.random.Generator, limit: float, sd: float, wide: bool) -> float:
    if wide:
        return float(rng.uniform(-limit, limit))
    return float(np.clip(rng.normal(0.0, sd), -limit, limit))


def sample_shot(rng: np.random.Generator, cfg, image_size: int) -> Shot:
    """Angles, focal length, framing and aim point (``cfg``: a RealisticConfig)."""
    wide = rng.uniform() < cfg.wide_pose_probability
    sd = cfg.pose_sd_deg
    angles = np.radians([_angle(rng, cfg.pitch_deg, sd[0], wide), _angle(rng, cfg.yaw_deg, sd[1], wide),
                         _angle(rng, cfg.roll_deg, sd[2], wide)])
    f_mm = float(np.exp(rng.uniform(*np.log(cfg.focal_mm))))
    frac = float(np.exp(rng.uniform(*np.log(cfg.face_fraction))))
    margin = 0.5 * min(frac, 0.95)
    aim = rng.uniform(margin, 1 - margin, 2) * image_size if margin < 0.5 else np.full(2, image_size / 2.0)
    return Shot(angles, f_mm, frac, aim)


def head_rotation(angles: np.ndarray) -> torch.Tensor:
    """Camera rotation ``R (3, 3)`` of head angles (frontal camera times the head's turn)."""
    return frontal_rotation() @ euler_to_matrix(torch.tensor(angles, dtype=torch.float32), "XYZ")


def place_camera(shot: Shot, face_centre: torch.Tensor, face_width_m: float, image_size: int,
                 min_distance_m: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``K (3, 3)``, ``R (3, 3)``, ``t (3,)`` and the distance (m) that show the face centre
    (model frame) at ``shot.aim_px`` with its width spanning ``shot.face_fraction``."""
    S = image_size
    f = shot.focal_mm / SENSOR_WIDTH_MM * S
    d = max(f * face_width_m / (shot.face_fraction * S), min_distance_m)
    K = torch.tensor([[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]], dtype=torch.float32)
    R = head_rotation(shot.angles)
    aim = torch.tensor([(shot.aim_px[0] - S / 2) * d / f, (shot.aim_px[1] - S / 2) * d / f, d], dtype=torch.float32)
    return K, R, aim - R @ face_centre, d
