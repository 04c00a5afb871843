"""From a head model's estimate to ARKit weights and head/eye rotations: the jaw joint as
jawOpen, eyeLook weights as eye rotations, head rotation relative to the line of sight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.head import load_head_model
from engine.head.arkit import ARKIT_NAMES
from engine.render.camera import frontal_rotation
from engine.render.rotation import axis_angle_to_matrix, euler_to_matrix
from engine.video.arkit import ArkitRig, head_rotation
from engine.video.formats import yaw_pitch_roll


@pytest.fixture(scope="module")
def open_head():
    return load_head_model("open")


def test_jaw_joint_becomes_jawopen(open_head):
    rig = ArkitRig.from_head(open_head)
    assert rig.is_arkit and rig.missing == [] and rig.jaw_index == open_head.joint_names.index("jaw")
    assert 0.15 < rig.jaw_rad_per_weight < 0.6  # the jawOpen blendshape is a mouth opening of tens of degrees
    # the jaw angle found reproduces the blendshape's mesh better than half or twice the angle
    with torch.no_grad():
        k = open_head.expression_names.index("jawOpen")
        moved = open_head.expression_basis[k].norm(dim=-1) > 1e-5
        target = (open_head.template + open_head.expression_basis[k])[moved]

        def err(angle):
            pose = torch.zeros(1, open_head.n_joints, 3)
            pose[0, rig.jaw_index, 0] = angle
            return float((open_head(None, None, pose).vertices[0, moved] - target).norm(dim=-1).mean())

        assert err(rig.jaw_rad_per_weight) < min(err(rig.jaw_rad_per_weight / 2), err(rig.jaw_rad_per_weight * 2))
    expr = np.zeros((2, open_head.n_expression))
    expr[1, open_head.expression_names.index("mouthSmileLeft")] = 0.4
    pose = np.zeros((2, open_head.n_joints, 3))
    pose[0, rig.jaw_index, 0] = rig.jaw_rad_per_weight * 0.5
    w = rig.arkit_weights(expr, pose)
    assert w.shape == (2, 52)
    assert w[0, ARKIT_NAMES.index("jawOpen")] == pytest.approx(0.5)
    assert w[1, ARKIT_NAMES.index("mouthSmileLeft")] == pytest.approx(0.4) and w[1].sum() == pytest.approx(0.4)


def test_eye_look_weights_turn_the_eyes_the_named_way(open_head):
    rig = ArkitRig.from_head(open_head)
    w = np.zeros((3, 52))
    w[0, ARKIT_NAMES.index("eyeLookOutLeft")] = 1.0  # left eye looks to the subject's left
    w[1, ARKIT_NAMES.index("eyeLookUpRight")] = 1.0
    w[2, ARKIT_NAMES.index("eyeLookInRight")] = 1.0  # right eye looks inwards = to the subject's left
    eyes = rig.eye_rotations(w)
    left = yaw_pitch_roll(axis_angle_to_matrix(torch.tensor(eyes["left"])).numpy())
    right = yaw_pitch_roll(axis_angle_to_matrix(torch.tensor(eyes["right"])).numpy())
    assert left[0, 0] > np.radians(10) and abs(left[0, 1]) < np.radians(2)  # yaw > 0: towards +X
    assert right[1, 1] < -np.radians(5) and np.abs(left[1]).max() == 0  # pitch < 0: up; the left eye stays
    assert right[2, 0] > np.radians(10)


def test_head_rotation_is_relative_to_the_line_of_sight():
    ypr = np.array([0.2, -0.1, 0.05])
    R_head = euler_to_matrix(torch.tensor(ypr), "YXZ").numpy()
    R = frontal_rotation(torch.float64).numpy() @ R_head
    t = np.array([0.0, 0.0, 0.8])
    np.testing.assert_allclose(head_rotation(R[None], t[None])[0], R_head, atol=1e-12)
    # a camera pan (rotation about the camera centre) leaves it unchanged
    P = axis_angle_to_matrix(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(head_rotation((P @ R)[None], (P @ t)[None])[0], R_head, atol=1e-12)
    # a face off the image centre that looks straight at the camera is frontal
    t_off = np.array([0.3, -0.2, 0.8])
    d = t_off / np.linalg.norm(t_off)
    axis = np.cross([0.0, 0.0, 1.0], d)
    los = axis_angle_to_matrix(torch.tensor(axis / np.linalg.norm(axis) * np.arccos(d[2]))).numpy()
    R_look = los @ frontal_rotation(torch.float64).numpy()
    np.testing.assert_allclose(yaw_pitch_roll(head_rotation(R_look[None], t_off[None])), 0.0, atol=1e-9)


def test_pca_expressions_refuse_the_csv(flame_pkl):
    flame = load_head_model("flame", flame_pkl)
    rig = ArkitRig.from_head(flame)
    assert not rig.is_arkit
    with pytest.raises(UserError, match="not ARKit blendshapes"):
        rig.arkit_weights(np.zeros((1, flame.n_expression)), np.zeros((1, flame.n_joints, 3)))
