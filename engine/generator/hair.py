"""Scalp hair as geometry: a shell over the scalp and, for long hair, a curtain to the
shoulders.

* :func:`offset_shell`: the faces of the posed head inside a coverage mask, pushed out along
  the vertex normals (thin at the edge, full thickness a few cm inside it); UVs are
  ``(|angle| / 180°, height)`` around the head, so strands run down and the texture is
  mirrored at the back instead of having a seam. Hats reuse it.
* :func:`curtain_mesh`: a sheet around the back of the head from above the ears down past
  the shoulders, at the skull's radius (the ears included) plus the hair's thickness,
  flaring out as it falls, with a ragged lower edge.
* :func:`hair_texture`: strands (noise stretched along ``v``) in the hair colour.
"""

from __future__ import annotations

import numpy as np

from engine.generator.hairstyle import HAIRLINE_PHI, HairStyle, hairline_height, scalp_coverage
from engine.generator.layout import HeadLayout, smoothstep
from engine.generator.primitives import Mesh, grid_surface
from engine.generator.props import ATLAS_CELL, Prop


def hair_texture(rng: np.random.Generator, colour: np.ndarray, size: int = ATLAS_CELL) -> np.ndarray:
    """``(3, size, size)`` sRGB strands: per-column streaks plus fine noise stretched along v."""
    import cv2

    cols = cv2.GaussianBlur(rng.normal(0, 1, (1, size)).astype(np.float32), (0, 0), 0.8).reshape(1, size)
    fine = cv2.blur(rng.normal(0, 1, (size, size)).astype(np.float32), (1, 9))
    lum = np.exp(0.35 * cols + 0.6 * fine - 0.1)
    return np.clip(np.asarray(colour, np.float32)[:, None, None] * lum[None], 0, 1).astype(np.float32)


def offset_shell(vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, coverage: np.ndarray,
                 thickness: np.ndarray, zones: dict[str, np.ndarray]) -> tuple[Mesh, np.ndarray] | None:
    """The faces whose three vertices have ``coverage > 0.5``, offset by ``thickness (V,)``
    metres along the normals; UVs from the template zones ``phi`` and ``height``. Returns the
    mesh and the head vertex each shell vertex came from."""
    sel = (coverage[faces] > 0.5).all(1)
    if not sel.any():
        return None
    used, inv = np.unique(faces[sel], return_inverse=True)
    v = vertices[used] + normals[used] * thickness[used, None]
    uv = np.stack([np.abs(zones["phi"][used]) / 180.0, np.clip((zones["height"][used] + 0.12) / 0.24, 0, 1)], 1)
    return Mesh(v.astype(np.float32), inv.reshape(-1, 3).astype(np.int64), uv.astype(np.float32)), used


def _skull_radius(vertices: np.ndarray, skin: np.ndarray, centre_z: float, y_lo: float, y_hi: float,
                  bins: int = 36) -> np.ndarray:
    """Largest horizontal distance of skin points from the axis ``(0, ·, centre_z)`` per angle bin
    (angle from the back, -180..180°) in the height band ``[y_lo, y_hi]``."""
    p = vertices[skin & (vertices[:, 1] > y_lo) & (vertices[:, 1] < y_hi)]
    th = np.degrees(np.arctan2(p[:, 0], -(p[:, 2] - centre_z)))
    r = np.hypot(p[:, 0], p[:, 2] - centre_z)
    b = np.clip(((th + 180) / 360 * bins).astype(int), 0, bins - 1)
    out = np.zeros(bins)
    np.maximum.at(out, b, r)
    out[out == 0] = out.max() if out.max() > 0 else 0.09
    k = np.array([0.25, 0.5, 0.25])
    return np.convolve(np.concatenate([out[-1:], out, out[:1]]), k, "valid")


def curtain_mesh(vertices: np.ndarray, skin: np.ndarray, layout: HeadLayout, style: HairStyle,
                 rng: np.random.Generator, rows: int = 14, columns: int = 28) -> Mesh:
    """Long hair falling from above the ears to ``style.curtain_length`` below the brows."""
    lm = layout.landmarks
    brow_y = lm[17:27, 1].mean()
    zc = 0.5 * (lm[0, 2] + lm[16, 2]) - 0.012
    radius = _skull_radius(vertices, skin, zc, brow_y - 0.05, brow_y + 0.03)
    th = np.linspace(-style.curtain_angle, style.curtain_angle, columns)
    r0 = np.interp(th, np.linspace(-180, 180, len(radius), endpoint=False) + 180 / len(radius), radius, period=360)
    r0 = r0 + style.thickness * 0.8 + 0.004
    y_top = brow_y + 0.01
    front = np.abs(th) / style.curtain_angle
    length = style.curtain_length * (1 - 0.35 * front ** 2) * (1 + 0.08 * rng.normal(0, 1, columns)).clip(0.8, 1.2)
    s = np.linspace(0, 1, rows)[:, None]
    y = y_top - s * (length[None] + 0.01)
    flare = rng.uniform(0.05, 0.25)
    wave = 0.004 * np.sin(np.radians(th)[None] * rng.integers(4, 9) + s * rng.uniform(5, 15))
    r = r0[None] + flare * (s * length[None]) + wave
    a = np.radians(th)[None]
    pts = np.stack([r * np.sin(a), y, zc - r * np.cos(a)], -1)
    return grid_surface(pts)


def hair_props(style: HairStyle, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray,
               layout: HeadLayout, lumps: np.ndarray, rng: np.random.Generator) -> list[Prop]:
    """The hair meshes of ``style`` on the posed head (``vertices``/``normals`` model frame;
    ``lumps (V,)`` smooth noise that varies the volume)."""
    if not style.has_shell:
        return []
    vz, skin = layout.vertex_zones, layout.vertex_regions["skin"]
    shell_style = style
    if style.fringe > 0:  # bangs: the shell reaches down the forehead
        line = style.hairline.copy()
        front = HAIRLINE_PHI < 45
        line[front] = np.minimum(line[front], style.fringe)
        shell_style = HairStyle(**{**style.__dict__, "hairline": line})
    cover = scalp_coverage(shell_style, vz, skin, softness=0.002)
    depth_in = vz["height"] - hairline_height(shell_style, vz["phi"])
    t = 0.0025 + (style.thickness - 0.0025) * smoothstep(0.0, 0.035, depth_in) * (1 + 0.25 * lumps)
    if style.fringe > 0:
        t = np.where((np.abs(vz["phi"]) < 45) & (vz["height"] < style.hairline[0]), 0.004, t)
    shell = offset_shell(vertices, normals, faces, cover, t.astype(np.float32), vz)
    tex = hair_texture(rng, style.colour)
    out = []
    if shell is not None:
        mesh, src = shell
        ao = 0.45 + 0.45 * smoothstep(0.002, 0.012, t[src])  # darker where the hair is thin (roots, hairline)
        out.append(Prop("hair", mesh, tex, specular=0.12, shininess=12.0, label="hair", ao=ao))
    if style.curtain_length > 0:
        curtain = curtain_mesh(vertices, skin > 0.5, layout, style, rng)
        depth = 1 - curtain.uv[:, 1]  # 0 at the top, 1 at the ends
        out.append(Prop("hair_long", curtain, tex, specular=0.12, shininess=12.0, label="hair",
                        ao=0.5 + 0.35 * np.sqrt(np.clip(np.sin(np.pi * depth), 0, 1))))
    return out
