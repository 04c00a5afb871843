"""A synthetic file in FLAME's exact pickle layout (chumpy-typed shapedirs, scipy csc
J_regressor) for tests: FLAME itself cannot be downloaded here (registration only)."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import scipy.sparse


def _fake_chumpy() -> type:
    """A stand-in ``chumpy.ch.Ch`` so that pickles name it exactly like FLAME's do."""
    mod_ch = types.ModuleType("chumpy.ch")

    class Ch:  # pickled as chumpy.ch.Ch with a state dict holding 'x'
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars = set()

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod_ch.Ch = Ch
    return mod_ch


def make_flame(tmp_path, protocol: int = 2, seed: int = 0, face_landmarks: bool = False):
    """Write generic_model.pkl + landmark_embedding.npy; return (folder, ground truth dict).

    ``face_landmarks``: embed the 68 landmarks where a face's would be (the open model's
    template landmarks, scaled onto the sphere's front) instead of at random, so fits and
    networks on photos behave like on a head.
    """
    rng = np.random.default_rng(seed)
    # a small "head": points on a sphere of radius 0.1 m, jaw = lower front quarter
    n_side = 24 if face_landmarks else 12
    th, ph = np.meshgrid(np.linspace(0.2, np.pi - 0.2, n_side), np.linspace(0, 2 * np.pi, n_side, endpoint=False))
    v = np.stack([0.1 * np.sin(th) * np.sin(ph), 0.1 * np.cos(th), 0.1 * np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    V = len(v)
    f = []
    for i in range(n_side):
        for j in range(n_side - 1):
            a, b = i * n_side + j, ((i + 1) % n_side) * n_side + j
            f += [[a, b, a + 1], [b, b + 1, a + 1]]
    f = np.asarray(f, np.uint32)
    J = 5
    eyes = np.argsort(np.linalg.norm(v - [0.03, 0.02, 0.09], axis=1))[:3], np.argsort(np.linalg.norm(v - [-0.03, 0.02, 0.09], axis=1))[:3]
    jaw = (v[:, 1] < -0.03) & (v[:, 2] > 0.0)
    W = np.zeros((V, J))
    W[:, 1] = 1.0
    W[jaw] = 0.0
    W[jaw, 2] = 1.0
    for k, ids in zip((3, 4), eyes):
        W[ids] = 0.0
        W[ids, k] = 1.0
    jreg = np.zeros((J, V))
    jreg[0, np.argsort(v[:, 1])[:4]] = 0.25  # neck base
    jreg[1, np.argsort(np.abs(v[:, 1] + 0.05))[:4]] = 0.25
    jreg[2, np.argsort(np.linalg.norm(v - [0, -0.03, -0.02], axis=1))[:4]] = 0.25
    jreg[3, eyes[0]] = 1 / 3
    jreg[4, eyes[1]] = 1 / 3
    truth = {
        "v_template": v, "f": f,
        "shapedirs": rng.normal(0, 1e-3, (V, 3, 400)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(jreg),
        "kintree_table": np.asarray([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.uint32),
        "weights": W, "bs_style": "lbs", "bs_type": "lrotmin",
        "J": jreg @ v,
    }
    mod_ch = _fake_chumpy()
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = mod_ch
    try:
        layout = dict(truth)
        layout["shapedirs"] = mod_ch.Ch(truth["shapedirs"])
        (tmp_path / "generic_model.pkl").write_bytes(pickle.dumps(layout, protocol=protocol))
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    lmk_faces = rng.integers(0, len(f), 68)
    lmk_bary = rng.dirichlet(np.ones(3), 68)
    if face_landmarks:
        import torch

        from engine.head import load_head_model

        open_head = load_head_model("open")
        with torch.no_grad():
            lm = open_head.landmarks(open_head.template[None])[0].numpy()
        xy = (lm[:, :2] - lm[:, :2].mean(0)) / np.abs(lm[:, :2] - lm[:, :2].mean(0)).max() * 0.07
        front = np.nonzero(v[:, 2] > 0.02)[0]
        for i, p in enumerate(xy):
            vid = front[np.argmin(np.linalg.norm(v[front, :2] - p, axis=1))]
            lmk_faces[i] = int(np.nonzero((f == vid).any(1))[0][0])
            lmk_bary[i] = (f[lmk_faces[i]] == vid).astype(np.float64)
    emb = {"full_lmk_faces_idx": lmk_faces[None], "full_lmk_bary_coords": lmk_bary[None],
           "static_lmk_faces_idx": lmk_faces[17:], "static_lmk_bary_coords": lmk_bary[17:]}
    np.save(tmp_path / "landmark_embedding.npy", np.asarray(emb, dtype=object), allow_pickle=True)
    truth.update(lmk_faces=lmk_faces, lmk_bary=lmk_bary, jreg=jreg)
    return tmp_path, truth
