"""The project's ray-traced validation set: random heads rendered by Blender Cycles.

Validation only (never train on it): it measures how methods trained on
:mod:`engine.generator`'s rasterised faces do on images from an independent renderer,
with an independent skin model, real perspective (35–85 mm full-frame-equivalent lenses)
and head poses beyond the generator's range.

    python -m engine.eval cycles-set build --out data/cycles_val [--n 100] [--seed 0]
        [--model ict|open] [--size 256] [--samples 32] [--threads 0] [--start I --stop J]

Each sample ``k`` (its own generator, seeded ``[seed, k]``) is

* a head of the head model (ICT Face Model Light, scan-based, when ``../shared`` has it,
  else the open model; the set records which): identity ~ N(0, std²) clipped at 2.5 std,
  0–3 ARKit expressions, jaw, gaze;
* scan-like skin: a per-vertex albedo drawn from tone anchors spanning very light to very
  dark skin (Fitzpatrick-like), low-frequency mottling, redness, lips, brows, freckles or
  stubble, hair on the scalp, eyes with sclera/iris/pupil, teeth and gums (ICT), rendered
  with Cycles' Principled BSDF (random-walk subsurface scattering, a pore bump map that
  perturbs normals only, so the per-vertex albedo *is* the ground truth);
* light: a key light (area or sun, colour temperature 2,800–7,500 K), a fill, sometimes
  a rim light, and a coloured gradient environment; one fixed exposure for the whole set
  (no auto-exposure, so dark skin renders dark);
* a perspective camera with a 35–85 mm lens on a 36 mm-wide sensor, yaw ±40°, pitch ±20°,
  roll ±15°, the face 30–55 % of the image width, off-centre by up to 8 %;
* a background plane behind the head with a photo texture (scikit-image's bundled photos
  without faces) or a procedural texture.

Files per sample in ``DIR``: ``NNNNN.png`` (the render, sRGB), ``NNNNN_mask.png`` (head
pixels from Cycles' object-index pass) and ``NNNNN.npz`` (ground truth, see
:func:`load_sample`); ``DIR/set.json`` records the model, seed, config and render times.
Ground truth is a function of the seed alone; the pixels are identical for the same Blender
build and sample count. Colour conventions: the engine's albedo lives in image (sRGB-encoded)
space (its renderer writes ``albedo × shading`` straight to 8-bit), so ``albedo`` in the
ground truth is sRGB-encoded and Blender receives its linear version; ``skin_luminance`` is
the median Rec. 709 luma of ``albedo`` over the face region's skin (lips and brows excluded).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.errors import ConfigError, UserError
from engine.head.model import HeadModel

SET_FILE = "set.json"
FORMAT = "engine.cycles_val/1"
LUMA = np.array([0.2126, 0.7152, 0.0722])

# sRGB skin tones from very light to very dark (a Fitzpatrick-like ladder, I..VI and darker)
SKIN_TONES = np.array([
    [0.96, 0.83, 0.76], [0.92, 0.75, 0.64], [0.84, 0.64, 0.51], [0.74, 0.54, 0.41],
    [0.62, 0.43, 0.31], [0.48, 0.32, 0.23], [0.36, 0.23, 0.17], [0.24, 0.15, 0.11],
])
HAIR_COLOURS = np.array([[0.05, 0.04, 0.035], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.62, 0.48, 0.30],
                         [0.55, 0.25, 0.12], [0.55, 0.55, 0.55]])
IRIS_COLOURS = np.array([[0.25, 0.13, 0.06], [0.12, 0.07, 0.04], [0.30, 0.42, 0.55], [0.32, 0.40, 0.25],
                         [0.42, 0.30, 0.15]])
# background photos bundled with scikit-image that show no face
BACKGROUND_PHOTOS = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "hubble_deep_field",
                     "immunohistochemistry", "colorwheel", "logo", "moon", "page", "retina", "clock", "coins")
# iBUG-68 points that pin a face: eye corners, nose tip, mouth corners (NoW's seven)
NOSE_TIP = 30


@dataclass
class CyclesSetConfig:
    """What the set's sampler draws and how Cycles renders it."""

    image_size: int = 256
    samples: int = 16  # Cycles samples per pixel (adaptive), denoised with OpenImageDenoise
    denoise: bool = True
    threads: int = 0  # 0 = Cycles' automatic thread count
    focal_mm: tuple[float, float] = (35.0, 85.0)  # full-frame equivalent (36 mm wide sensor)
    yaw_deg: float = 40.0
    pitch_deg: float = 20.0
    roll_deg: float = 15.0
    face_fraction: tuple[float, float] = (0.30, 0.55)  # face width (jaw landmarks 0-16) / image width
    centre_jitter: float = 0.08  # landmark centroid offset, fraction of the image size
    identity_clip: float = 2.5  # prior std
    n_expressions: tuple[int, int] = (0, 3)
    expression_max: float = 0.7
    jaw_max_rad: float = 0.3
    gaze_deg: float = 10.0
    face_radius_m: float = 0.095  # face region: face skin within this distance of the nose tip (NoW-style)
    # photos per person: samples k .. k + views - 1 (k a multiple of views) show one head
    # (identity, skin albedo and material) under their own pose, expression, camera, light and
    # background; 1 = every sample another person (the set drawn exactly as before the option)
    views: int = 1


