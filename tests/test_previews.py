"""The output folder's previews: the head-box render is the full render, the overlay leaves the
photo alone outside the head, and the summary's view equals the textured render."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.face import FaceDecoder, FaceParams
from engine.outputs import fit_overlay, render_geometry, shade_view, texture_view
from engine.render import frontal_camera


@pytest.fixture(scope="module")
def decoded():
    from engine.head import load_head_model

    head = load_head_model("open")
    camera = frontal_camera(distance=0.9, focal_px=900.0, image_size=(300, 400))
    sh = torch.zeros(1, 9, 3)
    sh[:, 0], sh[:, 2] = 2.5, 0.4
    params = FaceParams.neutral(head, camera).replace(sh=sh, albedo=torch.full((1, head.n_vertices, 3), 0.6))
    return FaceDecoder(head)(params)


def test_camera_window_is_the_same_pixels(decoded):
    cam = decoded.camera
    win = cam.window(30, 50, 200, 120)
    assert win.image_size == (120, 200)
    u, _ = cam.project(decoded.vertices)
    uw, _ = win.project(decoded.vertices)
    assert torch.allclose(uw, u - torch.tensor([30.0, 50.0]), atol=1e-3)


def test_head_box_render_equals_the_full_render(decoded):
    grey, mask = render_geometry(decoded)
    grey_box, mask_box = render_geometry(decoded, head_box=True)
    assert mask.sum() > 1000 and mask.mean() < 0.5  # the head covers part of the image
    assert (mask_box != mask).sum() <= 2  # rasterised through a shifted principal point: float rounding only
    both = mask & mask_box
    assert np.abs(grey_box[both] - grey[both]).max() < 1e-4


def test_fit_overlay_changes_the_photo_only_under_the_head(decoded):
    grey, mask = render_geometry(decoded)
    photo = np.random.default_rng(0).integers(0, 256, mask.shape + (3,)).astype(np.uint8)
    out = fit_overlay(photo, grey, mask, np.zeros((0, 2)), np.zeros((0, 2)))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    outside = np.ones(mask.shape, bool)
    outside[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = False
    outside[:60] = False  # the legend's text
    assert (out[outside] == photo[outside]).all()
    assert (out[mask] != photo[mask]).any(-1).mean() > 0.9  # the grey geometry is blended in


def test_summary_view_equals_the_textured_render(decoded):
    """The summary textures its view with ``albedo.png``, which is in the export UV layout
    (engine.export.uv_pack): a smooth map in the model's own layout, carried over, shows on the
    view as the decoder's own render of the model-layout map does (up to resampling)."""
    from engine.export.uv_pack import to_export_layout
    from engine.head.teeth import with_teeth

    u = torch.linspace(0, 1, 256)
    amap = torch.stack([0.5 + 0.4 * torch.sin(6 * u)[None, :].expand(256, 256),
                        0.5 + 0.4 * torch.cos(5 * u)[:, None].expand(256, 256),
                        0.5 + 0.3 * torch.sin(4 * u[:, None] + 3 * u[None, :])])[None]
    view = shade_view(decoded)
    colour, albedo = texture_view(view, to_export_layout(amap, with_teeth(decoded.head)))
    out = decoded.decoder(decoded.params.replace(albedo_map=amap)).render(antialias=False)
    m = out.fragments.mask[0].numpy()
    assert (view.mask == m).all()
    ref_albedo = out.albedo[0].permute(1, 2, 0).numpy() * m[..., None]
    ref_colour = ref_albedo * (out.shading[0].permute(1, 2, 0).clamp_min(0).numpy() * m[..., None])
    err = np.abs(albedo - ref_albedo)[m]
    # (a map not carried over: 0.07 / 0.76)
    assert float(np.median(err)) < 0.001 and float(np.percentile(err, 99)) < 0.01, (np.median(err), err.max())
    assert float(np.median(np.abs(colour - ref_colour)[m])) < 0.002


def test_a_failed_bake_surfaces_and_stops_the_background_jobs(decoded, tmp_path, monkeypatch):
    """The jobs that wait for the bake (OBJs, rig, head.glb) end when it fails; write_outputs raises its error."""
    from PIL import Image

    import engine.texture
    from engine.outputs import write_outputs
    from engine.photo import load_image

    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "photo.png")

    def fail(*args, **kwargs):
        raise RuntimeError("bake failed")

    monkeypatch.setattr(engine.texture, "bake_albedo", fail)
    with pytest.raises(RuntimeError, match="bake failed"):
        write_outputs(tmp_path / "out", decoded.head, decoded.params, load_image(tmp_path / "photo.png"), method="fit")
    assert not (tmp_path / "out" / "head.glb").exists()
