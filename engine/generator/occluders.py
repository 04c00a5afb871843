"""Things in front of or on the face: hats (beanie, cap with a brim), glasses (frames,
sunglasses) and a hand with its forearm. Each is a :class:`engine.generator.props.Prop` in
the head's model frame, built from the posed head (landmarks, eyeballs) so it fits the
person; the renderer records where they hide the face (``RealisticSample.occlusion_mask``).
"""

from __future__ import annotations

import numpy as np

from engine.generator.hair import offset_shell
from engine.generator.layout import HeadLayout, smoothstep
from engine.generator.primitives import Mesh, ellipsoid, grid_surface, merge, orient, tube
from engine.generator.props import ATLAS_CELL, Prop, fabric_texture
from engine.generator.tones import SkinTone, lab_to_srgb


def _solid(colour: np.ndarray, rng: np.random.Generator, grain: float = 0.05) -> np.ndarray:
    tex = np.asarray(colour, np.float32)[:, None, None] * (1 + rng.normal(0, grain, (1, ATLAS_CELL, ATLAS_CELL)))
    return np.clip(tex, 0, 1).astype(np.float32)


def hat_props(vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, layout: HeadLayout,
              rng: np.random.Generator, over: float = 0.0) -> list[Prop]:
    """A knitted beanie or a cap with a brim over the posed head (``over``: extra offset in
    metres, to sit on top of a hair shell)."""
    vz, skin = layout.vertex_zones, layout.vertex_regions["skin"]
    kind = "beanie" if rng.uniform() < 0.5 else "cap"
    edge = rng.uniform(0.012, 0.035)  # height of the hat's rim above the brows, in front
    phi = np.abs(vz["phi"])
    rim = edge - 0.02 * smoothstep(60, 150, phi) + 0.01 * smoothstep(60, 95, phi) * (1 - smoothstep(95, 130, phi))
    cover = smoothstep(0.0, 0.002, vz["height"] - rim) * skin
    thick = (rng.uniform(0.012, 0.022) if kind == "beanie" else rng.uniform(0.006, 0.01))
    t = (0.004 + (thick + over) * smoothstep(0.0, 0.02, vz["height"] - rim)).astype(np.float32)
    shell = offset_shell(vertices, normals, faces, cover, t, vz)
    if shell is None:
        return []
    shell = shell[0]
    tex = fabric_texture(rng)
    if kind == "beanie":  # ribs
        tex *= (1 + 0.12 * np.sin(np.arange(ATLAS_CELL) * 2 * np.pi / 4))[None, None, :]
        return [Prop("hat", shell, np.clip(tex, 0, 1), specular=0.03, shininess=6.0, label="hat")]
    # cap: a brim from the front rim, reaching forwards and a little down
    front = np.flatnonzero((cover > 0.5) & (np.abs(vz["phi"]) < 70) & (vz["height"] - rim < 0.012))
    if len(front) < 4:
        return [Prop("hat", shell, tex, specular=0.05, shininess=10.0, label="hat")]
    ang = np.linspace(-65, 65, 16)
    base = []
    for a in ang:  # the rim point nearest to each angle
        i = front[np.argmin(np.abs(vz["phi"][front] - a))]
        base.append(vertices[i] + normals[i] * t[i])
    base = np.asarray(base)
    reach = rng.uniform(0.05, 0.08)
    out_dir = np.stack([np.sin(np.radians(ang)), np.full_like(ang, -rng.uniform(0.1, 0.4)), np.cos(np.radians(ang))], 1)
    out_dir /= np.linalg.norm(out_dir, axis=1, keepdims=True)
    w = np.cos(np.radians(ang))[:, None] ** 0.7
    brim_pts = np.stack([base, base + out_dir * reach * w * 0.5, base + out_dir * reach * w], 0)
    brim = grid_surface(brim_pts, outward=np.array([0.0, 1.0, 0.0]))
    mesh = merge([shell, brim])
    return [Prop("hat", mesh, tex, specular=0.05, shininess=10.0, label="hat")]


