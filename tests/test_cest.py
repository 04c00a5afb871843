"""CEST (issue #13): the method's registration, its UV pieces (batched unwrap, the UV flip),
the clip-consistency cost, and tiny CEST / IEST training runs to a loadable checkpoint.

The single-item unwrap round trip on a textured sphere is
``tests/test_render_vertex_uv.py::test_unwrap_photo_round_trips_a_texture``; here the
batched unwrap through the head model's decoder is new."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.face import FaceDecoder, FaceParams
from engine.losses.terms import clip_partners
from engine.methods import get_method, registry
from engine.texture import flip_uv_map, uv_layout

ROOT = Path(__file__).resolve().parents[1]

TINY = {"backbone": "resnet10", "width": 0.25, "uv_size": 32, "unet_width": 8, "unet_depth": 2,
        "light_width": 8, "visibility_size": 32}


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def _tiny(head, **changes):
    from engine.methods.cest import Cest, CestConfig

    return Cest(CestConfig(image_size=64, **{**TINY, **changes}), head)


def _overrides(run_dir: Path, *extra: str) -> list[str]:
    return [f"run_dir={run_dir}", "device=cpu", "batch_size=2", "data.clip_length=2", "data.n_samples=4",
            "data.val_samples=2", "data.num_workers=0", "progress=off", "tensorboard=false", "image_every=0",
            "eval_every=0", "log_every=1", *extra]


def test_cest_is_registered_for_training_and_inference():
    from engine.methods.cest import Cest

    spec = get_method("cest")
    assert spec.kind == "learned" and spec.trainable and "cest" in registry.names()
    assert (ROOT / spec.train_config).is_file()
    assert registry.load_entry(spec) is Cest
    assert "cest" in registry.table()


def test_batched_unwrap_round_trips_a_uv_texture(head):
    """A smooth UV texture rendered on two differently posed heads, unwrapped back through
    the same decoded faces in one batch: the visible texels match, item by item."""
    from engine.render import unwrap_photo

    S, U = 160, 64
    g = torch.Generator().manual_seed(0)
    tex = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(U, U), mode="bicubic",
                                          align_corners=False).clamp(0.05, 0.95).expand(2, -1, -1, -1)
    net = _tiny(head)
    cam = net.camera(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.35, 0.0]]), torch.zeros(2, 3))
    cam = cam.resized((S, S))
    params = FaceParams.neutral(head, cam).replace(albedo_map=tex.contiguous())
    dec = FaceDecoder(head)(params)
    out = dec.render(lit=False, antialias=False)
    vis = dec.visibility()
    both, mask = unwrap_photo(out.image, dec.screen, vis, head.faces, head.uv, head.face_uv, U,
                              depth_map=out.depth)
    for b in range(2):
        m = mask[b, 0] > 0
        assert m.float().mean() > 0.03  # the face is seen
        err = (both[b] - tex[b]).abs()[:, m]
        assert err.median() < 0.03, (b, err.median())
        one, one_mask = unwrap_photo(out.image[b:b + 1], dec.screen[b:b + 1], vis[b:b + 1], head.faces, head.uv,
                                     head.face_uv, U, depth_map=out.depth[b:b + 1])
        assert torch.equal(one_mask[0], mask[b]) and torch.allclose(one[0], both[b], atol=1e-5)
    # the turned head shows another part of the layout
    assert not torch.equal(mask[0], mask[1])


def _texel_coordinates(S: int) -> torch.Tensor:
    i = torch.arange(S * S)
    return torch.stack([((i % S) + 0.5) / S, ((i // S) + 0.5) / S]).view(1, 2, S, S)


def test_flip_uv_map_is_an_involution_and_mirrors_left_right(head):
    from engine.render.uv import interpolate_layout, rasterize_uv

    S = 64
    layout = uv_layout(head, S)
    t = layout.texels
    # texels whose mirror's mirror is themselves (within a texel): all but those at UV seams
    coord = _texel_coordinates(S)
    back = flip_uv_map(flip_uv_map(coord, layout), layout)
    consistent = ((back - coord).flatten(2)[0][:, t].norm(dim=0) * S) < 1.5
    assert consistent.float().mean() > 0.75
    # involution on a smooth texture
    g = torch.Generator().manual_seed(1)
    tex = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(S, S), mode="bicubic",
                                          align_corners=False)
    err = (flip_uv_map(flip_uv_map(tex, layout), layout) - tex).flatten(2)[:, :, t].abs().mean(1)  # (2, N)
    assert err[:, consistent].mean() < 0.01
    assert (err < 0.03).float().mean() > 0.75
    # texels outside the islands are left alone
    outside = torch.ones(S * S, dtype=torch.bool)
    outside[t] = False
    assert torch.equal(flip_uv_map(tex, layout).flatten(2)[:, :, outside], tex.flatten(2)[:, :, outside])
    # a left/right asymmetric texture: the model-frame x of each texel's surface point
    fr = rasterize_uv(head.uv, head.face_uv, S)
    x = interpolate_layout(head.template[None, :, :1], head.faces, fr).permute(0, 3, 1, 2)
    x = x / head.template[:, 0].abs().max()
    fx = flip_uv_map(x, layout).flatten()[t][consistent]
    x0 = x.flatten()[t][consistent]
    assert (fx + x0).abs().mean() < 0.06  # x -> -x
    assert torch.corrcoef(torch.stack([fx, x0]))[0, 1] < -0.95
    with pytest.raises(ValueError, match="layout is 64x64"):
        flip_uv_map(torch.zeros(1, 3, 32, 32), layout)


def test_clip_partners_pick_another_frame_of_the_same_clip():
    torch.manual_seed(0)
    for T in (2, 3, 8):
        j = clip_partners(5, T)
        i = torch.arange(5 * T)
        assert torch.equal(j // T, i // T) and not (j == i).any()
    assert torch.equal(clip_partners(3, 1), torch.arange(3))


def test_clip_consistency_costs_renders_linear_in_clip_length(head, monkeypatch):
    """Items decoded per training step for clips of T = 2, 4, 8 frames: a constant number of
    decoder calls, each over all B·T frames (O(T) per clip, not O(T²))."""
    from engine.data import SyntheticClips

    net = _tiny(head)
    calls: list[int] = []
    original = FaceDecoder.forward

    def counting(self, params):
        calls.append(params.batch_size)
        return original(self, params)

    monkeypatch.setattr(FaceDecoder, "forward", counting)
    per_t = {}
    ds = SyntheticClips(head, 1, 8, 64, 1234, "train")
    clip = ds[0]
    for T in (2, 4, 8):
        batch = {k: v[None, :T] if v.dim() and v.shape[0] == 8 else v[None] for k, v in clip.items()}
        calls.clear()
        result = net.training_step(batch)
        assert "clip_consistency" in result.scalars and torch.isfinite(result.loss)
        per_t[T] = (len(calls), sum(calls))
    assert per_t[2][0] == per_t[4][0] == per_t[8][0]  # same number of decoder calls
    assert per_t[4][1] == 2 * per_t[2][1] and per_t[8][1] == 4 * per_t[2][1]  # items linear in T


def test_cest_trains_saves_loads_and_predicts_a_uv_reflectance(tmp_path, head):
    from engine.generator import SyntheticConfig, render_sample
    from engine.methods.cest import Cest
    from engine.train import Trainer, load_config

    cfg = load_config(ROOT / "train/configs/cest.yaml", _overrides(tmp_path / "run", "max_steps=2", "ckpt_every=2"))
    trainer = Trainer(cfg)
    summary = trainer.train()
    trainer.close()
    assert summary["step"] == 2 and summary["images_seen"] == 2 * 2 * 2
    net = Cest.load(tmp_path / "run" / "final.pt")
    U = net.cfg.uv_size
    sample = render_sample(head, 7, SyntheticConfig(image_size=160))
    params = net.predict_photo(sample.image, sample.landmarks2d.numpy())
    assert isinstance(params, FaceParams)
    assert params.albedo_map.shape == (1, 3, U, U)
    assert params.albedo.shape == (1, head.n_vertices, 3)
    assert 0.0 <= float(params.albedo_map.min()) and float(params.albedo_map.max()) <= 1.0
    assert params.camera.image_size == (160, 160)
    from engine.errors import ModelFileError

    with pytest.raises(ModelFileError, match="not a cest checkpoint.*'mofa'"):
        Cest.load(ROOT / "engine" / "assets" / "mofa_open_default.pt")


def test_iest_flag_builds_and_trains_a_step(tmp_path, head, monkeypatch):
    from engine.methods.cest import Cest
    from engine.train import Trainer, load_config

    def no_warp(*args, **kwargs):
        raise AssertionError("IEST must not warp the crop with f_v's pose")

    monkeypatch.setattr(Cest, "canonical_view", no_warp)
    monkeypatch.setattr(Cest, "unwrap", no_warp)
    cfg = load_config(ROOT / "train/configs/cest.yaml",
                      _overrides(tmp_path / "run", "max_steps=1", "ckpt_every=1", "model.independent=true"))
    trainer = Trainer(cfg)
    summary = trainer.train()
    trainer.close()
    assert summary["step"] == 1 and (tmp_path / "run" / "final.pt").is_file()
    assert Cest.load(tmp_path / "run" / "final.pt").cfg.independent


def test_canonical_view_of_the_zero_pose_is_the_crop(head):
    """At f_v's zero output the head is centred, at the canonical depth and upright: the
    re-aligned crop is the crop; a shifted head is moved back to the centre."""
    net = _tiny(head)
    g = torch.Generator().manual_seed(2)
    images = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    zero = net.camera(torch.zeros(1, 3), torch.zeros(1, 3))
    assert torch.allclose(net.canonical_view(images, zero), images, atol=1e-4)
    img = torch.zeros(1, 1, 64, 64)
    img[..., 30:34, 40:44] = 1.0  # a blob where a head shifted right by ~10 px would be centred
    shifted = net.camera(torch.zeros(1, 3), torch.tensor([[10 / (net.cfg.focal * 64) * net.cfg.depth_m / 0.1, 0, 0]]))
    out = net.canonical_view(img, shifted)
    ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    assert abs(xs.float().mean().item() - 31.5) < 2.0 and abs(ys.float().mean().item() - 31.5) < 2.5


def test_cest_starts_from_a_mofa_network_with_its_pose_and_shape(tmp_path, head):
    """init_from a MoFA checkpoint: f_v and f_s get MoFA's backbone and its pose / identity /
    expression rows, so (IEST: f_s on the same crop) the first CEST estimate is MoFA's."""
    import numpy as np

    from engine.generator import SyntheticConfig, render_sample
    from engine.methods.cest import Cest, CestConfig
    from engine.methods.mofa import Mofa
    from engine.photo import align_crop
    from engine.train.state import load_checkpoint_file
    from engine.train.trainer import load_matching_weights

    src = ROOT / "engine" / "assets" / "mofa_open_default.pt"
    mofa = Mofa.load(src)
    net = Cest(CestConfig(image_size=128, backbone="resnet10", width=0.5, uv_size=32, unet_width=8,
                          light_width=8, independent=True), head)
    adopted = net.adopt_weights(load_checkpoint_file(src))
    report = load_matching_weights(net, adopted, source=str(src))
    assert report["mismatched"] == 0 and report["loaded"] > 100
    net.eval()
    sample = render_sample(head, 5, SyntheticConfig(image_size=200))
    crop = align_crop(sample.image, sample.landmarks2d.numpy(), size=128, scale=1.25)
    img = torch.from_numpy(crop.image).permute(2, 0, 1).float().div(255.0)[None]
    with torch.no_grad():
        a, b = mofa.decode(mofa.encode(img)), net.decode(net.encode(img))
    assert float(a.expression.abs().max()) > 0.01  # the network says something, and CEST says the same
    for field in ("identity", "expression"):
        assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-4), field
    assert torch.allclose(a.camera.R, b.camera.R, atol=1e-5) and torch.allclose(a.camera.t, b.camera.t, atol=1e-5)
    # a backbone of another size is a clear configuration error
    from engine.errors import ConfigError

    other = Cest(CestConfig(image_size=128, backbone="resnet10", width=0.25, uv_size=32, unet_width=8,
                            light_width=8), head)
    with pytest.raises(ConfigError, match="backbone"):
        other.adopt_weights(load_checkpoint_file(src))
    assert np.isfinite(float(b.sh.sum()))


