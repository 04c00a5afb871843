"""engine.export.uv_pack: the output files' UV layout (the face cut out and re-packed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.export.uv_pack import (EYE_DENSITY, MARGIN, OWN_MATERIAL_DENSITY, REST_DENSITY, export_layout,
                                   to_export_layout)
from engine.generator.eyes import eye_frames
from engine.texture import texture_image, uv_layout


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def _islands_boxes(exp):
    uv, island = exp.uv.numpy(), exp.island.numpy()
    used = np.zeros(len(uv), bool)
    used[exp.face_uv.numpy().ravel()] = True
    return [(uv[(island == k) & used].min(0), uv[(island == k) & used].max(0))
            for k in np.unique(island[used])]


def test_export_layout_packs_islands_apart_and_gives_the_face_the_texels(head):
    """Every triangle keeps its model corners and orientation; the islands lie inside the unit
    square without overlapping (at least half the margin apart); the face skin has its own
    island at density 1, the mouth interior the low one, the eyeballs (unrolled) theirs; the face gets ≥ 2.5× the
    texels per UV unit (linear) and ≥ 5× the texels of the model's own layout at 512²."""
    exp = export_layout(head)
    assert export_layout(head) is exp  # cached
    assert exp.face_uv.shape == head.face_uv.shape and torch.equal(exp.faces, head.faces)
    uv = exp.uv.numpy()
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    # the source coordinates are the model's own: every corner maps back to its model UV
    src = exp.source_uv.numpy()[exp.face_uv.numpy()]
    assert np.allclose(src, head.uv.numpy()[head.face_uv.numpy()], atol=1e-6)

    def signed_area(p):
        a, b, c = p[:, 0], p[:, 1], p[:, 2]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    before, after = signed_area(src), signed_area(uv[exp.face_uv.numpy()])
    big = np.abs(before) > 1e-9
    # no triangle flipped, but where the unrolled eyeballs fold at their back poles
    frames = eye_frames(head)
    centre = head.template.numpy()[head.faces.numpy()].mean(1)
    d = centre - frames.centres[np.where(centre[:, 0] > 0, 0, 1)]
    back_of_eye = head.regions["eyes"][head.faces].all(1).numpy() & (d[:, 2] < -0.9 * np.linalg.norm(d, axis=1))
    flipped = big & (np.sign(before) != np.sign(after))
    assert not (flipped & ~back_of_eye).any() and flipped.sum() < 0.2 * back_of_eye.sum() + 30
    boxes = _islands_boxes(exp)
    for i, (lo_a, hi_a) in enumerate(boxes):
        for lo_b, hi_b in boxes[i + 1:]:
            gap = np.maximum(lo_b - hi_a, lo_a - hi_b).max()
            assert gap >= MARGIN / 2, gap
    face_tris = head.regions["face_skin"][head.faces].all(1).numpy()
    face_islands = np.unique(exp.island.numpy()[exp.face_uv.numpy()[face_tris, 0]])
    assert len(face_islands) == 1 and float(exp.density[face_islands[0]]) == 1.0
    assert set(np.round(exp.density.double().numpy(), 4).tolist()) == {1.0, REST_DENSITY, OWN_MATERIAL_DENSITY,
                                                                       EYE_DENSITY}
    assert exp.face_texel_gain >= 2.5
    own, model = uv_layout(exp, 512), uv_layout(head, 512)

    def face_texels(lay):
        return int(head.regions["face_skin"][head.faces[lay.tri]].all(1).sum())

    assert face_texels(own) >= 5 * face_texels(model)
    from engine.export.uv_pack import layout_report  # python -m engine.export.uv_pack prints it

    lines = layout_report(head, 512).splitlines()
    assert len(lines) == 3 and f"face-skin texels {face_texels(own):,}" in lines[2]
    assert f"face-skin texels {face_texels(model):,}" in lines[1]


def test_maps_carry_over_to_the_export_layout(head):
    """A map painted from the surface (a smooth function of the rest position) in the model's
    layout, carried over by ``to_export_layout``, matches the same function painted straight
    into the export layout on the face (up to bilinear resampling); padding fills around."""
    exp = export_layout(head)
    X = head.template.float()
    values = torch.stack([0.5 + 4 * X[:, 0], 0.5 + 3 * X[:, 1], 0.5 + 5 * X[:, 2]], -1).clamp(0, 1)  # (V, 3)

    def painted(layout_model, size):
        lay = uv_layout(layout_model, size)
        per_texel = (lay.interpolation @ values).numpy()
        return texture_image(per_texel.astype(np.float32), lay), lay

    model_map, _ = painted(head, 512)
    direct, lay = painted(exp, 512)
    carried = to_export_layout(torch.from_numpy(model_map).permute(2, 0, 1)[None], head)[0].permute(1, 2, 0).numpy()
    assert carried.shape == direct.shape == (512, 512, 3)
    face = head.regions["face_skin"][head.faces[lay.tri]].all(1).numpy()
    t = lay.texels.numpy()[face]
    err = np.abs(carried.reshape(-1, 3)[t] - direct.reshape(-1, 3)[t])
    assert len(t) > 50000 and float(np.median(err)) < 0.003 and float(err.mean()) < 0.01, (np.median(err), err.mean())
    # texels just outside an island copy their nearest island texel (no empty band)
    assert np.array_equal(carried.reshape(-1, 3)[lay.pad_dst], carried.reshape(-1, 3)[lay.pad_src])


