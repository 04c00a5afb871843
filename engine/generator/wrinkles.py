"""Fine geometric detail of the realistic generator, with ground truth: pores, age lines and
expression wrinkles as a UV displacement map (issue #14, the data for DECA's detail stage).

The model of one person (:func:`person_detail`) is linear in the expression::

    D = D_static + Σ_k w_k · W_k + jaw · W_jaw        (metres along the surface normal)

``D_static`` is the person's identity detail (pores and age lines), ``W_k`` the wrinkles of
ARKit unit ``k`` at weight 1 (:data:`UNIT_PATTERNS`), ``W_jaw`` those of the jaw joint's
opening per radian (models with a ``jaw`` joint; a model without one carries them on its
``jawOpen`` unit instead). All maps are ``(1, 1, S, S)`` in the head model's own UV layout
(:mod:`engine.render.uv` conventions; islands padded like the albedo map), so
:class:`WrinkleBasis` gives evaluation the per-unit ground truth and ``compose`` the map of
any expression. Negative values are grooves.

Wrinkle families, placed on the template from its iBUG-68 landmarks and surface normals
(:func:`engine.generator.layout.head_layout`), so any head model works:

* forehead: 3–6 horizontal, gently curved and wavy folds 7–11 mm apart between 1 and ~6 cm
  above the brows (grooves with the skin bulging between them); ``browInnerUp`` deepens the
  middle (ICT's ``browInnerUpLeft/Right`` each half of it), ``browOuterUpLeft/Right`` each side;
* frown lines: 1–2 vertical-to-oblique lines per side between the brows and, sometimes, a
  horizontal line at the nose root (``browDownLeft/Right``);
* crow's feet: 3–5 radial lines fanning out from each outer eye corner (``eyeSquint*`` 1.0,
  ``cheekSquint*`` 0.7, ``mouthSmile*`` 0.5 of their depth);
* nasolabial folds: a broad groove from the nose wing past the mouth corner with the cheek
  bulging over it (``mouthSmile*``; the jaw opening deepens them too);
* bunny lines: 2–3 oblique lines on each side of the nasal bridge (``noseSneer*``);
* chin: dimpling ("peau d'orange") and the crease under the lower lip (``mouthShrugLower``);
* under the chin: a horizontal crease (the jaw opening).

Depths: each person draws an ``age`` (18–80 years) and a skin elasticity loss that grows
with it; expression wrinkles are 0.3–0.8 mm deep at weight 1 (times a per-family factor,
:data:`FAMILY_DEPTH`), grooves of Gaussian σ 0.5–2.5 mm (never under 0.7 texel, so the map
does not alias). The static map has pores (white per-texel noise of 0.02–0.05 mm std on the
skin) and the same line patterns, shallow: forehead lines and crow's feet up to ~0.35 mm at 80
years, nasolabial folds 0.02–0.5 mm, frown lines up to 0.25 mm.

``python -m engine.generator.wrinkles --figure docs/generator_wrinkles.png`` draws one person
at five expressions under raking light with their maps; ``--time N`` measures the render
time of the realistic generator with and without the detail.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from engine.generator.layout import head_layout, smoothstep
from engine.generator.texels import TexelGeometry, face_metres_per_uv, model_cache
from engine.head.model import HeadModel

#: ARKit unit -> the wrinkle patterns it deepens and by how much (of the person's depth)
UNIT_PATTERNS: dict[str, tuple[tuple[str, float], ...]] = {
    "browInnerUp": (("forehead_centre_left", 1.0), ("forehead_centre_right", 1.0)),
    "browInnerUpLeft": (("forehead_centre_left", 1.0),),  # ICT splits the inner brow raise
    "browInnerUpRight": (("forehead_centre_right", 1.0),),
    "browOuterUpLeft": (("forehead_left", 1.0),),
    "browOuterUpRight": (("forehead_right", 1.0),),
    "browDownLeft": (("frown_left", 1.0),),
    "browDownRight": (("frown_right", 1.0),),
    "eyeSquintLeft": (("crow_left", 1.0),),
    "eyeSquintRight": (("crow_right", 1.0),),
    "cheekSquintLeft": (("crow_left", 0.7),),
    "cheekSquintRight": (("crow_right", 0.7),),
    "mouthSmileLeft": (("crow_left", 0.5), ("nasolabial_left", 1.0)),
    "mouthSmileRight": (("crow_right", 0.5), ("nasolabial_right", 1.0)),
    "noseSneerLeft": (("bunny_left", 1.0),),
    "noseSneerRight": (("bunny_right", 1.0),),
    "mouthShrugLower": (("chin", 1.0),),
}
#: the jaw opening's patterns at :data:`JAW_FULL_RAD` (W_jaw is these divided by it)
JAW_PATTERNS: tuple[tuple[str, float], ...] = (("nasolabial_left", 0.45), ("nasolabial_right", 0.45),
                                               ("submental", 1.0))
JAW_FULL_RAD = 0.35
#: depth of each family relative to the person's expression depth (0.3–0.8 mm)
FAMILY_DEPTH = {"forehead": 1.0, "frown": 0.9, "crow": 0.75, "nasolabial": 1.0, "bunny": 0.6, "chin": 0.5,
                "submental": 0.6}
#: groups of units one strong "wrinkle expression" activates (identity views,
#: :attr:`engine.generator.realistic.RealisticConfig.wrinkle_expression_probability`); "jaw" opens the jaw
WRINKLE_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "brow_raise": ("browInnerUp", "browInnerUpLeft", "browInnerUpRight", "browOuterUpLeft", "browOuterUpRight"),
    "frown": ("browDownLeft", "browDownRight"),
    "smile": ("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"),
    "squint": ("eyeSquintLeft", "eyeSquintRight"),
    "sneer": ("noseSneerLeft", "noseSneerRight"),
    "shrug": ("mouthShrugLower",),
    "jaw": (),
}
AGE_RANGE = (18.0, 80.0)
MIN_WIDTH_TEXELS = 0.7  # grooves are never narrower than this (Gaussian sigma, texels)


def family(pattern: str) -> str:
    """The family of a pattern name (``"crow_left"`` -> ``"crow"``)."""
    return pattern.split("_")[0]


# ---------------------------------------------------------------------------------------------
# template data


@dataclass
class Zone:
    """Where a wrinkle family may lie (template-only): covered-texel ``ids (M,)``, their soft
    ``weight (M,)`` and 2-D coordinates ``p2 (M, 2)`` (metres) in the family's local frame."""

    ids: np.ndarray
    weight: np.ndarray
    p2: np.ndarray