@dataclass
class CyclesSample:
    """One validation sample (ground truth in metres; camera frame = OpenCV)."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray | None  # (H, W) bool head pixels (Cycles' object index), None if absent
    gt: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.gt["model"])


# ----------------------------------------------------------------------------- regions
def face_region(head: HeadModel, radius_m: float = 0.095) -> np.ndarray:
    """(V,) bool: the head model's ``face_skin`` within ``radius_m`` of the template's nose
    tip (iBUG point 30): the NoW-style face region, defined the same way for every model."""
    with torch.no_grad():
        tip = head.landmarks(head.template[None])[0, NOSE_TIP].cpu().numpy()
    X = head.template.detach().cpu().numpy()
    return head.regions["face_skin"].cpu().numpy() & (np.linalg.norm(X - tip, axis=1) <= radius_m)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of ``(..., 3)`` colours."""
    return np.asarray(rgb, np.float64) @ LUMA


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Linear RGB tint (max 1) of a black body at ``kelvin`` (Helland's fit, 1,000-40,000 K)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    c = srgb_to_linear(np.clip(np.array([r, g, b]) / 255.0, 0, 1))
    return c / c.max()


# ----------------------------------------------------------------------------- the sampler
class _Parts:
    """Per-model vertex classes and template features (computed once per head model)."""

    def __init__(self, head: HeadModel, radius_m: float) -> None:
        X = head.template.detach().cpu().numpy().astype(np.float64)
        reg = {k: v.cpu().numpy() for k, v in head.regions.items()}
        with torch.no_grad():
            lm = head.landmarks(head.template[None])[0].cpu().numpy().astype(np.float64)
        V = len(X)
        self.X, self.lm, self.V = X, lm, V
        self.face = face_region(head, radius_m)
        names = head.joint_names
        J = head.joint_template.detach().cpu().numpy()
        self.eye_centres = [J[names.index(n)] for n in ("eye_left", "eye_right") if n in names]
        self.eyes = reg["eyes"].copy()
        self.mouth = reg["mouth_interior"].copy()
        self.teeth = np.zeros(V, bool)
        self.lashes = np.zeros(V, bool)
        self.hidden = np.zeros(V, bool)
        if head.name == "ict":  # the model's documented vertex ranges: teeth, lashes, helper meshes
            from engine.head.ict import RANGES

            def rng(name: str) -> np.ndarray:
                m = np.zeros(V, bool)
                m[RANGES[name][0]:RANGES[name][1] + 1] = True
                return m

            self.teeth, self.lashes, self.hidden = rng("teeth"), rng("eyelashes"), rng("eye_extras")
        self.skin = ~(self.eyes | self.mouth | self.lashes | self.hidden)
        self.scalp = reg["scalp_neck"] & (X[:, 1] > 0.035) & self.skin
        # lips: inside the outer lip contour (iBUG 48-59) seen from the front, on the face skin
        from matplotlib.path import Path as MplPath

        lips = MplPath(np.vstack([lm[48:60, :2], lm[48:49, :2]]))
        self.lips = lips.contains_points(X[:, :2]) & reg["face_skin"] & (X[:, 2] > lm[48:60, 2].min() - 0.012)
        # distance to the brow polylines (iBUG 17-21, 22-26)
        d = np.full(V, np.inf)
        for a in list(range(17, 21)) + list(range(22, 26)):
            p, q = lm[a], lm[a + 1]
            s = np.clip((X - p) @ (q - p) / max(float((q - p) @ (q - p)), 1e-12), 0, 1)
            d = np.minimum(d, np.linalg.norm(X - (p + s[:, None] * (q - p)), axis=1))
        self.brow_dist = np.where(reg["face_skin"], d, np.inf)
        self.chin_zone = reg["face_skin"] & (X[:, 1] < lm[33, 1]) & ~self.lips  # beard / stubble area
        self.cheeks = [lm[2] * 0.45 + lm[31] * 0.55, lm[14] * 0.45 + lm[35] * 0.55]
        self.nose_tip = lm[NOSE_TIP]
        self.material = self._materials()

    def _materials(self) -> np.ndarray:
        """Per-vertex shader: 0 skin, 1 hair, 2 eye, 3 mouth / teeth."""
        m = np.zeros(self.V, np.int64)
        m[self.scalp | self.lashes] = 1
        m[self.eyes] = 2
        m[self.mouth] = 3
        return m


_PARTS: dict[tuple[int, float], _Parts] = {}


def _parts(head: HeadModel, radius_m: float) -> _Parts:
    key = (id(head), radius_m)
    hit = _PARTS.get(key)
    if hit is None:
        _PARTS.clear()
        hit = _PARTS[key] = _Parts(head, radius_m)
    return hit


def _noise_field(X: np.ndarray, rng: np.random.Generator, scales_m: tuple[float, ...], n_waves: int = 6) -> np.ndarray:
    """Smooth random scalar field (V,) with unit-ish amplitude: random Fourier features at
    the given wavelengths over template positions (the texture is attached to the skin)."""
    out = np.zeros(len(X))
    for wl in scales_m:
        for _ in range(n_waves):
            k = rng.normal(size=3)
            k *= 2 * np.pi / wl / np.linalg.norm(k)
            out += np.cos(X @ k + rng.uniform(0, 2 * np.pi)) / np.sqrt(n_waves * len(scales_m))
    return out


def draw_albedo(head: HeadModel, rng: np.random.Generator, radius_m: float = 0.095) -> dict[str, Any]:
    """Per-vertex sRGB albedo (V, 3) with its skin-tone draw (``tone`` in [0, 1], 0 = the
    lightest anchor) and the face-region skin mask the luminance is measured on."""
    P = _parts(head, radius_m)
    X = P.X
    tone = rng.uniform(0.0, 1.0)
    pos = tone * (len(SKIN_TONES) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(SKIN_TONES) - 1)
    base = SKIN_TONES[lo] * (1 - (pos - lo)) + SKIN_TONES[hi] * (pos - lo)
    base = np.clip(base * np.exp(rng.normal(0, [0.04, 0.05, 0.06])), 0.02, 0.98)  # undertone
    lum = luminance(base)
    # mottling: relative log-albedo variation at 4-8 cm and 1-2 cm
    rel = 0.06 * _noise_field(X, rng, (0.07, 0.04)) + 0.03 * _noise_field(X, rng, (0.015,))
    alb = base[None] * np.exp(rel)[:, None]
    # redness: cheeks and nose (less visible on dark skin)
    red_amp = rng.uniform(0.0, 0.12) * (0.4 + lum)
    for c, r in [(P.cheeks[0], 0.022), (P.cheeks[1], 0.022), (P.nose_tip, 0.012)]:
        w = np.exp(-np.sum((X - c) ** 2, axis=1) / (2 * r * r)) * red_amp
        alb = alb * (1 - w[:, None] * np.array([0.0, 0.35, 0.30]))
    # freckles (light skin) or moles: small dark spots on the face
    n_spots = int(rng.poisson(40 * max(0.0, 0.5 - tone))) if rng.uniform() < 0.4 else int(rng.integers(0, 3))
    face_idx = np.flatnonzero(P.face)
    for v in rng.choice(face_idx, size=min(n_spots, len(face_idx)), replace=False):
        r = rng.uniform(0.001, 0.0025)
        w = np.exp(-np.sum((X - X[v]) ** 2, axis=1) / (2 * r * r)) * rng.uniform(0.15, 0.45)
        alb = alb * (1 - w[:, None] * np.array([0.35, 0.5, 0.6]))
    hair = np.clip(HAIR_COLOURS[rng.integers(0, len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2), 0.02, 0.9)
    if rng.uniform() < 0.25:  # stubble: chin and upper lip darkened towards the hair colour
        w = (P.chin_zone * rng.uniform(0.15, 0.4))[:, None]
        alb = alb * (1 - w) + w * (0.5 * alb + 0.5 * hair)
    lip_tint = np.array([0.92, 0.62, 0.66]) * rng.uniform(0.85, 1.05)
    alb[P.lips] = alb[P.lips] * lip_tint
    brow_w = np.clip((rng.uniform(0.004, 0.006) - P.brow_dist) / 0.002, 0, 1) * rng.uniform(0.5, 0.9)
    alb = alb * (1 - brow_w[:, None]) + brow_w[:, None] * hair
    alb[P.scalp] = hair
    alb[P.lashes] = hair * 0.5
    # eyes: sclera, iris, pupil by the angle from each eyeball's forward axis (+Z)
    iris = np.clip(IRIS_COLOURS[rng.integers(0, len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2), 0.02, 0.9)
    eye = np.flatnonzero(P.eyes)
    alb[eye] = np.array([0.86, 0.83, 0.80])
    if P.eye_centres and len(eye):
        centres = np.stack(P.eye_centres)
        near = np.argmin(np.linalg.norm(X[eye][:, None] - centres[None], axis=2), axis=1)
        d = X[eye] - centres[near]
        cos = d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-9)
        alb[eye[cos > np.cos(np.radians(32))]] = iris
        alb[eye[cos > np.cos(np.radians(13))]] = 0.02
    alb[P.mouth] = np.array([0.45, 0.16, 0.16])
    alb[P.teeth] = np.array([0.85, 0.82, 0.72])
    alb = np.clip(alb, 0.01, 0.98)
    skin_face = P.face & P.skin & ~P.lips & (brow_w < 0.05) & ~P.scalp
    return {"albedo": alb.astype(np.float32), "tone": float(tone), "base": base, "hair": hair,
            "skin_luminance": float(np.median(luminance(alb[skin_face]))),
            "skin_face": skin_face}


def _rotation(angles: np.ndarray) -> np.ndarray:
    from engine.render.camera import frontal_rotation
    from engine.render.rotation import euler_to_matrix

    return (frontal_rotation(torch.float64) @ euler_to_matrix(torch.tensor(angles, dtype=torch.float64), "XYZ")).numpy()


def head_angles(R: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) degrees of a head rotation ``R = F @ Rx(pitch) Ry(yaw) Rz(roll)``
    (``F`` = the frontal camera rotation; the inverse of the sampler's draw)."""
    from engine.render.camera import FRONTAL_R

    E = np.asarray(FRONTAL_R) @ np.asarray(R, np.float64)
    yaw = np.arcsin(np.clip(E[0, 2], -1, 1))
    pitch = np.arctan2(-E[1, 2], E[2, 2])
    roll = np.arctan2(-E[0, 1], E[0, 0])
    return np.degrees([pitch, yaw, roll])


def sample_scene(head: HeadModel, seed: int, index: int, cfg: CyclesSetConfig | None = None) -> dict[str, Any]:
    """Everything about sample ``index`` of set ``seed`` (deterministic): the head's
    coefficients, camera, albedo, lights and background, and the posed geometry."""
    cfg = cfg or CyclesSetConfig()
    if cfg.views > 1:  # the person's own draws (identity, albedo, skin) apart from the photo's
        person = np.random.default_rng([seed, index // cfg.views])
        rng = np.random.default_rng([seed, index // cfg.views, index % cfg.views, cfg.views])
    else:
        rng = person = np.random.default_rng([seed, index])
    S = cfg.image_size
    K_id = head.n_identity
    std = head.identity_std.detach().cpu().numpy()
    ident = np.clip(person.normal(0, 1, K_id), -cfg.identity_clip, cfg.identity_clip) * std
    expr = np.zeros(head.n_expression)
    names = list(head.expression_names)
    has_jaw = "jaw" in head.joint_names
    pool = [i for i, n in enumerate(names) if not (has_jaw and n == "jawOpen")]
    for i in rng.choice(pool, size=int(rng.integers(cfg.n_expressions[0], cfg.n_expressions[1] + 1)), replace=False):
        lo, hi = head.expression_range[i].tolist()
        expr[i] = np.clip(rng.uniform(0.1, cfg.expression_max), lo, hi)
    pose = np.zeros((head.n_joints, 3))
    if has_jaw and rng.uniform() < 0.5:
        pose[head.joint_names.index("jaw"), 0] = rng.uniform(0.02, cfg.jaw_max_rad)
    gaze = np.radians(rng.uniform(-cfg.gaze_deg, cfg.gaze_deg, 2))
    for n in ("eye_left", "eye_right"):
        if n in head.joint_names:
            pose[head.joint_names.index(n), :2] = gaze
    with torch.no_grad():
        out = head(torch.tensor(ident, dtype=torch.float32)[None], torch.tensor(expr, dtype=torch.float32)[None],
                   torch.tensor(pose, dtype=torch.float32)[None] if head.n_joints else None)
        verts = out.vertices[0].double().cpu().numpy()
        lm3 = head.landmarks(out.vertices)[0].double().cpu().numpy()
    angles = np.radians([rng.uniform(-cfg.pitch_deg, cfg.pitch_deg), rng.uniform(-cfg.yaw_deg, cfg.yaw_deg),
                         rng.uniform(-cfg.roll_deg, cfg.roll_deg)])
    R = _rotation(angles)
    focal_mm = rng.uniform(*cfg.focal_mm)
    f = focal_mm / 36.0 * S
    width = float(np.linalg.norm(lm3[0] - lm3[16]))  # jaw-to-jaw face width (metres)
    frac = rng.uniform(*cfg.face_fraction)
    depth = f * width / (frac * S)
    jit = rng.uniform(-cfg.centre_jitter, cfg.centre_jitter, 2) * S
    aim = np.array([jit[0] * depth / f, jit[1] * depth / f, depth])
    t = aim - R @ lm3.mean(0)
    K = np.array([[f, 0, S / 2], [0, f, S / 2], [0, 0, 1.0]])
    alb = draw_albedo(head, person, cfg.face_radius_m)
    lights = _draw_lights(rng)
    background = _draw_background(rng)
    skin = {"roughness": float(person.uniform(0.35, 0.55)), "subsurface_weight": float(person.uniform(0.2, 0.6)),
            "subsurface_scale_m": float(person.uniform(0.002, 0.005)), "specular": float(person.uniform(0.35, 0.6)),
            "pore_bump": float(person.uniform(0.05, 0.2))}
    return {"seed": seed, "index": index, "identity": ident, "expression": expr, "pose": pose,
            "vertices_model": verts, "landmarks3d_model": lm3, "R": R, "t": t, "K": K, "focal_mm": focal_mm,
            "angles_deg": np.degrees(angles), "face_fraction": frac, "image_size": S, **alb,
            "lights": lights, "background": background, "skin": skin}


def _light_direction(az_deg: float, el_deg: float, behind: bool = False) -> list[float]:
    """Unit vector (camera frame, OpenCV) from a light towards the head: the light sits at
    azimuth ``az_deg`` (positive = camera right) and elevation ``el_deg`` (up), on the
    camera's side of the head (or behind it)."""
    az, el = np.radians(az_deg), np.radians(el_deg)
    towards_camera = 1.0 if behind else -1.0  # the camera looks along +z
    pos = np.array([np.sin(az) * np.cos(el), -np.sin(el), towards_camera * np.cos(az) * np.cos(el)])
    return (-pos / np.linalg.norm(pos)).tolist()


def _draw_lights(rng: np.random.Generator) -> dict[str, Any]:
    """Key (area or sun, colour temperature), fill on the other side, sometimes a coloured
    rim light, and a gradient environment. ``irradiance`` is on-axis at the head in Blender
    units (a sun's strength: a white diffuse surface facing it renders at irradiance / pi)."""
    key_az = rng.uniform(-75, 75)
    key_temp = rng.uniform(2800, 7500)
    key_e = float(np.exp(rng.uniform(np.log(1.0), np.log(2.6))))
    key = {"type": "AREA" if rng.uniform() < 0.6 else "SUN", "direction": _light_direction(key_az, rng.uniform(-15, 60)),
           "colour": kelvin_rgb(key_temp).tolist(), "kelvin": key_temp, "irradiance": key_e,
           "size_m": float(rng.uniform(0.2, 1.2)), "distance_m": float(rng.uniform(0.8, 2.0)),
           "angle_deg": float(rng.uniform(1.0, 30.0))}
    fill_temp = rng.uniform(3500, 9000)
    fill = {"type": "AREA", "direction": _light_direction(-np.sign(key_az) * rng.uniform(20, 80), rng.uniform(-10, 40)),
            "colour": kelvin_rgb(fill_temp).tolist(), "kelvin": fill_temp,
            "irradiance": key_e * float(rng.uniform(0.1, 0.4)),
            "size_m": float(rng.uniform(0.5, 1.5)), "distance_m": float(rng.uniform(1.0, 2.5)), "angle_deg": 0.0}
    lights = [key, fill]
    if rng.uniform() < 0.35:
        tint = rng.uniform(0.4, 1.0, 3)
        lights.append({"type": "AREA", "direction": _light_direction(rng.uniform(-150, 150), rng.uniform(0, 50), behind=True),
                       "colour": (tint / tint.max()).tolist(), "kelvin": 0.0,
                       "irradiance": key_e * float(rng.uniform(0.3, 1.0)),
                       "size_m": float(rng.uniform(0.2, 0.6)), "distance_m": float(rng.uniform(1.0, 2.0)),
                       "angle_deg": 0.0})
    env = {"top": (0.35 + 0.65 * rng.uniform(0, 1, 3)).tolist(), "bottom": (0.2 + 0.5 * rng.uniform(0, 1, 3)).tolist(),
           "strength": float(rng.uniform(0.1, 0.4))}
    return {"lights": lights, "environment": env}


def _draw_background(rng: np.random.Generator) -> dict[str, Any]:
    kind = ["photo", "noise", "gradient"][int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
    bg: dict[str, Any] = {"kind": kind, "behind_m": float(rng.uniform(0.3, 1.5)),
                          "offset": rng.uniform(-0.2, 0.2, 2).tolist(), "rotation_deg": float(rng.uniform(-10, 10))}
    if kind == "photo":
        bg["photo"] = BACKGROUND_PHOTOS[int(rng.integers(0, len(BACKGROUND_PHOTOS)))]
        bg["crop"] = rng.uniform(0, 1, 3).tolist()  # crop origin u, v and relative side
    else:
        bg["colours"] = rng.uniform(0.05, 0.9, (2, 3)).tolist()
        bg["scale"] = float(rng.uniform(2.0, 12.0))
    bg["brightness"] = float(rng.uniform(0.5, 1.0))
    return bg


# ----------------------------------------------------------------------------- ground truth
def ground_truth(head: HeadModel, scene: dict[str, Any], cfg: CyclesSetConfig) -> dict[str, Any]:
    """The arrays saved in ``NNNNN.npz`` (see :func:`load_sample`)."""
    R, t, K = scene["R"], scene["t"], scene["K"]
    vc = scene["vertices_model"] @ R.T + t
    lc = scene["landmarks3d_model"] @ R.T + t
    uv = lc[:, :2] / lc[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    return {
        "format": FORMAT, "model": head.name, "seed": scene["seed"], "index": scene["index"],
        "image_size": np.array([cfg.image_size, cfg.image_size]),
        "vertices_camera": vc.astype(np.float32), "vertices_model": scene["vertices_model"].astype(np.float32),
        "faces": head.faces.cpu().numpy().astype(np.int32),
        "identity": scene["identity"].astype(np.float32), "expression": scene["expression"].astype(np.float32),
        "pose": scene["pose"].astype(np.float32), "K": K, "R": R, "t": t,
        "angles_deg": scene["angles_deg"], "focal_mm": scene["focal_mm"],
        "face_mask": _parts(head, cfg.face_radius_m).face, "skin_face_mask": scene["skin_face"],
        "albedo": scene["albedo"], "skin_luminance": scene["skin_luminance"], "skin_tone": scene["tone"],
        "landmarks2d": uv.astype(np.float32), "landmarks3d_camera": lc.astype(np.float32),
        "landmarks3d_model": scene["landmarks3d_model"].astype(np.float32),
        "scene": json.dumps({k: scene[k] for k in ("lights", "background", "skin", "face_fraction")}),
    }


def load_sample(folder: str | Path, index: int) -> CyclesSample:
    """Sample ``index`` of a built set: ``image``, ``mask`` and ``gt`` with ``vertices_camera
    (V, 3)`` (posed, OpenCV camera frame, metres), ``vertices_model``, ``faces (F, 3)``,
    ``identity``, ``expression``, ``pose``, ``K``, ``R``, ``t`` (``X_cam = R X_model + t``),
    ``angles_deg`` (pitch, yaw, roll), ``focal_mm``, ``face_mask (V,)`` (NoW-style face
    region), ``skin_face_mask``, ``albedo (V, 3)`` sRGB, ``skin_luminance``, ``skin_tone``,
    ``landmarks2d (68, 2)`` px, ``landmarks3d_camera``, ``landmarks3d_model``, ``model``."""
    from engine.photo import load_image

    folder = Path(folder)
    stem = folder / f"{index:05d}"
    npz = stem.with_suffix(".npz")
    if not npz.is_file():
        raise UserError(f"{folder} has no sample {index} ({npz.name}); build the set with "
                        f"python -m engine.eval cycles-set build --out {folder}")
    with np.load(npz, allow_pickle=False) as z:
        gt = {k: z[k] for k in z.files}
    for k in ("format", "model", "scene"):
        gt[k] = str(gt[k])
    gt["scene"] = json.loads(gt["scene"])
    image = load_image(stem.with_suffix(".png")).rgb
    mpath = folder / f"{index:05d}_mask.png"
    mask = None
    if mpath.is_file():
        from PIL import Image

        mask = np.asarray(Image.open(mpath)) > 127
    return CyclesSample(index=index, image=image, mask=mask, gt=gt)


def read_set(folder: str | Path) -> dict[str, Any]:
    """``set.json`` of a built set (model, seed, n, config, timings)."""
    p = Path(folder) / SET_FILE
    if not p.is_file():
        raise UserError(f"{folder} is not a Cycles validation set (no {SET_FILE}); build one with "
                        f"python -m engine.eval cycles-set build --out {folder}")
    return json.loads(p.read_text())


# ----------------------------------------------------------------------------- Blender
def _background_image(bg: dict[str, Any], folder: Path) -> str:
    """A PNG for a photo background (a crop of a bundled scikit-image photo)."""
    from PIL import Image
    from skimage import data

    img = np.asarray(getattr(data, bg["photo"])())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    img = img[..., :3]
    h, w = img.shape[:2]
    u, v, s = bg["crop"]
    side = int(min(h, w) * (0.4 + 0.6 * s))
    y0, x0 = int(v * (h - side)), int(u * (w - side))
    path = folder / f"bg_{bg['photo']}_{x0}_{y0}_{side}.png"
    Image.fromarray(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]).astype(np.uint8)).save(path)
    return str(path)


def _c2w(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blender camera-to-world matrix (world = model frame) of an OpenCV camera ``R, t``."""
    c2w = np.eye(4)
    c2w[:3, :3] = R.T @ np.diag([1.0, -1.0, -1.0])
    c2w[:3, 3] = -R.T @ t
    return c2w


def _principled(nodes, links, colour_attr: str | None, roughness: float, **inputs):
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = roughness
    for name, value in inputs.items():
        bsdf.inputs[name].default_value = value
    if colour_attr:
        attr = nodes.new("ShaderNodeAttribute")
        attr.attribute_name = colour_attr
        links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return bsdf


def _materials(bpy, skin: dict[str, Any]):
    mats = []
    # 0 skin: albedo attribute, subsurface, pore bump
    m = bpy.data.materials.new("skin")
    m.use_nodes = True
    nt = m.node_tree
    nt.nodes.clear()
    bsdf = _principled(nt.nodes, nt.links, "albedo", skin["roughness"],
                       **{"Subsurface Weight": skin["subsurface_weight"], "Subsurface Scale": skin["subsurface_scale_m"],
                          "Subsurface Radius": (1.0, 0.35, 0.2), "Specular IOR Level": skin["specular"]})
    noise = nt.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 900.0  # ~1 mm pores (object space in metres)
    noise.inputs["Detail"].default_value = 4.0
    coord = nt.nodes.new("ShaderNodeTexCoord")
    nt.links.new(coord.outputs["Object"], noise.inputs["Vector"])
    bump = nt.nodes.new("ShaderNodeBump")
    bump.inputs["Strength"].default_value = skin["pore_bump"]
    bump.inputs["Distance"].default_value = 0.0002
    nt.links.new(noise.outputs["Fac"], bump.inputs["Height"])
    nt.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    mats.append(m)
    for name, rough, extra in (("hair", 0.65, {"Specular IOR Level": 0.3}),
                               ("eye", 0.05, {"Coat Weight": 1.0, "Coat Roughness": 0.02}),
                               ("mouth", 0.35, {"Specular IOR Level": 0.5})):
        m = bpy.data.materials.new(name)
        m.use_nodes = True
        m.node_tree.nodes.clear()
        _principled(m.node_tree.nodes, m.node_tree.links, "albedo", rough, **extra)
        mats.append(m)
    return mats


def _add_light(bpy, spec: dict[str, Any], R: np.ndarray, head_centre_world: np.ndarray, k: int):
    from mathutils import Vector

    d_world = R.T @ np.asarray(spec["direction"])  # camera -> world (model) frame
    d_world /= np.linalg.norm(d_world)
    if spec["type"] == "SUN":
        light = bpy.data.lights.new(f"light{k}", "SUN")
        light.energy = spec["irradiance"]
        light.angle = np.radians(spec["angle_deg"])
        loc = head_centre_world - d_world * 2.0
    else:
        light = bpy.data.lights.new(f"light{k}", "AREA")
        light.shape = "DISK"
        light.size = spec["size_m"]
        dist = spec["distance_m"]
        # a Lambertian disk light of power P and radius r gives E = P / (pi (d² + r²)) on its
        # axis at distance d in Cycles (measured against a sun: white diffuse renders at E / pi)
        r = spec["size_m"] / 2
        light.energy = spec["irradiance"] * np.pi * (dist ** 2 + r ** 2)
        loc = head_centre_world - d_world * dist
    light.color = tuple(float(c) for c in spec["colour"])
    obj = bpy.data.objects.new(f"light{k}", light)
    obj.location = tuple(float(x) for x in loc)
    # lights shine along their local -Z
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = Vector(tuple(float(x) for x in d_world)).to_track_quat("-Z", "Y")
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _render(bpy, verbose: bool) -> None:
    """``bpy.ops.render.render``; Blender's per-tile progress lines (C-level stdout) go to
    /dev/null unless ``verbose``."""
    if verbose:
        bpy.ops.render.render(write_still=True)
        return
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        bpy.ops.render.render(write_still=True)
    finally:
        os.dup2(saved, 1)
        for fd in (saved, devnull):
            os.close(fd)


def render_scene(head: HeadModel, scene: dict[str, Any], cfg: CyclesSetConfig, out_png: Path,
                 out_mask: Path, work: Path, verbose: bool = False) -> tuple[float, float]:
    """Render one sampled scene with Cycles (imports ``bpy``); returns (wall, CPU) seconds
    of the render call (scene building excluded; CPU time summed over Cycles' threads)."""
    import bpy
    from mathutils import Matrix

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    sc.cycles.device = "CPU"
    sc.cycles.samples = cfg.samples
    sc.cycles.use_adaptive_sampling = True
    sc.cycles.seed = int(scene["seed"]) * 100_003 + int(scene["index"])
    sc.cycles.max_bounces = 6
    sc.cycles.diffuse_bounces = 3
    sc.cycles.glossy_bounces = 2
    sc.cycles.transmission_bounces = 2
    sc.cycles.use_denoising = bool(cfg.denoise)
    if cfg.denoise:
        sc.cycles.denoiser = "OPENIMAGEDENOISE"
    sc.render.threads_mode = "FIXED" if cfg.threads > 0 else "AUTO"
    if cfg.threads > 0:
        sc.render.threads = cfg.threads
    S = cfg.image_size
    sc.render.resolution_x = sc.render.resolution_y = S
    sc.render.resolution_percentage = 100
    sc.render.pixel_aspect_x = sc.render.pixel_aspect_y = 1.0
    sc.view_settings.view_transform = "Standard"
    sc.view_settings.look = "None"
    sc.view_settings.exposure = 0.0
    sc.view_settings.gamma = 1.0
    sc.display_settings.display_device = "sRGB"
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGB"
    sc.render.image_settings.color_depth = "8"
    sc.view_layers[0].use_pass_object_index = True

    P = _parts(head, cfg.face_radius_m)
    verts = scene["vertices_model"]
    faces = head.faces.cpu().numpy()
    keep = ~P.hidden[faces].any(1)
    faces = faces[keep]
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata(verts.tolist(), [], faces.tolist())
    mesh.update()
    lin = srgb_to_linear(scene["albedo"].astype(np.float64))
    attr = mesh.color_attributes.new("albedo", "FLOAT_COLOR", "POINT")
    attr.data.foreach_set("color", np.concatenate([lin, np.ones((len(lin), 1))], 1).astype(np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    fm = P.material[faces]
    face_mat = np.where((fm == 2).any(1), 2, np.where((fm == 3).any(1), 3, np.where((fm == 1).all(1), 1, 0)))
    for m in _materials(bpy, scene["skin"]):
        mesh.materials.append(m)
    mesh.polygons.foreach_set("material_index", face_mat.astype(np.int32))
    mesh.update()
    obj = bpy.data.objects.new("head", mesh)
    obj.pass_index = 1
    sc.collection.objects.link(obj)

    K, R, t = scene["K"], scene["R"], scene["t"]
    cam_data = bpy.data.cameras.new("cam")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = K[0, 0] * 36.0 / S
    cam_data.shift_x = (S / 2.0 - K[0, 2]) / S
    cam_data.shift_y = (K[1, 2] - S / 2.0) / S
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam = bpy.data.objects.new("cam", cam_data)
    sc.collection.objects.link(cam)
    sc.camera = cam
    cam.matrix_world = Matrix(_c2w(R, t).tolist())

    centre = scene["landmarks3d_model"].mean(0)
    for k, spec in enumerate(scene["lights"]["lights"]):
        _add_light(bpy, spec, R, centre, k)
    _world(bpy, scene["lights"]["environment"])
    _background_plane(bpy, scene["background"], K, R, t, S, work)

    sc.render.filepath = str(out_png)
    sc.use_nodes = True
    tree = sc.node_tree
    rl = tree.nodes.new("CompositorNodeRLayers")
    comp = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(rl.outputs["Image"], comp.inputs["Image"])
    idm = tree.nodes.new("CompositorNodeIDMask")
    idm.index = 1
    tree.links.new(rl.outputs["IndexOB"], idm.inputs["ID value"])
    fo = tree.nodes.new("CompositorNodeOutputFile")
    fo.base_path = str(work)
    fo.format.file_format = "PNG"
    fo.format.color_mode = "BW"
    fo.file_slots[0].path = "mask_"
    tree.links.new(idm.outputs["Alpha"], fo.inputs[0])
    t0, c0 = time.perf_counter(), time.process_time()
    _render(bpy, verbose)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    written = sorted(work.glob("mask_*.png"))
    if written:
        os.replace(written[-1], out_mask)
    return secs, cpu


def _world(bpy, env: dict[str, Any]) -> None:
    world = bpy.data.worlds.new("world")
    bpy.context.scene.world = world
    world.use_nodes = True
    nt = world.node_tree
    nt.nodes.clear()
    coord = nt.nodes.new("ShaderNodeTexCoord")
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    nt.links.new(coord.outputs["Generated"], sep.inputs["Vector"])
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    rng_node = nt.nodes.new("ShaderNodeMapRange")
    rng_node.inputs["From Min"].default_value = -1.0
    rng_node.inputs["From Max"].default_value = 1.0
    nt.links.new(sep.outputs["Y"], rng_node.inputs["Value"])  # model +Y is up
    nt.links.new(rng_node.outputs["Result"], ramp.inputs["Fac"])
    ramp.color_ramp.elements[0].color = (*srgb_to_linear(np.array(env["bottom"])).tolist(), 1.0)
    ramp.color_ramp.elements[1].color = (*srgb_to_linear(np.array(env["top"])).tolist(), 1.0)
    bg = nt.nodes.new("ShaderNodeBackground")
    bg.inputs["Strength"].default_value = env["strength"]
    nt.links.new(ramp.outputs["Color"], bg.inputs["Color"])
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(bg.outputs["Background"], out.inputs["Surface"])


def _background_plane(bpy, bg: dict[str, Any], K: np.ndarray, R: np.ndarray, t: np.ndarray, S: int,
                      work: Path) -> None:
    """A textured plane facing the camera behind the head, covering the whole view."""
    from mathutils import Matrix

    depth = float(t[2] + bg["behind_m"])
    half = 0.75 * depth * S / K[0, 0]  # half the visible width at that depth, with margin
    mesh = bpy.data.meshes.new("bg")
    q = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    mesh.from_pydata([(x * half, y * half, 0.0) for x, y in q], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="uv")
    for i, (x, y) in enumerate(q):
        uv.data[i].uv = ((x + 1) / 2, (y + 1) / 2)
    mesh.update()
    obj = bpy.data.objects.new("bg", mesh)
    bpy.context.scene.collection.objects.link(obj)
    # plane frame in the camera (OpenCV) frame: x right, y up (-y_cv), normal towards the camera (-z_cv)
    a = np.radians(bg["rotation_deg"])
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    axes_cam = np.diag([1.0, -1.0, -1.0]) @ rot
    centre_cam = np.array([bg["offset"][0] * half * 0.2, bg["offset"][1] * half * 0.2, depth])
    m = np.eye(4)
    m[:3, :3] = R.T @ axes_cam
    m[:3, 3] = R.T @ (centre_cam - t)
    obj.matrix_world = Matrix(m.tolist())
    mat = bpy.data.materials.new("bg")
    mat.use_nodes = True
    nt = mat.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.8
    if bg["kind"] == "photo":
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(_background_image(bg, work))
        colour = tex.outputs["Color"]
    else:
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        a_col, b_col = (srgb_to_linear(np.array(c)) for c in bg["colours"])
        ramp.color_ramp.elements[0].color = (*a_col.tolist(), 1.0)
        ramp.color_ramp.elements[1].color = (*b_col.tolist(), 1.0)
        if bg["kind"] == "noise":
            tex = nt.nodes.new("ShaderNodeTexNoise")
            tex.inputs["Scale"].default_value = bg["scale"]
            tex.inputs["Detail"].default_value = 6.0
            fac = tex.outputs["Fac"]
        else:
            tex = nt.nodes.new("ShaderNodeTexGradient")
            fac = tex.outputs["Fac"]
        uvn = nt.nodes.new("ShaderNodeUVMap")
        nt.links.new(uvn.outputs["UV"], tex.inputs["Vector"])
        nt.links.new(fac, ramp.inputs["Fac"])
        colour = ramp.outputs["Color"]
    mix = nt.nodes.new("ShaderNodeMixRGB")
    mix.blend_type = "MULTIPLY"
    mix.inputs["Fac"].default_value = 1.0
    mix.inputs["Color2"].default_value = (bg["brightness"],) * 3 + (1.0,)
    nt.links.new(colour, mix.inputs["Color1"])
    nt.links.new(mix.outputs["Color"], bsdf.inputs["Base Color"])
    mesh.materials.append(mat)


# ----------------------------------------------------------------------------- building
def build_set(out: str | Path, n: int = 100, seed: int = 0, model: str | None = None,
              cfg: CyclesSetConfig | None = None, start: int = 0, stop: int | None = None,
              log: Callable[[str], None] | None = None, verbose: bool = False) -> dict[str, Any]:
    """Render samples ``start .. min(stop, n) − 1`` of set ``seed`` into ``out`` (samples
    already there are kept: a build resumes, and ranges can run in parallel processes).
    ``model`` None = ICT when its data is present, else open. Imports ``bpy``: callers
    that must exit cleanly leave with ``os._exit`` (bpy can hang at interpreter exit)."""
    from engine.head import load_head_model

    cfg = cfg or CyclesSetConfig()
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if model is None:
        from engine.head.ict import NPZ_NAME, default_path

        model = "ict" if (default_path() / NPZ_NAME).is_file() or (default_path() / "FaceXModel").is_dir() else "open"
    try:
        import bpy  # noqa: F401
    except ImportError:
        raise UserError("the Cycles validation set needs the bpy module (Blender as a Python module; "
                        "pip install bpy)") from None
    head = load_head_model(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / ".gitignore").exists():  # a generated cache: never committed by accident
        (out / ".gitignore").write_text("# generated by python -m engine.eval cycles-set build\n*\n")
    meta_path = out / SET_FILE
    meta = {"format": FORMAT, "model": model, "seed": seed, "n": n, "config": asdict(cfg),
            "blender": bpy.app.version_string, "render_seconds": {}}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        def pixels(c: dict) -> dict:  # what decides the images (not the thread count)
            return {k: v for k, v in (c or {}).items() if k != "threads"}

        if (old.get("model"), old.get("seed"), pixels(old.get("config"))) != (
                model, seed, pixels(json.loads(json.dumps(asdict(cfg))))):
            raise UserError(f"{out} holds a set with another model, seed or config ({old.get('model')}, seed "
                            f"{old.get('seed')}); use another --out folder")
        meta["render_seconds"] = old.get("render_seconds", {})
        meta["n"] = max(n, int(old.get("n", n)))
    stop = n if stop is None else min(stop, n)
    done = 0
    with tempfile.TemporaryDirectory(prefix="cycles_val_") as tmp:
        work = Path(tmp)
        for k in range(start, stop):
            stem = out / f"{k:05d}"
            if stem.with_suffix(".npz").is_file() and stem.with_suffix(".png").is_file():
                continue
            scene = sample_scene(head, seed, k, cfg)
            secs, cpu = render_scene(head, scene, cfg, stem.with_suffix(".png"), out / f"{k:05d}_mask.png", work,
                                     verbose)
            gt = ground_truth(head, scene, cfg)
            gt["render_seconds"], gt["render_cpu_seconds"] = secs, cpu
            tmp_npz = out / f".{k:05d}.tmp.npz"
            np.savez_compressed(tmp_npz, **gt)
            os.replace(tmp_npz, stem.with_suffix(".npz"))
            meta["render_seconds"][str(k)] = [round(secs, 3), round(cpu, 3)]
            done += 1
            # re-read so parallel range builders do not drop each other's timings
            if meta_path.is_file():
                old = json.loads(meta_path.read_text()).get("render_seconds", {})
                meta["render_seconds"] = {**old, **meta["render_seconds"]}
            meta_path.write_text(json.dumps(meta, indent=1))
            if log:
                log(f"sample {k}: {secs:.1f} s wall, {cpu:.1f} s CPU (yaw {scene['angles_deg'][1]:+.0f}°, {scene['focal_mm']:.0f} mm, "
                    f"skin luminance {scene['skin_luminance']:.2f})")
    if not meta_path.is_file():
        meta_path.write_text(json.dumps(meta, indent=1))
    times = np.array(list(json.loads(meta_path.read_text())["render_seconds"].values()), float).reshape(-1, 2)
    return {"out": str(out), "model": model, "rendered": done, "images": len(times),
            "wall_seconds_per_image": float(np.median(times[:, 0])) if len(times) else float("nan"),
            "cpu_seconds_per_image": float(np.median(times[:, 1])) if len(times) else float("nan")}


def set_indices(folder: str | Path, limit: int | None = None) -> list[int]:
    """Indices of the samples present in a set folder (sorted)."""
    folder = Path(folder)
    read_set(folder)
    idx = sorted(int(p.stem) for p in folder.glob("[0-9][0-9][0-9][0-9][0-9].npz")
                 if p.with_suffix(".png").is_file())
    if not idx:
        raise UserError(f"{folder} holds no rendered samples yet")
    return idx[:limit] if limit else idx


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.eval cycles-set build ...`` (leaves with ``os._exit``: bpy)."""
    import argparse

    from engine.errors import cli_errors

    top = argparse.ArgumentParser(prog="python -m engine.eval cycles-set")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="render the set (resumable; --start/--stop split it over processes)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, choices=["open", "ict"], help="default: ict when present, else open")
    p.add_argument("--size", type=int, default=CyclesSetConfig.image_size)
    p.add_argument("--samples", type=int, default=CyclesSetConfig.samples)
    p.add_argument("--no-denoise", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="Cycles threads (0 = automatic)")
    p.add_argument("--views", type=int, default=1, help="photos per person (default 1: every sample another "
                   "person); samples k .. k+views-1 show one head")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no line per sample")
    p.add_argument("--verbose", action="store_true", help="show Blender's render log")
    a = top.parse_args(argv)
    code = 0
    try:
        with cli_errors():
            if a.size < 32 or a.samples < 1 or a.views < 1:
                raise ConfigError("--size must be at least 32 px, --samples and --views at least 1")
            cfg = CyclesSetConfig(image_size=a.size, samples=a.samples, denoise=not a.no_denoise, threads=a.threads,
                                  views=a.views)
            log = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
            print(json.dumps(build_set(a.out, a.n, a.seed, a.model, cfg, a.start, a.stop, log, a.verbose)), flush=True)
    except SystemExit as exc:  # a user error: still leave through os._exit below
        code = int(exc.code or 0)
    sys.stdout.flush()
    sys.stderr.flush()
    if "bpy" in sys.modules:
        os._exit(code)
    return code
