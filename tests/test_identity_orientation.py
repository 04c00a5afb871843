"""Identity modes have one orientation (engine.head.model.basis_signature): the open model's
build orients them, and a network keeps the meaning of its identity codes on a head model
whose modes are negated (an SVD's sign depends on LAPACK's thread count, so builds of the
open model before build 3 disagreed between machines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "engine" / "assets" / "mofa_open_default.pt"
FLIPPED = [0, 3, 7, 20]


@pytest.fixture(scope="module")
def built():
    from engine.head.build import open_head as build_open
    from engine.head.open_model import load_open

    return build_open.default_path(), load_open()


def test_signature_is_a_fixed_projection_and_the_build_orients_every_mode(built):
    from engine.head.model import basis_signature

    _, head = built
    sig = head.identity_signature()
    assert sig.shape == (head.n_identity,) and bool((sig > 0).all())
    basis = head.identity_basis.numpy().copy()
    basis[FLIPPED] *= -1
    flipped = basis_signature(basis)
    np.testing.assert_allclose(flipped[FLIPPED], -sig.numpy()[FLIPPED], rtol=1e-5)


def _negated_copy(path: Path, out: Path) -> Path:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for key in ("identity_basis", "joint_identity_basis"):
        arrays[key] = arrays[key].copy()
        arrays[key][FLIPPED] *= -1
    np.savez(out, **arrays)
    return out


def test_a_network_keeps_its_faces_on_a_build_with_negated_modes(built, tmp_path):
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} is absent")
    from engine.generator import render_sample
    from engine.head.open_model import load_open
    from engine.methods.mofa import Mofa

    path, head = built
    net = Mofa.load(CKPT)
    other_head = load_open(_negated_copy(path, tmp_path / "negated.npz"))
    other = Mofa(net.cfg, head=other_head)
    other.load_state_dict(net.state_dict())
    other.eval()
    s = render_sample(head, 5)
    x = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(net.image_size,) * 2, mode="bilinear", antialias=True)
    with torch.no_grad():
        a = net.decoder(net.predict(x)).vertices
        b = other.decoder(other.predict(x)).vertices
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        # what happened before the networks recorded the orientation: another face
        other.identity_signature.copy_(other.head_signature)
        c = other.decoder(other.predict(x)).vertices
    assert (a - c).norm(dim=-1).max() > 1e-3  # > 1 mm somewhere


def test_export_records_the_orientation_of_a_given_build(built, tmp_path):
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} is absent")
    from engine.head.model import basis_signature
    from engine.train.__main__ import main as train_main
    from engine.train.state import load_checkpoint_file

    path, _ = built
    negated = _negated_copy(path, tmp_path / "negated.npz")
    out = tmp_path / "signed.pt"
    assert train_main(["export", str(CKPT), str(out), "--half", "--identity-basis", str(negated)]) == 0
    sig = load_checkpoint_file(out)["model"]["identity_signature"].float().numpy()
    with np.load(negated) as z:
        want = basis_signature(z["identity_basis"])
    np.testing.assert_array_equal(np.sign(sig), np.sign(want))
    assert (np.sign(sig)[FLIPPED] < 0).all()


def test_a_corpus_cache_is_read_in_the_local_orientation(built, tmp_path):
    """A cache records the orientation it was rendered with; a build with negated modes reads
    the same faces (same gt vertices) with re-signed coefficients."""
    from engine.data.synthetic import SyntheticFaces, write_cache
    from engine.head.open_model import load_open

    path, head = built
    write_cache(head, tmp_path / "corpus", 2, "train", 32, 7)
    other_head = load_open(_negated_copy(path, tmp_path / "negated.npz"))
    here = SyntheticFaces(head, 2, 32, 7, cache=tmp_path / "corpus")[1]
    there = SyntheticFaces(other_head, 2, 32, 7, cache=tmp_path / "corpus")[1]
    sign = torch.ones(head.n_identity)
    sign[FLIPPED] = -1
    torch.testing.assert_close(there["gt_identity"], here["gt_identity"] * sign)
    torch.testing.assert_close(there["gt_vertices"], here["gt_vertices"], atol=1e-6, rtol=1e-5)
