"""The realistic generator's fine detail (engine.generator.wrinkles): the map is linear in the
expression, each unit acts where its wrinkles are (and on its own side), the renderer's bump
normals agree with the object-space normal map, detail off leaves the images exactly as they
were, detail on changes the head only, identity views share the person, and the data sets
carry the map."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from engine.generator.realistic import RealisticConfig, render_realistic, render_realistic_views
from engine.generator.wrinkles import UNIT_PATTERNS, detail_layout, person_detail

SMALL = dict(image_size=64, wide_pose_probability=0.0, face_fraction=(0.45, 0.7))
MAP = 128  # detail map size for the quick tests
#: sha1 of the uint8 images of render_realistic(open, seed, RealisticConfig(**SMALL)) before the
#: detail existed (commit 492af7b); detail=False must reproduce them byte for byte
IMAGES_BEFORE_DETAIL = {0: "b733954fe57ecb7afe4e25706d9bfacdfa28eba6", 1: "273cf385e6d675e39d63a82e0c526c705b5305ff",
                        2: "750666bf17817798c12e0bd7e8e02207c59d8435"}


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


@pytest.fixture(scope="module")
def basis(head):
    return person_detail(head, np.random.default_rng(5), MAP)


def _weights(head, **units) -> np.ndarray:
    w = np.zeros(head.n_expression)
    for name, value in units.items():
        w[list(head.expression_names).index(name)] = value
    return w


def _on_texels(m: torch.Tensor, head, ids: np.ndarray | None = None) -> np.ndarray:
    """Values of a map at the covered texels (or at covered texels ``ids``)."""
    D = detail_layout(head, m.shape[-1])
    index = D.geo.index if ids is None else D.geo.index[ids]
    return m.reshape(-1).numpy()[index].astype(np.float64)


def test_map_is_linear_in_the_expression_and_the_jaw(head, basis):
    pose = np.zeros((head.n_joints, 3))
    jaw = head.joint_names.index("jaw")
    assert basis.jaw is not None and set(basis.units) == set(UNIT_PATTERNS) & set(head.expression_names)
    for unit in ("browInnerUp", "mouthSmileLeft", "mouthShrugLower"):
        m0, m1 = basis.compose(_weights(head), pose), basis.compose(_weights(head, **{unit: 1.0}), pose)
        half = basis.compose(_weights(head, **{unit: 0.5}), pose)
        assert torch.allclose(half, 0.5 * (m0 + m1), atol=1e-10)
        assert torch.allclose(m1 - m0, basis.units[unit], atol=1e-10)
        assert basis.units[unit].min() < -1e-4  # a groove of a tenth of a millimetre or more
    q = pose.copy()
    q[jaw, 0] = 0.2
    assert torch.allclose(basis.compose(_weights(head), q), basis.static + 0.2 * basis.jaw, atol=1e-10)
    # several units and the jaw add up
    w = _weights(head, browDownLeft=0.3, noseSneerRight=0.8, eyeSquintLeft=1.0)
    total = basis.static + 0.3 * basis.units["browDownLeft"] + 0.8 * basis.units["noseSneerRight"] \
        + basis.units["eyeSquintLeft"] + 0.2 * basis.jaw
    assert torch.allclose(basis.compose(w, q), total, atol=1e-10)
    assert basis.static.shape == (1, 1, MAP, MAP) and basis.static.dtype == torch.float32
    with pytest.raises(ValueError, match="weights"):
        basis.compose(np.zeros(3), pose)


def test_depths_are_in_range(head):
    for seed in range(4):
        b = person_detail(head, np.random.default_rng(seed), MAP)
        assert 18 <= b.age <= 80 and 0.3e-3 <= b.depth_m <= 0.8e-3
        pores = _on_texels(b.static, head, np.flatnonzero(detail_layout(head, MAP).skin > 0.99))
        assert 0.01e-3 < np.median(np.abs(pores)) < 0.1e-3  # fine noise of a few hundredths of a mm
        deepest = min(float(m.min()) for m in b.units.values())
        assert -1.2e-3 < deepest < -0.2e-3


def test_brow_raise_deepens_the_forehead_not_the_chin(head, basis):
    D = detail_layout(head, MAP)
    pose = np.zeros((head.n_joints, 3))
    raise_ = basis.compose(_weights(head, browInnerUp=1.0, browOuterUpLeft=1.0, browOuterUpRight=1.0), pose)
    diff = raise_ - basis.compose(_weights(head), pose)
    forehead = _on_texels(diff, head, D.zones["forehead"].ids)
    chin = _on_texels(diff, head, D.zones["chin"].ids)
    assert forehead.min() < -0.2e-3 and forehead.mean() < 0
    assert np.all(chin == 0)
    # the forehead's grooves lie above the brows
    lm = D.landmarks
    moved = D.geo.index[np.abs(_on_texels(diff, head)) > 1e-6]
    heights = D.position[np.searchsorted(D.geo.index, moved), 1]
    assert heights.min() > lm[17:27, 1].min()


@pytest.mark.parametrize("unit", ["browOuterUp", "browDown", "eyeSquint", "cheekSquint", "mouthSmile", "noseSneer"])
def test_left_and_right_units_act_on_their_own_side(head, basis, unit):
    D = detail_layout(head, MAP)
    x = D.position[:, 0] * D.left_sign  # > 0 on the subject's left
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        m = _on_texels(basis.units[unit + side], head)
        active = np.abs(m) > 1e-7
        assert active.sum() > 3
        assert (sign * x[active]).min() > -2e-3  # nothing beyond the midline (frown / bunny lines reach it)
        assert np.abs(m[sign * x > 0]).sum() > 0.95 * np.abs(m).sum()


def test_bump_normals_match_the_object_space_normal_map(head):
    """The renderer's first-order bump normals (perturb_normals) bend the normals as DECA's
    dense object-space normal map of the displaced surface does (normal_map_from_displacement;
    compared as the change from the undisplaced surface, whose dense normals are the facets')."""
    from scipy import ndimage

    from engine.render import (displaced_uv_positions, interpolate, normal_map_from_displacement, perturb_normals,
                               rasterize_uv, sample_uv_gradient, uv_tangents, vertex_normals)

    S = 256
    fr = rasterize_uv(head.uv, head.face_uv, S)
    verts = head.template[None]
    normals = vertex_normals(verts, head.faces)
    jj, ii = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    uv = torch.stack([(ii + 0.5) / S, 1 - (jj + 0.5) / S], -1).float()
    disp = (0.5e-3 * torch.sin(2 * np.pi * 30 * uv[..., 0]) * torch.cos(2 * np.pi * 25 * uv[..., 1]))[None, None]

    def dense(d: torch.Tensor) -> torch.Tensor:
        P, N, mask = displaced_uv_positions(verts, normals, d, head.faces, fr)
        return normal_map_from_displacement(d, positions=P, base_normals=N, mask=mask)[0].permute(1, 2, 0).reshape(-1, 3)

    face = interpolate(head.regions["face_skin"].float()[None, :, None], head.faces, fr)[0, ..., 0] > 0.99
    sel = torch.nonzero(torch.from_numpy(ndimage.binary_erosion(face.numpy(), iterations=2)).reshape(-1))[:, 0]
    tri = fr.tri_id[0].reshape(-1)[sel]
    tu, tv = uv_tangents(verts, head.faces, head.uv, head.face_uv)
    base = interpolate(normals, head.faces, fr)[0].reshape(-1, 3)[sel]
    base = base / base.norm(dim=1, keepdim=True)
    bump = perturb_normals(base, tu[0, tri], tv[0, tri], sample_uv_gradient(disp, uv.reshape(-1, 2)[sel], 1.0))
    change_dense = dense(disp)[sel] - dense(torch.zeros_like(disp))[sel]
    change_bump = bump - base
    size = change_dense.norm(dim=1)
    assert len(sel) > 500 and torch.rad2deg(size.median()) > 3  # the displacement bends the normals by degrees ...
    err = (change_bump - change_dense).norm(dim=1) / size.clamp_min(1e-6)
    assert err.median() < 0.15  # ... the same way in both


def test_detail_off_gives_the_images_of_before(head):
    cfg = RealisticConfig(**SMALL, detail=False)
    for seed, digest in IMAGES_BEFORE_DETAIL.items():
        s = render_realistic(head, seed, cfg)
        assert hashlib.sha1(s.image.tobytes()).hexdigest() == digest, seed
        assert s.params.displacement is None and s.wrinkles is None


def test_detail_changes_the_head_but_not_the_background(head):
    from scipy import ndimage

    clean = dict(jpeg_probability=0.0, downscale_probability=0.0, defocus_probability=0.0, motion_probability=0.0)
    changed = 0.0
    for seed in (3, 4):
        on = render_realistic(head, seed, RealisticConfig(**SMALL, **clean, detail_map_size=256))
        off = render_realistic(head, seed, RealisticConfig(**SMALL, **clean, detail=False))
        covered = on.segmentation != 0
        far = ~ndimage.binary_dilation(covered, iterations=4)  # beyond the optical blur of the edges
        assert far.sum() > 500 and np.array_equal(on.image[far], off.image[far])
        assert np.array_equal(on.segmentation, off.segmentation) and np.array_equal(on.face_mask, off.face_mask)
        assert torch.equal(on.landmarks2d, off.landmarks2d) and torch.equal(on.params.visibility, off.params.visibility)
        face = on.face_mask
        changed += np.abs(on.image[face].astype(int) - off.image[face].astype(int)).mean()
        assert on.params.displacement.shape == (1, 1, 256, 256)
        assert torch.equal(on.params.displacement, on.wrinkles.compose(on.params.expression, on.params.pose))
        assert "age" in on.attributes and "age" not in off.attributes
    assert changed / 2 > 0.5  # grey levels: the face's shading moved


def test_identity_views_share_the_person(head):
    cfg = RealisticConfig(**SMALL, detail_map_size=MAP, wrinkle_expression_probability=1.0)
    views = render_realistic_views(head, 21, 3, cfg)
    first = views[0]
    assert np.array_equal(first.image, render_realistic(head, 21, cfg).image)  # view 0 is the single face
    for v in views[1:]:
        assert torch.equal(v.params.identity, first.params.identity)
        assert torch.equal(v.params.albedo_map, first.params.albedo_map)
        assert v.wrinkles is first.wrinkles  # one detail model: the same static map and per-unit maps
        for k in ("skin_tone", "hair", "hair_colour", "iris", "facial_hair", "makeup", "age"):
            assert v.attributes[k] == first.attributes[k], k
        assert not torch.equal(v.params.expression, first.params.expression)
        assert not torch.equal(v.params.camera.t, first.params.camera.t)
        assert not torch.equal(v.params.displacement, first.params.displacement)
        assert not np.array_equal(v.image, first.image)
    assert all(v.attributes["wrinkle_expression"] is not None for v in views)
    assert [v.attributes["view"] for v in views] == [0, 1, 2]
    # the hair shell is the person's: the same hair in every view (view 1's props drawn again)
    again = render_realistic_views(head, 21, 2, cfg)[1]
    assert np.array_equal(again.image, views[1].image)


def test_data_sets_carry_the_displacement(head, tmp_path):
    from engine.data import SyntheticFaces, SyntheticIdentities
    from engine.data.synthetic import write_cache

    opts = dict(generator="realistic", detail_map_size=64)
    item = SyntheticFaces(head, 1, image_size=32, **opts)[0]
    assert item["gt_displacement"].shape == (1, 64, 64) and item["gt_displacement"].dtype == torch.float32
    basic = SyntheticFaces(head, 1, image_size=32)[0]
    assert "gt_displacement" not in basic
    group = SyntheticIdentities(head, 1, views=2, image_size=32, **opts)[0]
    assert group["image"].shape == (2, 3, 32, 32) and group["gt_displacement"].shape == (2, 1, 64, 64)
    assert torch.equal(group["gt_identity"][0], group["gt_identity"][1])
    assert group["occlusion_mask"].shape == (2, 32, 32) and group["gt_albedo"].shape[0] == 2
    write_cache(head, tmp_path, 1, "train", 32, 1234, generator="realistic", options={"detail_map_size": 64},
                displacement_size=32)
    cached = SyntheticFaces(head, 1, image_size=32, cache=tmp_path, **opts)[0]
    ref = torch.nn.functional.interpolate(item["gt_displacement"][None], size=(32, 32), mode="area")[0]
    assert cached["gt_displacement"].shape == (1, 32, 32)
    assert torch.allclose(cached["gt_displacement"], ref, atol=2e-7)
    # without the option the cache has no map (older caches and the default)
    write_cache(head, tmp_path / "plain", 1, "train", 32, 1234, generator="realistic", options={"detail_map_size": 64})
    assert "gt_displacement" not in SyntheticFaces(head, 1, image_size=32, cache=tmp_path / "plain", **opts)[0]


def test_augmentation_leaves_uv_maps_alone():
    from engine.data.augment import AugmentConfig, augment_item

    item = {"image": torch.rand(3, 16, 16), "landmarks": torch.rand(68, 2) * 16,
            "gt_displacement": torch.rand(1, 16, 16), "mask": torch.rand(16, 16)}
    out = augment_item(item, AugmentConfig(rotation_deg=30.0, scale=0.2), np.random.default_rng(0))
    assert torch.equal(out["gt_displacement"], item["gt_displacement"])
    assert not torch.equal(out["mask"], item["mask"])  # image-aligned maps still follow the image


def test_ict_model():
    from engine.errors import UserError
    from engine.head import load_head_model

    try:
        ict = load_head_model("ict")
    except UserError:
        pytest.skip("ICT FaceKit files (../shared/ict-facekit) are not available")
    b = person_detail(ict, np.random.default_rng(2), 256)
    assert set(b.units) >= {"browInnerUpLeft", "browInnerUpRight", "mouthSmileLeft", "noseSneerRight"}
    D = detail_layout(ict, 256)
    for zone in ("forehead", "crow_left", "crow_right", "nasolabial", "chin"):
        assert len(D.zones[zone].ids) > 20, zone
    for unit in ("browInnerUpLeft", "mouthSmileLeft", "eyeSquintRight", "mouthShrugLower"):
        assert float(b.units[unit].min()) < -1e-4, unit
    if b.jaw is None:
        assert "jawOpen" in b.units
    s = render_realistic(ict, 3, RealisticConfig(**SMALL, detail_map_size=256))
    assert s.params.displacement.shape == (1, 1, 256, 256) and np.isfinite(s.image).all()
