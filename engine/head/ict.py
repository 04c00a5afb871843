"""ICT Face Model Light adapter (MIT licence, USC ICT's public ICT-FaceKit repository).

Reads either the original ``FaceXModel`` folder (``generic_neutral_mesh.obj``,
``identityNNN.obj``, one OBJ per expression, ``vertex_indices.json``) or the cached
``.npz`` described in ``../shared/ict-facekit/README.md``.

Conversions (see docs/head_models.md): the source is +Y up, +Z out of the face, +X the
subject's left (``eyeBlink_L`` moves +X vertices), so only a scale is needed. The scale
is measured, not assumed: the iris centres of the neutral mesh are ``ICT_IPD_UNITS`` ≈ 6.3
units apart, i.e. centimetres (adult inter-pupil distance ≈ 63 mm), so we use 0.01.
The origin is moved to the midpoint of the two eyeball centres. Quads are split into
triangles with their per-corner UVs. ICT has no rig: we derive a ``jaw`` joint by fitting
a rigid rotation to the lower teeth in the ``jawOpen`` shape (pivot + weights from how
far each vertex follows that rotation), rigid ``eye_left``/``eye_right`` joints for the
eyeballs, and a ``global`` root at the base of the neck.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.head.arkit import arkit_name
from engine.head.model import HeadModel

SCALE = 0.01  # centimetres -> metres (checked against the inter-pupil distance, see load)
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "shared" / "ict-facekit"
NPZ_NAME = "ict_face_model_light.npz"
EXTRA_EXPRESSIONS = ("PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R")
MATERIALS = ("M_Face", "M_BackHead", "M_GumsTongue", "M_Teeth", "M_ScleraLeft", "M_IrisLeft",
             "M_ScleraRight", "M_IrisRight", "M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion",
             "M_EyeLashes")
# vertex ranges from the model's documentation (inclusive)
RANGES = {
    "face": (0, 9408), "head_neck": (9409, 11247), "mouth_socket": (11248, 13293),
    "eye_sockets": (13294, 14061), "gums_tongue": (14062, 17038), "teeth": (17039, 21450),
    "eyeballs": (21451, 24590), "eye_extras": (24591, 25350), "eyelashes": (25351, 26718),
}
JOINT_NAMES = ["global", "jaw", "eye_left", "eye_right"]
JOINT_PARENTS = [-1, 0, 0, 0]


def default_path() -> Path:
    env = os.environ.get("ICT_FACEKIT_DIR")
    return Path(env) if env else DEFAULT_DIR


# --------------------------------------------------------------------------- reading
def read_obj(path: Path, vertices_only: bool = False) -> dict[str, np.ndarray]:
    """Minimal OBJ reader: v, vt, polygon corners (padded with -1 to quads), material."""
    verts, uvs, fv, ft, fm = [], [], [], [], []
    materials: list[str] = []
    mat = -1
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("v "):
                    verts.append(line.split()[1:4])
                elif vertices_only:
                    continue
                elif line.startswith("vt "):
                    uvs.append(line.split()[1:3])
                elif line.startswith("usemtl "):
                    name = line.split()[1]
                    if name not in materials:
                        materials.append(name)
                    mat = materials.index(name)
                elif line.startswith("f "):
                    corners = [c.split("/") for c in line.split()[1:]]
                    if len(corners) > 4:
                        raise ModelFileError(f"{path} has a polygon with {len(corners)} corners; expected triangles or quads.")
                    pad = [-1] * (4 - len(corners))
                    fv.append([int(c[0]) - 1 for c in corners] + pad)
                    ft.append([(int(c[1]) - 1 if len(c) > 1 and c[1] else -1) for c in corners] + pad)
                    fm.append(mat)
        out = {"v": np.asarray(verts, np.float32)}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"cannot read OBJ file {path} ({exc}).") from None
    if not vertices_only:
        out.update(vt=np.asarray(uvs, np.float32).reshape(-1, 2), fv=np.asarray(fv, np.int64).reshape(-1, 4),
                   ft=np.asarray(ft, np.int64).reshape(-1, 4), fm=np.asarray(fm, np.int64),
                   materials=np.asarray(materials))
    return out


def read_facex_folder(folder: Path) -> dict[str, np.ndarray]:
    """The original FaceXModel folder -> the same arrays as the cached npz."""
    neutral_path = folder / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise ModelFileError(f"{folder} is not an ICT FaceXModel folder: generic_neutral_mesh.obj is missing.")
    neutral = read_obj(neutral_path)
    V = len(neutral["v"])

    def deltas(paths: list[Path]) -> np.ndarray:
        out = np.zeros((len(paths), V, 3), np.float32)
        for i, p in enumerate(paths):
            v = read_obj(p, vertices_only=True)["v"]
            if v.shape != (V, 3):
                raise ModelFileError(f"{p} has {len(v)} vertices; the neutral mesh has {V}.")
            out[i] = v - neutral["v"]
        return out

    objs = sorted(p for p in folder.glob("*.obj") if p.name != neutral_path.name)
    ident = [p for p in objs if p.stem.startswith("identity")]
    extra = [p for p in objs if p.stem in EXTRA_EXPRESSIONS]
    expr = [p for p in objs if p not in ident and p not in extra]
    mat_names = list(neutral["materials"])
    order = [mat_names.index(m) if m in mat_names else -1 for m in MATERIALS]
    remap = np.full(max(len(mat_names), 1), -1, np.int64)
    for new, old in enumerate(order):
        if old >= 0:
            remap[old] = new
    return {
        "neutral": neutral["v"], "identity": deltas(ident), "identity_names": np.asarray([p.stem for p in ident]),
        "expression": deltas(expr), "expression_names": np.asarray([p.stem for p in expr]),
        "uv": neutral["vt"], "face_vertex_index": neutral["fv"], "face_uv_index": neutral["ft"],
        "face_material": np.where(neutral["fm"] >= 0, remap[np.maximum(neutral["fm"], 0)], -1),
        "material_names": np.asarray(MATERIALS),
    }


def read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = ("neutral", "identity", "expression", "expression_names", "uv", "face_vertex_index",
            "face_uv_index", "face_material", "material_names")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ModelFileError(f"{path} is not an ICT Face Model npz (missing {', '.join(missing)}).")
            return {k: z[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"cannot read ICT Face Model file {path} ({exc}).") from None


def resolve(path: str | Path | None) -> tuple[dict[str, np.ndarray], dict]:
    """Find and read the ICT data: a folder (FaceXModel or the shared cache) or an npz."""
    p = Path(path) if path is not None else default_path()
    hint = ("download the FaceXModel folder of https://github.com/ICT-VGL/ICT-FaceKit and pass it with "
            "--model-path (python -m engine reconstruct) or --path (python -m engine.head)")
    if p.is_dir():
        if (p / NPZ_NAME).is_file():
            src, npz = p, p / NPZ_NAME
            raw = read_npz(npz)
        elif (p / "generic_neutral_mesh.obj").is_file():
            src, raw = p, read_facex_folder(p)
        else:
            raise ModelFileError(f"ICT Face Model folder {p} has neither {NPZ_NAME} nor generic_neutral_mesh.obj; {hint}.")
    elif p.is_file():
        src, raw = p.parent, read_npz(p)
    else:
        raise ModelFileError(f"ICT Face Model not found at {p}; {hint}.")
    vi = src / "vertex_indices.json"
    if not vi.is_file():
        raise ModelFileError(f"ICT Face Model folder {src} lacks vertex_indices.json (landmark vertices); {hint}.")
    try:
        indices = json.loads(vi.read_text())
        lmk = indices["idx_to_landmark_verts"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"cannot read landmark vertices from {vi} ({exc}).") from None
    return raw, {"landmark_verts": lmk, "source": str(p)}


# --------------------------------------------------------------------------- conversion
def _triangulate(fv: np.ndarray, ft: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    quad = fv[:, 3] >= 0
    f = np.concatenate([fv[:, [0, 1, 2]], fv[quad][:, [0, 2, 3]]])
    t = np.concatenate([ft[:, [0, 1, 2]], ft[quad][:, [0, 2, 3]]])
    src = np.concatenate([np.arange(len(fv)), np.nonzero(quad)[0]])
    return f, t, src


#: ICT's UVs are UDIM tiles (u = 0..7: face, back of the head, gums/tongue, teeth, lacrimal
#: fluid over two tiles, eyelashes; the eyeballs and eye layers reuse tile 0 on top of the
#: face). A single texture needs one [0, 1] atlas without overlaps, so each material's tiles
#: go to their own cell (x0, y0, width, height); the face keeps most of the texture.
ATLAS_CELLS = {
    "M_Face": (0.0, 0.25, 0.75, 0.75),
    "M_BackHead": (0.75, 0.75, 0.25, 0.25),
    "M_GumsTongue": (0.75, 0.5, 0.25, 0.25),
    "M_Teeth": (0.75, 0.25, 0.25, 0.25),
    "M_ScleraLeft": (0.0, 0.0, 0.25, 0.25), "M_IrisLeft": (0.0, 0.0, 0.25, 0.25),
    "M_ScleraRight": (0.25, 0.0, 0.25, 0.25), "M_IrisRight": (0.25, 0.0, 0.25, 0.25),
    "M_EyeOcclusion": (0.5, 0.0, 0.125, 0.25), "M_EyeBlend": (0.5, 0.0, 0.125, 0.25),
    "M_EyeLashes": (0.625, 0.0, 0.125, 0.25),
    "M_LacrimalFluid": (0.75, 0.0, 0.25, 0.25),
}


def pack_udim_atlas(uv: np.ndarray, face_uv: np.ndarray, material: np.ndarray,
                    material_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UDIM UVs -> one [0, 1] atlas (uv (T', 2), face_uv (F, 3)); see :data:`ATLAS_CELLS`.

    Each material's tiles (floor of u) are laid side by side inside its cell; UV indices
    shared by two materials are duplicated. Unknown materials get the last cell's place
    squeezed into a 1/64 corner (they should not exist in the Light model).
    """
    corners = uv[face_uv].astype(np.float64)  # (F, 3, 2)
    out = np.empty_like(corners)
    for m, name in enumerate(material_names):
        sel = material == m
        if not sel.any():
            continue
        x0, y0, w, h = ATLAS_CELLS.get(str(name), (0.984375, 0.984375, 0.015625, 0.015625))
        c = corners[sel]
        tile = np.floor(c[..., 0].min(1, keepdims=True).clip(0, None))  # per triangle, its tile
        t0, t1 = int(tile.min()), int(tile.max())
        n_tiles = t1 - t0 + 1
        local_u = (c[..., 0] - tile).clip(0, 1)
        out[sel, :, 0] = x0 + w * ((tile - t0) + local_u) / n_tiles
        out[sel, :, 1] = y0 + h * c[..., 1].clip(0, 1)
    flat = np.round(out.reshape(-1, 2), 7)
    new_uv, inverse = np.unique(flat, axis=0, return_inverse=True)
    return new_uv.astype(np.float32), inverse.reshape(-1, 3).astype(np.int64)


