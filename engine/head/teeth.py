"""Procedural teeth for head models that have a mouth cavity but no teeth (the open model).

An open mouth of the open head showed an empty, dark cavity: MakeHuman's base mesh has a
mouth socket and a tongue but no teeth. :func:`with_teeth` returns the model with two rows
of teeth appended (new vertices and triangles after the model's own, so every index, the
landmark embedding and the UV islands stay as they were), for the files an artist opens
(``head.obj``, ``head.glb``, ``rig.json``; Blender gives them their own material through the
``teeth`` region). Fitting, the networks and the renders keep the model as it is.

The teeth are built in the template (metres, model frame: +X the subject's left, +Y up, +Z
out of the face) from the model's own mouth: the arch's front sits
:data:`LIP_CLEARANCE_M` behind the inner lips (iBUG 62/66), its canines at
:data:`CANINE_OF_CORNER` of the mouth corners' half-width (iBUG 48/54), the upper incisal
edge at the lips' meeting line. Tooth sizes are a typical adult's (:data:`UPPER`,
:data:`LOWER`, millimetres). Every tooth is *anchored* to the mouth-cavity vertices nearest
to it (the upper row to those that do not follow the jaw, the lower row to those that do,
the tongue left out): it moves rigidly with their mean identity offsets; the lower row also
with their mean offsets of the jaw's expression units (``jawOpen``, ``jawLeft``...; other
units leave teeth where they are). The upper row is skinned like its anchors without the
jaw (it moves with the skull), the lower row to the jaw alone.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from engine.head.model import HeadModel

__all__ = ["TEETH_ALBEDO", "TEETH_REGION", "LOWER", "UPPER", "extend_vertices", "pad_vertices", "teeth_ids",
           "with_teeth"]

TEETH_REGION = "teeth"
TEETH_ALBEDO = (0.86, 0.83, 0.74)  # sRGB, the teeth's per-vertex albedo (a texture's fill where unseen)
#: (width along the arch, crown height, thickness lips-to-tongue) in mm, midline outwards:
#: central and lateral incisor, canine, two premolars, two molars
UPPER = ((8.5, 11.0, 7.0), (6.5, 10.0, 6.5), (7.5, 11.0, 8.0), (7.0, 9.0, 9.0), (6.5, 8.5, 9.0),
         (10.0, 8.0, 11.0), (9.0, 7.5, 10.5))
LOWER = ((5.0, 9.5, 6.0), (5.5, 9.5, 6.0), (7.0, 11.0, 7.5), (7.0, 9.0, 8.0), (7.0, 8.5, 8.5),
         (11.0, 8.0, 10.5), (10.5, 7.5, 10.0))
LIP_CLEARANCE_M = 0.005  # upper incisors' front behind the inner lips' midpoints (at the gums)
CANINE_OF_CORNER = 0.8  # canines' half-width over the mouth corners'
LOWER_CANINES = 0.77  # the lower canines' half-width over the upper ones'
DIVERGENCE_DEG = 12.0  # the rows behind the canines open outwards by this angle
TURN_M = 0.005  # arch length over which the row turns backwards at the canine
SHOW_M = 0.0035  # upper incisal edge below the lips' meeting line (shows when the lips part)
ROOT_M = (0.003, 0.001)  # how far the upper / lower crowns reach into the gums (hidden by the lips)
OVERJET_M = 0.003  # lower incisors behind the upper ones
OVERBITE_M = 0.0015  # lower incisal edge above the upper one
GAP_M = 0.0003  # between neighbouring teeth
EDGE_THICKNESS = 0.35  # a crown's thickness at the biting edge relative to its base
ANCHORS = 8  # mouth-cavity vertices each tooth follows
RING = 8  # points around a tooth's cross-section

_LOCK = threading.Lock()


def with_teeth(model: HeadModel) -> HeadModel:
    """``model`` with procedural teeth appended (cached on it), or ``model`` itself when it
    has a ``teeth`` region already (ICT) or no mouth cavity to anchor them in (FLAME)."""
    if TEETH_REGION in model.regions:
        return model
    with _LOCK:
        cached = model.__dict__.get("_with_teeth")
        if cached is None or cached.template.device != model.template.device:
            cached = _build(model)
            model.__dict__["_with_teeth"] = cached
        return cached


def teeth_ids(model: HeadModel) -> np.ndarray:
    """Vertex indices of the ``teeth`` region (empty when the model has none)."""
    r = model.regions.get(TEETH_REGION)
    return np.zeros(0, np.int64) if r is None else np.flatnonzero(r.detach().cpu().numpy())


def extend_vertices(vertices: torch.Tensor, files_model: HeadModel, identity: torch.Tensor,
                    expression: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """``vertices (V, 3)`` of the model (posed, e.g. with a detail displacement) followed by
    those of the teeth ``files_model`` (:func:`with_teeth`) adds after them, posed with the
    same coefficients ``identity (1, K_id)``, ``expression (1, K_exp)``, ``pose (1, J, 3)``."""
    n = vertices.shape[0]
    if files_model.n_vertices == n:
        return vertices
    ids = torch.arange(n, files_model.n_vertices, device=files_model.template.device)
    extra = files_model.vertex_subset(ids)(identity, expression, pose if files_model.n_joints else None)
    return torch.cat([vertices, extra.vertices[0].to(vertices)], 0)


def pad_vertices(values: torch.Tensor, files_model: HeadModel, fill) -> torch.Tensor:
    """Per-vertex ``values (V, ...)`` of the model followed by ``fill`` (a number, or one value
    per channel) for each vertex :func:`with_teeth` added."""
    extra = files_model.n_vertices - values.shape[0]
    if extra <= 0:
        return values
    pad = torch.as_tensor(fill, dtype=values.dtype, device=values.device).expand(extra, *values.shape[1:])
    return torch.cat([values, pad], 0)


# ---------------------------------------------------------------------------- geometry
def _arch(canine_half_width: float, front_z: float, sizes):
    """Tooth centres along one side of an arch, midline outwards: (centre x, z, tangent
    angle) per tooth, in metres. The arch turns evenly from the midline to the canine (its
    rate chosen so that the canine's centre is ``canine_half_width`` from the midline), then
    within :data:`TURN_M` to run backwards, :data:`DIVERGENCE_DEG` outwards, to the molars."""
    widths = np.array([s[0] for s in sizes]) * 1e-3
    edges = np.concatenate([[0.0], np.cumsum(widths)])
    centres = 0.5 * (edges[:-1] + edges[1:])
    s = np.linspace(0.0, edges[-1] + 1e-3, 4001)
    back = np.pi / 2 - np.radians(DIVERGENCE_DEG)  # the posterior direction, from +X towards -Z

    def curve(rate: float):
        at_canine = min(rate * centres[2], back)
        theta = np.where(s <= centres[2], np.minimum(rate * s, back),
                         at_canine + (back - at_canine) * np.clip((s - centres[2]) / TURN_M, 0, 1))
        ds = np.diff(s, prepend=0.0)
        return np.cumsum(np.cos(theta) * ds), front_z - np.cumsum(np.sin(theta) * ds), theta

    lo, hi = 0.0, back / centres[2]
    for _ in range(60):
        rate = 0.5 * (lo + hi)
        x, _, _ = curve(rate)
        lo, hi = (rate, hi) if np.interp(centres[2], s, x) > canine_half_width else (lo, rate)
    x, z, theta = curve(0.5 * (lo + hi))
    return np.interp(centres, s, x), np.interp(centres, s, z), -np.interp(centres, s, theta)


def _tooth(centre: np.ndarray, angle: float, size, edge_y: float, direction: float):
    """One crown: rings of :data:`RING` points (a rounded box section) at its biting edge,
    half-way and its base, plus a centre point closing each end. ``direction`` +1 grows the
    crown upwards from ``edge_y`` (upper row), -1 downwards. Returns (vertices (N, 3), faces
    (F, 3) local indices, (s, h) planar coordinates for the UVs)."""
    w, h, t = (np.asarray(size) * 1e-3)
    h = h + ROOT_M[0 if direction > 0 else 1]
    w = w - GAP_M
    tangent = np.array([np.cos(angle), 0.0, np.sin(angle)])
    inward = np.array([-np.sin(angle), 0.0, np.cos(angle)])  # towards the tongue (-Z at the midline)
    if inward[2] > 0:
        inward = -inward
    theta = np.linspace(0.0, 2 * np.pi, RING, endpoint=False) + np.pi / RING
    c, s = np.cos(theta), np.sin(theta)
    sx, sy = np.sign(c) * np.abs(c) ** 0.5, np.sign(s) * np.abs(s) ** 0.5  # squarish section
    verts, planar = [], []
    for frac, width_k, thick_k in ((0.0, 0.92, EDGE_THICKNESS), (0.45, 1.0, 0.8), (1.0, 0.95, 1.0)):
        y = edge_y + direction * frac * h
        thick = t * thick_k
        # the lip side stays on the arch; the section thickens towards the tongue
        for a, b in zip(sx, sy):
            p = centre + tangent * (0.5 * w * width_k * a) + inward * (0.5 * thick * (1.0 - b))
            verts.append([p[0], y, p[2]])
            planar.append([0.5 * w * width_k * a, direction * frac * h])
    for frac in (0.0, 1.0):
        thick = t * (EDGE_THICKNESS if frac == 0.0 else 1.0)
        p = centre + inward * (0.5 * thick)
        verts.append([p[0], edge_y + direction * frac * h, p[2]])
        planar.append([0.0, direction * frac * h])
    faces = []
    for r in range(2):
        for i in range(RING):
            a, b = r * RING + i, r * RING + (i + 1) % RING
            faces += [[a, b, b + RING], [a, b + RING, a + RING]]
    edge_c, base_c = 3 * RING, 3 * RING + 1
    for i in range(RING):
        faces.append([edge_c, (i + 1) % RING, i])
        faces.append([base_c, 2 * RING + i, 2 * RING + (i + 1) % RING])
    verts, faces = np.asarray(verts), np.asarray(faces, np.int64)
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    if np.einsum("fc,fc->f", a, np.cross(b, c)).sum() < 0:  # wound inwards: turn every triangle
        faces = faces[:, ::-1]
    return verts, faces, np.asarray(planar)


def _rows(model: HeadModel):
    """The two rows in the template: a list of (vertices, faces, planar, upper?) per tooth."""
    with torch.no_grad():
        L = model.landmarks(model.template.detach()[None].double())[0].cpu().numpy()  # the template's iBUG-68
    corner_half = 0.5 * abs(L[54, 0] - L[48, 0])
    mid_x = 0.5 * (L[54, 0] + L[48, 0])
    lips_z = 0.5 * (L[62, 2] + L[66, 2])
    meet_y = 0.5 * (L[62, 1] + L[66, 1])
    teeth = []
    for upper, sizes in ((True, UPPER), (False, LOWER)):
        front = lips_z - LIP_CLEARANCE_M - (0.0 if upper else OVERJET_M)
        cx, cz, ang = _arch(CANINE_OF_CORNER * corner_half * (1.0 if upper else LOWER_CANINES), front, sizes)
        edge_y = meet_y - SHOW_M + (0.0 if upper else OVERBITE_M)
        for side in (1.0, -1.0):
            for k, size in enumerate(sizes):
                centre = np.array([mid_x + side * cx[k], 0.0, cz[k]])
                angle = ang[k] if side > 0 else np.pi - ang[k]
                v, f, pl = _tooth(centre, angle, size, edge_y, 1.0 if upper else -1.0)
                teeth.append((v, f, pl, upper))
    return teeth


def _free_spot(model: HeadModel, size: int = 256) -> tuple[np.ndarray, float]:
    """The centre (u, v) of the largest empty square of the model's UV layout and its half side."""
    import cv2

    from engine.render import rasterize_uv

    with torch.no_grad():
        covered = rasterize_uv(model.uv.cpu().float(), model.face_uv.cpu(), size).mask[0].numpy()
    free = np.pad(~covered, 1).astype(np.uint8)  # the unit square's border counts as covered
    dist = cv2.distanceTransform(free, cv2.DIST_C, 3)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([(col + 0.5) / size, 1.0 - (row + 0.5) / size]), float(dist[row, col]) / size


def _build(model: HeadModel) -> HeadModel:
    mouth = model.regions["mouth_interior"].detach().cpu().numpy()
    if "jaw" not in model.joint_names or mouth.sum() < ANCHORS * 2:
        return model
    T = model.template.detach().cpu().double().numpy()
    W = model.skin_weights.detach().cpu().double().numpy()
    E = model.expression_basis.detach().cpu().double().numpy()
    names = list(model.expression_names)
    jaw_w = W[:, model.joint_names.index("jaw")]
    tongue = np.zeros(len(T), bool)
    if "tongueOut" in names:
        tongue = np.linalg.norm(E[names.index("tongueOut")], axis=1) > 1e-5
    pools = {True: np.flatnonzero(mouth & ~tongue & (jaw_w < 0.5)),
             False: np.flatnonzero(mouth & ~tongue & (jaw_w >= 0.5))}
    if min(len(p) for p in pools.values()) < ANCHORS:
        return model
    jaw_units = [i for i, n in enumerate(names) if n.startswith("jaw")]
    teeth = _rows(model)
    V = len(T)
    verts, faces, planar, anchors, upper_of = [], [], [], [], []
    n = V
    for v, f, pl, upper in teeth:
        pool = pools[upper]
        d = np.linalg.norm(T[pool] - v.mean(0), axis=1)
        anchors.append(pool[np.argsort(d)[:ANCHORS]])
        verts.append(v)
        faces.append(f + n)
        planar.append(pl)
        upper_of.append(upper)
        n += len(v)
    counts = [len(v) for v in verts]
    tooth_of = np.repeat(np.arange(len(teeth)), counts)
    A = np.stack(anchors)  # (n_teeth, ANCHORS)
    # per-vertex arrays of the teeth: each tooth takes its anchors' means
    id_basis = model.identity_basis.detach().cpu().double().numpy()
    tooth_id = id_basis[:, A].mean(2)  # (K, n_teeth, 3)
    tooth_expr = np.zeros((len(names), len(teeth), 3))
    lower = ~np.asarray(upper_of)
    for k in jaw_units:
        tooth_expr[k, lower] = E[k][A[lower]].mean(1)
    # skin weights: the upper row is the skull's (its anchors' weights, the jaw's share given to
    # the jaw's parent), the lower row the jaw's alone: both rows move as rigid pieces
    jaw = model.joint_names.index("jaw")
    tooth_w = W[A].mean(1)
    tooth_w[:, int(model.joint_parents[jaw])] += tooth_w[:, jaw]
    tooth_w[:, jaw] = 0.0
    tooth_w[lower] = np.eye(W.shape[1])[jaw]
    tooth_w /= tooth_w.sum(1, keepdims=True)
    # UVs: each tooth's planar (along the arch, height) shape in the model layout's largest
    # empty square, the teeth side by side in two rows: an island of its own per tooth, apart
    # from the model's (the files' export layout lays each tooth out again at its real size:
    # engine.export.uv_pack)
    centre, half = _free_spot(model)
    per_row = len(teeth) // 2
    cell = 2 * half * 0.9 / per_row
    uv, k_row = [], {True: 0, False: 0}
    for pl, upper in zip(planar, upper_of):
        j = k_row[upper]
        k_row[upper] += 1
        span = np.maximum(np.ptp(pl, 0), 1e-6)
        local = (pl - pl.min(0)) / span.max() * cell * 0.8
        origin = centre - half * 0.9 + np.array([j * cell, 0.0 if upper else cell * 1.2])
        uv.append(origin + local)
    t_verts = np.concatenate(verts)
    arrays = {
        "template": np.concatenate([T, t_verts]),
        "faces": np.concatenate([model.faces.cpu().numpy(), np.concatenate(faces)]),
        "uv": np.concatenate([model.uv.cpu().numpy(), np.concatenate(uv)]),
        "face_uv": np.concatenate([model.face_uv.cpu().numpy(), np.concatenate(faces) - V + len(model.uv)]),
        "identity_basis": np.concatenate([id_basis, tooth_id[:, tooth_of]], 1),
        "identity_std": model.identity_std.cpu().numpy(),
        "expression_basis": np.concatenate([E, tooth_expr[:, tooth_of]], 1),
        "expression_range": model.expression_range.cpu().numpy(),
        "joint_template": model.joint_template.cpu().numpy(),
        "joint_identity_basis": model.joint_identity_basis.cpu().numpy(),
        "joint_expression_basis": model.joint_expression_basis.cpu().numpy(),
        "joint_parents": model.joint_parents.cpu().numpy(),
        "skin_weights": np.concatenate([W, tooth_w[tooth_of]]),
        "lmk_faces": model.lmk_faces.cpu().numpy(),
        "lmk_bary": model.lmk_bary.cpu().numpy(),
    }
    pb = model.pose_basis.detach().cpu().numpy()
    arrays["pose_basis"] = np.concatenate([pb, np.zeros((pb.shape[0], len(t_verts), 3), pb.dtype)], 1)
    n_t = len(t_verts)
    regions = {k: np.concatenate([m.detach().cpu().numpy(), np.full(n_t, k == "mouth_interior")])
               for k, m in model.regions.items()}
    regions[TEETH_REGION] = np.concatenate([np.zeros(V, bool), np.ones(n_t, bool)])
    info = dict(model.info, teeth=f"procedural ({len(teeth)} teeth, {n_t} vertices; engine.head.teeth)")
    out = HeadModel(model.name, arrays, names, model.joint_names, regions, info)
    return out.to(model.template.device)
