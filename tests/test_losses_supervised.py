"""Supervised loss terms on synthetic ground truth (engine/losses/terms.py): zero at the
truth (also seen through a camera whose principal point differs), the known value for a
known error, gradients that lead a prediction to the truth, and MoFA training on them."""

from __future__ import annotations

import math

import pytest
import torch

from engine.losses.terms import TERMS, LossInputs, view_aligned_rotation, weighted_sum

SUPERVISED = ("vertices", "shape", "rotation", "identity_gt", "expression_gt", "pose_gt", "albedo")


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def _rot(axis, deg):
    from engine.render import axis_angle_to_matrix

    a = torch.tensor(axis, dtype=torch.float32)
    return axis_angle_to_matrix((a / a.norm() * math.radians(deg))[None])[0]


def _truth(head, seed=0):
    g = torch.Generator().manual_seed(seed)
    ident = torch.randn(1, head.n_identity, generator=g) * head.identity_std
    expr = torch.rand(1, head.n_expression, generator=g) * 0.3
    pose = torch.zeros(1, head.n_joints, 3)
    pose[0, head.joint_names.index("jaw"), 0] = 0.2
    K = torch.tensor([[[300.0, 0, 40.0], [0, 300.0, 100.0], [0, 0, 1]]])  # principal point off the crop centre
    from engine.render import frontal_rotation

    R = (frontal_rotation() @ _rot([0.2, 1.0, 0.1], 25))[None]
    t = torch.tensor([[0.01, -0.02, 0.8]])
    verts = head(ident, expr, pose).vertices
    albedo = torch.rand(1, head.template.shape[0], 3, generator=g)
    return dict(gt_identity=ident, gt_expression=expr, gt_pose=pose, gt_K=K, gt_R=R, gt_t=t, gt_vertices=verts,
                gt_albedo=albedo)


def _inputs(head, truth, R_pred, t_pred, K_pred=None, **changes):
    from engine.face import FaceDecoder, FaceParams
    from engine.render import PerspectiveCamera

    K_pred = K_pred if K_pred is not None else torch.tensor([[[300.0, 0, 64.0], [0, 300.0, 64.0], [0, 0, 1]]])
    p = FaceParams(identity=changes.get("identity", truth["gt_identity"]),
                   expression=changes.get("expression", truth["gt_expression"]),
                   pose=changes.get("pose", truth["gt_pose"]), camera=PerspectiveCamera(K_pred, R_pred, t_pred, (128, 128)),
                   sh=torch.zeros(1, 9, 3), albedo=changes.get("albedo", truth["gt_albedo"]))
    return LossInputs(FaceDecoder(head)(p), vertex_weights=head.regions["face_skin"].float(), **truth)