def test_a_texture_bakes_without_a_seam_where_the_face_was_cut_out(head):
    """A smooth known texture rendered and baked straight into the export layout (the path of
    ``albedo.png``, skin mask and multi-band fill on) comes back next to the cut around the
    face skin, on both sides of it, as well as a bake in the model's own (uncut) layout carried
    over: the filters and the mirror look-ups run across the cut (``seam_extension``,
    per-triangle mirror UVs), so the cut adds no seam."""
    from engine.face import FaceDecoder, FaceParams
    from engine.render import frontal_camera
    from engine.render.shading import SH_CONSTANTS
    from engine.texture import bake_albedo

    S = 512
    exp = export_layout(head)
    X = head.template.float()
    truth_v = torch.stack([0.45 + 2 * X[:, 0], 0.4 + 1.5 * X[:, 1], 0.35 + 2 * X[:, 2]], -1).clamp(0.05, 0.95)
    camera = frontal_camera(distance=0.5, focal_px=1400.0, image_size=(512, 512))
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.9 / SH_CONSTANTS[0]
    dec = FaceDecoder(head)(FaceParams.neutral(head, camera).replace(albedo=truth_v[None], sh=sh))
    image = dec.render(antialias=False).image.clamp(0, 1)
    vis = dec.visibility()[0].float()
    baked = bake_albedo(exp, dec.screen[0], vis, dec.shading[0].clamp_min(0), dec.albedo[0], image, size=S,
                        landmarks_px=dec.landmarks2d[0], facing=dec.facing()[0])
    lay = uv_layout(exp, S)
    truth = (lay.interpolation @ truth_v).numpy()
    got = baked.reshape(-1, 3)[lay.texels.numpy()].astype(np.float64) / 255.0
    err = np.abs(got - truth).mean(1)
    # texels within 6 texels of the cut: the extension's destinations mark the cut's outside
    dst, src = exp.seam_extension(S)
    near = np.zeros(S * S, bool)
    rows, cols = np.divmod(np.concatenate([dst, src]), S)
    for dr in range(-6, 7):
        for dc in range(-6, 7):
            near[np.clip(rows + dr, 0, S - 1) * S + np.clip(cols + dc, 0, S - 1)] = True
    seen_face = (head.regions["face_skin"] & (vis > 0) & (dec.facing()[0] > 0.5))[head.faces[lay.tri]].all(1).numpy()
    at_cut = near[lay.texels.numpy()] & seen_face
    away = ~near[lay.texels.numpy()] & seen_face
    assert len(dst) > 1000 and at_cut.sum() > 200 and away.sum() > 5000
    uncut = bake_albedo(head, dec.screen[0], vis, dec.shading[0].clamp_min(0), dec.albedo[0], image, size=1024,
                        landmarks_px=dec.landmarks2d[0], facing=dec.facing()[0])
    carried = to_export_layout(torch.from_numpy(uncut.astype(np.float32) / 255.0).permute(2, 0, 1)[None], head, S)
    ref = np.abs(carried[0].permute(1, 2, 0).numpy().reshape(-1, 3)[lay.texels.numpy()] - truth).mean(1)
    for sel in (at_cut, away):
        assert float(np.median(err[sel])) <= float(np.median(ref[sel])) + 0.005
        assert float(np.percentile(err[sel], 95)) <= float(np.percentile(ref[sel], 95)) + 0.01
    assert float(np.median(err[away])) < 0.01


def test_the_seam_extension_continues_the_surface_across_the_cut(head):
    """Each padding texel just outside the cut face island is paired with a texel of the
    island across the cut; that texel's surface point lies next to the surface point at the
    padding texel's own island edge (median 4 mm; a wrong pairing: ~110 mm), so filters that see
    the pair see the surface as uncut. Texels outside the model's own seams are not paired."""
    exp = export_layout(head)
    S = 512
    lay = uv_layout(exp, S)
    dst, src = exp.seam_extension(S)
    slot = np.full(S * S, -1, np.int64)
    slot[lay.texels.numpy()] = np.arange(len(lay.texels))
    X = head.template.double().numpy()
    faces = head.faces.numpy()

    def point(texel):
        k = slot[texel]
        return (lay.bary.numpy()[k][:, :, None] * X[faces[lay.tri.numpy()[k]]]).sum(1)

    edge = lay.pad_from.numpy()[dst]  # the nearest texel of the padding texel's own island
    gap_mm = 1000 * np.linalg.norm(point(edge) - point(src), axis=1)
    assert len(dst) > 1000 and (slot[src] >= 0).all()
    assert float(np.median(gap_mm)) < 6.0 and float(np.percentile(gap_mm, 95)) < 15.0, (np.median(gap_mm),
                                                                                         np.percentile(gap_mm, 95))
    # islands across the pair differ: the face island on one side, the rest of the head on the other
    tri_island = exp.island.numpy()[exp.face_uv.numpy()[:, 0]]
    assert (tri_island[lay.tri.numpy()[slot[edge]]] != tri_island[lay.tri.numpy()[slot[src]]]).all()


def test_a_face_centred_layout_is_kept():
    """ICT's own layout already gives the face most of the texture: the packing would gain it
    less than MIN_GAIN, so the export layout is the model's own (no cut, nothing to extend)."""
    from engine.head.ict import default_path

    if not (default_path() / "ict_face_model_light.npz").is_file():
        pytest.skip(f"ICT Face Model Light not found in {default_path()}")
    from engine.head import load_head_model

    ict = load_head_model("ict")
    exp = export_layout(ict)
    assert exp.face_texel_gain == 1.0 and torch.equal(exp.uv, ict.uv.float()) and torch.equal(exp.face_uv, ict.face_uv)
    assert len(exp.seam_extension(256)[0]) == 0
