"""engine.texture: the cached UV layout, padding, and a known texture baked back from a render."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.face import FaceDecoder, FaceParams
from engine.render import frontal_camera
from engine.render.shading import SH_CONSTANTS
from engine.texture import bake_albedo, uv_layout


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_layout_is_cached_and_pads_from_the_islands(head):
    lay = uv_layout(head, 256)
    assert uv_layout(head, 256) is lay
    flat = lay.covered.reshape(-1)
    src = lay.pad_from.numpy()
    assert (src[flat] == np.flatnonzero(flat)).all()  # covered texels keep their own colour
    near = src >= 0
    assert flat[src[near]].all()  # padding copies covered texels only
    assert near[~flat].mean() > 0.05 and (~near).any()  # a band around the islands, the mean beyond
    assert lay.tri.shape == lay.texels.shape and torch.allclose(lay.bary.sum(-1), torch.ones(len(lay.tri)))


def test_layout_products_match_gathers_and_grid_sampling(head):
    """The layout's sparse matrices are the bake's gathers: per-vertex values to texels by the
    barycentrics, and bilinear samples at the mirror texels of an image that is zero off the islands."""
    import torch.nn.functional as Fn

    S = 128
    lay = uv_layout(head, S)
    g = torch.Generator().manual_seed(0)
    attrs = torch.rand(head.n_vertices, 4, generator=g)
    gathered = (lay.bary[..., None] * attrs[head.faces[lay.tri]]).sum(1)
    assert torch.allclose(lay.interpolation @ attrs, gathered, atol=1e-6)
    values = torch.rand(len(lay.texels), 3, generator=g)
    img = torch.zeros(S * S, 3)
    img[lay.texels] = values
    ref = Fn.grid_sample(img.T.reshape(1, 3, S, S), lay.mirror_grid[None, :, None, :], mode="bilinear",
                         padding_mode="border", align_corners=False)[0, :, :, 0].T
    assert torch.allclose(lay.mirror_sampling @ values, ref, atol=1e-5)


def test_texture_image_pads_the_islands(head):
    from engine.texture import texture_image

    lay = uv_layout(head, 128)
    values = np.random.default_rng(0).integers(0, 256, (len(lay.texels), 3)).astype(np.uint8)
    img = texture_image(values, lay).reshape(-1, 3)
    assert (img[lay.texels.numpy()] == values).all()  # covered texels as given
    assert (img[lay.pad_dst] == img[lay.pad_src]).all()  # the band copies its nearest covered texel
    src = lay.pad_from.numpy()
    far = src < 0
    assert far.any() and (img[far] == values.astype(np.float64).mean(0).astype(np.uint8)).all()  # the mean beyond
    beyond = texture_image(values, lay, beyond=np.array([1, 2, 3])).reshape(-1, 3)
    assert (beyond[far] == [1, 2, 3]).all()


def test_a_known_texture_bakes_back_from_a_render(head):
    """Render the head textured with a smooth known map under ambient light, bake the render
    back: texels the photo saw confidently return the map's colours."""
    S = 256
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    truth = torch.stack([0.3 + 0.5 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy)])[None]
    camera = frontal_camera(distance=0.5, focal_px=1400.0, image_size=(512, 512))
    params = FaceParams.neutral(head, camera).replace(albedo_map=truth)
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.9 / SH_CONSTANTS[0]  # ambient only: shading 0.9 everywhere
    params = params.replace(sh=sh)
    dec = FaceDecoder(head)(params)
    image = dec.render(antialias=False).image.clamp(0, 1)
    vis = dec.visibility()[0].float()
    baked = bake_albedo(head, dec.screen[0], vis, dec.shading[0].clamp_min(0), dec.albedo[0], image, size=S)
    baked = torch.from_numpy(baked.astype(np.float32) / 255.0).permute(2, 0, 1)
    lay = uv_layout(head, S)
    face = head.regions["face_skin"] & (vis > 0)
    seen = face[head.faces[lay.tri]].all(1)  # texels whose triangle is seen face skin
    texels = lay.texels[seen]
    err = (baked.reshape(3, -1)[:, texels] - truth[0].reshape(3, -1)[:, texels]).abs()
    assert texels.numel() > 2000
    assert float(err.median()) < 0.02 and float(err.mean()) < 0.05, (float(err.median()), float(err.mean()))


