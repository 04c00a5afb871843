"""Where the facial features are on a head model's surface (template-only, cached per model).

From the model's iBUG-68 landmarks on its template, :func:`feature_zones` computes, for any
set of template points (albedo-map texels or mesh vertices), soft masks and coordinates the
painter and the material model use: lips (upper / lower), eyebrows (distance to the brow
line and position along it), the eyelid line and the eyeshadow band, cheeks, nose, under-eye,
where a beard grows, teeth and mouth depth, the angle around the head and the height above
the brows (for hairlines). :func:`head_layout` bundles them for the texels of the albedo map
and for the vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.head.model import HeadModel
from engine.generator.texels import TexelGeometry, model_cache, paint_size, texel_geometry


def smoothstep(e0: float, e1: float, x):
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (numpy float32 array or torch tensor)."""
    e0, e1 = float(e0), float(e1)
    if isinstance(x, torch.Tensor):
        t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
        return t * t * (3 - 2 * t)
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _polyline_distance(p: np.ndarray, line: np.ndarray, closed: bool = False) -> np.ndarray:
    """Distance of 2-D points ``(P, 2)`` to a polyline ``(K, 2)`` (closed: back to the start)."""
    a, b = (line, np.roll(line, -1, 0)) if closed else (line[:-1], line[1:])
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)[None], 0, 1)
    d = p[:, None] - (a[None] + t[..., None] * ab[None])
    return np.sqrt((d * d).sum(-1)).min(1)


