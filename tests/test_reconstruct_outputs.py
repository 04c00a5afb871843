"""End to end: photo -> output folder (contract of docs/conventions.md), bad inputs, atomicity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import ImageError, UserError
from engine.export.atomic import OutputFolderError, atomic_output_folder
from engine.reconstruct import reconstruct

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"head.obj", "head.mtl", "albedo.png", "head.glb", "rig.json", "head_camera.obj", "head_camera.mtl",
            "params.json", "overlay.png", "summary.png", "photo.jpg"}


def _astronaut(path: Path, tiles: int = 1) -> Path:
    from skimage import data

    img = data.astronaut()
    if tiles > 1:
        img = np.concatenate([img] * tiles, axis=1)
    Image.fromarray(img).save(path)
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLCONFIGDIR=str(cwd / "mpl"))
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_jsonl_progress_and_full_output_folder(tmp_path):
    photo = _astronaut(tmp_path / "astronaut.png")
    out = tmp_path / "out"
    r = _cli("reconstruct", str(photo), "--out", str(out), "--progress", "jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[-1] == {"stage": "done", "fraction": 1.0, "out": str(out.absolute())}
    fr = [x["fraction"] for x in lines]
    assert fr == sorted(fr) and {"detect", "landmarks", "refine", "write"} <= {x["stage"] for x in lines}
    assert EXPECTED <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp folder left
    p = json.loads((out / "params.json").read_text())
    assert p["model"] == "open" and p["image_size"] == [512, 512] and p["method"] == "fit"
    K, R, t = np.array(p["K"]), np.array(p["R"]), np.array(p["t"])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and t[2] > 0
    lm2, lm3 = np.array(p["landmarks68_image_px"]), np.array(p["landmarks68_camera"])
    assert lm2.shape == (68, 2) and lm3.shape == (68, 3) and np.array(p["sh"]).shape == (9, 3)
    proj = lm3 @ K.T
    assert np.allclose(proj[:, :2] / proj[:, 2:], lm2, atol=1e-2)
    # the fitted landmarks land on the detected ones (astronaut's face is ~150 px wide)
    det = np.array(p["landmarks68_detected_px"])
    assert np.linalg.norm(lm2 - det, axis=1).mean() < 4.0
    assert set(p["expression"]) and all(0 <= v <= 1 for v in p["expression"].values())
    assert {"jaw", "neck"} <= set(p["pose"]) and "fit" in p["timings"]
    # eye colours from the photo (the astronaut's eyes are open, her irises dark brown)
    eyes = p["eyes"]
    assert eyes["source"] == "photo" and eyes["eyes_used"] == 2
    iris, sclera = np.array(eyes["iris_rgb"]), np.array(eyes["sclera_rgb"])
    assert iris.shape == (3,) and sclera.shape == (3,) and iris.sum() < 0.6 * sclera.sum()
    assert iris[0] >= iris[2]  # brown, not blue
    rig = json.loads((out / "rig.json").read_text())
    assert {"eyes", "mouth_interior"} <= set(rig["regions"])
    # head_camera.obj is head.obj moved by R, t
    def verts(path):
        return np.array([[float(v) for v in line.split()[1:4]] for line in path.read_text().splitlines()
                         if line.startswith("v ")])
    vm, vc = verts(out / "head.obj"), verts(out / "head_camera.obj")
    assert np.allclose(vm @ R.T + t, vc, atol=1e-4)
    from engine.export.gltf import read_glb

    doc, blob = read_glb(out / "head.glb")
    mesh = doc["meshes"][0]
    names = mesh["extras"]["targetNames"]
    assert "jawOpen" in names and len(names) == len(mesh["primitives"][0]["targets"])
    assert np.allclose([p["expression"][n] for n in names], mesh["weights"], atol=1e-5)
    # head.glb carries the skeleton, posed as fitted: a glTF viewer shows head.obj
    from scipy.spatial import cKDTree

    from engine.export.gltf import posed_positions, read_accessor

    rig = json.loads((out / "rig.json").read_text())
    joints = {n["name"]: n for n in doc["nodes"][1:]}
    assert list(joints) == rig["joint_names"] and "rotation" in joints["jaw"]  # the astronaut's open mouth
    base = read_accessor(doc, blob, mesh["primitives"][0]["attributes"]["POSITION"])
    gap, order = cKDTree(np.array(rig["rest_vertices"])).query(base)  # glTF vertex -> model vertex
    assert gap.max() < 1e-6
    assert np.abs(posed_positions(doc, blob) - vm[order]).max() < 1e-5
    assert np.abs(base - vm[order]).max() > 1e-3  # (the pose and the expression do move it)
    assert Image.open(out / "albedo.png").size == (1024, 1024)


def test_photo_jpg_is_the_photo_upright_in_the_frame_of_k(tmp_path):
    """photo.jpg is what the engine read (EXIF orientation applied), so that a camera made from
    params.json's K and image_size sees the head where the photo has it (the Blender add-on's
    *Photo Camera* shows it behind the head); a large photo is reduced to photo_max_side."""
    from skimage import data

    from engine.outputs import write_photo_jpeg

    upright = np.ascontiguousarray(data.astronaut()[:384])  # 512 wide, 384 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter (a phone's portrait shot): "rotate 90 deg clockwise"
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.rot90(upright)).save(path, exif=exif, quality=95)
    out = reconstruct(path, tmp_path / "out").out_dir
    p = json.loads((out / "params.json").read_text())
    shown = np.asarray(Image.open(out / "photo.jpg").convert("RGB"))
    assert p["image_size"] == [512, 384] and shown.shape == (384, 512, 3)
    assert np.abs(shown.astype(float) - upright).mean() < 6.0  # the upright photo, not the stored one
    # the model's landmarks projected with K fall on the face in photo.jpg: skin, not background
    lm = np.array(p["landmarks68_image_px"])
    nose = shown[int(lm[30, 1]), int(lm[30, 0])].astype(int)
    assert nose[0] > 150 and nose[0] > nose[2] + 40
    write_photo_jpeg(tmp_path / "big.jpg", np.zeros((900, 3000, 3), np.uint8), 2048)
    assert Image.open(tmp_path / "big.jpg").size == (2048, 614)


def test_cli_no_face_is_one_line_and_leaves_nothing(tmp_path):
    grad = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    Image.fromarray(grad).save(tmp_path / "gradient.png")
    out = tmp_path / "out"
    r = _cli("reconstruct", str(tmp_path / "gradient.png"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: no face found in")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_corrupt_and_tiny_images_raise_user_errors(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    with pytest.raises(ImageError, match="corrupt.jpg"):
        reconstruct(bad, tmp_path / "o1")
    Image.fromarray(np.full((12, 12, 3), 128, np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="tiny.png"):
        reconstruct(tmp_path / "tiny.png", tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_several_faces_need_a_choice_on_the_command_line(tmp_path):
    """Several faces and no --face: one line naming the count and how to choose, exit 2,
    no output folder (the engine does not guess which person was meant)."""
    photo = _astronaut(tmp_path / "two.png", tiles=2)
    r = _cli("reconstruct", str(photo), "--out", str(tmp_path / "out"), "--progress", "none", cwd=tmp_path)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "2 faces" in lines[0] and "--face" in lines[0], r.stderr
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_several_faces_pick_by_index(tmp_path):
    photo = _astronaut(tmp_path / "two.png", tiles=2)
    with pytest.raises(UserError, match="shows 2 faces"):
        reconstruct(photo, tmp_path / "unchosen")
    with pytest.raises(UserError, match="has 2 face"):
        reconstruct(photo, tmp_path / "bad", face=5)
    assert not (tmp_path / "bad").exists()
    res = reconstruct(photo, tmp_path / "second", face=1)
    assert res.n_faces == 2 and res.face_index == 1
    det = np.array(res.params["landmarks68_detected_px"])
    assert det[:, 0].mean() > 512  # the right-hand copy
    assert res.params["faces_found"] == 2


def test_texture_size_sets_the_albedo_and_a_bad_one_is_refused_first(tmp_path):
    """``texture_size`` (``--texture-size``) is the side of albedo.png, baked in the export
    layout; a size the engine does not offer is one clean error before any work (no folder)."""
    photo = _astronaut(tmp_path / "a.png")
    res = reconstruct(photo, tmp_path / "small", texture_size=512)
    assert Image.open(res.out_dir / "albedo.png").size == (512, 512)
    with pytest.raises(UserError, match="texture size 300"):
        reconstruct(photo, tmp_path / "odd", texture_size=300)
    assert not (tmp_path / "odd").exists()


def test_atomic_folder_cleans_up_and_refuses_foreign_folders(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_folder(target) as tmp:
            (tmp / "params.json").write_text("{}")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputFolderError, match="not a previous reconstruction"):
        with atomic_output_folder(foreign):
            pass
    assert (foreign / "thesis.tex").read_text() == "precious"
    # a previous reconstruction is replaced only on success
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "params.json").write_text('{"old": 1}')
    with pytest.raises(RuntimeError):
        with atomic_output_folder(prev) as tmp:
            raise RuntimeError("boom")
    assert (prev / "params.json").read_text() == '{"old": 1}'
    with atomic_output_folder(prev) as tmp:
        (tmp / "params.json").write_text('{"new": 1}')
    assert (prev / "params.json").read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "prev"]


def test_cuda_request_without_gpu_is_a_user_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="CUDA"):
        reconstruct(tmp_path / "x.png", tmp_path / "o", device="cuda")