def test_skin_mask_leaves_hair_out_but_keeps_the_inner_face(head):
    """A dark 'fringe' painted on the forehead (outside the landmarks' hull) stays out of the
    baked texture, which shows the face's skin there instead; a dark patch on the nose (inside
    the hull: brows, eyes and lips are dark too) is kept. Without landmarks the fringe is baked."""
    S = 512
    skin, dark = torch.tensor([0.78, 0.58, 0.47]), torch.tensor([0.16, 0.11, 0.08])
    X = head.template
    lm3 = head.landmarks(X[None])[0]
    brow_y, tip = float(lm3[17:27, 1].max()), lm3[30]
    fringe = head.regions["face_skin"] & (X[:, 1] > brow_y + 0.025) & ((X - tip).norm(dim=-1) < 0.13)
    nose = (X - tip).norm(dim=-1) < 0.02
    dec, vis, args = _rendered_head(head, torch.where(fringe[:, None], dark, torch.where(nose[:, None], dark, skin))[None])
    lay = uv_layout(head, S)

    def texels(region):
        seen = (region & (vis > 0))[head.faces[lay.tri]].all(1)
        return lay.texels[seen]

    def mean_colour(baked, region):
        img = torch.from_numpy(baked.astype(np.float32) / 255.0).reshape(-1, 3)
        return img[texels(region)].mean(0)

    assert texels(fringe).numel() > 300 and texels(nose).numel() > 50
    masked = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0])
    plain = bake_albedo(*args, size=S)
    assert float((mean_colour(masked, fringe) - skin).abs().max()) < 0.08  # the fringe is gone
    assert float((mean_colour(plain, fringe) - dark).abs().max()) < 0.08  # (it was there without the mask)
    assert float((mean_colour(masked, nose) - dark).abs().max()) < 0.12  # inner-face features stay


def test_feature_zones_cover_the_features_and_leave_the_plain_skin(head):
    """feature_weight: 1 at the brows, eyes (an eyeliner's wing beyond the outer corners too),
    lips, nose tip and chin (beard zone), 0 on the forehead, the nose's bridge and the cheeks
    under the eyes, where glasses sit."""
    from engine.texture import feature_weight

    w = feature_weight(head)
    assert feature_weight(head) is w and w.shape == (head.n_vertices,)
    X = head.template
    lm = head.landmarks(X[None])[0]

    def at(point):  # the weight of the face-skin vertex nearest a template point
        d = (X - point).norm(dim=-1) + 1e3 * (~head.regions["face_skin"]).float()
        return float(w[int(d.argmin())])

    for i in (19, 24, 37, 44, 30, 33, 51, 57, 8):  # brows, upper lids, nose tip, nostrils, lips, chin
        assert at(lm[i]) > 0.9, i
    for corner, centre in ((lm[36], lm[36:42].mean(0)), (lm[45], lm[42:48].mean(0))):  # an eyeliner's wing
        assert at(corner + torch.tensor([0.005 * float(torch.sign(corner[0] - centre[0])), 0.001, 0.0])) > 0.9
    below_eye = 0.5 * (lm[40] + lm[41]) + torch.tensor([0.0, -0.014, 0.0])
    forehead = lm[27] + torch.tensor([0.0, 0.045, -0.005])
    for name, point in (("bridge", lm[27]), ("under the eye", below_eye), ("forehead", forehead)):
        assert at(point) < 0.1, name
    assert bool((w[head.regions["eyes"]] == 1).all()) and bool((w[head.regions["mouth_interior"]] == 1).all())


def test_a_glasses_frame_on_plain_skin_stays_out_of_the_texture(head):
    """A dark rim under the eyes and over the nose's bridge (inside the landmarks' hull) is left
    out when the bake knows the features (the skin fill there), kept without; the dark brows
    and lips are baked as without the zones."""
    from engine.texture import feature_weight

    S = 1024
    skin, dark = torch.tensor([0.78, 0.58, 0.47]), torch.tensor([0.12, 0.09, 0.08])
    X = head.template
    lm = head.landmarks(X[None])[0]
    face = head.regions["face_skin"]
    eye_y = float(lm[36:48, 1].mean())
    rim = face & ((X[:, 1] - (eye_y - 0.014)).abs() < 0.002) & (X[:, 0].abs() < 0.045) & (X[:, 0].abs() > 0.012)
    bridge = face & (X[:, 0].abs() < 0.012) & ((X[:, 1] - float(lm[27, 1])).abs() < 0.0025)
    brows = ((((X - lm[19]).norm(dim=-1) < 0.009) & (X[:, 1] < lm[19, 1] + 0.002))
             | (((X - lm[24]).norm(dim=-1) < 0.009) & (X[:, 1] < lm[24, 1] + 0.002)))  # on and below the brow points
    lips = ((X - lm[51]).norm(dim=-1) < 0.006) | ((X - lm[57]).norm(dim=-1) < 0.006)
    frame = rim | bridge
    dec, vis, args = _rendered_head(head, torch.where((frame | brows | lips)[:, None], dark, skin)[None])
    lay = uv_layout(head, S)

    def colour(baked, region):
        seen = (region & (vis > 0))[head.faces[lay.tri]].all(1)
        assert int(seen.sum()) > 8
        img = torch.from_numpy(baked.astype(np.float32) / 255.0).reshape(-1, 3)
        return img[lay.texels[seen]].mean(0)

    with_features = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0], features=feature_weight(head))
    without = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0])
    assert float((colour(with_features, frame) - skin).abs().max()) < 0.12  # the frame is gone
    assert float((colour(without, frame) - dark).abs().max()) < 0.15  # (it was baked before)
    assert float((colour(with_features, lips) - dark).abs().max()) < 0.05  # features stay ...
    for region in (brows, lips):  # ... as they were baked without the zones
        assert float((colour(with_features, region) - colour(without, region)).abs().max()) < 0.02


