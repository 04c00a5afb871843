"""rig.json (engine.outputs.build_rig): the sparse rig re-poses the unposed mesh like the model."""

import json

import numpy as np
import torch

from engine.head import load_head_model
from engine.render.rotation import axis_angle_to_matrix
from engine.outputs import build_rig, write_rig


def _lbs_from_rig(rig: dict, vertices: np.ndarray) -> np.ndarray:
    """Linear blend skinning written from rig.json alone (no engine code)."""
    names, parents = rig["joint_names"], rig["joint_parents"]
    J = np.asarray(rig["rest_joints"])
    rots = axis_angle_to_matrix(torch.tensor([rig["pose"][n] for n in names], dtype=torch.float64)).numpy()
    G = []
    for j, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = J[j] - (J[p] if p >= 0 else 0.0)
        G.append(local if p < 0 else G[p] @ local)
    W = np.zeros((len(vertices), len(names)))
    for j, n in enumerate(names):
        W[rig["skin_weights"][n]["vertices"], j] = rig["skin_weights"][n]["weights"]
    out = np.zeros_like(vertices)
    for j in range(len(names)):
        D = G[j].copy()
        D[:3, 3] -= D[:3, :3] @ J[j]  # relative to the rest joint
        out += W[:, j:j + 1] * (vertices @ D[:3, :3].T + D[:3, 3])
    return out


def test_rig_reposes_the_unposed_mesh_like_the_model(tmp_path):
    model = load_head_model("open")
    g = torch.Generator().manual_seed(0)
    identity = torch.randn(model.identity_basis.shape[0], generator=g)
    expression = torch.rand(len(model.expression_names), generator=g) * 0.3
    pose = torch.zeros(len(model.joint_names), 3)
    pose[model.joint_names.index("neck")] = torch.tensor([0.2, 0.4, -0.1])
    pose[model.joint_names.index("jaw")] = torch.tensor([0.25, 0.0, 0.02])
    pose[model.joint_names.index("eye_left")] = torch.tensor([0.0, 0.3, 0.0])
    rig = build_rig(model, identity, expression, pose)
    write_rig(tmp_path / "rig.json", rig)
    rig = json.loads((tmp_path / "rig.json").read_text())

    assert rig["joint_names"] == model.joint_names and rig["n_vertices"] == model.n_vertices
    with torch.no_grad():
        rest = model(identity[None], None, None).vertices[0].double().numpy()
        unposed = model(identity[None], expression[None], None)
        posed = model(identity[None], expression[None], pose[None]).vertices[0].double().numpy()
    assert np.allclose(rig["rest_vertices"], rest, atol=1e-6)  # the head.glb base mesh
    assert np.allclose(rig["rest_joints"], unposed.joints[0].numpy(), atol=1e-6)
    # the eye joint holds its eyeball rigidly and touches the eyelid skin only lightly
    # (<= 11 %, from MakeHuman's rig); sparse: far fewer entries than V x J
    eyes = model.regions["eyes"].numpy()
    eye_w = np.zeros(model.n_vertices)
    eye_w[rig["skin_weights"]["eye_left"]["vertices"]] = rig["skin_weights"]["eye_left"]["weights"]
    assert (eye_w[eyes] == 1.0).sum() == eyes.sum() // 2 and eye_w[~eyes].max() < 0.15
    assert sum(len(w["vertices"]) for w in rig["skin_weights"].values()) < 2 * model.n_vertices
    # LBS from the file alone reproduces the model's posed mesh (dropped weights < 1e-3)
    skinned = _lbs_from_rig(rig, unposed.vertices[0].double().numpy())
    err = np.linalg.norm(skinned - posed, axis=1)
    assert err.max() < 2e-4 and np.abs(skinned - unposed.vertices[0].numpy()).max() > 0.01


def test_rig_lists_the_material_regions():
    """rig.json's regions (eyes, mouth interior) are the model's vertex regions, in model order."""
    model = load_head_model("open")
    rig = json.loads(json.dumps(build_rig(model, torch.zeros(model.identity_basis.shape[0]),
                                          torch.zeros(len(model.expression_names)), torch.zeros(0))))
    regions = rig["regions"]
    assert set(regions) == {"eyes", "mouth_interior"}  # the open model has no separate teeth
    for name, ids in regions.items():
        assert ids == np.flatnonzero(model.regions[name].numpy()).tolist()
    faces = model.faces.numpy()
    eye_faces = np.isin(faces, regions["eyes"]).all(1)
    assert eye_faces.sum() == 280  # two eyeballs of 140 triangles
