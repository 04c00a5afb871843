"""Training crops cut like inference cuts photos (engine/data/crops.py): the true camera
follows the crop exactly, the crop is predict_photo's, and cached items equal live ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.data.crops import CropConfig, crop_camera, crop_item, parse_crop
from engine.errors import ConfigError


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


@pytest.fixture(scope="module")
def frame_item(head):
    from engine.data.synthetic import SyntheticFaces

    return SyntheticFaces(head, 1, 160, corpus_seed=3)[0]  # a basic-generator whole frame, 160 px


def _project(head, item, size):
    from engine.face import FaceDecoder, FaceParams
    from engine.render import PerspectiveCamera

    cam = PerspectiveCamera(item["gt_K"][None], item["gt_R"][None], item["gt_t"][None], (size, size))
    p = FaceParams(identity=item["gt_identity"][None], expression=item["gt_expression"][None],
                   pose=item["gt_pose"][None], camera=cam, sh=torch.zeros(1, 9, 3))
    return FaceDecoder(head)(p).landmarks2d[0]


@pytest.mark.parametrize("upright_deg", [45.0, 0.0])  # keep the roll / always crop upright (rolled camera)
def test_true_camera_projects_onto_the_cropped_landmarks(head, frame_item, upright_deg):
    cfg = CropConfig(frame_size=160, centre_jitter=0.05, scale_bias=-0.05, scale_jitter=0.1, upright_deg=upright_deg)
    out = crop_item(frame_item, 96, cfg, np.random.default_rng(4))
    assert out["image"].shape == (3, 96, 96) and out["landmarks"].shape == (68, 2)
    err = (_project(head, out, 96) - out["landmarks"]).norm(dim=-1).max().item()
    assert err < 1e-3, err
    K = out["gt_K"]
    assert K[0, 1] == 0 and K[1, 0] == 0 and K[0, 0] == pytest.approx(K[1, 1].item(), rel=1e-5)
    if upright_deg == 0.0:  # an upright crop turns the camera about its axis: the eye line becomes level
        lm = out["landmarks"].numpy()
        d = lm[42:48].mean(0) - lm[36:42].mean(0)
        assert abs(math.degrees(math.atan2(d[1], d[0]))) < 1e-3


def test_crop_camera_inverts_camera_to_image(frame_item):
    from engine.photo import align_crop

    frame = (frame_item["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    crop = align_crop(frame, frame_item["landmarks"].numpy(), size=64, rotation=0.3)
    K, R, t = frame_item["gt_K"], frame_item["gt_R"], frame_item["gt_t"]
    Kc, Rc, tc = crop_camera(crop, K, R, t)
    K2, R_roll = crop.camera_to_image(Kc.double().numpy())
    np.testing.assert_allclose(K2, K.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(R_roll @ Rc.double().numpy(), R.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(R_roll @ tc.double().numpy(), t.double().numpy(), atol=1e-6)


def test_unjittered_crop_is_predict_photos_crop(frame_item):
    """Without jitter the training crop is pixel for pixel the crop predict_photo makes."""
    from engine.photo import align_crop

    frame = (frame_item["image"].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    out = crop_item(frame_item, 96, CropConfig(frame_size=160))
    ref = align_crop(frame, frame_item["landmarks"].numpy(), size=96, scale=1.25).image
    got = (out["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_jitter_moves_the_crop_by_the_configured_amounts(frame_item):
    from engine.data.crops import crop_box
    from engine.photo import face_frame

    lm = frame_item["landmarks"].double().numpy()
    c0, s0, _ = face_frame(lm)
    cfg = CropConfig(centre_jitter=0.02, scale_bias=-0.05, scale_jitter=0.06)
    boxes = np.array([crop_box(lm, cfg, np.random.default_rng([0, k]))[0] for k in range(400)])
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    size = boxes[:, 2] - boxes[:, 0]
    assert np.std((centre - c0) / s0, axis=0) == pytest.approx([0.02, 0.02], rel=0.2)
    assert np.mean(np.log(size / s0)) == pytest.approx(-0.05, abs=0.01)
    assert np.std(np.log(size / s0)) == pytest.approx(0.06, rel=0.2)


def test_parse_crop_rejects_bad_values():
    assert parse_crop(None) is None
    assert parse_crop({"frame_size": 224}).frame_size == 224
    for bad in ({"frame_size": 8}, {"scale": 0.1}, {"centre_jitter": -1}, {"scale_jitter": float("nan")},
                {"scale_bias": 0.9}, {"upright_deg": 200}, {"bogus": 1}):
        with pytest.raises(ConfigError):
            parse_crop(bad)


def test_realistic_crops_from_a_cache_equal_live_ones(head, tmp_path):
    """Whole realistic frames in the corpus, crops at load time; with gt_albedo / gt_sh."""
    from engine.data.synthetic import SyntheticFaces, write_cache

    opts = {"face_fraction": [0.4, 0.9], "torso_probability": 0.0}
    write_cache(head, tmp_path, 2, "train", 96, 5, generator="realistic", options=opts)
    crop = {"frame_size": 96, "centre_jitter": 0.02, "scale_jitter": 0.05, "seed": 1}
    live = SyntheticFaces(head, 2, 64, 5, generator="realistic", crop=crop, **opts)
    cached = SyntheticFaces(head, 2, 64, 5, generator="realistic", crop=crop, cache=tmp_path, **opts)
    for i in range(2):
        a, b = live[i], cached[i]
        # the detail map (UV space, not cropped) is cached only on request (write_cache displacement_size)
        assert set(a) - {"gt_displacement"} == set(b) and a["gt_displacement"].shape == (1, 512, 512)
        assert a["image"].shape == (3, 64, 64) and a["occlusion_mask"].shape == (64, 64)
        assert a["gt_albedo"].shape == (head.template.shape[0], 3) and a["gt_sh"].shape == (9, 3)
        assert (a["image"] - b["image"]).abs().max() <= 1.5 / 255
        for k in ("landmarks", "gt_K", "gt_R", "gt_t", "gt_albedo", "gt_vertices"):
            torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-5)
        err = (_project(head, b, 64) - b["landmarks"]).norm(dim=-1).max().item()
        assert err < 1e-3
    # vertices=False: cached items leave gt_vertices out; MoFA computes the same ones batched
    from engine.methods.mofa import Mofa, MofaConfig
    from torch.utils.data import default_collate

    lean = SyntheticFaces(head, 2, 64, 5, generator="realistic", crop=crop, cache=tmp_path, vertices=False, **opts)
    assert "gt_vertices" not in lean[0]
    torch.testing.assert_close(lean[1]["image"], cached[1]["image"])
    net = Mofa(MofaConfig(image_size=64, losses={"photometric": 1.0, "vertices": 0.1}), head)
    batch = default_collate([lean[0], lean[1]])
    truth = net.complete_truth({k: batch[k] for k in ("gt_identity", "gt_expression", "gt_pose")})
    torch.testing.assert_close(truth["gt_vertices"], torch.stack([cached[0]["gt_vertices"], cached[1]["gt_vertices"]]),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="96 px"):  # the cache holds frames, not crops: sizes are checked
        SyntheticFaces(head, 2, 64, 5, generator="realistic", crop={"frame_size": 128}, cache=tmp_path)
