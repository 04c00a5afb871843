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
