"""Augmentation: the iBUG-68 mirror permutation, flipped landmarks on the flipped face,
geometric warps that keep a synthetic camera consistent, colour and blur, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import IBUG68_MIRROR, AugmentConfig, AugmentedFaces, SyntheticFaces, augment_item, parse_augment
from engine.errors import ConfigError


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_mirror_permutation_is_an_involution_matching_a_head(head):
    perm = np.array(IBUG68_MIRROR)
    assert sorted(perm) == list(range(68)) and (perm[perm] == np.arange(68)).all()
    assert {i for i in range(68) if perm[i] == i} == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}  # the midline
    # the open model's landmarks mirrored across its sagittal plane are its own landmarks, re-indexed
    with torch.no_grad():
        lm = head.landmarks(head.template[None])[0].numpy()
    mirrored = lm * np.array([-1.0, 1.0, 1.0])
    nearest = np.linalg.norm(mirrored[:, None] - lm[None], axis=2).argmin(0)
    assert (nearest == perm).all()  # each point's mirror image lands closest to its partner
    assert np.linalg.norm(mirrored[perm] - lm, axis=1)[17:].max() < 2.5e-3  # inner points within 2.5 mm


def _pixel(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Colour (3,) of the pixel containing point ``uv`` (pixel-edge coordinates)."""
    return img[:, int(uv[1]), int(uv[0])]


def test_flipped_landmarks_stay_on_the_flipped_face(head):
    item = SyntheticFaces(head, 1, image_size=96)[0]
    item = {k: v for k, v in item.items() if not k.startswith("gt_")}  # a photo: no 3-D ground truth
    # landmarks at pixel centres so that "the pixel under a point" is exact after mirroring
    item["landmarks"] = item["landmarks"].floor() + 0.5
    img = item["image"]
    out = augment_item(item, AugmentConfig(flip=1.0), np.random.default_rng(0))
    perm = list(IBUG68_MIRROR)
    assert torch.equal(out["image"], img.flip(-1))
    for i in range(68):  # new point i sits on the mirrored pixel of old point perm[i]
        assert torch.equal(_pixel(out["image"], out["landmarks"][i]), _pixel(img, item["landmarks"][perm[i]]))
    # still a face the right way round: the subject's right eye (36-41) left of the left eye (42-47)
    lm = out["landmarks"]
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean() and lm[48, 0] < lm[54, 0] and lm[0, 0] < lm[16, 0]
    assert lm[19, 1] < lm[57, 1]  # brows above the chin: nothing turned upside down
    # items with 3-D ground truth are not flipped (the mirror head is not in the model)
    synth = SyntheticFaces(head, 1, image_size=96)[0]
    same = augment_item(synth, AugmentConfig(flip=1.0), np.random.default_rng(0))
    assert torch.equal(same["image"], synth["image"]) and torch.equal(same["landmarks"], synth["landmarks"])


def test_geometric_warp_keeps_the_synthetic_camera_consistent(head):
    item = SyntheticFaces(head, 1, image_size=96)[0]
    cfg = AugmentConfig(scale=0.2, shift=0.1, rotation_deg=25)
    out = augment_item(item, cfg, np.random.default_rng(5))
    assert not torch.allclose(out["landmarks"], item["landmarks"], atol=1.0)
    # ground-truth landmarks projected with the updated camera = the warped landmarks
    lm3 = head.landmarks(out["gt_vertices"][None])[0] @ out["gt_R"].T + out["gt_t"]
    K = out["gt_K"]
    uv = lm3[:, :2] / lm3[:, 2:] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
    assert torch.allclose(uv, out["landmarks"], atol=2e-3), (uv - out["landmarks"]).abs().max()
    # and the image moved with them: the warped image sampled at the warped points is the
    # original image at the original points (bilinear, away from the border)
    from engine.render.vertex_sampling import sample_image

    a = sample_image(item["image"][None], item["landmarks"][None])[0]
    b = sample_image(out["image"][None], out["landmarks"][None])[0]
    inside = ((out["landmarks"] > 2) & (out["landmarks"] < 94)).all(1)
    assert (a - b)[inside].abs().median() < 0.03


def test_colour_blur_determinism_and_clips(head):
    ds = SyntheticFaces(head, 3, image_size=64)
    cfg = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.5, "colour": 0.1, "blur": 1.0,
           "blur_sigma": [1.5, 2.0], "noise": 0.0, "repeats": 2, "seed": 7}
    aug = AugmentedFaces(ds, cfg)
    assert len(aug) == 6
    a, b = aug[4], aug[4]
    assert torch.equal(a["image"], b["image"])  # deterministic per index
    assert not torch.equal(aug[1]["image"], aug[4]["image"])  # same source item, another draw
    assert torch.equal(aug[1]["landmarks"], ds[1]["landmarks"])  # colour only: points unchanged
    x = a["image"]
    assert x.min() >= 0 and x.max() <= 1
    # blur removes fine detail: the mean absolute horizontal gradient drops
    grad = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert grad(x) < 0.7 * grad(ds[0]["image"])
    # a clip's frames move together: two equal frames stay equal
    item = ds[0]
    clip = {"image": torch.stack([item["image"]] * 2), "landmarks": torch.stack([item["landmarks"]] * 2),
            "landmarks_valid": torch.ones(2, 68, dtype=torch.bool)}
    out = augment_item(clip, parse_augment({"rotation_deg": 20, "flip": 1.0, "brightness": 0.2}),
                       np.random.default_rng(1))
    assert out["image"].shape == (2, 3, 64, 64) and torch.equal(out["image"][0], out["image"][1])
    assert torch.equal(out["landmarks"][0], out["landmarks"][1])


@pytest.mark.parametrize("bad, match", [({"spin": 1}, "augment.spin"), ({"flip": 1.5}, "augment.flip"),
                                        ({"scale": -0.1}, "augment.scale"), ({"blur_sigma": [2, 1]}, "blur_sigma"),
                                        ({"repeats": 0}, "augment.repeats"), ("yes", "mapping")])
def test_bad_augment_options(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_augment(bad)
    assert parse_augment({}) is None and parse_augment(None) is None