def test_view_aligned_rotation_turns_the_ray_onto_the_axis():
    K_true = torch.tensor([[[250.0, 0, 30.0], [0, 250.0, 90.0], [0, 0, 1]]])
    K_pred = torch.tensor([[[400.0, 0, 64.0], [0, 400.0, 64.0], [0, 0, 1]]])
    Q = view_aligned_rotation(K_true, K_pred)[0]
    ray = torch.linalg.solve(K_true[0], torch.tensor([64.0, 64.0, 1.0]))
    torch.testing.assert_close(Q @ (ray / ray.norm()), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(Q @ Q.T, torch.eye(3), atol=1e-6, rtol=0)
    assert torch.det(Q) == pytest.approx(1.0, abs=1e-6)
    off_axis = math.degrees(math.acos(float(ray[2] / ray.norm())))
    angle = math.degrees(math.acos((float(torch.trace(Q)) - 1) / 2))
    assert angle == pytest.approx(off_axis, abs=1e-3) and angle > 5  # the smallest turn
    torch.testing.assert_close(view_aligned_rotation(K_pred, K_pred)[0], torch.eye(3))


def test_terms_vanish_at_the_view_aligned_truth(head):
    truth = _truth(head)
    K_pred = torch.tensor([[[300.0, 0, 64.0], [0, 300.0, 64.0], [0, 0, 1]]])
    Q = view_aligned_rotation(truth["gt_K"], K_pred)
    x = _inputs(head, truth, Q @ truth["gt_R"], torch.tensor([[0.3, 0.1, 2.0]]), K_pred)  # any translation
    for name in SUPERVISED:
        assert float(TERMS[name](x)[0]) == pytest.approx(0.0, abs=1e-4), name
    # the camera's own rotation (not view-aligned) is off by the off-axis angle
    y = _inputs(head, truth, truth["gt_R"], truth["gt_t"], K_pred)
    ray = torch.linalg.solve(truth["gt_K"][0], torch.tensor([64.0, 64.0, 1.0]))
    off = math.acos(float(ray[2] / ray.norm()))
    assert float(TERMS["rotation"](y)[0]) == pytest.approx(off**2, rel=1e-3)
    assert float(TERMS["vertices"](y)[0]) > 5.0 and float(TERMS["shape"](y)[0]) < 1e-4


def test_terms_measure_known_errors(head):
    truth = _truth(head)
    K = truth["gt_K"]
    R_err = _rot([0.0, 1.0, 0.0], 10)
    ident = truth["gt_identity"].clone()
    ident[0, 0] += 2 * head.identity_std[0]
    expr = truth["gt_expression"].clone()
    expr[0, :4] += 0.5
    pose = truth["gt_pose"].clone()
    pose[0, head.joint_names.index("jaw"), 0] += 0.1
    x = _inputs(head, truth, truth["gt_R"] @ R_err, truth["gt_t"], K, identity=ident, expression=expr, pose=pose,
                albedo=truth["gt_albedo"] + 0.05)
    assert float(TERMS["rotation"](x)[0]) == pytest.approx(math.radians(10) ** 2, rel=1e-3)
    assert float(TERMS["identity_gt"](x)[0]) == pytest.approx(4.0, rel=1e-4)
    assert float(TERMS["expression_gt"](x)[0]) == pytest.approx(4 * 0.25, rel=1e-4)
    assert float(TERMS["pose_gt"](x)[0]) == pytest.approx(0.01, rel=1e-4)
    assert float(TERMS["albedo"](x)[0]) == pytest.approx(0.05, rel=1e-3)
    # a 3 mm shift of every vertex of the mesh is no shape error for the (centred) vertices term
    from engine.face import FaceParams  # noqa: F401

    z = _inputs(head, truth, truth["gt_R"], truth["gt_t"], K)
    shifted = dict(truth, gt_vertices=truth["gt_vertices"] + torch.tensor([0.003, 0.0, 0.0]))
    z2 = LossInputs(z.decoded, vertex_weights=z.vertex_weights, **shifted)
    assert float(TERMS["vertices"](z2)[0]) == pytest.approx(0.0, abs=1e-3)
    assert float(TERMS["shape"](z2)[0]) == pytest.approx(3.0, rel=1e-3)


def test_missing_truth_is_named(head):
    truth = _truth(head)
    x = _inputs(head, truth, truth["gt_R"], truth["gt_t"])
    x.gt_vertices = None
    with pytest.raises(ValueError, match="gt_vertices"):
        weighted_sum({"vertices": 1.0}, x)


def test_gradients_lead_rotation_and_shape_to_the_truth(head):
    """A few gradient steps on the vertices + rotation + identity terms from the mean face,
    turned by 20°, approach the truth."""
    from engine.face import FaceDecoder, FaceParams
    from engine.render import PerspectiveCamera, axis_angle_to_matrix

    truth = _truth(head, 1)
    K = truth["gt_K"]
    aa = torch.zeros(1, 3, requires_grad=True)
    ident = torch.zeros(1, head.n_identity, requires_grad=True)
    R0 = truth["gt_R"] @ _rot([1.0, 0.5, 0.0], 20)
    opt = torch.optim.Adam([aa, ident], lr=0.05)
    weights = {"vertices": 0.1, "rotation": 10.0, "identity_gt": 0.01}
    first = None
    for _ in range(60):
        R = R0 @ axis_angle_to_matrix(aa)
        p = FaceParams(identity=ident * head.identity_std, expression=truth["gt_expression"], pose=truth["gt_pose"],
                       camera=PerspectiveCamera(K, R, truth["gt_t"], (128, 128)), sh=torch.zeros(1, 9, 3))
        x = LossInputs(FaceDecoder(head)(p), vertex_weights=head.regions["face_skin"].float(), **truth)
        total, terms = weighted_sum(weights, x)
        first = first or {k: float(v) for k, v in terms.items()}
        opt.zero_grad()
        total.sum().backward()
        opt.step()
    last = {k: float(v) for k, v in terms.items()}
    assert last["rotation"] < 0.05 * first["rotation"]
    assert last["vertices"] < 0.3 * first["vertices"]
    assert last["identity_gt"] < 0.3 * first["identity_gt"]


def test_mofa_trains_on_supervised_terms_of_cropped_realistic_items(head):
    """MoFA's training step reads the batch's gt_* tensors and occlusion mask; a few steps on
    one batch lower the supervised terms."""
    from engine.data.synthetic import SyntheticFaces
    from engine.methods.mofa import Mofa, MofaConfig

    torch.manual_seed(0)
    ds = SyntheticFaces(head, 2, 64, 11, generator="realistic", crop={"frame_size": 96},
                        face_fraction=[0.4, 0.9], torso_probability=0.0)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    cfg = MofaConfig(backbone="resnet10", width=0.25, image_size=64, visibility_size=32,
                     losses={"landmark": 300.0, "vertices": 0.1, "rotation": 10.0, "identity_gt": 0.01,
                             "expression_gt": 0.1, "albedo": 1.0})
    model = Mofa(cfg, head=head)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    logs = []
    for _ in range(12):
        res = model.training_step(batch)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        logs.append({k: float(v) for k, v in res.scalars.items()})
    for k in ("vertices", "rotation", "identity_gt", "expression_gt", "albedo", "photometric"):
        assert k in logs[0] and math.isfinite(logs[-1][k])
    assert logs[-1]["vertices"] < logs[0]["vertices"]
    assert logs[-1]["rotation"] < logs[0]["rotation"]
    # occluded skin leaves the photometric term: an all-occluded batch has no photometric weight
    batch2 = dict(batch, occlusion_mask=torch.ones_like(batch["occlusion_mask"]))
    assert float(model.training_step(batch2).scalars["photometric"]) == pytest.approx(0.0, abs=1e-6)


def test_pose_gt_counts_only_the_weighted_joints(head):
    """pose_gt with ``pose_joint_weights``: a network that predicts only the jaw is not charged
    for the eyes' gaze it cannot move; without weights every joint counts."""
    truth = _truth(head)
    pose = truth["gt_pose"].clone()
    jaw, eye = head.joint_names.index("jaw"), head.joint_names.index("eye_left")
    pose[0, jaw, 0] += 0.1
    pose[0, eye, 1] += 0.3
    x = _inputs(head, truth, truth["gt_R"], truth["gt_t"], pose=pose)
    assert float(TERMS["pose_gt"](x)[0]) == pytest.approx(0.01 + 0.09, rel=1e-4)
    w = torch.zeros(head.n_joints)
    w[jaw] = 1.0
    x.pose_joint_weights = w
    assert float(TERMS["pose_gt"](x)[0]) == pytest.approx(0.01, rel=1e-4)