def _rigid_fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R, t minimising |R a + t - b| (Kabsch)."""
    ca, cb = a.mean(0), b.mean(0)
    U, _, Vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1, 1, d]) @ U.T
    return R, cb - R @ ca


def convert(raw: dict[str, np.ndarray], landmark_verts: list[int]) -> tuple[dict, list[str], dict, dict]:
    """ICT arrays -> HeadModel arrays, expression names, regions, info."""
    neutral = raw["neutral"].astype(np.float64)
    V = len(neutral)
    if V != RANGES["eyelashes"][1] + 1:
        raise ModelFileError(f"ICT Face Model has {V} vertices; the Light model has 26719.")
    rng = {k: np.arange(a, b + 1) for k, (a, b) in RANGES.items()}
    fv, ft = raw["face_vertex_index"].astype(np.int64), raw["face_uv_index"].astype(np.int64)
    faces, face_uv, src = _triangulate(fv, ft)
    mat = raw["face_material"][src]
    mats = list(raw["material_names"])
    atlas_uv, face_uv = pack_udim_atlas(raw["uv"], face_uv, mat, mats)
    # scale check: iris centres
    iris = []
    for name in ("M_IrisLeft", "M_IrisRight"):
        ids = np.unique(faces[mat == mats.index(name)]) if name in mats else np.zeros(0, int)
        iris.append(neutral[ids].mean(0) if len(ids) else np.full(3, np.nan))
    ipd_units = float(np.linalg.norm(iris[0] - iris[1]))
    eyes = rng["eyeballs"]
    left = eyes[neutral[eyes, 0] > 0]
    right = eyes[neutral[eyes, 0] <= 0]
    origin = 0.5 * (neutral[left].mean(0) + neutral[right].mean(0))
    origin[0] = 0.0
    template = (neutral - origin) * SCALE
    ident = raw["identity"].astype(np.float32) * SCALE
    expr = raw["expression"].astype(np.float32) * SCALE
    names = [arkit_name(str(n)) for n in raw["expression_names"]]

    # jaw: rigid rotation of the lower teeth in jawOpen
    jaw_open = expr[names.index("jawOpen")].astype(np.float64)
    teeth = rng["teeth"]
    moving = teeth[np.linalg.norm(jaw_open[teeth], axis=1) > 0.5 * np.linalg.norm(jaw_open[teeth], axis=1).max()]
    Rj, tj = _rigid_fit(template[moving], template[moving] + jaw_open[moving])
    pivot = np.linalg.lstsq(np.eye(3) - Rj, tj, rcond=None)[0]
    pivot[0] = 0.0
    pred = template @ Rj.T + tj - template
    w_jaw = np.clip((jaw_open * pred).sum(1) / np.maximum((pred * pred).sum(1), 1e-12), 0, 1)
    w_jaw[np.linalg.norm(pred, axis=1) < 1e-6] = 0
    w_jaw[w_jaw < 0.02] = 0  # numerical noise of the scan-based shape, not jaw motion
    w_jaw[np.concatenate([eyes, rng["eye_extras"], rng["eyelashes"], rng["eye_sockets"]])] = 0
    w_jaw[moving] = 1.0
    W = np.zeros((V, 4))
    W[:, 1] = w_jaw
    W[left, 2] = 1.0
    W[right, 3] = 1.0
    W[left, 1] = W[right, 1] = 0.0
    W[:, 0] = 1.0 - W[:, 1:].sum(1)
    hn = rng["head_neck"]
    neck_ring = hn[template[hn, 1] < template[hn, 1].min() + 0.01]
    near_pivot = np.argsort(np.linalg.norm(template - pivot, axis=1))[:50]
    joint_sets = [neck_ring, near_pivot, left, right]
    jt = np.stack([template[neck_ring].mean(0), pivot, template[left].mean(0), template[right].mean(0)])
    joint_offsets = jt - np.stack([template[s].mean(0) for s in joint_sets])

    def joints_of(basis: np.ndarray) -> np.ndarray:
        return np.stack([basis[:, s].mean(1) for s in joint_sets], 1)

    lmk_faces, lmk_bary = [], []
    for v in landmark_verts:
        f = int(np.nonzero((faces == v).any(1))[0][0])
        lmk_faces.append(f)
        lmk_bary.append((faces[f] == v).astype(np.float32))
    regions = {
        "face_skin": np.isin(np.arange(V), rng["face"]),
        "scalp_neck": np.isin(np.arange(V), hn),
        "mouth_interior": np.isin(np.arange(V), np.concatenate([rng["mouth_socket"], rng["gums_tongue"], rng["teeth"]])),
        "eyes": np.isin(np.arange(V), eyes),
        "eye_sockets": np.isin(np.arange(V), rng["eye_sockets"]),
        "eye_extras": np.isin(np.arange(V), np.concatenate([rng["eye_extras"], rng["eyelashes"]])),
        "teeth": np.isin(np.arange(V), rng["teeth"]),
    }
    regions["skin"] = regions["face_skin"] | regions["scalp_neck"]
    arrays = {
        "template": template, "faces": faces, "uv": atlas_uv, "face_uv": face_uv,
        "identity_basis": ident, "identity_std": np.ones(len(ident), np.float32),
        "expression_basis": expr,
        "expression_range": np.tile(np.asarray([[0.0, 1.0]], np.float32), (len(expr), 1)),
        "joint_template": jt, "joint_identity_basis": joints_of(ident),
        "joint_expression_basis": np.zeros((len(expr), 4, 3), np.float32),
        "joint_parents": np.asarray(JOINT_PARENTS), "skin_weights": W,
        "lmk_faces": np.asarray(lmk_faces), "lmk_bary": np.asarray(lmk_bary),
        "face_material": mat,
    }
    del joint_offsets
    info = {"units": "metres", "source_scale": SCALE, "inter_pupil_distance_source_units": round(ipd_units, 3),
            "inter_pupil_distance_m": round(ipd_units * SCALE, 4),
            "jaw_rotation_deg_at_jawOpen_1": round(float(np.degrees(np.arccos(np.clip((np.trace(Rj) - 1) / 2, -1, 1)))), 2),
            "frame": "+X subject's left, +Y up, +Z out of the face; origin between the eyeball centres"}
    return arrays, names, regions, info


def load_ict(path: str | Path | None = None) -> HeadModel:
    """Load ICT Face Model Light from a FaceXModel folder, a cached npz, or the shared copy."""
    raw, meta = resolve(path)
    arrays, names, regions, info = convert(raw, meta["landmark_verts"])
    info["path"] = meta["source"]
    return HeadModel("ict", arrays, names, JOINT_NAMES, regions, info)
