"""engine.head.teeth: the procedural teeth the output files add to the open head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.head import load_head_model
from engine.head.teeth import LOWER, RING, UPPER, extend_vertices, pad_vertices, teeth_ids, with_teeth

N_TEETH = 2 * (len(UPPER) + len(LOWER))
PER_TOOTH = 3 * RING + 2


@pytest.fixture(scope="module")
def heads():
    model = load_head_model("open")
    return model, with_teeth(model)


def test_teeth_are_appended_and_leave_the_model_as_it_was(heads):
    model, files = heads
    V, F = model.n_vertices, model.n_faces
    assert with_teeth(model) is files and with_teeth(files) is files  # cached; a model with teeth is kept
    assert files.n_vertices == V + N_TEETH * PER_TOOTH and files.name == model.name
    for key in ("template", "uv", "skin_weights"):
        assert torch.equal(getattr(files, key)[:len(getattr(model, key))], getattr(model, key)), key
    for key in ("faces", "face_uv"):
        assert torch.equal(getattr(files, key)[:F], getattr(model, key)), key
    assert torch.equal(files.identity_basis[:, :V], model.identity_basis)
    assert torch.equal(files.expression_basis[:, :V], model.expression_basis)
    assert torch.equal(files.lmk_faces, model.lmk_faces) and torch.equal(files.lmk_bary, model.lmk_bary)
    teeth = teeth_ids(files)
    assert teeth.tolist() == list(range(V, files.n_vertices)) and len(teeth_ids(model)) == 0
    assert files.regions["mouth_interior"][teeth].all() and not files.regions["face_skin"][teeth].any()
    for name, mask in model.regions.items():
        assert torch.equal(files.regions[name][:V], mask), name
    # every coefficient gives the model's own vertices first
    g = torch.Generator().manual_seed(0)
    ident = torch.randn(1, model.n_identity, generator=g)
    expr = torch.rand(1, model.n_expression, generator=g) * 0.5
    pose = torch.randn(1, model.n_joints, 3, generator=g) * 0.1
    out = files(ident, expr, pose).vertices
    assert torch.allclose(out[:, :V], model(ident, expr, pose).vertices, atol=1e-6)
    assert torch.allclose(extend_vertices(model(ident, expr, pose).vertices[0], files, ident, expr, pose),
                          out[0], atol=1e-6)
    padded = pad_vertices(torch.zeros(V, 3), files, (0.1, 0.2, 0.3))
    assert padded.shape == (files.n_vertices, 3) and torch.equal(padded[V:], torch.tensor([0.1, 0.2, 0.3]).expand(
        len(teeth), 3))
    # closed crowns with outward triangles: each tooth encloses a positive volume
    T = files.template.double().numpy()
    tri = files.faces[F:].numpy()
    vol = np.einsum("fc,fc->f", T[tri[:, 0]], np.cross(T[tri[:, 1]], T[tri[:, 2]])) / 6.0
    per_tooth = np.bincount((tri[:, 0] - V) // PER_TOOTH, weights=vol, minlength=N_TEETH)
    assert (per_tooth > 1e-7).all()  # > 0.1 mm³ each (incisors ~ 0.4 cm³ crowns)


def test_teeth_stay_inside_the_mouth_and_show_when_it_opens(heads, load_tool):
    """From five views (tools/teeth_check.py), closed (the model's neutral lips, three random
    identities) and open (the jaw joint): a tooth shows only where the model without teeth
    shows its mouth cavity, never over the lips, cheeks or chin; an open jaw shows many more."""
    check = load_tool("teeth_check")
    model, files = heads
    g = torch.Generator().manual_seed(1)
    cases = [(None, 0.0)] + [(torch.randn(model.n_identity, generator=g), 0.0) for _ in range(3)] \
        + [(None, 0.15), (None, 0.35)]
    shown = {}
    for ident, jaw in cases:
        teeth, over_skin = check.tooth_pixels(model, files, {}, jaw, identity=ident, size=160)
        assert over_skin == 0, (jaw, over_skin)
        shown[jaw] = shown.get(jaw, 0) + teeth
    assert shown[0.35] > 250 and shown[0.35] > shown[0.15] > shown[0.0] / 4 and shown[0.35] > 5 * shown[0.0] / 4
    # the tool's report: every unit at weight 1 with the jaw shut, from the same views
    assert check.tooth_pixels(model, files, {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, 0.0, size=160)[1] == 0


def test_lower_teeth_follow_the_jaw_and_upper_ones_the_head(heads):
    model, files = heads
    V = model.n_vertices
    upper = np.repeat(np.arange(N_TEETH), PER_TOOTH) < 2 * len(UPPER)  # the upper row comes first
    rest = files().vertices[0, V:]
    pose = torch.zeros(1, files.n_joints, 3)
    pose[0, files.joint_names.index("jaw"), 0] = 0.3
    moved = (files(None, None, pose).vertices[0, V:] - rest).norm(dim=-1).numpy()
    assert moved[upper].max() < 1e-6 and moved[~upper].min() > 2e-3  # the jaw joint carries the lower row
    expr = torch.zeros(1, files.n_expression)
    expr[0, files.expression_names.index("jawOpen")] = 1.0
    d = (files(None, expr, None).vertices[0, V:] - rest).numpy()
    assert np.abs(d[upper]).max() == 0.0 and d[~upper, 1].max() < -2e-3  # the jawOpen unit: down
    expr[0] = 0.0
    expr[0, files.expression_names.index("mouthSmileLeft")] = 1.0
    assert (files(None, expr, None).vertices[0, V:] - rest).abs().max() == 0.0  # lips move, teeth do not
    # a new identity moves each tooth as one piece (its anchors' mean offset)
    ident = torch.randn(1, files.n_identity, generator=torch.Generator().manual_seed(2))
    shift = (files(ident).vertices[0, V:] - rest).numpy().reshape(N_TEETH, PER_TOOTH, 3)
    assert np.abs(shift - shift[:, :1]).max() < 1e-6 and np.abs(shift).max() > 1e-4


def test_models_with_teeth_or_without_a_mouth_are_kept(flame_pkl):
    flame = load_head_model("flame", path=flame_pkl)
    assert with_teeth(flame) is flame  # no mouth cavity to anchor teeth in
    try:
        ict = load_head_model("ict")
    except Exception as exc:  # noqa: BLE001 - the shared ICT data is optional
        pytest.skip(f"ICT Face Model not available ({exc})")
    assert ict.regions["teeth"].sum() > 1000 and with_teeth(ict) is ict  # ICT's own teeth


def test_each_tooth_gets_texels_in_the_files_layout(heads):
    """The export layout lays every tooth out by its own main plane (not the few texels the
    teeth's placeholder UVs would give): an incisor-sized island, 8-30 texels wide at 1024²,
    apart from the other islands."""
    from engine.export.uv_pack import TEETH_DENSITY, export_layout

    model, files = heads
    exp = export_layout(files)
    F = model.n_faces
    island = exp.island.numpy()[exp.face_uv.numpy()[F:, 0]]
    assert len(np.unique(island)) == N_TEETH and (exp.density.numpy()[np.unique(island)] == TEETH_DENSITY).all()
    widths = []
    for k in np.unique(island):
        uv = exp.uv.numpy()[exp.face_uv.numpy()[F:][island == k]].reshape(-1, 2)
        widths.append(np.ptp(uv, 0).max() * 1024)
    assert 8 < np.median(widths) < 30 and min(widths) > 4
