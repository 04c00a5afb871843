"""The realistic face generator (engine.generator.realistic): its ground truth agrees with
its images (landmarks, masks, visibility, albedo map), it is deterministic, skin tones
cover Fitzpatrick I-VI evenly, occluders are recorded, and it runs on every head model.

The image shows the coarse mesh (the detail map only bends its shading normals), so geometry
is compared with the coarse decode, ``params.replace(displacement=None)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.face import FaceDecoder
from engine.generator import render_realistic as lazy_render_realistic
from engine.generator.albedo import paint_head
from engine.generator.hairstyle import sample_hair_style
from engine.generator.layout import head_layout
from engine.generator.lights import LightRig
from engine.generator.props import SEGMENT_LABELS, combine_props
from engine.generator.realistic import (RealisticConfig, _head_surface, render_realistic, streams)
from engine.generator.scene import HEAD_CHANNELS, render_scene
from engine.generator.tones import linear_to_srgb, luminance, sample_skin_tone
from engine.render import sample_uv_map

HEAD_LABELS = {SEGMENT_LABELS[k] for k in ("face_skin", "head_skin", "eyes", "mouth")}
PROP_LABELS = {SEGMENT_LABELS[k] for k in ("hair", "torso", "hat", "glasses", "hand")}
SMALL = dict(image_size=96, wide_pose_probability=0.0, face_fraction=(0.45, 0.7))


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


@pytest.fixture(scope="module")
def samples(head):
    cfg = RealisticConfig(**SMALL)
    return [render_realistic(head, s, cfg) for s in (3, 4, 5)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_package_keeps_the_basic_names_and_exports_the_realistic_generator():
    import engine.generator as g
    from engine.generator import basic

    assert g.render_sample is basic.render_sample and g.SyntheticConfig is basic.SyntheticConfig
    assert lazy_render_realistic is render_realistic


def test_deterministic_per_seed(head, samples):
    again = render_realistic(head, 3, RealisticConfig(**SMALL))
    first = samples[0]
    assert np.array_equal(again.image, first.image)
    for k in ("identity", "expression", "pose", "albedo", "albedo_map", "sh", "visibility"):
        assert torch.equal(getattr(again.params, k), getattr(first.params, k)), k
    assert torch.equal(again.params.camera.t, first.params.camera.t)
    assert not np.array_equal(samples[1].image, first.image)
    assert first.image.shape == (96, 96, 3) and first.image.dtype == np.uint8


def coarse(params):
    """The sample's parameters without the detail map (the mesh the image shows)."""
    return params.replace(displacement=None)


def test_landmarks_project_onto_the_face(head, samples):
    for s in samples:
        p = s.params
        assert p.displacement is not None and p.displacement.shape == (1, 1, 512, 512)
        detailed = FaceDecoder(head)(p)  # moves each vertex by the map at its UV: < 1 mm, a fraction of a pixel
        assert (detailed.landmarks2d[0] - s.landmarks2d).norm(dim=1).max() < 0.5
        dec = FaceDecoder(head)(coarse(p))
        assert torch.allclose(dec.landmarks2d[0], s.landmarks2d, atol=1e-4)
        assert torch.allclose(dec.landmarks3d[0], s.landmarks3d, atol=1e-6)
        # the same projection by hand: x_cam = R x + t, u = K x_cam / z
        cam = s.landmarks3d @ p.camera.R[0].T + p.camera.t[0]
        uv = (cam @ p.camera.K[0].T)[:, :2] / cam[:, 2:]
        assert torch.allclose(uv, s.landmarks2d, atol=1e-3)
        vis = s.landmarks_visible.numpy()
        assert vis.sum() >= 30  # near-frontal heads in SMALL
        seg = np.pad(s.segmentation, 1)
        for (x, y), v in zip(s.landmarks2d.numpy(), vis):
            if v:  # a visible landmark lies on the head: its pixel or a neighbour shows the head
                xi, yi = int(x) + 1, int(y) + 1
                assert set(seg[yi - 1:yi + 2, xi - 1:xi + 2].ravel()) & HEAD_LABELS


def test_face_mask_and_occlusion_mask_are_the_face_skin(head, samples):
    for s in samples:
        dec = FaceDecoder(head)(coarse(s.params))
        out = dec.render(colours=torch.ones(1, head.n_vertices, 3), region=head.regions["face_skin"], antialias=False)
        ref = ((out.region[0, 0] > 0.5) & out.fragments.mask[0]).numpy()
        assert not (s.face_mask & s.occlusion_mask).any()
        assert _iou(s.face_mask | s.occlusion_mask, ref) > 0.97
        assert set(np.unique(s.segmentation[s.face_mask])) <= {SEGMENT_LABELS["face_skin"]}
        assert s.face_mask.sum() > 200


