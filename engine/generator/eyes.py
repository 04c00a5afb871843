"""Eyes: where the eyeballs are, and a procedural iris / pupil / sclera shader.

Every head model's ``eyes`` region holds two eyeballs (left = +X). :func:`eye_frames` fits a
sphere to each (centre, radius; once per model). A point of an eyeball is described by its
unit direction from the eyeball's centre *at rest* (template); that direction is carried by
the mesh (the eyes rotate with their joints, so gaze moves the iris) and the colour is a
function of it: pupil and iris discs around the forward axis (+Z), a darker limbal ring,
radial iris fibres, and a sclera that turns pinker towards the corners.

The same function paints the eyes into the ground-truth albedo map (at texel directions) and
shades eye pixels in the renderer (at interpolated pixel directions), so the rendered iris is
sharp even where a model's UV layout gives the eyes only a few texels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.head.model import HeadModel
from engine.generator.texels import model_cache
from engine.generator.tones import SkinTone, sample_iris_colour

IRIS_RADIUS_M = 5.9e-3  # half the visible iris diameter of an adult (≈ 11.8 mm)
PUPIL_RADIUS_M = 1.9e-3  # a pupil in daylight (≈ 3.8 mm wide)


@dataclass
class EyeFrames:
    """Both eyeballs of a head model at rest: ``centres (2, 3)`` (left, right), ``radii (2,)``
    and, per vertex, ``direction (V, 3)`` (unit vector from its eyeball's centre; zero off
    the eyes)."""

    centres: np.ndarray
    radii: np.ndarray
    direction: np.ndarray


def _fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points (N, 3)``: (centre, radius)."""
    A = np.concatenate([2 * points, np.ones((len(points), 1))], 1)
    b = (points ** 2).sum(1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    c = sol[:3]
    return c, float(np.sqrt(max(sol[3] + c @ c, 1e-12)))


def eye_frames(head: HeadModel) -> EyeFrames:
    """Sphere fits of the two eyeballs and per-vertex rest directions (cached per model)."""
    cache = model_cache(head)
    if "eyes" in cache:
        return cache["eyes"]
    X = head.template.cpu().numpy().astype(np.float64)
    eyes = head.regions["eyes"].cpu().numpy()
    direction = np.zeros_like(X, dtype=np.float32)
    centres, radii = [], []
    for side in (1.0, -1.0):
        ids = np.flatnonzero(eyes & (np.sign(X[:, 0]) == side))
        if len(ids) < 4:  # no eyeball on this side: a point in front of where it would be
            centres.append(np.array([0.03 * side, 0.0, 0.0]))
            radii.append(0.012)
            continue
        c, r = _fit_sphere(X[ids])
        d = X[ids] - c
        direction[ids] = d / np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)
        centres.append(c)
        radii.append(r)
    out = EyeFrames(np.asarray(centres), np.asarray(radii), direction)
    cache["eyes"] = out
    return out


@dataclass
class EyeLook:
    """One person's eyes: iris colour (sRGB), iris and pupil angular radii (rad), sclera
    colour, limbal-ring darkness, fibre pattern (phases, amplitudes)."""

    iris_name: str
    iris: np.ndarray
    iris_angle: float
    pupil_angle: float
    sclera: np.ndarray
    limbal: float
    fibre_k: np.ndarray
    fibre_phase: np.ndarray
    fibre_amp: np.ndarray
    collarette: np.ndarray