def test_identity_groups_round_trip_through_a_cache(tmp_path, head):
    """python -m engine.data.synthetic --identities N --views K writes identity groups that
    SyntheticIdentities reads back equal to the rendered ones (realistic generator, crops)."""
    from engine.data import SyntheticIdentities
    from engine.data.synthetic import main

    opts = ["--option", "face_fraction=[0.4,0.8]", "--option", "detail=false"]
    assert main(["--out", str(tmp_path), "--n", "0", "--identities", "2", "--views", "2", "--n-val-identities", "1",
                 "--size", "96", "--generator", "realistic", *opts]) == 0
    crop = {"frame_size": 96, "scale": 1.25}
    kw = dict(generator="realistic", crop=crop, face_fraction=[0.4, 0.8], detail=False)
    live = SyntheticIdentities(head, 2, 2, 64, 1234, "train", **kw)
    cached = SyntheticIdentities(head, 2, 2, 64, 1234, "train", cache=str(tmp_path), **kw)
    a, b = live[1], cached[1]
    assert a.keys() == b.keys() and a["image"].shape == (2, 3, 64, 64)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert SyntheticIdentities(head, 1, 2, 64, 1234, "val", cache=str(tmp_path), **kw)[0]["image"].shape[0] == 2
    from engine.errors import UserError

    with pytest.raises(UserError, match="fewer than views_per_identity"):
        SyntheticIdentities(head, 2, 3, 64, 1234, "train", cache=str(tmp_path), **kw)