def test_occluders_are_recorded(head):
    from scipy import ndimage

    cfg = RealisticConfig(**SMALL, hand_probability=1.0, glasses_probability=1.0, sunglasses_fraction=1.0)
    hidden = 0
    for seed in (1, 2):
        s = render_realistic(head, seed, cfg)
        assert {"hand", "glasses", "sunglasses"} <= set(s.attributes["props"])
        occ = s.occlusion_mask
        assert set(np.unique(s.segmentation[occ])) <= PROP_LABELS
        hidden += occ.sum()
        # (almost) no vertex inside an occluded area (a pixel away from its border) is marked
        # visible (the four-pixel rule lets a vertex or two at a thin prop's edge through),
        # and visible vertices land on the head or next to it (thin frames are a pixel wide)
        vis = s.params.visibility[0].bool()
        px = FaceDecoder(head)(coarse(s.params)).uv[0].floor().long().clamp(0, 95)
        inner = ndimage.binary_erosion(np.isin(s.segmentation, list(PROP_LABELS)), np.ones((3, 3)))
        assert inner[px[vis, 1], px[vis, 0]].sum() <= 2 and (~vis).sum() > 0
        near_head = ndimage.binary_dilation(np.isin(s.segmentation, list(HEAD_LABELS)), np.ones((3, 3)))
        assert near_head[px[vis, 1], px[vis, 0]].mean() > 0.98
    assert hidden > 50


def test_albedo_map_round_trips(head, samples):
    vuv = FaceDecoder(head).vertex_uv
    cfg = RealisticConfig(**SMALL)
    for s in samples:
        p = s.params
        assert p.albedo_map.shape == (1, 3, cfg.albedo_map_size, cfg.albedo_map_size)
        assert torch.allclose(sample_uv_map(p.albedo_map, vuv), p.albedo, atol=1e-6)
    # the stored map is what the painter painted (resampled to albedo_map_size)
    r = streams(3)
    skin = sample_skin_tone(r["skin"])
    hair = sample_hair_style(r["hair"], skin, cfg.hair_weights)
    painted = torch.from_numpy(paint_head(head, r, cfg, skin, hair).albedo)[None]
    down = torch.nn.functional.interpolate(painted, size=p.albedo_map.shape[-2:], mode="area")
    assert torch.equal(down, samples[0].params.albedo_map)
    # under unit white ambient light, no shadows and no props the renderer shows the stored map
    # exactly where the decoder's own textured render does (eye pixels are shaded per pixel)
    s = samples[0]
    surf = _head_surface(head, paint_head(head, streams(3), cfg, skin, hair))
    ao = HEAD_CHANNELS.index("ao")
    surf.attributes[:, ao] = 1.0
    surf.texture = s.params.albedo_map
    dec = FaceDecoder(head)(coarse(s.params))
    rig = LightRig([], np.ones(3), np.ones(3), 0.0)
    scene = render_scene(dec, surf, combine_props([]), rig)
    ours = linear_to_srgb(scene.image)
    ref = dec.render(lit=False, antialias=False).image[0].permute(1, 2, 0)
    skin_px = torch.from_numpy(s.face_mask | s.occlusion_mask)
    assert (ours[skin_px] - ref[skin_px]).abs().max() < 2e-3


def test_skin_tones_cover_fitzpatrick_evenly():
    tones = [sample_skin_tone(streams(seed)["skin"]) for seed in range(240)]
    counts = np.bincount([t.fitzpatrick for t in tones], minlength=7)[1:]
    assert counts.min() >= 25 and counts.max() <= 55  # 40 expected per type
    t = np.array([x.tone for x in tones])
    y = np.array([luminance(x.rgb) for x in tones])
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(t), rank(y))[0, 1] < -0.98  # darker with tone, evenly through the range
    types = np.array([x.fitzpatrick for x in tones])
    assert y[types == 1].mean() > 0.4 and y[types == 6].mean() < 0.07
    assert np.all(np.diff([y[types == k].mean() for k in range(1, 7)]) < 0)


def test_painted_skin_follows_the_tone(head):
    cfg = RealisticConfig()
    L = head_layout(head)
    face = L.texel_regions["face_skin"] > 0.99
    tone, lum = [], []
    for seed in range(10):
        r = streams(seed)
        skin = sample_skin_tone(r["skin"])
        paint = paint_head(head, r, cfg, skin, sample_hair_style(r["hair"], skin, cfg.hair_weights), L)
        texels = paint.albedo.reshape(3, -1)[:, L.texels.index[face]].T
        tone.append(skin.tone)
        lum.append(np.median(luminance(texels)))
    assert np.corrcoef(np.argsort(np.argsort(tone)), np.argsort(np.argsort(lum)))[0, 1] < -0.9


