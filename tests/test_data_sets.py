"""Data sets: deterministic synthetic items with disjoint splits, the memmap cache, prepared
image folders (corrupt files counted and skipped), clips grouped by folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import ClipFolderFaces, ImageFolderFaces, SyntheticFaces, face_seed
from engine.data.folders import INDEX_NAME
from engine.data.synthetic import write_cache
from engine.errors import UserError


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_synthetic_deterministic_and_cache(head, tmp_path):
    ds = SyntheticFaces(head, 2, image_size=32)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (3, 32, 32)
    assert face_seed(1234, "train", 1) != face_seed(1234, "val", 1)
    val = SyntheticFaces(head, 2, image_size=32, split="val")
    assert not torch.equal(val[1]["image"], a["image"])
    # projected GT landmarks agree with GT vertices + camera
    lm3 = head.landmarks(a["gt_vertices"][None])[0] @ a["gt_R"].T + a["gt_t"]
    uv = lm3[:, :2] / lm3[:, 2:] * a["gt_K"][0, 0] + a["gt_K"][0, 2]
    assert torch.allclose(uv, a["landmarks"], atol=1e-3)
    write_cache(head, tmp_path, 2, "train", 32, 1234)
    cached = SyntheticFaces(head, 2, image_size=32, cache=tmp_path)
    c = cached[1]
    assert (c["image"] - a["image"]).abs().max() <= 1 / 255 + 1e-6
    assert torch.allclose(c["gt_vertices"], a["gt_vertices"], atol=1e-6)
    with pytest.raises(UserError, match="fewer than"):
        SyntheticFaces(head, 5, image_size=32, cache=tmp_path)


def _write_folder(root, n_clips=2, per_clip=3):
    rng = np.random.default_rng(0)
    paths, lms, status = [], [], []
    lm = np.stack(np.meshgrid(np.linspace(30, 70, 17), np.linspace(30, 70, 4)), -1).reshape(-1, 2)[:68]
    for c in range(n_clips):
        (root / f"clip{c}").mkdir(parents=True)
        for f in range(per_clip):
            rel = f"clip{c}/f{f}.png"
            Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(root / rel)
            paths.append(rel)
            lms.append(lm)
            status.append("ok")
    (root / "clip0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths.append("clip0/broken.jpg")
    lms.append(lm)
    status.append("ok")  # went bad after indexing
    paths.append("clip1/noface.png")
    lms.append(np.zeros((68, 2)))
    status.append("noface")
    np.savez(root / INDEX_NAME, paths=np.array(paths), landmarks=np.array(lms, np.float32),
             status=np.array(status))


def test_image_folder_skips_corrupt_and_crops(tmp_path):
    _write_folder(tmp_path)
    ds = ImageFolderFaces(tmp_path, image_size=32)
    assert len(ds) == 7  # noface dropped by the index
    broken = ds.paths.index("clip0/broken.jpg")
    item = ds[broken]
    assert ds.skipped == 1 and item["image"].shape == (3, 32, 32)
    assert int(item["index"]) != broken
    # landmarks are mapped into the crop: centred, inside
    assert torch.allclose(item["landmarks"].mean(0), torch.tensor([16.0, 16.0]), atol=1.0)
    with pytest.raises(UserError, match="prepare_images"):
        ImageFolderFaces(tmp_path / "clip0")


def test_clips_group_by_folder(tmp_path):
    _write_folder(tmp_path)
    ds = ClipFolderFaces(tmp_path, image_size=32, clip_length=2)
    assert len(ds) == 2
    item = ds[1]
    assert item["image"].shape == (2, 3, 32, 32) and item["landmarks"].shape == (2, 68, 2)
    assert torch.equal(ds[1]["image"], item["image"])


def test_prepare_images_real_photo(tmp_path):
    pytest.importorskip("mediapipe")
    from skimage import data

    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "prepare_images", Path(__file__).resolve().parents[1] / "train" / "prepare_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "a").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "a" / "astronaut.jpg")
    (tmp_path / "a" / "bad.png").write_bytes(b"garbage")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    out = mod.prepare(tmp_path, progress=False)
    assert (out["ok"], out["corrupt"], out["noface"]) == (1, 1, 1)
    assert mod.prepare(tmp_path, progress=False)["new"] == 0  # cached
    ds = ImageFolderFaces(tmp_path, image_size=64)
    assert len(ds) == 1 and ds[0]["image"].shape == (3, 64, 64)
