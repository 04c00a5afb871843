"""Synthetic clips: one person per clip (fixed identity/albedo/camera), smooth motion between
two key frames, frame 0 = the single-face sampler; the clip corpus cache round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import SyntheticClips, build_dataset, clip_seed, face_seed
from engine.data.synthetic import main as corpus_main
from engine.generator import SyntheticConfig, render_clip, render_sample


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_clip_keeps_the_person_and_moves_smoothly(head):
    cfg = SyntheticConfig(image_size=48)
    frames = render_clip(head, 21, 5, cfg)
    assert len(frames) == 5
    first = render_sample(head, 21, cfg)
    assert np.array_equal(frames[0].image, first.image)  # frame 0 is the single-face sample
    for f in frames[1:]:
        assert torch.equal(f.params.identity, frames[0].params.identity)
        assert torch.equal(f.params.albedo, frames[0].params.albedo)
        assert torch.equal(f.params.camera.K, frames[0].params.camera.K)
    # something moves: head rotation, expression or light differs between the ends
    p0, p4 = frames[0].params, frames[-1].params
    R0, R4 = p0.camera.R[0], p4.camera.R[0]
    changed = ((R0 - R4).abs().max() > 1e-3) or ((p0.expression - p4.expression).abs().max() > 1e-3)
    assert changed and (p0.sh - p4.sh).abs().max() > 1e-4
    # eased motion: consecutive rotation steps are small relative to the whole move
    ang = [torch.linalg.matrix_norm(frames[k + 1].params.camera.R[0] - frames[k].params.camera.R[0])
           for k in range(4)]
    total = torch.linalg.matrix_norm(R4 - R0)
    assert max(ang) <= 0.7 * total + 1e-6
    # the face stays aimed at the same image point (landmark centroid within a few px)
    c = torch.stack([f.landmarks2d.mean(0) for f in frames])
    assert (c - c[0]).norm(dim=-1).max() < 0.1 * 48
    # ground-truth landmarks agree with each frame's own vertices and camera
    f = frames[3]
    lm3 = f.params.camera.to_camera(head.landmarks(f.vertices[None]))[0]
    K = f.params.camera.K[0]
    uv = lm3[:, :2] / lm3[:, 2:] * K[0, 0] + K[0, 2]
    assert torch.allclose(uv, f.landmarks2d, atol=1e-3)
    with pytest.raises(ValueError):
        render_clip(head, 1, 0, cfg)


def test_clip_corpus_cache_round_trip(head, tmp_path):
    assert clip_seed(1234, "train", 0) not in {face_seed(1234, s, i) for s in ("train", "val") for i in range(3)}
    assert corpus_main(["--out", str(tmp_path), "--n", "0", "--clips", "2", "--n-val-clips", "1",
                        "--frames", "3", "--size", "32"]) == 0
    live = SyntheticClips(head, 2, clip_length=3, image_size=32)
    cached = SyntheticClips(head, 2, clip_length=3, image_size=32, cache=tmp_path)
    a, b = live[1], cached[1]
    assert a["image"].shape == (3, 3, 32, 32) and b["landmarks"].shape == (3, 68, 2)
    assert (a["image"] - b["image"]).abs().max() <= 1 / 255 + 1e-6
    assert torch.allclose(a["gt_vertices"], b["gt_vertices"], atol=1e-5)
    assert int(a["clip"]) == int(b["clip"]) == clip_seed(1234, "train", 1)
    val = SyntheticClips(head, 1, clip_length=3, image_size=32, split="val", cache=tmp_path)
    assert not torch.equal(val[0]["image"], cached[0]["image"])

    class _Data:  # build_dataset picks clips for the synthetic kind when clip_length > 1
        kind, image_size, n_samples, val_samples, seed, clip_length = "synthetic", 32, 2, 1, 1234, 3
        head_model, head_model_path, root = "open", "", ""
        options = {"cache": str(tmp_path)}

    ds = build_dataset(_Data(), "train", head=head)
    assert isinstance(ds, SyntheticClips) and len(ds) == 2


def test_identity_views_share_the_person_and_nothing_else(head):
    from engine.generator import render_identity_views

    cfg = SyntheticConfig(image_size=48)
    views = render_identity_views(head, 31, 3, cfg)
    assert np.array_equal(views[0].image, render_sample(head, 31, cfg).image)  # view 0 = the single face
    p = [v.params for v in views]
    for q in p[1:]:
        assert torch.equal(q.identity, p[0].identity) and torch.equal(q.albedo, p[0].albedo)
        assert not torch.allclose(q.camera.R, p[0].camera.R)  # a new head pose ...
        assert not torch.allclose(q.sh, p[0].sh)  # ... and a new light
    # each view's ground-truth landmarks agree with its own vertices and camera
    for v in views:
        uv = v.params.camera.project(head.landmarks(v.vertices[None]))[0][0]
        assert torch.allclose(uv, v.landmarks2d, atol=1e-3)


def test_identity_groups_train_through_the_trainer(tmp_path):
    """data.views_per_identity=K: items are (K, 3, S, S); MoFA trains on them and the trainer
    counts K images per item."""
    import json

    from engine.train import Trainer, load_config

    cfg = load_config(None, ["device=cpu", "batch_size=2", "max_steps=2", "data.image_size=48", "data.n_samples=4",
                             "data.val_samples=2", "data.views_per_identity=2", "data.num_workers=0",
                             "model.backbone=resnet10", "model.width=0.25", "model.visibility_size=32",
                             f"run_dir={tmp_path}", "progress=off", "tensorboard=false", "image_every=0",
                             "log_every=1", "ckpt_every=2"])
    trainer = Trainer(cfg)
    assert trainer.train_set[0]["image"].shape == (2, 3, 48, 48)
    trainer.train()
    trainer.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    seen = [r["images_seen"] for r in records if "images_seen" in r]
    assert seen[-1] == 2 * 2 * 2  # steps x batch x views


def test_identity_views_are_cut_like_single_faces(head):
    """``crop``: every view of an identity group is a detector-like crop of its frame, with the
    true camera and landmarks mapped into the crop."""
    from engine.data.synthetic import SyntheticIdentities

    crop = {"frame_size": 64, "scale": 1.25, "centre_jitter": 0.02, "scale_jitter": 0.05}
    ds = SyntheticIdentities(head, 2, views=2, image_size=40, crop=crop)
    item = ds[1]
    assert item["image"].shape == (2, 3, 40, 40) and item["image"].dtype == torch.float32
    assert item["crop_matrix"].shape == (2, 2, 3)
    assert not torch.equal(item["crop_matrix"][0], item["crop_matrix"][1])  # each view its own crop
    for k in range(2):  # the true camera projects the true landmarks onto the crop's landmarks
        from engine.render import PerspectiveCamera

        cam = PerspectiveCamera(item["gt_K"][k][None], item["gt_R"][k][None], item["gt_t"][k][None], (40, 40))
        uv = cam.project(head.landmarks(item["gt_vertices"][k][None]))[0][0]
        assert torch.allclose(uv, item["landmarks"][k], atol=1e-2)
        lm = item["landmarks"][k]
        assert lm.min() > -5 and lm.max() < 45  # the face fills the crop
    assert torch.equal(ds[1]["image"], item["image"])  # deterministic