def test_ict_model(tmp_path):
    from engine.errors import UserError
    from engine.head import load_head_model

    try:
        ict = load_head_model("ict")
    except UserError:
        pytest.skip("ICT FaceKit files are not available")
    s = render_realistic(ict, 7, RealisticConfig(**SMALL, hand_probability=0.0))
    dec = FaceDecoder(ict)(coarse(s.params))
    assert torch.allclose(dec.landmarks2d[0], s.landmarks2d, atol=1e-4)
    assert s.landmarks_visible.sum() >= 30 and s.face_mask.sum() > 200
    assert torch.allclose(sample_uv_map(s.params.albedo_map, dec.decoder.vertex_uv), s.params.albedo, atol=1e-6)


def test_flame_model(flame_pkl):
    from engine.head import load_head_model

    flame = load_head_model("flame", flame_pkl)
    s = render_realistic(flame, 2, RealisticConfig(image_size=64))
    dec = FaceDecoder(flame)(coarse(s.params))
    assert torch.allclose(dec.landmarks2d[0], s.landmarks2d, atol=1e-4)
    assert s.image.shape == (64, 64, 3) and s.params.visibility.shape == (1, flame.n_vertices)


def test_data_sets_and_corpus_take_the_realistic_generator(head, tmp_path):
    from engine.data import SyntheticClips, SyntheticFaces
    from engine.data.synthetic import write_cache
    from engine.errors import UserError

    ds = SyntheticFaces(head, 2, image_size=48, generator="realistic", hand_probability=1.0)
    it = ds[1]
    assert it["image"].shape == (3, 48, 48) and it["occlusion_mask"].shape == (48, 48)
    assert it["occlusion_mask"].any() and it["landmarks_visible"].dtype == torch.bool
    write_cache(head, tmp_path, 2, "train", 48, 1234, generator="realistic")  # default ranges
    fresh = SyntheticFaces(head, 2, image_size=48, generator="realistic")[1]
    cached = SyntheticFaces(head, 2, image_size=48, cache=tmp_path, generator="realistic")[1]
    for k in ("image", "occlusion_mask", "landmarks_visible", "landmarks"):
        assert torch.equal(cached[k], fresh[k]), k
    assert torch.allclose(cached["gt_vertices"], fresh["gt_vertices"], atol=1e-6)
    with pytest.raises(UserError, match="realistic generator"):
        SyntheticFaces(head, 2, image_size=48, cache=tmp_path)  # a basic data set does not read it
    with pytest.raises(UserError, match="generator must be"):
        SyntheticFaces(head, 1, generator="cartoon")
    with pytest.raises(UserError, match="basic generator only"):
        SyntheticClips(head, 1, generator="realistic")


def test_sh_and_albedo_map_reproduce_the_face_through_the_decoder(head):
    """Without camera degradations and skin highlights, the engine's own image model (albedo
    map × SH shading, FaceDecoder.render) reproduces the rendered face skin closely: the SH
    approximation and the albedo map are the image's ground truth, not just numbers."""
    clean = dict(exposure_sd_ev=0.0, wb_error=0.0, defocus_probability=0.0, motion_probability=0.0,
                 noise_level=(1e-4, 1e-4), jpeg_probability=0.0, downscale_probability=0.0, specular_scale=0.0,
                 hand_probability=0.0, glasses_probability=0.0, hat_probability=0.0)
    cfg = RealisticConfig(**SMALL, **clean)
    for seed in (0, 1):
        s = render_realistic(head, seed, cfg)
        out = FaceDecoder(head)(coarse(s.params)).render(antialias=False).image[0].permute(1, 2, 0).numpy()
        err = np.abs(out[s.face_mask] - s.image[s.face_mask] / 255.0).mean()
        assert err < 0.04, err


def test_no_invalid_values(head):
    """Numerical warnings (a NaN in a shading term once turned pixels black) are errors here."""
    import warnings

    cfg = RealisticConfig(image_size=64, hair_weights={"long": 1.0}, hat_probability=0.5, glasses_probability=0.5,
                          hand_probability=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for seed in range(6):
            s = render_realistic(head, seed, cfg)
            assert torch.isfinite(s.params.sh).all() and torch.isfinite(s.params.albedo_map).all()