def sample_eye_look(rng: np.random.Generator, skin: SkinTone, eyeball_radius: float) -> EyeLook:
    """Iris colour by skin tone (:func:`engine.generator.tones.sample_iris_colour`), pupil
    2.5–6.5 mm wide, sclera off-white."""
    name, iris = sample_iris_colour(rng, skin.tone)
    r = max(eyeball_radius, 1.25 * IRIS_RADIUS_M)  # the iris has its real size on any eyeball
    iris_angle = float(np.arcsin(IRIS_RADIUS_M * rng.uniform(1.0, 1.1) / r))
    pupil_angle = float(np.arcsin(rng.uniform(1.25e-3, 3.0e-3) / r))
    sclera = np.clip(np.array([0.74, 0.71, 0.68]) * rng.uniform(0.85, 1.02) + rng.normal(0, 0.015, 3), 0, 1)
    collarette = np.clip(iris * rng.uniform(0.9, 1.6) + np.array([0.06, 0.04, 0.0]) * rng.uniform(0, 1), 0, 1)
    return EyeLook(name, iris, iris_angle, pupil_angle, sclera, float(rng.uniform(0.35, 0.75)),
                   rng.integers(9, 60, 6).astype(np.float64), rng.uniform(0, 2 * np.pi, 6), rng.uniform(0.03, 0.12, 6),
                   collarette)


def eye_look_from_colours(iris_rgb, sclera_rgb, eyeball_radius: float, seed: int = 0) -> EyeLook:
    """The eyes of a photo (an output texture): the given iris and sclera colours (sRGB), an
    adult's iris (:data:`IRIS_RADIUS_M`) and a daylight pupil (:data:`PUPIL_RADIUS_M`) on an
    eyeball of ``eyeball_radius`` metres, a mid-dark limbal ring and fixed (``seed``) fibres."""
    rng = np.random.default_rng(seed)
    iris = np.clip(np.asarray(iris_rgb, np.float64), 0, 1)
    r = max(eyeball_radius, 1.25 * IRIS_RADIUS_M)  # the iris has its real size on any eyeball
    return EyeLook("photo", iris, float(np.arcsin(IRIS_RADIUS_M / r)), float(np.arcsin(PUPIL_RADIUS_M / r)),
                   np.clip(np.asarray(sclera_rgb, np.float64), 0, 1), 0.5, rng.integers(9, 60, 6).astype(np.float64),
                   rng.uniform(0, 2 * np.pi, 6), np.full(6, 0.05), np.clip(iris * 1.25, 0, 1))


def eye_albedo(direction: np.ndarray, look: EyeLook) -> np.ndarray:
    """sRGB albedo ``(N, 3)`` of eyeball points with rest directions ``(N, 3)`` (unit,
    eyeball frame = model axes, +Z forward)."""
    d = np.asarray(direction, np.float64)
    cos = np.clip(d[:, 2], -1, 1)
    theta = np.arccos(cos)  # angle from the optical axis
    phi = np.arctan2(d[:, 1], d[:, 0])
    ti, tp = look.iris_angle, look.pupil_angle
    # sclera: whiter in front, pinker and darker towards the corners and the back
    side = np.clip((theta - ti) / (1.2 - ti), 0, 1)[:, None]
    sclera = look.sclera * (1 - 0.25 * side) + np.array([0.10, -0.04, -0.05]) * side
    # iris: radial fibres, darker limbal ring, lighter collarette around the pupil
    rad = np.clip((theta - tp) / max(ti - tp, 1e-6), 0, 1)[:, None]
    fib = (look.fibre_amp[None] * np.sin(look.fibre_k[None] * phi[:, None] + look.fibre_phase[None])).sum(1)
    iris = look.iris * (1 + fib)[:, None]
    iris = iris * (1 - 0.5 * rad) + look.collarette * np.clip(1 - 2.5 * rad, 0, 1) * 0.5
    iris = iris * (1 - look.limbal * np.clip((rad - 0.8) / 0.2, 0, 1))
    edge = np.clip((theta - ti) / 0.03 + 0.5, 0, 1)[:, None]  # soft iris border (≈ 2 degrees)
    pupil = np.clip((theta - tp) / 0.02 + 0.5, 0, 1)[:, None]
    col = np.array([0.02, 0.018, 0.018]) * (1 - pupil) + iris * pupil
    col = col * (1 - edge) + sclera * edge
    return np.clip(col, 0.0, 1.0)