def test_skin_probability_and_multiband_blend():
    from engine.texture import multiband_blend, skin_probability

    g = torch.Generator().manual_seed(0)
    ref = torch.tensor([0.72, 0.52, 0.42]) * (1 + 0.05 * torch.randn(500, 1, generator=g)) \
        + 0.01 * torch.randn(500, 3, generator=g)
    p = skin_probability(torch.tensor([[0.70, 0.51, 0.41], [0.15, 0.10, 0.07], [0.95, 0.95, 0.95],
                                       [0.40, 0.55, 0.80]]), ref)
    assert p[0] == 1 and (p[1:] == 0).all()  # skin; dark hair, white wall and a blue shirt are not
    a = np.full((256, 256, 3), 0.8, np.float32)
    b = np.array([0.2, 0.2, 0.2], np.float32)  # the fill: one colour
    assert np.allclose(multiband_blend(a, b, np.ones((256, 256), np.float32)), a, atol=1e-5)
    assert np.allclose(multiband_blend(a, b, np.zeros((256, 256), np.float32)), 0.2, atol=1e-5)
    a[:, 200:] = 0.0  # unseen texels of the known image (weight 0) never count
    m = np.zeros((256, 256), np.float32)
    m[:, :128] = 1
    row = multiband_blend(a, b, m, band=8)[128, :, 0]
    assert abs(row[0] - 0.8) < 0.01 and abs(row[-1] - 0.2) < 0.01  # each side keeps its colour
    assert (np.diff(row) <= 1e-4).all() and 8 < np.sum((row > 0.25) & (row < 0.75)) < 40  # one smooth step


def _rendered_head(head, albedo):
    """The head with per-vertex ``albedo (1, V, 3)`` under white ambient light (shading 0.9),
    rendered from the front at 512 px: (its decoding, per-vertex visibility, ``bake_albedo``'s
    first six arguments)."""
    camera = frontal_camera(distance=0.5, focal_px=1400.0, image_size=(512, 512))
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.9 / SH_CONSTANTS[0]
    dec = FaceDecoder(head)(FaceParams.neutral(head, camera).replace(albedo=albedo, sh=sh))
    image = dec.render(antialias=False).image.clamp(0, 1)
    vis = dec.visibility()[0].float()
    return dec, vis, (head, dec.screen[0], vis, dec.shading[0].clamp_min(0), dec.albedo[0], image)


def _skin_coloured_head(head):
    """:func:`_rendered_head` with every vertex in skin colour (0.78, 0.58, 0.47)."""
    return _rendered_head(head, torch.tensor([0.78, 0.58, 0.47]).expand(1, head.n_vertices, 3).clone())


def test_a_methods_uv_map_fills_what_the_photo_did_not_see(head):
    """CEST returns a UV reflectance map: where the photo saw nothing (the back of the head)
    the baked texture takes that map's colours instead of the one skin colour."""
    S = 256
    dec, vis, args = _skin_coloured_head(head)
    fill_map = torch.zeros(1, 3, 64, 64)
    fill_map[:, 2] = 0.9  # a blue map: unmistakable where it shows
    lay = uv_layout(head, S)
    back = head.regions["scalp_neck"] & (vis == 0)
    texels = lay.texels[back[head.faces[lay.tri]].all(1)]
    with_map = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0], fill_map=fill_map).reshape(-1, 3)
    without = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0]).reshape(-1, 3)
    assert texels.numel() > 200
    assert with_map[texels.numpy(), 2].mean() > 200 and with_map[texels.numpy(), 0].mean() < 30
    assert abs(float(without[texels.numpy(), 0].mean()) - 0.78 * 255) < 15  # the skin colour otherwise


