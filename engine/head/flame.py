"""FLAME 2020/2023 adapter: a user's ``generic_model.pkl`` plus a 68-point landmark embedding.

FLAME cannot be redistributed; users register at https://flame.is.tue.mpg.de and download
it. The pickle is read with :mod:`engine.head.safe_pickle` (no chumpy, no code from the
file). FLAME is already metres, +Y up, +Z forward, +X the subject's left, so no conversion
is needed; joints are [global, neck, jaw, eye_left, eye_right] with FLAME's pose correctives
over (R - I) of the four non-root joints, exactly as in FLAME's/smplx's LBS.

Files looked up beside the model (or passed explicitly):

* landmarks: ``landmark_embedding.npy`` (DECA layout: ``full_lmk_faces_idx``,
  ``full_lmk_bary_coords``) or a pickle/npz with 68 ``lmk_face_idx``/``lmk_b_coords``;
* UVs: ``FLAME_texture.npz`` (``vt``, ``ft``) if present, else a cylindrical projection;
* regions: ``FLAME_masks.pkl`` if present, else derived from skin weights and geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.head.model import HeadModel
from engine.head.safe_pickle import load_npy, load_pickle, to_array

FLAME_URL = "https://flame.is.tue.mpg.de"
N_SHAPE = 300
MODEL_NAMES = ("generic_model.pkl", "flame2023.pkl", "flame2023_no_jaw.pkl", "female_model.pkl", "male_model.pkl")
LANDMARK_NAMES = ("landmark_embedding.npy", "flame_landmark_embedding.npy", "landmark_embedding.npz")
#: How a user names the model file: the flag differs between the two commands that load it.
PATH_FLAGS = "--model-path (python -m engine reconstruct) or --path (python -m engine.head)"
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


def _find_model(path: str | Path | None) -> Path:
    if path is None:
        raise ModelFileError(
            f"FLAME is not bundled: register and download FLAME 2020 or 2023 from {FLAME_URL}, "
            f"then pass its generic_model.pkl with {PATH_FLAGS}.")
    p = Path(path)
    if p.is_dir():
        for name in MODEL_NAMES:
            if (p / name).is_file():
                return p / name
        raise ModelFileError(f"no FLAME model file ({', '.join(MODEL_NAMES)}) in {p}; download FLAME from {FLAME_URL}.")
    if not p.is_file():
        raise ModelFileError(f"FLAME model file {p} does not exist; download FLAME from {FLAME_URL}.")
    return p


def read_landmark_embedding(path: Path, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """68 (face index, barycentrics) from a DECA-style or FLAME-fitting-style embedding file."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read landmark embedding {path} ({exc}).") from None
    elif path.suffix == ".npy":
        data = load_npy(path)
    else:
        data = load_pickle(path)
    if not isinstance(data, dict):
        raise ModelFileError(f"landmark embedding {path} does not hold a dictionary of arrays.")
    for fk, bk in (("full_lmk_faces_idx", "full_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords"),
                   ("static_lmk_faces_idx", "static_lmk_bary_coords")):
        if fk in data and bk in data:
            faces = to_array(data[fk]).astype(np.int64).reshape(-1)
            bary = to_array(data[bk]).astype(np.float64).reshape(-1, 3)
            if len(faces) == 68 and len(bary) == 68:
                if faces.min() < 0 or faces.max() >= n_faces:
                    raise ModelFileError(f"landmark embedding {path} indexes triangles outside the model.")
                return faces, bary
    raise ModelFileError(
        f"landmark embedding {path} has no 68-point embedding (expected full_lmk_faces_idx/"
        "full_lmk_bary_coords as in DECA's landmark_embedding.npy).")


