"""FLAME adapter: a synthetic file in FLAME's exact pickle layout (chumpy-typed shapedirs,
scipy csc J_regressor), read without chumpy and without running code from the file."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

from engine.errors import ModelFileError
from engine.head import load_head_model
from engine.head.flame import load_flame
from engine.head.safe_pickle import load_pickle
from flame_fixture import _fake_chumpy, make_flame  # noqa: F401  (tests/flame_fixture.py)


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