def test_hair_in_a_methods_uv_map_gives_way_to_its_own_skin_colour(head):
    """A method's map holding a dark cap on the scalp (a network's reflectance where no loss
    constrains it, e.g. CEST's beyond its window) does not paint the bald head dark: where the
    map does not look like its own skin at the texels the photo saw, its skin colour fills."""
    S = 256
    dec, vis, args = _skin_coloured_head(head)
    lay = uv_layout(head, S)
    top = head.regions["scalp_neck"] & (vis == 0) & (head.template[:, 1] > 0.06)  # the crown, unseen
    cap = lay.texels[top[head.faces[lay.tri]].all(1)].numpy()
    skin_tone = torch.tensor([0.62, 0.45, 0.37])  # the method's own skin: darker than the photo's
    fill_map = skin_tone[None, :, None, None].expand(1, 3, S, S).clone()
    rows, cols = np.divmod(cap, S)
    fill_map[0, :, rows, cols] = torch.tensor([0.08, 0.06, 0.05])[:, None]  # hair-dark cap
    baked = bake_albedo(*args, size=S, landmarks_px=dec.landmarks2d[0], fill_map=fill_map).reshape(-1, 3)
    assert len(cap) > 200
    assert np.abs(baked[cap].astype(float).mean(0) - skin_tone.numpy() * 255).max() < 12


def test_edge_on_texels_give_way_when_the_estimate_overlaps_the_background(head):
    """An estimate 4 % wider than the rendered face (as a fit's silhouette often is) projects
    its sides onto a blue background. With ``facing``, texels seen edge-on lose their weight
    and take the estimate's own albedo instead of the blue; texels facing the camera bake as
    before."""
    S = 256
    skin = torch.tensor([0.78, 0.58, 0.47])
    camera = frontal_camera(distance=0.5, focal_px=1400.0, image_size=(512, 512))
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.9 / SH_CONSTANTS[0]
    params = FaceParams.neutral(head, camera).replace(albedo=skin.expand(1, head.n_vertices, 3).clone(), sh=sh)
    dec = FaceDecoder(head)(params)
    background = torch.zeros(1, 3, 512, 512)
    background[:, 2] = 0.9
    image = dec.render(antialias=False, background=background).image.clamp(0, 1)
    vis = dec.visibility()[0].float()
    screen = dec.screen[0].clone()
    centre = screen[vis > 0, :2].mean(0)
    screen[:, :2] = centre + 1.04 * (screen[:, :2] - centre)  # the estimate: a little too wide
    facing = dec.facing()[0]
    args = (head, screen, vis, dec.shading[0].clamp_min(0), dec.albedo[0], image)
    lay = uv_layout(head, S)
    face = head.regions["face_skin"] & (vis > 0)

    def texels(sel):
        return lay.texels[sel[head.faces[lay.tri]].all(1)].numpy()

    edge, front = texels(face & (facing < 0.3)), texels(face & (facing > 0.7))
    plain = bake_albedo(*args, size=S).reshape(-1, 3).astype(np.float64) / 255.0
    weighted = bake_albedo(*args, size=S, facing=facing).reshape(-1, 3).astype(np.float64) / 255.0

    def error(img, t):
        return float(np.abs(img[t] - skin.numpy()).mean())

    assert len(edge) > 100 and len(front) > 300
    assert error(plain, edge) > 0.05  # the blue came in
    assert error(weighted, edge) < 0.5 * error(plain, edge), (error(weighted, edge), error(plain, edge))
    assert error(weighted, front) < 0.02 and abs(error(weighted, front) - error(plain, front)) < 0.005