def glasses_props(vertices: np.ndarray, eyes_region: np.ndarray, lm: np.ndarray, rng: np.random.Generator,
                  sunglasses: bool) -> list[Prop]:
    """Frames around both eyes (a rounded rectangle each, a bridge, temples to the ears) in
    front of the brows and the nose bridge; ``lm (68, 3)``: the posed landmarks;
    ``sunglasses`` adds dark lenses."""
    centres = []
    for side in (1, -1):
        ids = eyes_region & (np.sign(vertices[:, 0]) == side)
        centres.append(vertices[ids].mean(0) if ids.any() else np.array([0.031 * side, 0.0, 0.0]))
    front_z = max(lm[17:27, 2].max() + 0.004, lm[27:29, 2].max() + 0.002,
                  max(vertices[eyes_region, 2].max() if eyes_region.any() else 0.0, 0.0) + 0.012) + rng.uniform(0.0, 0.006)
    w, h = rng.uniform(0.021, 0.028), rng.uniform(0.014, 0.022)
    e = rng.uniform(2.5, 6.0)  # superellipse exponent: round .. rectangular
    r_tube = rng.uniform(0.0009, 0.0022)
    ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    rings, lenses = [], []
    for c in centres:
        cx, cy = c[0] * rng.uniform(1.0, 1.08), c[1] - rng.uniform(0.0, 0.004)
        x = cx + w * np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** (2 / e)
        y = cy + h * np.sign(np.sin(ang)) * np.abs(np.sin(ang)) ** (2 / e)
        z = front_z - 0.006 * ((x - cx) * np.sign(cx) / w).clip(0, None)  # the outer side wraps back
        ring = np.stack([x, y, z], 1)
        rings.append(tube(ring, r_tube, 5, closed=True))
        lenses.append(ring)
    inner = [r[np.argmin(np.abs(r[:, 0]))] for r in lenses]
    mid = 0.5 * (inner[0] + inner[1]) + np.array([0, 0.003, 0.002])
    bridge = tube(np.stack([inner[0], mid, inner[1]]), r_tube, 5)
    temples = []
    for r, j in zip(lenses, (16, 0)):
        outer = r[np.argmax(np.abs(r[:, 0]))]
        ear = np.array([lm[j, 0] * 1.02, outer[1] + 0.002, lm[j, 2] - 0.03])
        hinge = np.array([ear[0], outer[1], outer[2] - 0.004])
        temples.append(tube(np.stack([outer, hinge, 0.5 * (hinge + ear), ear]), r_tube * 1.1, 5))
    colour = lab_to_srgb(np.array([rng.uniform(5, 70), rng.uniform(-5, 20), rng.uniform(-10, 30)]))
    if rng.uniform() < 0.2:
        colour = np.array([0.75, 0.68, 0.5])  # metal
    frame = merge(rings + [bridge] + temples)
    props = [Prop("glasses", frame, _solid(colour, rng, 0.02), specular=0.8, shininess=60.0, label="glasses")]
    if sunglasses:
        discs = []
        for r in lenses:
            c = r.mean(0)
            pts = np.concatenate([c[None], r])
            n = len(r)
            f = np.stack([np.zeros(n, int), 1 + np.arange(n), 1 + (np.arange(n) + 1) % n], 1)
            f = orient(pts.astype(np.float64), f, np.tile([0.0, 0.0, 1.0], (n, 1)))
            discs.append(Mesh(pts.astype(np.float32), f.astype(np.int64), np.full((n + 1, 2), 0.5, np.float32)))
        tint = np.clip(np.array([0.04, 0.04, 0.05]) + rng.uniform(0, 0.06, 3), 0, 1)
        props.append(Prop("sunglasses", merge(discs), _solid(tint, rng, 0.0), specular=2.0, shininess=200.0,
                          label="glasses"))
    return props


