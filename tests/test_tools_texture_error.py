"""tools/texture_error.py: the texture's pattern error against a known head, view by view."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def _folder(tmp_path, head, albedo_v: torch.Tensor, R: np.ndarray, t: np.ndarray, K: np.ndarray):
    """A reconstruct-like folder of the open head at rest: head.obj (model frame, its UVs),
    albedo.png baked from per-vertex colours, params.json with the camera and landmarks."""
    from PIL import Image

    from engine.export.obj import write_obj
    from engine.texture import texture_image, uv_layout

    tmp_path.mkdir(parents=True, exist_ok=True)
    X = head.template.double().numpy()
    write_obj(tmp_path / "head.obj", X, head.faces.numpy(), head.uv.numpy(), head.face_uv.numpy())
    lay = uv_layout(head, 512)
    tex = texture_image((lay.interpolation @ albedo_v.float()).numpy().astype(np.float32), lay)
    Image.fromarray((np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp_path / "albedo.png")
    lm = head.landmarks(head.template[None])[0].double().numpy() @ R.T + t
    (tmp_path / "params.json").write_text(json.dumps({"R": R.tolist(), "t": t.tolist(), "K": K.tolist(),
                                                      "landmarks68_camera": lm.tolist()}))
    return tmp_path


def test_a_texture_of_the_truth_scores_near_zero_and_a_blotch_does_not(tmp_path, head, load_tool):
    """Folder = the true head with its own albedo: error ~0 (≤ 0.002) in every view; a dark
    blotch on one cheek of albedo.png raises the error in the views that see it, most in the
    view turned towards that cheek."""
    mod = load_tool("texture_error")
    X = head.template.double().numpy()
    R = np.diag([1.0, -1.0, -1.0])  # model (y up, z forward) -> OpenCV camera, facing it
    t = np.array([0.0, 0.0, 0.6]) - R @ X.mean(0)
    K = np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]])
    albedo = torch.stack([0.6 + 0.8 * head.template[:, 0], 0.45 + 0.5 * head.template[:, 1],
                          torch.full((head.n_vertices,), 0.38)], -1).clamp(0.05, 0.95)
    skin = head.regions["face_skin"].numpy()
    gt = {"vertices_camera": X @ R.T + t, "faces": head.faces.numpy(), "albedo": albedo.numpy(),
          "skin_face_mask": skin, "face_mask": skin, "K": K, "image_size": np.array([256, 256]),
          "landmarks3d_camera": head.landmarks(head.template[None])[0].double().numpy() @ R.T + t}
    same = mod.face_errors(_folder(tmp_path / "same", head, albedo, R, t, K), gt, [0.0, 40.0, -40.0], 256)
    assert max(same) < 0.02, same
    cheek = torch.from_numpy(((X[:, 0] > 0.03) & (X[:, 1] < 0.0) & skin).astype(np.float32))[:, None]
    blotched = mod.face_errors(_folder(tmp_path / "blot", head, albedo * (1 - 0.6 * cheek), R, t, K), gt,
                               [0.0, 40.0, -40.0], 256)
    # the cheek (x > 0) faces the +40° view most, the -40° view hardly: 0.08 / 0.21 / 0.01 here
    assert blotched[0] > 0.05 and blotched[1] > 2 * blotched[0] and blotched[2] < blotched[0], (same, blotched)
    v, f, uv, fuv = mod.read_obj(tmp_path / "same" / "head.obj")
    assert v.shape == (head.n_vertices, 3) and np.array_equal(f, head.faces.numpy())
    assert np.array_equal(fuv, head.face_uv.numpy()) and np.allclose(uv, head.uv.numpy(), atol=1e-6)


def test_glasses_painted_on_the_skin_score_under_the_glasses(tmp_path, head, load_tool):
    """tools/occluder_texture_error.py: the true head scores ~0 under the glasses and
    elsewhere; the same head with the glasses' rows darkened in albedo.png scores high under
    them and stays near 0 elsewhere."""
    mod = load_tool("occluder_texture_error")
    X = head.template.double().numpy()
    R = np.diag([1.0, -1.0, -1.0])
    t = np.array([0.0, 0.0, 0.6]) - R @ X.mean(0)
    K = np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]])
    albedo = torch.stack([0.6 + 0.8 * head.template[:, 0], 0.45 + 0.5 * head.template[:, 1],
                          torch.full((head.n_vertices,), 0.38)], -1).clamp(0.05, 0.95)
    cam = X @ R.T + t
    row = (cam @ K.T)[:, 1] / cam[:, 2]  # each vertex's image row
    eyes = head.landmarks(head.template[None])[0].double().numpy()[36:48] @ R.T + t
    eye_row = float(np.mean((eyes @ K.T)[:, 1] / eyes[:, 2]))
    seg = np.ones((256, 256), np.uint8)  # face skin everywhere ...
    band = slice(int(eye_row) + 6, int(eye_row) + 12)
    seg[band] = mod.GLASSES_LABEL  # ... but a band of rows under the eyes: the glasses' lower rim
    gt = {"vertices_camera": cam.astype(np.float32), "faces": head.faces.numpy().astype(np.int32),
          "albedo": albedo.numpy(), "K": K, "skin_face_mask": head.regions["face_skin"].numpy(),
          "segmentation": seg, "image_size": np.array([256, 256])}
    under, other, rest = mod.face_errors(_folder(tmp_path / "same", head, albedo, R, t, K), gt)
    assert under < 0.03 and rest < 0.03 and np.isnan(other), (under, other, rest)  # no hair, hat or hand
    dark = torch.from_numpy(((row >= band.start - 1) & (row < band.stop + 1)).astype(np.float32))[:, None]
    under2, other2, rest2 = mod.face_errors(_folder(tmp_path / "rim", head, albedo * (1 - 0.7 * dark), R, t, K), gt)
    assert under2 > 0.3 and rest2 < 0.1 and rest2 < under2 / 4, (under2, rest2)