@dataclass
class DetailLayout:
    """Template-only data of the detail map of one head model at one size (cached): its covered
    texels (``geo``), their template ``position`` and unit ``normal`` ``(N, 3)`` (float64),
    soft ``skin`` weight (skin, not eyes, lips half), the template landmarks, which sign of
    ``x`` is the subject's left, the face's metres per texel and the families' ``zones``."""

    geo: TexelGeometry
    position: np.ndarray
    normal: np.ndarray
    skin: np.ndarray
    landmarks: np.ndarray
    left_sign: float
    texel_m: float
    zones: dict[str, Zone] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.geo.size


def _box(P: np.ndarray, lo: tuple[float, float], hi: tuple[float, float]) -> np.ndarray:
    """Points whose (x, y) lie in the box ``lo``–``hi``."""
    return (P[:, 0] > lo[0]) & (P[:, 0] < hi[0]) & (P[:, 1] > lo[1]) & (P[:, 1] < hi[1])


def _zones(D: DetailLayout) -> dict[str, Zone]:
    """The families' zones on the template (see each family for its shape)."""
    lm, P, n, skin = D.landmarks, D.position, D.normal, D.skin
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    out: dict[str, Zone] = {}

    def zone(name: str, weight: np.ndarray, p2: np.ndarray | None = None) -> None:
        ids = np.flatnonzero(weight > 1e-4)
        out[name] = Zone(ids, weight[ids], (P[:, :2] if p2 is None else p2)[ids])

    brow_top = lm[17:27, 1].max()
    zone("forehead", skin * smoothstep(0.25, 0.5, n[:, 2]) * (z > lm[0, 2])
         * smoothstep(brow_top + 0.004, brow_top + 0.009, y) * (1 - smoothstep(brow_top + 0.055, brow_top + 0.068, y)))
    inner_y = 0.5 * (lm[21, 1] + lm[22, 1])
    zone("frown", skin * smoothstep(0.4, 0.6, n[:, 2]) * (z > lm[36, 2])
         * _box(P, (-0.025, lm[27, 1] - 0.01), (0.025, inner_y + 0.03)))
    for side, sign, corner in (("left", D.left_sign, 45), ("right", -D.left_sign, 36)):
        c = lm[corner]
        probe = c + np.array([sign * 0.01, 0.0, -0.004])  # on the temple beside the eye corner
        nc = n[np.argmin(((P - probe) ** 2).sum(1))]
        up = np.array([0.0, 1.0, 0.0]) - nc[1] * nc
        up /= np.linalg.norm(up)
        outward = np.cross(up, nc)
        outward = outward if outward[0] * sign > 0 else -outward
        q = P - c
        p2 = np.stack([q @ outward, q @ up], 1)
        near = (np.sqrt((q * q).sum(1)) < 0.032) & ((n * nc).sum(1) > 0.3)
        zone(f"crow_{side}", skin * near * smoothstep(0.001, 0.004, p2[:, 0]), p2)
    zone("nasolabial", skin * smoothstep(0.15, 0.35, n[:, 2]) * (z > lm[2, 2])
         * _box(P, (-0.06, lm[8, 1] + 0.01), (0.06, lm[29, 1])) * (np.abs(x) > 0.004))
    zone("bunny", skin * smoothstep(0.2, 0.4, n[:, 2]) * (z > lm[39, 2])
         * _box(P, (-0.022, lm[30, 1]), (0.022, lm[27, 1] + 0.004)))
    chin = 0.5 * (lm[57] + lm[8])
    zone("chin", skin * smoothstep(0.3, 0.5, n[:, 2]) * (z > lm[5, 2])
         * _box(P, (chin[0] - 0.025, lm[8, 1] - 0.004), (chin[0] + 0.025, lm[57, 1] + 0.002)))
    zone("submental", skin * smoothstep(0.3, 0.6, -n[:, 1]) * (np.abs(x) < 0.05) * (z > lm[8, 2] - 0.05)
         * (y < lm[8, 1] + 0.004) * (y > lm[8, 1] - 0.035), np.stack([x, z], 1))  # under the chin, seen from below
    return out