def hand_prop(vertices: np.ndarray, lm: np.ndarray, towards_camera: np.ndarray, skin: SkinTone,
              rng: np.random.Generator) -> Prop:
    """A hand (palm, four fingers, thumb) and forearm between the face and the camera, over a
    random part of the face (chin, mouth, cheek, nose, an eye, forehead), palm or back to
    the camera, fingers up or sideways, 1-3 cm clear of the face under it (``vertices``: the
    posed head, ``lm (68, 3)`` its landmarks)."""
    target = lm[int(rng.choice([8, 57, 62, 3, 13, 30, 37, 44, 19, 24]))]
    n = towards_camera / np.linalg.norm(towards_camera)
    up = np.array([0.0, 1.0, 0.0]) - n * n[1]
    up /= np.linalg.norm(up).clip(1e-9)
    a = rng.uniform(-1.2, 1.2)
    right = np.cross(up, n)
    fdir = np.cos(a) * up + np.sin(a) * right  # fingers point along fdir
    side = np.cross(fdir, n)
    centre = target - fdir * rng.uniform(0.0, 0.05)
    rel = vertices - centre
    under = np.linalg.norm(rel - np.outer(rel @ n, n), axis=1) < 0.08  # the face under the hand
    lift = float((rel[under] @ n).max()) if under.any() else 0.0
    centre = centre + n * (lift + 0.016 + rng.uniform(0.01, 0.03))
    R = np.stack([side, fdir, n], 1)  # hand frame -> model frame (columns)
    parts = [ellipsoid(np.zeros(3), np.array([0.04, 0.048, 0.012]), 2)]  # palm
    spread = rng.uniform(0.0, 0.2)
    for k, (x, ln) in enumerate(zip((-0.027, -0.009, 0.009, 0.026), (0.062, 0.074, 0.07, 0.056))):
        ln *= rng.uniform(0.92, 1.08)
        tilt = (k - 1.5) * spread * 0.5
        base = np.array([x, 0.035, 0.001])
        tip = base + ln * np.array([np.sin(tilt), np.cos(tilt), -0.15 * rng.uniform(0, 1)])
        r = 0.0082 - 0.0004 * abs(k - 1.5)
        parts += [tube(np.linspace(base, tip, 4), r, 8), ellipsoid(tip, np.full(3, r), 1)]
    thumb = np.array([[0.03, -0.02, 0.004], [0.05, 0.0, 0.01], [0.062, 0.025, 0.014]])
    parts += [tube(thumb, 0.0095, 8), ellipsoid(thumb[-1], np.full(3, 0.0095), 1)]
    parts.append(tube(np.array([[0, -0.035, -0.004], [0, -0.16, -0.04], [0, -0.35, -0.1]]), 0.027, 10))
    if rng.uniform() < 0.5:  # back of the hand to the camera: mirror the thumb side
        R = R @ np.diag([-1.0, 1.0, 1.0])
    mesh = merge(parts)
    v = mesh.vertices.astype(np.float64) @ R.T + centre
    faces = mesh.faces if np.linalg.det(R) > 0 else mesh.faces[:, [0, 2, 1]]
    tone = np.clip(np.asarray(skin.rgb) * rng.uniform(0.9, 1.1), 0, 1)
    sleeve = rng.uniform() < 0.5
    tex = _solid(tone, rng, 0.03)
    mesh = Mesh(v.astype(np.float32), faces, mesh.uv)
    if sleeve:  # the forearm in a sleeve: recolour its half of the texture via UVs
        n_arm = len(parts[-1].vertices)
        uv = mesh.uv.copy()
        uv[-n_arm:] = np.stack([np.full(n_arm, 0.75), uv[-n_arm:, 1]], 1)
        uv[:-n_arm, 0] = 0.25
        mesh = Mesh(mesh.vertices, mesh.faces, uv)
        cloth = fabric_texture(rng)
        tex[:, :, ATLAS_CELL // 2:] = cloth[:, :, ATLAS_CELL // 2:]
    return Prop("hand", mesh, tex, specular=0.25, shininess=18.0, label="hand")