def test_eyelids_folded_in_the_photo_take_the_skin_fill(head):
    """The vertices a blink pulls over the eye (upper lids) get eyelid weight 1; their margins
    (moved most: the lash line), eyeballs and the rest of the face 0. Folding
    ``1 − weight`` into the bake's visibility, lids painted dark (the lash line they sit on in
    the photo) come back as the face's skin, not as a smudge."""
    from engine.head.arkit import arkit_name
    from engine.texture import eyelid_weight

    w = eyelid_weight(head)
    names = [arkit_name(n) for n in head.expression_names]
    moved = torch.stack([head.expression_basis[names.index(u)].norm(dim=-1)
                         for u in ("eyeBlinkLeft", "eyeBlinkRight")]).max(0).values
    lid = (moved > 0.005) & (moved < 0.0095)
    assert (w[lid] == 1).all() and (w[moved < 0.002] == 0).all() and (w[head.regions["eyes"]] == 0).all()
    assert (w[moved > 0.0115] == 0).all()  # the lids' margins keep the photo's lash line
    assert 100 < int((w > 0.5).sum()) < 400  # the two upper lids
    skin, dark = torch.tensor([0.78, 0.58, 0.47]), torch.tensor([0.1, 0.07, 0.06])
    lids = w > 0.5
    dec, vis, args = _rendered_head(head, torch.where(lids[:, None], dark, skin)[None])
    S = 1024
    lay = uv_layout(head, S)
    t = lay.texels[(lids & (vis > 0))[head.faces[lay.tri]].all(1)].numpy()

    def lid_colour(visibility):
        a = list(args)
        a[2] = visibility
        baked = bake_albedo(*a, size=S, landmarks_px=dec.landmarks2d[0]).reshape(-1, 3).astype(np.float64) / 255.0
        return baked[t].mean(0)

    assert len(t) > 50
    assert float(np.abs(lid_colour(vis) - dark.numpy()).max()) < 0.1  # the photo's dark lids
    assert float(np.abs(lid_colour(vis * (1 - w)) - skin.numpy()).max()) < 0.08  # the skin instead


def test_the_parts_blender_colours_itself_are_painted_into_the_files_texture(head):
    """``paint_parts`` on the export layout of the files' mesh (the open head with its teeth):
    the teeth and the mouth interior take their colours, each eyeball (its island unrolled
    around its forward axis) a dark pupil at its front pole, the given iris colour around it
    and a light sclera beyond; the skin's texels are untouched. A model's own layout (ICT's
    eyes share the face's UV space) is left as it is."""
    from engine.export.uv_pack import export_layout
    from engine.generator.eyes import eye_frames
    from engine.head.teeth import TEETH_ALBEDO, with_teeth
    from engine.texture import MOUTH_ALBEDO, paint_parts

    files = with_teeth(head)
    exp = export_layout(files)
    S = 512
    image = np.full((S, S, 3), 128, np.uint8)
    assert paint_parts(image, exp, files, (0.15, 0.35, 0.8), (0.9, 0.88, 0.85)) is image
    lay = uv_layout(exp, S)
    faces, tri = files.faces.numpy(), lay.tri.numpy()
    texel = image.reshape(-1, 3)[lay.texels.numpy()].astype(np.int64)

    def part(name):
        return files.regions[name].numpy()[faces].all(1)[tri]

    teeth, mouth, eyes, skin = part("teeth"), part("mouth_interior"), part("eyes"), part("skin")
    assert teeth.sum() > 50 and (texel[teeth] == np.round(np.array(TEETH_ALBEDO) * 255)).all()
    assert (mouth & ~teeth).sum() > 50 and (texel[mouth & ~teeth] == np.round(np.array(MOUTH_ALBEDO) * 255)).all()
    assert (texel[skin & ~mouth & ~eyes] == 128).all()
    # the eyes, by each texel's angle from its eyeball's forward axis
    X = files.template.numpy().astype(np.float64)
    frames = eye_frames(files)
    pos = np.einsum("nc,ncd->nd", lay.bary.numpy()[eyes].astype(np.float64), X[faces[tri[eyes]]])
    d = pos - frames.centres[np.where(pos[:, 0] > 0, 0, 1)]
    theta = np.degrees(np.arccos(d[:, 2] / np.linalg.norm(d, axis=1)))
    col = texel[eyes]
    # (an adult's pupil and iris on the open head's 12-mm eyeballs: 9° and 29° from the axis)
    pupil, iris, sclera = col[theta < 6], col[(theta > 12) & (theta < 22)], col[(theta > 40) & (theta < 60)]
    assert len(pupil) >= 4 and len(iris) >= 40 and len(sclera) >= 100
    assert pupil.max() < 40 and (iris[:, 2] > iris[:, 0] + 40).mean() > 0.9 and sclera.min(1).mean() > 170
    try:
        from engine.head import load_head_model

        ict = load_head_model("ict")
    except Exception as exc:  # noqa: BLE001 - the shared ICT data is optional
        pytest.skip(f"ICT Face Model not available ({exc})")
    kept = np.full((256, 256, 3), 128, np.uint8)
    paint_parts(kept, export_layout(ict), ict, (0.1, 0.3, 0.8), (0.9, 0.9, 0.9))
    assert (kept == 128).all()
