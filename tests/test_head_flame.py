"""FLAME adapter: a synthetic file in FLAME's exact pickle layout (chumpy-typed shapedirs,
scipy csc J_regressor), read without chumpy and without running code from the file."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from engine.errors import ModelFileError
from engine.head import load_head_model
from engine.head.flame import load_flame
from engine.head.safe_pickle import load_pickle


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


def make_flame(tmp_path, protocol: int = 2, seed: int = 0):
    """Write generic_model.pkl + landmark_embedding.npy; return (folder, ground truth dict)."""
    rng = np.random.default_rng(seed)
    # a small "head": points on a sphere of radius 0.1 m, jaw = lower front quarter
    n_side = 12
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
    emb = {"full_lmk_faces_idx": lmk_faces[None], "full_lmk_bary_coords": lmk_bary[None],
           "static_lmk_faces_idx": lmk_faces[17:], "static_lmk_bary_coords": lmk_bary[17:]}
    np.save(tmp_path / "landmark_embedding.npy", np.asarray(emb, dtype=object), allow_pickle=True)
    truth.update(lmk_faces=lmk_faces, lmk_bary=lmk_bary, jreg=jreg)
    return tmp_path, truth


def _reference_lbs(t, beta, psi, pose):
    """Plain numpy FLAME LBS (as in FLAME's/smplx's lbs.py) to check ours against."""
    from scipy.spatial.transform import Rotation

    sd = t["shapedirs"]
    vs = t["v_template"] + sd[:, :, :300] @ beta + sd[:, :, 300:] @ psi
    Jt = t["jreg"] @ vs
    R = Rotation.from_rotvec(pose).as_matrix()
    feat = (R[1:] - np.eye(3)).reshape(-1)
    vp = vs + (t["posedirs"].reshape(-1, 36) @ feat).reshape(-1, 3)
    parents = [-1, 0, 1, 1, 1]
    G = []
    for j in range(5):
        L = np.eye(4)
        L[:3, :3] = R[j]
        L[:3, 3] = Jt[j] - (Jt[parents[j]] if parents[j] >= 0 else 0)
        G.append(L if parents[j] < 0 else G[parents[j]] @ L)
    A = []
    for j in range(5):
        T = G[j].copy()
        T[:3, 3] -= G[j][:3, :3] @ Jt[j]
        A.append(T)
    T = np.einsum("vj,jab->vab", t["weights"], np.stack(A))
    return np.einsum("vab,vb->va", T[:, :3, :3], vp) + T[:, :3, 3], np.stack([g[:3, 3] for g in G])


@pytest.mark.parametrize("protocol", [0, 2])
def test_flame_fixture_round_trips(tmp_path, protocol):
    folder, t = make_flame(tmp_path, protocol)
    assert "chumpy" not in sys.modules or not hasattr(sys.modules.get("chumpy"), "Ch")
    m = load_head_model("flame", str(folder / "generic_model.pkl"))
    assert (m.n_vertices, m.n_identity, m.n_expression) == (len(t["v_template"]), 300, 100)
    assert m.joint_names == ["global", "neck", "jaw", "eye_left", "eye_right"]
    assert m.joint_parents.tolist() == [-1, 0, 1, 1, 1]
    assert m.pose_basis.shape == (36, m.n_vertices, 3)
    np.testing.assert_allclose(m.template.numpy(), t["v_template"], atol=1e-6)
    np.testing.assert_array_equal(m.faces.numpy(), t["f"].astype(np.int64))
    np.testing.assert_allclose(m.identity_basis[7].numpy(), t["shapedirs"][:, :, 7], atol=1e-7)
    np.testing.assert_allclose(m.expression_basis[3].numpy(), t["shapedirs"][:, :, 303], atol=1e-7)
    np.testing.assert_array_equal(m.lmk_faces.numpy(), t["lmk_faces"])
    rng = np.random.default_rng(1)
    beta, psi = rng.normal(0, 1, 300), rng.normal(0, 1, 100)
    pose = rng.normal(0, 0.3, (5, 3))
    out = m(torch.tensor(beta[None], dtype=torch.float32), torch.tensor(psi[None], dtype=torch.float32),
            torch.tensor(pose[None], dtype=torch.float32))
    ref_v, ref_j = _reference_lbs(t, beta, psi, pose)
    np.testing.assert_allclose(out.vertices[0].numpy(), ref_v, atol=2e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), ref_j, atol=2e-5)


def test_flame_jaw_moves_jaw_only(tmp_path):
    folder, t = make_flame(tmp_path)
    m = load_flame(folder)  # a folder works too
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.3
    m.pose_basis.zero_()  # isolate LBS from the random correctives
    moved = (m(pose=pose).vertices[0] - m.template).norm(dim=-1) > 1e-6
    jaw = m.skin_weights[:, 2] > 0.5
    assert moved[jaw].all() and not moved[~jaw].any()


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps({"v_template": _Evil()}))
    with pytest.raises(ModelFileError, match="posix.system|os.system|refusing"):
        load_flame(p)
    p.write_bytes(pickle.dumps(eval))  # builtins.eval by reference
    with pytest.raises(ModelFileError, match="builtins.eval"):
        load_pickle(p)


def test_missing_and_corrupt_flame_files(tmp_path, capsys):
    from engine.head.__main__ import main

    with pytest.raises(ModelFileError, match="flame.is.tue.mpg.de"):
        load_head_model("flame", None)
    with pytest.raises(ModelFileError, match="does not exist.*flame.is.tue.mpg.de"):
        load_flame(tmp_path / "nope.pkl")
    folder, _ = make_flame(tmp_path)
    raw = (folder / "generic_model.pkl").read_bytes()
    bad = tmp_path / "trunc.pkl"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="not a readable model pickle"):
        load_flame(bad)
    (folder / "landmark_embedding.npy").unlink()
    with pytest.raises(ModelFileError, match="landmark embedding"):
        load_flame(folder / "generic_model.pkl")
    with pytest.raises(SystemExit) as exc:
        main(["info", "--model", "flame", "--path", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_flame_info_cli(tmp_path, capsys):
    import json

    from engine.head.__main__ import main

    folder, _ = make_flame(tmp_path)
    main(["info", "--model", "flame", "--path", str(folder / "generic_model.pkl"), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["n_identity"] == 300 and info["n_expression"] == 100 and info["n_landmarks"] == 68
    assert info["joint_names"] == ["global", "neck", "jaw", "eye_left", "eye_right"]