def detail_layout(head: HeadModel, size: int) -> DetailLayout:
    """The :class:`DetailLayout` of ``head`` at map ``size`` (cached on the model)."""
    cache = model_cache(head)
    key = ("detail_layout", size)
    if key in cache:
        return cache[key]
    from engine.render import vertex_normals

    L = head_layout(head, size)
    geo = L.texels
    with torch.no_grad():
        vn = vertex_normals(head.template[None], head.faces)[0].cpu().numpy()
    n = geo.interpolate(vn).astype(np.float64)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    reg = L.texel_regions
    skin = np.clip(reg["skin"], 0, 1) * (1 - np.clip(reg["eyes"], 0, 1)) * (1 - 0.5 * L.texel_zones["lips"])
    if "mouth_interior" in reg:
        skin = skin * (1 - np.clip(reg["mouth_interior"], 0, 1))
    lm = L.landmarks.astype(np.float64)
    out = DetailLayout(geo, geo.position.astype(np.float64), n, skin.astype(np.float64), lm,
                       float(np.sign(lm[45, 0] - lm[36, 0]) or 1.0), face_metres_per_uv(head) / size)
    out.zones = _zones(out)
    cache[key] = out
    return out


# ---------------------------------------------------------------------------------------------
# line geometry


def _polyline_coords(p: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (positive to the left of the line's direction) and arc-length fraction
    ``[0, 1]`` of the nearest point, of 2-D points ``(P, 2)`` to a polyline ``(K, 2)``."""
    ax, ay = line[:-1, 0], line[:-1, 1]
    bx, by = line[1:, 0] - ax, line[1:, 1] - ay
    len2 = np.maximum(bx * bx + by * by, 1e-24)
    px, py = p[:, :1] - ax, p[:, 1:] - ay  # (P, K-1)
    t = np.clip((px * bx + py * by) / len2, 0.0, 1.0)
    dx, dy = px - t * bx, py - t * by
    k = (dx * dx + dy * dy).argmin(1)
    rows = np.arange(len(p))
    dxk, dyk, tk = dx[rows, k], dy[rows, k], t[rows, k]
    cross = bx[k] * py[rows, k] - by[k] * px[rows, k]
    s = np.sqrt(dxk * dxk + dyk * dyk) * np.where(cross >= 0, 1.0, -1.0)
    seg = np.sqrt(len2)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return s, (cum[k] + tk * seg[k]) / cum[-1]


def _groove(s: np.ndarray, sigma: float) -> np.ndarray:
    """Cross-section of a wrinkle: a groove of depth 1 at ``s = 0`` with low shoulders
    (``exp(-x²/2)·(x²/2 − 1)``, ``x = s/sigma``)."""
    x2 = (s / sigma) ** 2
    return np.exp(-0.5 * x2) * (0.5 * x2 - 1.0)


def _fold(s: np.ndarray, sigma: float, spacing: float) -> np.ndarray:
    """Cross-section of one of a row of parallel folds ``spacing`` apart (forehead lines): the
    groove of :func:`_groove` and half of the bulges of skin between it and its neighbours."""
    bulge = np.exp(-0.5 * ((np.abs(s) - 0.5 * spacing) / (0.2 * spacing)) ** 2)
    return _groove(s, sigma) + 0.25 * bulge


def _taper(t: np.ndarray) -> np.ndarray:
    """Depth along a line (0 at both ends, 1 in the middle)."""
    return np.sin(np.pi * np.clip(t, 0, 1)) ** 0.6


def _near(p2: np.ndarray, line: np.ndarray, reach: float) -> np.ndarray:
    """Indices of the points ``p2 (M, 2)`` within the line's bounding box grown by ``reach``."""
    lo, hi = line.min(0) - reach, line.max(0) + reach
    return np.flatnonzero((p2[:, 0] > lo[0]) & (p2[:, 0] < hi[0]) & (p2[:, 1] > lo[1]) & (p2[:, 1] < hi[1]))


def _add_lines(out: np.ndarray, p2: np.ndarray, lines: list[tuple[np.ndarray, float, float]],
               spacing: float | None = None) -> None:
    """In place: ``out (M,) += depth · taper · groove`` of each ``(polyline, sigma, depth)`` at the
    points ``p2 (M, 2)`` near it (with ``spacing``: :func:`_fold` profiles)."""
    for line, sigma, depth in lines:
        near = _near(p2, line, 4 * sigma if spacing is None else max(4 * sigma, 0.9 * spacing))
        if len(near):
            s, t = _polyline_coords(p2[near], line)
            prof = _groove(s, sigma) if spacing is None else _fold(s, sigma, spacing)
            out[near] += depth * _taper(t) * prof


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    """Quadratic Bézier polyline ``(n, 2)`` from ``p0`` over control ``p1`` to ``p2``."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


@dataclass
class _Pattern:
    """A wrinkle pattern on the covered texels ``ids``: ``values`` (unit depth)."""

    ids: np.ndarray
    values: np.ndarray


def _pattern(Z: Zone, values: np.ndarray) -> _Pattern:
    """The non-zero ``values (M,)`` on zone ``Z``, times its weight."""
    v = values * Z.weight
    keep = np.flatnonzero(v != 0)
    return _Pattern(Z.ids[keep], v[keep])


# ---------------------------------------------------------------------------------------------
# the families (each draws its random shape from ``rng`` in a fixed order)


def _width(rng: np.random.Generator, lo_mm: float, hi_mm: float, D: DetailLayout) -> float:
    return max(rng.uniform(lo_mm, hi_mm) * 1e-3, MIN_WIDTH_TEXELS * D.texel_m)


def _forehead(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """3–6 horizontal lines, split into a middle and two side parts."""
    lm, Z = D.landmarks, D.zones["forehead"]
    brow_top = lm[17:27, 1].max()
    half_w = 0.5 * abs(lm[26, 0] - lm[17, 0])
    lines = []
    n_lines = int(rng.integers(3, 7))
    spacing = rng.uniform(0.007, 0.011)
    h = brow_top + rng.uniform(0.009, 0.014)
    curve = rng.uniform(-1.0, 3.0)
    for k in range(n_lines):
        amp, lam, phase = rng.uniform(0.0005, 0.0015), rng.uniform(0.025, 0.06), rng.uniform(0, 2 * np.pi)
        x0, x1 = -half_w * rng.uniform(0.45, 1.0), half_w * rng.uniform(0.45, 1.0)
        gap = rng.uniform() < 0.3
        depth = rng.uniform(0.55, 1.0) * (1.0 - 0.35 * abs(k - 0.4 * n_lines) / n_lines)
        sigma = _width(rng, 0.8, 1.3, D)
        xs = np.linspace(x0, x1, 16)
        ys = h + curve * xs ** 2 + amp * np.sin(2 * np.pi * xs / lam + phase)
        line = np.stack([xs, ys], 1)
        if gap:  # a broken line: two pieces with a gap near the middle
            c = int(rng.integers(6, 10))
            lines += [(line[:c], sigma, depth), (line[c + 1:], sigma, depth)]
        else:
            lines.append((line, sigma, depth))
        h += spacing * rng.uniform(0.8, 1.2)
    full = np.zeros(len(Z.ids))
    _add_lines(full, Z.p2, lines, spacing)
    lat_left = Z.p2[:, 0] * D.left_sign
    side_left = smoothstep(0.008, 0.03, lat_left)
    side_right = smoothstep(0.008, 0.03, -lat_left)
    centre = full * (1 - side_left - side_right)
    half = smoothstep(-0.004, 0.004, lat_left)  # the middle's left half (models that split browInnerUp)
    return {"forehead_centre_left": _pattern(Z, centre * half), "forehead_centre_right": _pattern(Z, centre * (1 - half)),
            "forehead_left": _pattern(Z, full * side_left), "forehead_right": _pattern(Z, full * side_right)}


def _frown(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """Per side 1–2 vertical-to-oblique lines between the brows, and (60 %) half of a
    horizontal line at the nose root."""
    lm, Z = D.landmarks, D.zones["frown"]
    inner_y = 0.5 * (lm[21, 1] + lm[22, 1])
    root_y = lm[27, 1]
    out = {}
    procerus = rng.uniform() < 0.6
    root_depth, root_y_line = rng.uniform(0.4, 0.8), root_y - rng.uniform(0.0, 0.003)
    root_sigma = _width(rng, 0.7, 1.1, D)
    for side, sign in (("left", D.left_sign), ("right", -D.left_sign)):
        lines = []
        x0 = rng.uniform(0.003, 0.0065)
        for k in range(int(rng.integers(1, 3))):
            xb = x0 + k * rng.uniform(0.0025, 0.004)
            tilt = np.radians(rng.uniform(-8.0, 28.0))  # the top leans outwards
            y0, y1 = root_y + rng.uniform(0.003, 0.008), inner_y + rng.uniform(0.006, 0.016)
            top_x = xb + np.tan(tilt) * (y1 - y0)
            mid = np.array([sign * (0.5 * (xb + top_x) + rng.uniform(-0.001, 0.001)), 0.5 * (y0 + y1)])
            line = _bezier(np.array([sign * xb, y0]), mid, np.array([sign * top_x, y1]), 8)
            lines.append((line, _width(rng, 0.6, 1.0, D), rng.uniform(0.6, 1.0) * (1 - 0.3 * k)))
        if procerus:
            lines.append((np.array([[-sign * 0.002, root_y_line], [sign * 0.008, root_y_line + 0.001]]),
                          root_sigma, root_depth))
        vals = np.zeros(len(Z.ids))
        _add_lines(vals, Z.p2, lines)
        vals *= smoothstep(-0.0015, 0.0015, Z.p2[:, 0] * sign)  # this side only
        out[f"frown_{side}"] = _pattern(Z, vals)
    return out


def _crow(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """3–5 lines fanning out from each outer eye corner (in the temple's tangent plane)."""
    out = {}
    for side in ("left", "right"):
        Z = D.zones[f"crow_{side}"]
        lines = []
        k = int(rng.integers(3, 6))
        angles = np.linspace(-48.0, 32.0, k) + rng.normal(0, 5.0, k)
        for a in np.radians(angles):
            r0, r1 = rng.uniform(0.004, 0.007), rng.uniform(0.013, 0.024)
            d = np.array([np.cos(a), np.sin(a)])
            bend = rng.uniform(-0.0015, 0.0015) - 0.002 * max(-np.sin(a), 0)  # lower lines sag onto the cheek
            mid = 0.5 * (r0 + r1) * d + bend * np.array([-d[1], d[0]])
            lines.append((_bezier(r0 * d, mid, r1 * d, 8), _width(rng, 0.5, 0.8, D), rng.uniform(0.6, 1.0)))
        vals = np.zeros(len(Z.ids))
        _add_lines(vals, Z.p2, lines)
        out[f"crow_{side}"] = _pattern(Z, vals)
    return out


def _nasolabial(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """A broad groove from the nose wing past the mouth corner, the cheek bulging over it."""
    lm, Z = D.landmarks, D.zones["nasolabial"]
    out = {}
    for side, sign, ala, mouth in (("left", D.left_sign, 35, 54), ("right", -D.left_sign, 31, 48)):
        a = np.array([lm[ala, 0] + sign * rng.uniform(0.003, 0.006), lm[ala, 1] + rng.uniform(0.002, 0.006)])
        e = np.array([lm[mouth, 0] + sign * rng.uniform(0.006, 0.011), lm[mouth, 1] - rng.uniform(0.006, 0.014)])
        ctrl = 0.5 * (a + e) + np.array([sign * rng.uniform(0.002, 0.005), 0.0])
        line = _bezier(a, ctrl, e, 12)
        sigma = _width(rng, 1.5, 2.5, D)
        bulge_w = rng.uniform(0.003, 0.0045)
        near = _near(Z.p2, line, 4 * sigma + 4 * bulge_w)
        near = near[Z.p2[near, 0] * sign > 0]
        s, t = _polyline_coords(Z.p2[near], line)
        s = s * -sign * np.sign(e[1] - a[1])  # positive on the cheek (lateral) side
        vals = np.zeros(len(Z.ids))
        vals[near] = _taper(t) * (_groove(s, sigma) + 0.45 * np.exp(-0.5 * ((s - 1.8 * bulge_w) / bulge_w) ** 2))
        out[f"nasolabial_{side}"] = _pattern(Z, vals)
    return out


def _bunny(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """2–3 short oblique lines running down and out from each side of the nasal bridge."""
    lm, Z = D.landmarks, D.zones["bunny"]
    out = {}
    for side, sign in (("left", D.left_sign), ("right", -D.left_sign)):
        lines = []
        y = 0.5 * (lm[28, 1] + lm[27, 1]) + rng.uniform(-0.002, 0.002)
        for k in range(int(rng.integers(2, 4))):
            a = np.radians(rng.uniform(30.0, 55.0))
            length = rng.uniform(0.007, 0.012)
            p0 = np.array([sign * rng.uniform(0.002, 0.0045), y])
            p1 = p0 + length * np.array([sign * np.cos(a), -np.sin(a)])
            lines.append((np.stack([p0, p1]), _width(rng, 0.5, 0.8, D), rng.uniform(0.6, 1.0)))
            y -= rng.uniform(0.003, 0.0045)
        vals = np.zeros(len(Z.ids))
        _add_lines(vals, Z.p2, lines)
        vals *= Z.p2[:, 0] * sign > -0.001
        out[f"bunny_{side}"] = _pattern(Z, vals)
    return out


def _chin(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """Dimples of the mentalis in an ellipse on the chin and the crease under the lower lip."""
    lm, Z = D.landmarks, D.zones["chin"]
    centre = 0.5 * (lm[57] + lm[8])
    rx, ry = rng.uniform(0.011, 0.015), 0.45 * abs(lm[57, 1] - lm[8, 1])
    p = Z.p2
    ell = ((p[:, 0] - centre[0]) / rx) ** 2 + ((p[:, 1] - centre[1]) / ry) ** 2
    k = int(rng.integers(18, 30))
    r, phi = np.sqrt(rng.uniform(0, 1, k)), rng.uniform(0, 2 * np.pi, k)
    cx, cy = centre[0] + r * rx * np.cos(phi), centre[1] + r * ry * np.sin(phi)
    w = np.maximum(rng.uniform(0.0015, 0.003, k), MIN_WIDTH_TEXELS * D.texel_m)
    depth = rng.uniform(0.3, 1.0, k)
    d2 = (p[:, :1] - cx) ** 2 + (p[:, 1:] - cy) ** 2  # (M, k)
    vals = -(depth * np.exp(-0.5 * d2 / w ** 2)).sum(1)
    vals = np.maximum(vals, -1.2) * (1 - smoothstep(0.6, 1.0, ell))
    y = lm[57, 1] - rng.uniform(0.004, 0.007)
    hw = rng.uniform(0.008, 0.013)
    xs = np.linspace(-hw, hw, 10)
    crease = np.stack([centre[0] + xs, y + rng.uniform(0.5, 3.0) * xs ** 2 / hw], 1)
    _add_lines(vals, p, [(crease, _width(rng, 0.9, 1.4, D), rng.uniform(0.6, 1.0))])
    return {"chin": _pattern(Z, vals)}


def _submental(D: DetailLayout, rng: np.random.Generator) -> dict[str, _Pattern]:
    """A horizontal crease under the chin (coordinates x and depth z, seen from below)."""
    lm, Z = D.landmarks, D.zones["submental"]
    z = lm[8, 2] - rng.uniform(0.012, 0.02)
    hw = 0.6 * abs(lm[5, 0] - lm[11, 0]) * rng.uniform(0.7, 1.0)
    xs = np.linspace(-hw, hw, 12)
    line = np.stack([xs, z - rng.uniform(0.5, 1.5) * xs ** 2 / hw], 1)
    vals = np.zeros(len(Z.ids))
    _add_lines(vals, Z.p2, [(line, _width(rng, 1.0, 1.6, D), 1.0)])
    return {"submental": _pattern(Z, vals)}


FAMILIES = (_forehead, _frown, _crow, _nasolabial, _bunny, _chin, _submental)


# ---------------------------------------------------------------------------------------------
# the person


@dataclass
class WrinkleBasis:
    """One person's detail model (see the module docstring): ``D = static + Σ_k w_k·units[k] +
    jaw_rad·jaw``, maps ``(1, 1, S, S)`` float32 in metres along the normal.

    ``units`` holds the model's ARKit units that carry wrinkles (:data:`UNIT_PATTERNS`, plus
    ``jawOpen`` on models without a jaw joint), ``jaw`` is per radian of the jaw joint's
    opening (rotation about its x axis; None without a jaw joint). ``age`` (years) and
    ``depth_m`` (expression depth at weight 1) are the person's draws. Dense maps are made on
    first access; :meth:`compose` sums sparse per-texel vectors and pads the islands once.
    """

    layout: DetailLayout
    expression_names: tuple[str, ...]
    jaw_joint: int | None
    age: float
    depth_m: float
    static_texels: np.ndarray  # (N,) metres on the covered texels
    unit_texels: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (texel ids, metres)
    jaw_texels: tuple[np.ndarray, np.ndarray] | None = None  # per radian

    @property
    def size(self) -> int:
        return self.layout.size

    def _image(self, values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.layout.geo.to_image(values[:, None]))[None]

    def _vector(self, ids: np.ndarray, vals: np.ndarray) -> np.ndarray:
        out = np.zeros(self.layout.geo.n)
        out[ids] = vals
        return out

    @cached_property
    def static(self) -> torch.Tensor:
        """The identity detail (pores, age lines) ``(1, 1, S, S)``."""
        return self._image(self.static_texels)

    @cached_property
    def units(self) -> dict[str, torch.Tensor]:
        """Per-unit maps ``(1, 1, S, S)`` at weight 1 (units of the model only)."""
        return {k: self._image(self._vector(*v)) for k, v in self.unit_texels.items()}

    @cached_property
    def jaw(self) -> torch.Tensor | None:
        """The jaw opening's map per radian ``(1, 1, S, S)`` (None without a jaw joint)."""
        return None if self.jaw_texels is None else self._image(self._vector(*self.jaw_texels))

    def compose(self, expression, pose=None) -> torch.Tensor:
        """The map ``(1, 1, S, S)`` of expression weights ``(K_exp,)`` / ``(1, K_exp)`` and joint
        pose ``(J, 3)`` / ``(1, J, 3)`` (axis-angles; only the jaw's x rotation is used)."""
        w = np.asarray(torch.as_tensor(expression).detach().cpu().double().reshape(-1))
        if len(w) != len(self.expression_names):
            raise ValueError(f"expression has {len(w)} weights, the head model {len(self.expression_names)}")
        vec = self.static_texels.copy()
        for name, (ids, vals) in self.unit_texels.items():
            k = float(w[self.expression_names.index(name)])
            if k != 0.0:
                vec[ids] += k * vals
        if self.jaw_texels is not None and pose is not None:
            q = np.asarray(torch.as_tensor(pose).detach().cpu().double().reshape(-1, 3))
            r = float(q[self.jaw_joint, 0])
            if r != 0.0:
                vec[self.jaw_texels[0]] += r * self.jaw_texels[1]
        return self._image(vec)


def _combine(patterns: dict[str, _Pattern], parts: tuple[tuple[str, float], ...], depth: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Sparse ``(ids, metres)`` of ``Σ gain · FAMILY_DEPTH · depth · pattern`` over ``parts``."""
    ids = np.concatenate([patterns[name].ids for name, _ in parts])
    vals = np.concatenate([gain * FAMILY_DEPTH[family(name)] * depth * patterns[name].values for name, gain in parts])
    if len(parts) == 1:
        return ids, vals
    uniq, inverse = np.unique(ids, return_inverse=True)
    return uniq, np.bincount(inverse, vals, len(uniq))


def person_detail(head: HeadModel, rng: np.random.Generator, size: int = 256) -> WrinkleBasis:
    """Draw one person's detail model (:class:`WrinkleBasis`) for ``head`` at map ``size``
    from ``rng`` (all draws in a fixed order, whatever the model)."""
    D = detail_layout(head, size)
    n = D.geo.n
    a = (rng.uniform(*AGE_RANGE) - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])
    age = AGE_RANGE[0] + a * (AGE_RANGE[1] - AGE_RANGE[0])
    loss = float(np.clip(0.55 * a + 0.45 * rng.uniform(), 0, 1))  # lost skin elasticity
    depth = (0.3 + 0.5 * loss) * 1e-3
    patterns: dict[str, _Pattern] = {}
    for fam in FAMILIES:
        patterns.update(fam(D, rng))
    # static: pores and age lines (the same patterns, shallow)
    pores = rng.uniform(0.02, 0.05) * 1e-3
    static = pores * rng.standard_normal(n) * D.skin
    ages = {"forehead": a ** 1.5 * rng.uniform(0.1, 0.35), "crow": a ** 1.5 * rng.uniform(0.08, 0.3),
            "nasolabial": (0.05 + 0.45 * a) * rng.uniform(0.4, 1.0), "frown": a ** 2 * rng.uniform(0.0, 0.25)}
    for name, p in patterns.items():
        if family(name) in ages:
            static[p.ids] += ages[family(name)] * 1e-3 * p.values
    names = tuple(head.expression_names)
    jaw_joint = head.joint_names.index("jaw") if "jaw" in head.joint_names else None
    units = {k: _combine(patterns, parts, depth) for k, parts in UNIT_PATTERNS.items() if k in names}
    jaw = None
    if jaw_joint is not None:
        jaw = _combine(patterns, JAW_PATTERNS, depth / JAW_FULL_RAD)
    elif "jawOpen" in names:
        units["jawOpen"] = _combine(patterns, JAW_PATTERNS, depth)
    return WrinkleBasis(D, names, jaw_joint, float(age), float(depth), static, units, jaw)


def wrinkle_expression(head: HeadModel, rng: np.random.Generator, expression: np.ndarray, pose: np.ndarray,
                       jaw_max_rad: float) -> str | None:
    """In place: make one :data:`WRINKLE_EXPRESSIONS` group strong in ``expression (K_exp,)`` /
    ``pose (J, 3)`` (each unit U(0.6, 1), both sides three times in four, else one side;
    ``jaw``: the jaw opens by U(0.6, 1)·``jaw_max_rad``); returns the group's name (None when
    the model has none of them)."""
    names = list(head.expression_names)
    has_jaw = "jaw" in head.joint_names
    groups = [g for g, units in WRINKLE_EXPRESSIONS.items()
              if (g == "jaw" and (has_jaw or "jawOpen" in names)) or any(u in names for u in units)]
    if not groups:
        return None
    group = groups[int(rng.integers(len(groups)))]
    both = rng.uniform() < 0.75
    side = "Left" if rng.uniform() < 0.5 else "Right"
    lo_hi = head.expression_range.cpu().numpy()
    if group == "jaw":
        if has_jaw:
            pose[head.joint_names.index("jaw"), 0] = rng.uniform(0.6, 1.0) * jaw_max_rad
        else:
            i = names.index("jawOpen")
            expression[i] = np.clip(rng.uniform(0.6, 1.0), lo_hi[i, 0], lo_hi[i, 1])
        return group
    for u in WRINKLE_EXPRESSIONS[group]:
        w = rng.uniform(0.6, 1.0)
        if u not in names or (not both and u.endswith(("Left", "Right")) and not u.endswith(side)):
            continue
        i = names.index(u)
        expression[i] = np.clip(w, lo_hi[i, 0], lo_hi[i, 1])
    return group


# ---------------------------------------------------------------------------------------------
# figure and timing


#: the figure's expressions: (title, {unit: weight}, jaw radians)
FIGURE_EXPRESSIONS = (("neutral", {}, 0.0),
                      ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.6,
                                 "cheekSquintRight": 0.6, "eyeSquintLeft": 0.5, "eyeSquintRight": 0.5}, 0.0),
                      ("brow raise", {"browInnerUp": 1.0, "browInnerUpLeft": 1.0, "browInnerUpRight": 1.0,
                                      "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0}, 0.0),
                      ("frown", {"browDownLeft": 1.0, "browDownRight": 1.0, "noseSneerLeft": 0.5,
                                 "noseSneerRight": 0.5}, 0.0),
                      ("jaw open", {}, 0.3))


def figure_pose(head: HeadModel, units: dict[str, float], jaw_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Expression weights ``(K_exp,)`` and joint pose ``(J, 3)`` of one :data:`FIGURE_EXPRESSIONS`
    entry for ``head`` (units it lacks are left out; without a jaw joint the jaw opening goes
    to ``jawOpen``)."""
    names = list(head.expression_names)
    e = np.zeros(head.n_expression)
    for u, v in units.items():
        if u in names:
            e[names.index(u)] = v
    q = np.zeros((head.n_joints, 3))
    if jaw_rad and "jaw" in head.joint_names:
        q[head.joint_names.index("jaw"), 0] = jaw_rad
    elif jaw_rad and "jawOpen" in names:
        e[names.index("jawOpen")] = jaw_rad / JAW_FULL_RAD
    return e, q


def figure_config(image_size: int = 256):
    """A clean, frontal, close :class:`~engine.generator.realistic.RealisticConfig` for figures
    (short hair, no props, no degradations)."""
    from engine.generator.realistic import RealisticConfig

    return RealisticConfig(image_size=image_size, wide_pose_probability=0.0, pose_sd_deg=(0.0, 0.0, 0.0),
                           face_fraction=(0.62, 0.62), focal_mm=(70.0, 70.0), hair_weights={"buzz": 1.0},
                           hat_probability=0.0, glasses_probability=0.0, hand_probability=0.0,
                           facial_hair_probability=0.0, makeup_probability=0.0,
                           background_weights={"studio": 1.0}, exposure_sd_ev=0.0, wb_error=0.0,
                           wb_correction=(1.0, 1.0), defocus_probability=0.0, motion_probability=0.0,
                           noise_level=(0.1, 0.1), jpeg_probability=0.0, downscale_probability=0.0,
                           gaze_deg=0.0, blink_probability=0.0, expressions=(0, 0), jaw_probability=0.0)


def raking_light():
    """A low key light from the upper left (grazing the forehead), a weak ambient."""
    from engine.generator.lights import DirectionalLight, LightRig

    d = np.array([-0.5, -0.75, -0.45])
    key = DirectionalLight("key", d / np.linalg.norm(d), np.ones(3), 1.9, True, 1.0, 5500.0)
    return LightRig([key], np.full(3, 0.1), np.full(3, 0.05), 0.5)


def front_view(head: HeadModel, displacement: torch.Tensor, cell_m: float = 0.5e-3) -> np.ndarray:
    """The face's part of a detail map ``(1, 1, S, S)`` seen from the front: template ``(x, y)``
    cells of ``cell_m`` (image rows going down, the subject's right on the left), each showing
    its nearest front-facing face texel (NaN away from the face)."""
    from scipy.spatial import cKDTree

    D = detail_layout(head, displacement.shape[-1])
    lm, P, n = D.landmarks, D.position, D.normal
    front = np.flatnonzero((n[:, 2] > 0.15) & (P[:, 2] > lm[0, 2]) & (D.skin > 0.05))
    vals = displacement.reshape(-1).numpy()[D.geo.index[front]]
    x0, x1 = lm[0, 0] - 0.005, lm[16, 0] + 0.005
    y0, y1 = lm[8, 1] - 0.01, lm[17:27, 1].max() + 0.06
    xs = np.arange(x0, x1, cell_m) if D.left_sign > 0 else np.arange(x1, x0, -cell_m)
    ys = np.arange(y1, y0, -cell_m)
    gx, gy = np.meshgrid(xs, ys)
    dist, idx = cKDTree(P[front, :2]).query(np.stack([gx.ravel(), gy.ravel()], 1))
    out = np.where(dist < 2.5 * D.texel_m, vals[idx], np.nan)
    return out.reshape(gx.shape)


def make_figure(head: HeadModel, seed: int, path: str, image_size: int = 256, map_size: int | None = None) -> dict:
    """Render person ``seed`` at :data:`FIGURE_EXPRESSIONS` under :func:`raking_light` (top row)
    with their displacement maps (bottom row, cropped to the face) into ``path``; returns the
    person's attributes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.generator.realistic import render_realistic

    cfg = figure_config(image_size)
    cfg.detail_map_size = map_size
    shots = []
    for title, units, jaw_rad in FIGURE_EXPRESSIONS:
        e, q = figure_pose(head, units, jaw_rad)
        shots.append((title, render_realistic(head, seed, cfg, expression=e, pose=q, lights=raking_light())))
    maps = [front_view(head, s.params.displacement) * 1e3 for _, s in shots]
    maps_size = shots[0][1].params.displacement.shape[-1]
    fig, ax = plt.subplots(2, len(shots), figsize=(3.0 * len(shots), 6.6))
    lim = 0.8
    for k, ((title, s), m) in enumerate(zip(shots, maps)):
        ax[0, k].imshow(s.image)
        ax[0, k].set_title(title)
        im = ax[1, k].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax[1, k].set_title(f"deepest {np.nanmin(m):.2f} mm", fontsize=10)
        for a in ax[:, k]:
            a.set_xticks([])
            a.set_yticks([])
    fig.colorbar(im, ax=ax[1, :].tolist(), shrink=0.8, label="displacement (mm)")
    attrs = shots[0][1].attributes
    fig.suptitle(f"{head.name} head, seed {seed}: age {attrs.get('age')}, expression wrinkles "
                 f"{attrs.get('wrinkle_depth_mm')} mm deep at weight 1; raking light, {maps_size}-texel map")
    fig.savefig(path, dpi=135, bbox_inches="tight")
    plt.close(fig)
    return attrs


def time_renders(head: HeadModel, n: int, image_size: int = 224, repeats: int = 2) -> dict[str, float]:
    """CPU seconds per image of ``render_realistic`` (seeds 0..n-1) without (``"plain"``) and
    with (``"detail"``) the detail: the two interleaved per seed, each the fastest of ``repeats``
    runs (so that other load on the machine counts as little as possible)."""
    import time

    from engine.generator.realistic import RealisticConfig, render_realistic

    cfgs = {"plain": RealisticConfig(image_size=image_size, detail=False),
            "detail": RealisticConfig(image_size=image_size, detail=True)}
    for cfg in cfgs.values():
        render_realistic(head, n, cfg)  # caches
    out = {k: 0.0 for k in cfgs}
    for s in range(n):
        for k, cfg in cfgs.items():
            best = float("inf")
            for _ in range(repeats):
                t = time.process_time()
                render_realistic(head, s, cfg)
                best = min(best, time.process_time() - t)
            out[k] += best / n
    return out


def main(argv: list[str] | None = None) -> int:
    from engine.errors import cli_errors

    ap = argparse.ArgumentParser(prog="python -m engine.generator.wrinkles",
                                 description="Figure and timing of the generator's wrinkle/detail model.")
    ap.add_argument("--figure", help="write the five-expression figure (PNG) here")
    ap.add_argument("--seed", type=int, default=8, help="the person of the figure")
    ap.add_argument("--model", default="open")
    ap.add_argument("--size", type=int, default=256, help="figure image size (px)")
    ap.add_argument("--map-size", type=int, default=None, help="detail map size (default: RealisticConfig's)")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="time N renders (224 px) with and without detail")
    a = ap.parse_args(argv)
    with cli_errors():
        from engine.head import load_head_model

        head = load_head_model(a.model)
        if a.figure:
            attrs = make_figure(head, a.seed, a.figure, a.size, a.map_size)
            print(f"wrote {a.figure} (age {attrs.get('age')}, depth {attrs.get('wrinkle_depth_mm')} mm)")
        if a.time:
            t = time_renders(head, a.time)
            print(f"render_realistic, 224 px, {a.time} faces: {1e3 * t['plain']:.1f} ms without detail, "
                  f"{1e3 * t['detail']:.1f} ms with ({100 * (t['detail'] / t['plain'] - 1):+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