def test_the_committed_cest_network_is_the_default_and_writes_a_uv_albedo(tmp_path):
    """engine/assets/cest_open_default.pt: small, the registry default of --method cest on the
    open model; reconstruct writes the output folder with the baked albedo from it."""
    import json

    from PIL import Image

    from engine.generator.realistic import RealisticConfig, render_realistic
    from engine.methods import learned_network, registry
    from engine.reconstruct import reconstruct

    path = ROOT / "engine" / "assets" / "cest_open_default.pt"
    assert path.is_file() and path.stat().st_size < 20 * 2**20
    assert registry.default_checkpoint(registry.get("cest"), "open") == path
    net = learned_network("cest", "open")
    assert net.cfg.recentre and net.cfg.uv_size == 128
    sample = render_realistic(net.head, 31, RealisticConfig(image_size=256, face_fraction=(0.45, 0.6), yaw_deg=20.0))
    photo = tmp_path / "face.png"
    Image.fromarray(sample.image).save(photo)
    res = reconstruct(photo, tmp_path / "out", method="cest")
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    assert (tmp_path / "out" / "albedo.png").is_file() and params["method"] == "cest"
    assert res is not None


def test_a_face_window_network_unwraps_and_predicts_on_the_window(head, monkeypatch):
    """window_size: the unwrap, f_r and f_ℓ work on the face's UV window; the reflectance is
    placed into the whole layout (the window's median skin outside it) exactly as
    ``window_to_full`` would place it; a larger crop is resized to the network's input, and
    f_v sees ``viewpoint_size`` px and f_s a ``shape_size``-px canonical view."""
    from engine.methods.cest import Cest
    from engine.render.uv import window_to_full

    net = _tiny(head, window_size=16, unwrap_splat_cells=24, viewpoint_size=48, shape_size=40).eval()
    assert net.texels == 16 and net.window is not None
    u0, v0, u1, v1 = net.window
    assert 0 <= u0 < u1 <= 1.05 and 0 <= v0 < v1 <= 1.05 and u1 - u0 < 0.5  # the face, not the head
    seen = []
    real_forward = type(net.f_v).forward
    monkeypatch.setattr(type(net.f_v), "forward",
                        lambda self, x: seen.append((self is net.f_v, x.shape[-1])) or real_forward(self, x))
    g = torch.Generator().manual_seed(3)
    big = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6, generator=g), size=(96, 96), mode="bilinear")
    with torch.no_grad():
        code = net.encode(big)
        small = torch.nn.functional.interpolate(big, size=(64, 64), mode="bilinear", align_corners=False,
                                                antialias=True)
        again = net.encode(small)
    assert seen == [(True, 48), (False, 40)] * 2
    assert code.texture.shape == (2, 3, 16, 16) and code.texture_mask.shape == (2, 1, 16, 16)
    assert code.albedo_map.shape == (2, 3, 32, 32)
    assert torch.allclose(code.albedo_map, again.albedo_map) and torch.allclose(code.rotation, again.rotation)
    assert code.texture_mask.mean() > 0.2  # the front of the face is seen through the window
    # the unwrap posed only the window's vertices: as the whole mesh's unwrap where both see
    from engine.render import unwrap_photo

    with torch.no_grad():
        dec = net.decoder(net.decode(code))
        vis = dec.visibility(splat_cells=24, tolerance=net.cfg.unwrap_splat_tolerance)
        tex, mask = unwrap_photo(small, dec.screen, vis, head.faces, head.uv, head.face_uv, 16,
                                 uv_fragments=net.uv_fragments())
    assert (mask == code.texture_mask).float().mean() > 0.95  # 0.96 here, 0.995 at the committed 32 texels
    both = mask * code.texture_mask
    assert torch.allclose(tex * both, code.texture * both, atol=1e-5)
    # placement: as window_to_full on the face skin, with the median of the window's covered
    # texels outside the window and beyond the face skin (faded over the boundary ring)
    m = torch.rand(2, 3, 16, 16, generator=g)
    covered = net.uv_fragments().mask[0]
    fill = torch.stack([m[b][:, covered].median(-1).values for b in range(2)])
    placed = window_to_full(torch.cat([m, torch.ones_like(m[:, :1])], 1), net.window, 32)
    inside = placed[:, :3] + (1 - placed[:, 3:]) * fill[:, :, None, None]
    w = net._face_weight(torch.device("cpu"))
    fr = net.decoder.uv_fragments(32)
    tri = torch.full((32 * 32,), -1, dtype=torch.long)
    tri[fr.fg_index] = fr.fg_tri
    all_face = head.regions["face_skin"][head.faces].all(1)
    no_face = ~head.regions["face_skin"][head.faces].any(1)
    t = tri.view(32, 32)
    assert (w[(t >= 0) & all_face[t.clamp_min(0)]] == 1).all() and (w[(t >= 0) & no_face[t.clamp_min(0)]] == 0).all()
    assert (w[t < 0] == 0).all()
    expected = fill[:, :, None, None] + w * (inside - fill[:, :, None, None])
    assert torch.allclose(net.to_layout(m), expected, atol=1e-6)
    with pytest.raises(Exception, match="window_size"):
        Cest(type(net.cfg)(**{**net.cfg.__dict__, "window_size": 18}), head)
