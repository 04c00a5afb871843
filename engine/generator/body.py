"""Neck to chest: a clothed torso under the head, so heads do not float.

:func:`torso_prop` measures the posed head's neck a little above its lower end and lofts a
body from rings (superellipses): first the neck continued in skin down to the shoulders'
level (``neck_drop`` below the chin; models whose neck already reaches lower skip this), then
a collar, shoulders and the chest. The body is turned relative to the head (the head turns
on the neck by part of its pose) and dressed in
:func:`engine.generator.props.fabric_texture` with a crew or V neckline showing skin.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.generator.primitives import grid_surface
from engine.generator.props import Prop, fabric_texture
from engine.render.rotation import euler_to_matrix

#: clothing rings: depth below the collar (metres), half-width / half-depth as fractions of the
#: shoulder half-width W and half chest depth D, superellipse exponent
_DEPTHS = np.array([0.0, 0.01, 0.025, 0.045, 0.07, 0.1, 0.18, 0.3])
_WIDTH = np.array([0.0, 0.0, 0.55, 0.8, 0.95, 1.0, 0.98, 0.94])
_DEPTH = np.array([0.0, 0.0, 0.7, 0.85, 0.95, 1.0, 1.0, 0.96])
_EXPONENT = np.array([2.0, 2.0, 2.2, 2.5, 2.7, 2.8, 2.8, 2.8])


def neck_section(vertices: np.ndarray, skin: np.ndarray, above: float = 0.015, band: float = 0.005) -> tuple[np.ndarray, float, float]:
    """Centre ``(3,)`` and half-extents (x, z) of the neck ``above`` metres over its lowest skin point."""
    y0 = vertices[skin, 1].min() + above
    ring = vertices[skin & (np.abs(vertices[:, 1] - y0) < band)]
    if len(ring) < 6:
        ring = vertices[skin][np.argsort(vertices[skin, 1])[:50]]
    lo, hi = ring.min(0), ring.max(0)
    c = 0.5 * (lo + hi)
    c[1] = y0
    return c, float(0.5 * (hi[0] - lo[0])), float(0.5 * (hi[2] - lo[2]))


def torso_prop(vertices: np.ndarray, skin_region: np.ndarray, chin_y: float, neck_rgb: np.ndarray,
               rng: np.random.Generator, neck_angles_deg: np.ndarray, columns: int = 36) -> Prop:
    """A torso under the posed head ``vertices (V, 3)`` (model frame); ``chin_y``: height of
    the chin; ``neck_rgb``: sRGB colour of the neck skin; ``neck_angles_deg``: (pitch, yaw,
    roll) of the head relative to the body."""
    centre, rx, rz = neck_section(vertices, skin_region)
    W = rng.uniform(0.15, 0.2)
    D = rng.uniform(0.09, 0.12)
    collar_y = min(chin_y - rng.uniform(0.05, 0.08), centre[1] - 0.005)  # relative heights from here on
    neck_len = centre[1] - collar_y
    n_neck = 3
    depths = np.concatenate([np.linspace(0, neck_len, n_neck, endpoint=False), neck_len + _DEPTHS])
    grow = np.linspace(1.0, 1.08, n_neck)
    a = np.concatenate([(rx + 0.002) * grow, np.maximum(_WIDTH * W, rx * 1.08 + np.array([0.006, 0.012, 0, 0, 0, 0, 0, 0]))])
    b = np.concatenate([(rz + 0.002) * grow, np.maximum(_DEPTH * D, rz * 1.08 + np.array([0.006, 0.01, 0, 0, 0, 0, 0, 0]))])
    ex = np.concatenate([np.full(n_neck, 2.0), _EXPONENT])
    back = np.concatenate([np.zeros(n_neck), -0.015 * np.clip(_WIDTH * 2, 0, 1)])  # chest behind the neck axis
    th = np.linspace(0, 2 * np.pi, columns, endpoint=False)  # 0 = back, pi = front
    s, c = -np.sin(th), -np.cos(th)
    rings = []
    for k in range(len(depths)):
        e = 2.0 / ex[k]
        x = a[k] * np.sign(s) * np.abs(s) ** e
        z = b[k] * np.sign(c) * np.abs(c) ** e + back[k]
        rings.append(np.stack([x, np.full_like(x, -depths[k]), z], -1))
    mesh = grid_surface(np.asarray(rings), v_rows=1 - depths / depths[-1])
    R = euler_to_matrix(torch.tensor(np.radians(neck_angles_deg), dtype=torch.float64), "XYZ").numpy()
    mesh = mesh.transformed(R.T, centre)  # the body turned by the inverse of the head's turn on the neck
    tex = fabric_texture(rng)
    h, w = tex.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    u = np.abs((xx + 0.5) / w - 0.5)  # 0 = front
    below = (yy + 0.5) / h * depths[-1] - neck_len  # metres below the collar
    kind = rng.integers(0, 3)
    if kind == 1:  # crew neck, lower in front
        skin = below < 0.015 * np.clip(1 - u / 0.2, 0, 1)
    elif kind == 2:  # V neck
        skin = below < 0.07 * np.clip(1 - u / 0.1, 0, 1)
    else:
        skin = below < 0
    tex[:, skin] = np.asarray(neck_rgb, np.float32)[:, None]
    return Prop("torso", mesh, tex, specular=0.05, shininess=8.0, label="torso")
