"""The semantic-code networks' optional jaw (``model.predict_jaw``): three code rows between
reflectance and camera, decoded onto the head model's jaw joint; a network trained without
them starts one with them (``init_from``) with every other output unchanged and the jaw closed,
and one with them starts one without (the rows dropped)."""

from __future__ import annotations

import pytest
import torch

from engine.methods.mofa import Mofa, MofaConfig


def _net(predict_jaw: bool, seed: int = 0) -> Mofa:
    torch.manual_seed(seed)
    net = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=64, predict_jaw=predict_jaw))
    with torch.no_grad():  # a "trained" head: non-zero rows everywhere
        net.encoder.head.weight.normal_(0, 0.01)
        net.encoder.head.bias.normal_(0, 0.01)
    return net.eval()


def _checkpoint(net: Mofa) -> dict:
    return {"method": "mofa", "model": net.state_dict(), "export": net.export_config()}


def test_jaw_rows_decode_onto_the_jaw_joint():
    net = _net(True)
    assert net.layout.n_pose == 3 and net.pose_joints == ("jaw",)
    code = net.encode(torch.rand(2, 3, 64, 64))
    code.pose = torch.tensor([[[0.2, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    params = net.decode(code)
    jaw = net.head.joint_names.index("jaw")
    assert torch.allclose(params.pose[:, jaw], code.pose[:, 0])
    assert params.pose[:, [j for j in range(net.head.n_joints) if j != jaw]].abs().max() == 0
    assert not _net(False).pose_joints and _net(False).layout.n_pose == 0


@pytest.mark.parametrize("source_jaw, target_jaw", [(False, True), (True, False)])
def test_init_from_another_layout_keeps_every_other_output(source_jaw, target_jaw):
    from engine.train.trainer import load_matching_weights

    src, dst = _net(source_jaw, seed=1), _net(target_jaw, seed=2)
    weights = dst.adopt_weights(_checkpoint(src))
    assert weights is not None
    report = load_matching_weights(dst, weights, strict=True)
    assert report["mismatched"] == 0 and report["loaded"] == report["total"]
    x = torch.rand(3, 3, 64, 64)
    a, b = src.encode(x), dst.encode(x)
    for field in ("identity", "expression", "reflectance", "rotation", "translation", "sh"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-6), field
    if target_jaw:
        assert b.pose is not None and b.pose.abs().max() == 0  # the new rows start closed
    else:
        assert b.pose is None


def test_same_layout_is_left_to_name_matching():
    assert _net(True).adopt_weights(_checkpoint(_net(True, seed=3))) is None
    assert _net(False).adopt_weights({"model": {}}) is None