def _cylindrical_uv(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = v.mean(0)
    u = (np.arctan2(v[:, 0] - c[0], v[:, 2] - c[2]) / (2 * np.pi) + 0.5)
    h = (v[:, 1] - v[:, 1].min()) / max(np.ptp(v[:, 1]), 1e-9)
    return np.stack([u, h], 1), f.copy()


def load_flame(path: str | Path | None, landmarks: str | Path | None = None, n_shape: int = N_SHAPE) -> HeadModel:
    """Load a FLAME pickle with the restricted unpickler and convert it to a HeadModel."""
    p = _find_model(path)
    raw = load_pickle(p)
    if not isinstance(raw, dict) or any(k not in raw for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(raw, dict) or k not in raw]
        raise ModelFileError(f"{p} is not a FLAME model (missing {', '.join(missing)}).")
    try:
        v = to_array(raw["v_template"]).astype(np.float64)
        f = to_array(raw["f"]).astype(np.int64)
        shapedirs = to_array(raw["shapedirs"]).astype(np.float32)
        posedirs = to_array(raw["posedirs"]).astype(np.float32)
        jreg = to_array(raw["J_regressor"]).astype(np.float64)
        kin = to_array(raw["kintree_table"]).astype(np.int64)
        weights = to_array(raw["weights"]).astype(np.float32)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{p} has FLAME keys but unreadable arrays ({exc}).") from None
    V = len(v)
    J = jreg.shape[0]
    if (v.shape != (V, 3) or f.ndim != 2 or f.shape[1] != 3 or shapedirs.shape[:2] != (V, 3)
            or posedirs.shape[:2] != (V, 3) or posedirs.shape[2] != 9 * (J - 1)
            or jreg.shape != (J, V) or weights.shape != (V, J) or kin.shape != (2, J)):
        raise ModelFileError(f"{p} has inconsistent FLAME array shapes (v_template {v.shape}, "
                             f"shapedirs {shapedirs.shape}, posedirs {posedirs.shape}, J_regressor {jreg.shape}).")
    if J != 5:
        raise ModelFileError(f"{p} has {J} joints; FLAME has 5 (global, neck, jaw, eyes).")
    n_shape = min(n_shape, shapedirs.shape[2])
    ident = np.ascontiguousarray(shapedirs[:, :, :n_shape].transpose(2, 0, 1))
    expr = np.ascontiguousarray(shapedirs[:, :, n_shape:].transpose(2, 0, 1))
    parents = kin[0].copy()
    parents[0] = -1
    parents = np.where(parents >= J, -1, parents)
    jt = jreg @ v
    names = ["global", "neck", "jaw", "eye_left", "eye_right"]
    if jt[3, 0] < jt[4, 0]:  # FLAME lists the eyes in file order; name them by side (+X = left)
        names[3], names[4] = "eye_right", "eye_left"
    pose_basis = posedirs.reshape(V * 3, -1).T.reshape(-1, V, 3)

    lmk_path = Path(landmarks) if landmarks is not None else next(
        (p.parent / n for n in LANDMARK_NAMES if (p.parent / n).is_file()), None)
    if lmk_path is None or not lmk_path.is_file():
        raise ModelFileError(
            f"no 68-point FLAME landmark embedding next to {p} (looked for {', '.join(LANDMARK_NAMES)}); "
            f"get landmark_embedding.npy from DECA (github.com/yfeng95/DECA) or {FLAME_URL} and pass it.")
    lmk_faces, lmk_bary = read_landmark_embedding(lmk_path, len(f))

    uv, face_uv, uv_source = None, None, "cylindrical projection"
    tex = p.parent / "FLAME_texture.npz"
    if "vt" in raw and "ft" in raw:
        uv, face_uv, uv_source = to_array(raw["vt"]), to_array(raw["ft"]), "model file"
    elif tex.is_file():
        try:
            with np.load(tex, allow_pickle=False) as z:
                uv, face_uv, uv_source = z["vt"], z["ft"], tex.name
        except Exception:
            uv = None
    if uv is None or face_uv is None or np.shape(face_uv) != f.shape:
        uv, face_uv = _cylindrical_uv(v, f)
        uv_source = "cylindrical projection"

    regions = _regions(p, v, weights, names)
    arrays = {
        "template": v, "faces": f, "uv": uv, "face_uv": face_uv,
        "identity_basis": ident, "identity_std": np.ones(len(ident), np.float32),
        "expression_basis": expr,
        "expression_range": np.tile(np.asarray([[-3.0, 3.0]], np.float32), (len(expr), 1)),
        "joint_template": jt, "joint_identity_basis": np.einsum("jv,kvc->kjc", jreg, ident),
        "joint_expression_basis": np.einsum("jv,kvc->kjc", jreg, expr),
        "joint_parents": parents, "skin_weights": weights, "pose_basis": pose_basis,
        "lmk_faces": lmk_faces, "lmk_bary": lmk_bary,
    }
    info = {"units": "metres", "path": str(p), "landmarks_source": str(lmk_path), "uv_source": uv_source,
            "frame": "FLAME's own (+X subject's left, +Y up, +Z forward)"}
    return HeadModel("flame", arrays, [f"exp{i:03d}" for i in range(len(expr))], names, regions, info)


def _regions(p: Path, v: np.ndarray, weights: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    V = len(v)
    masks_path = p.parent / "FLAME_masks.pkl"
    if masks_path.is_file():
        m = load_pickle(masks_path)
        if isinstance(m, dict) and "face" in m:
            idx = lambda k: np.isin(np.arange(V), to_array(m.get(k, [])).astype(np.int64))  # noqa: E731
            eyes = idx("left_eyeball") | idx("right_eyeball")
            face = idx("face") & ~eyes
            return {"face_skin": face, "eyes": eyes, "mouth_interior": np.zeros(V, bool),
                    "scalp_neck": ~face & ~eyes, "skin": ~eyes}
    eyes = weights[:, [names.index("eye_left"), names.index("eye_right")]].sum(1) > 0.5
    eye_c = v[eyes].mean(0) if eyes.any() else v.mean(0)
    # the face is the front part of the head between the chin and the brows
    face = (~eyes & (v[:, 2] > eye_c[2] - 0.02) & (v[:, 1] < eye_c[1] + 0.05)
            & (v[:, 1] > eye_c[1] - 0.13))
    return {"face_skin": face, "eyes": eyes, "mouth_interior": np.zeros(V, bool),
            "scalp_neck": ~face & ~eyes, "skin": ~eyes}