def _signed_polygon_distance(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance (positive inside) of 2-D points to a closed polygon ``(K, 2)``."""
    from matplotlib.path import Path

    inside = Path(poly).contains_points(p)
    d = _polyline_distance(p, poly, closed=True)
    return np.where(inside, d, -d).astype(np.float32)


def teeth_vertices(head: HeadModel) -> np.ndarray:
    """(V,) bool: the model's teeth (its ``teeth`` region, e.g. ICT's own teeth; for models
    without separate teeth, the front of the mouth interior behind the lips)."""
    if "teeth" in head.regions:
        return head.regions["teeth"].cpu().numpy().astype(bool)
    X = head.template.cpu().numpy()
    with torch.no_grad():
        lm = head.landmarks(head.template[None])[0].cpu().numpy()
    mouth = head.regions["mouth_interior"].cpu().numpy()
    mid_y = lm[[62, 66], 1].mean()
    return (mouth & (X[:, 2] > lm[62, 2] - 0.014) & (np.abs(X[:, 1] - mid_y) < 0.011)
            & (np.abs(X[:, 0]) < 0.6 * abs(lm[54, 0] - lm[48, 0])))


def drawn_faces(head: HeadModel) -> torch.Tensor:
    """Indices of the faces the generator renders: all, except ICT's semi-transparent eye
    layers (lacrimal fluid, eye blend and occlusion shells), which would hide the eyes if drawn
    opaque (its eyelashes stay)."""
    F = head.n_faces
    keep = torch.ones(F, dtype=torch.bool)
    if head.name == "ict":
        from engine.head.ict import RANGES

        a, b = RANGES["eye_extras"]
        f = head.faces.cpu()
        keep &= ~((f >= a) & (f <= b)).any(1)
    return torch.nonzero(keep)[:, 0]


def feature_zones(points: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Soft feature masks and coordinates ``(P,)`` float32 of template points ``(P, 3)``
    given the template landmarks ``lm (68, 3)`` (model frame, metres)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    ax = np.abs(x)
    out: dict[str, np.ndarray] = {}
    # lips: inside the outer lip contour (seen from the front), on the front of the face
    mouth_z = lm[48:60, 2].min()
    front_mouth = smoothstep(mouth_z - 0.016, mouth_z - 0.008, z)
    sd = _signed_polygon_distance(points[:, :2], lm[48:60, :2])
    out["lips"] = smoothstep(-0.0007, 0.0009, sd) * front_mouth
    corner_y = 0.5 * (lm[48, 1] + lm[54, 1])
    out["upper_lip"] = (y > lm[62, 1] * 0.5 + corner_y * 0.5).astype(np.float32)
    # eyebrows: vertical offset from the brow line and position along it (0 inner, 1 tail)
    brow_y = lm[17:27, 1].mean()
    along = np.full(len(points), -1.0, np.float32)
    off = np.full(len(points), 1.0, np.float32)
    for ids in (list(range(21, 16, -1)), list(range(22, 27))):  # inner -> outer
        b = lm[ids]
        xs = np.abs(b[:, 0])
        t = (ax - xs[0]) / (xs[-1] - xs[0])
        yl = np.interp(ax, xs, b[:, 1])
        side = np.sign(b[0, 0]) == np.sign(x)
        sel = side & (t > -0.25) & (t < 1.25) & (z > b[:, 2].min() - 0.012)
        along = np.where(sel, t, along)
        off = np.where(sel, y - yl, off)
    out["brow_along"], out["brow_offset"] = along.astype(np.float32), off.astype(np.float32)
    # upper eyelid line (eyeliner) and the band between it and the brow (eyeshadow)
    lid_off = np.full(len(points), -1.0, np.float32)
    shadow = np.zeros(len(points), np.float32)
    for ids in ((36, 37, 38, 39), (42, 43, 44, 45)):
        b = lm[list(ids)]
        order = np.argsort(b[:, 0])
        xs, ys = b[order, 0], b[order, 1]
        inside_x = (x > xs[0] - 0.004) & (x < xs[-1] + 0.004) & (z > b[:, 2].min() - 0.008)
        yl = np.interp(x, xs, ys)
        lid_off = np.where(inside_x, y - yl, lid_off)
        span = brow_y - ys.max()
        w = 1 - np.clip(np.abs(x - xs.mean()) / (0.6 * (xs[-1] - xs[0]) + 0.004), 0, 1)
        shadow = np.maximum(shadow, inside_x * w * smoothstep(-0.001, 0.002, y - yl)
                            * (1 - smoothstep(0.45 * span, 0.8 * span, y - yl)))
    out["lid_offset"], out["eyeshadow"] = lid_off, shadow.astype(np.float32)

    def blob(centre: np.ndarray, radius: float) -> np.ndarray:
        return np.exp(-((points - centre) ** 2).sum(1) / (2 * radius ** 2)).astype(np.float32)

    cheeks = [0.5 * (lm[i] + lm[j]) + 0.3 * (lm[k] - lm[j]) for i, j, k in ((40, 48, 2), (47, 54, 14))]
    out["cheek"] = np.maximum(blob(cheeks[0], 0.018), blob(cheeks[1], 0.018))
    out["nose"] = np.maximum(blob(lm[30], 0.012), blob(0.5 * (lm[27] + lm[30]), 0.01))
    out["under_eye"] = np.maximum(blob(0.5 * (lm[40] + lm[41]) - [0, 0.007, 0], 0.008),
                                  blob(0.5 * (lm[46] + lm[47]) - [0, 0.007, 0], 0.008))
    out["forehead"] = smoothstep(brow_y + 0.01, brow_y + 0.03, y) * smoothstep(lm[0, 2], lm[27, 2], z)
    # beard: below a line from the sideburns over the cheeks to the nose, in front of the ears
    line_y = np.interp(ax, [0, abs(lm[48, 0]) + 0.002, abs(lm[4, 0]), abs(lm[2, 0]), abs(lm[0, 0]) + 0.01],
                       [lm[33, 1] - 0.002, lm[33, 1] - 0.004, lm[31, 1] - 0.012, lm[29, 1] - 0.006, lm[0, 1] + 0.01])
    front = smoothstep(lm[0, 2] - 0.006, lm[0, 2] + 0.01, z)
    out["beard"] = smoothstep(0.0, 0.004, line_y - y) * front
    out["moustache"] = out["beard"] * (ax < abs(lm[48, 0]) + 0.004) * (y > lm[48:55, 1].max() - 0.002)
    chin = 0.5 * (lm[57] + lm[8])
    out["chin_dist"] = np.sqrt((x / 0.021) ** 2 + ((y - chin[1]) / 0.03) ** 2).astype(np.float32)  # goatee ellipse
    out["neck_depth"] = (lm[8, 1] - y).astype(np.float32)  # > 0 below the chin
    out["mouth_depth"] = np.clip(lm[62, 2] - z, 0, None).astype(np.float32)
    # hairline coordinates: angle around the vertical axis (0 = front) and height over the brows
    zc = 0.5 * (lm[0, 2] + lm[16, 2]) - 0.012
    out["phi"] = np.degrees(np.arctan2(x, z - zc)).astype(np.float32)
    out["height"] = (y - brow_y).astype(np.float32)
    return out


#: Hairline knots: angles around the head (deg) and the lowest hairline heights above the
#: brows (metres) any style may have there (scalp painting only looks above these).
HAIRLINE_PHI = np.array([0.0, 30.0, 50.0, 66.0, 78.0, 92.0, 108.0, 125.0, 150.0, 180.0])
HAIRLINE_LOWEST = np.array([0.035, 0.035, 0.03, 0.0, -0.05, 0.0, -0.01, -0.06, -0.1, -0.11])
#: zones whose texels the painter visits (texels where the zone exceeds 1e-3)
SUPPORTED_ZONES = ("lips", "eyeshadow", "cheek", "nose", "beard", "under_eye")


@dataclass
class HeadLayout:
    """Template-only painting data of one head model: the albedo map's texels and their
    feature zones and region weights, the same for the vertices, the template landmarks."""

    texels: TexelGeometry
    texel_zones: dict[str, np.ndarray]
    texel_regions: dict[str, np.ndarray]
    vertex_zones: dict[str, np.ndarray]
    vertex_regions: dict[str, np.ndarray]
    landmarks: np.ndarray  # (68, 3)
    teeth_vertices: np.ndarray  # (V,) bool
    support: dict[str, torch.Tensor]  # zone / region name -> texel ids (int64) where it is non-zero
    eye_texels: np.ndarray  # (E,) texel ids on the eyeballs
    eye_directions: np.ndarray  # (E, 3) their unit rest directions from the eyeball centre


def head_layout(head: HeadModel, size: int | None = None) -> HeadLayout:
    """The painting layout of ``head`` at albedo-map ``size`` (default :func:`paint_size`)."""
    from engine.generator.eyes import eye_frames

    size = size or paint_size(head)
    cache = model_cache(head)
    key = ("layout", size)
    if key in cache:
        return cache[key]
    geo = texel_geometry(head, size)
    with torch.no_grad():
        lm = head.landmarks(head.template[None])[0].cpu().numpy().astype(np.float64)
    eyes = eye_frames(head)
    X = head.template.cpu().numpy().astype(np.float64)
    vregions = {k: v.cpu().numpy().astype(np.float32) for k, v in head.regions.items()}
    teeth = teeth_vertices(head)
    vregions["teeth"] = teeth.astype(np.float32)
    tregions = {k: geo.interpolate(v) for k, v in vregions.items()}
    tz = feature_zones(geo.position.astype(np.float64), lm)
    ids = lambda m: torch.from_numpy(np.flatnonzero(m))  # noqa: E731
    support = {k: ids(tz[k] > 1e-3) for k in SUPPORTED_ZONES}
    support["brows"] = ids((tz["brow_along"] > -0.2) & (tz["brow_along"] < 1.2) & (np.abs(tz["brow_offset"]) < 0.012))
    support["lid"] = ids((tz["lid_offset"] > -0.001) & (tz["lid_offset"] < 0.004))
    support["skin"] = ids(tregions["skin"] > 0.5)
    lowest = np.interp(np.abs(tz["phi"]), HAIRLINE_PHI, HAIRLINE_LOWEST)
    support["scalp"] = ids((tregions["skin"] > 1e-3) & (tz["height"] > lowest))
    for k in ("mouth_interior", "teeth", "eye_sockets", "eye_extras"):
        if k in tregions:
            support[k] = ids(tregions[k] > 1e-3)
    eye_ids = np.flatnonzero(tregions["eyes"] > 0.5)
    p = geo.position[eye_ids].astype(np.float64)
    d = p - eyes.centres[np.where(p[:, 0] > 0, 0, 1)]
    d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)
    layout = HeadLayout(geo, tz, tregions, feature_zones(X, lm), vregions, lm, teeth, support,
                        eye_ids, d)
    cache[key] = layout
    return layout
