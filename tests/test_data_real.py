"""Real-data loaders: 300-W ``.pts`` folders, video clips decoded with OpenCV, weighted
mixtures of sources, and unreadable files skipped and counted (in the item, the log and the
training run's summary)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import (ClipFolderFaces, ImageFolderFaces, MixedFaces, PtsFolderFaces, build_dataset, read_pts,
                         write_pts)
from engine.data.pts import AnnotationError, pair_annotations
from engine.errors import ConfigError, UserError

LM = np.stack(np.meshgrid(np.linspace(30, 70, 17), np.linspace(35, 75, 4)), -1).reshape(-1, 2)[:68].astype(np.float32)


# ----------------------------------------------------------------------------- .pts
def test_pts_roundtrip_and_convention(tmp_path):
    p = tmp_path / "a.pts"
    p.write_text("version: 1\nn_points:  3\n{\n1 1\n10.5 20.25\n3e1 4\n}\n")
    pts = read_pts(p, n_points=3)
    # 300-W is 1-based (first pixel centre at 1, 1); ours put it at (0.5, 0.5)
    assert np.allclose(pts, [[0.5, 0.5], [10.0, 19.75], [29.5, 3.5]])
    assert np.allclose(read_pts(p, n_points=3, one_based=False), [[1.5, 1.5], [11.0, 20.75], [30.5, 4.5]])
    write_pts(tmp_path / "b.pts", LM)
    assert np.allclose(read_pts(tmp_path / "b.pts"), LM, atol=1e-3)
    bad = {"nohead.pts": "1 2\n3 4\n", "short.pts": "version: 1\nn_points: 68\n{\n1 2\n}\n",
           "words.pts": "version: 1\nn_points: 1\n{\n1 x\n}\n", "binary.pts": None}
    for name, text in bad.items():
        if text is None:
            (tmp_path / name).write_bytes(b"\xff\xfe\x00garbage")
        else:
            (tmp_path / name).write_text(text)
        with pytest.raises(AnnotationError, match=name):
            read_pts(tmp_path / name)
    with pytest.raises(AnnotationError, match="3 points, not 68"):
        read_pts(p)


def _dot_image(size: int, points: np.ndarray, value: int = 255) -> np.ndarray:
    """Dark noise with a bright 3x3 dot at each point (pixel-edge coordinates)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    for u, v in points:
        x, y = int(u), int(v)
        img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = value
    return img


def _pts_folder(root: Path) -> None:
    (root / "lfpw").mkdir(parents=True)
    (root / "afw").mkdir()
    for i in range(3):
        Image.fromarray(_dot_image(100, LM[[30, 36, 45]])).save(root / "lfpw" / f"image_{i:04d}.png")
        write_pts(root / "lfpw" / f"image_{i:04d}.pts", LM)
    # two annotated faces in one image (STEM_N.pts)
    Image.fromarray(_dot_image(100, LM[[30]])).save(root / "afw" / "group.jpg")
    write_pts(root / "afw" / "group_1.pts", LM)
    write_pts(root / "afw" / "group_2.pts", LM + 5)
    Image.fromarray(_dot_image(100, LM[[30]])).save(root / "afw" / "no_annotation.png")
    # a corrupt annotation and a corrupt image with a valid annotation
    Image.fromarray(_dot_image(100, LM[[30]])).save(root / "lfpw" / "bad_pts.png")
    (root / "lfpw" / "bad_pts.pts").write_text("version: 1\nn_points: 68\n{\n1 2 3\n}\n")
    (root / "lfpw" / "bad_img.png").write_bytes(b"\x89PNG not really")
    write_pts(root / "lfpw" / "bad_img.pts", LM)


def test_pts_folder_pairs_crops_and_skips(tmp_path, caplog):
    _pts_folder(tmp_path)
    pairs = pair_annotations(tmp_path)
    assert ("afw/group.jpg", "afw/group_1.pts") in pairs and ("afw/group.jpg", "afw/group_2.pts") in pairs
    assert len(pairs) == 7 and not any("no_annotation" in p for p, _ in pairs)
    ds = PtsFolderFaces(tmp_path, image_size=64)
    assert len(ds) == 7
    i_bad = [k for k, (_, p) in enumerate(ds.pairs) if p.endswith("bad_img.pts")][0]
    with caplog.at_level(logging.WARNING, logger="engine.data"):
        item = ds[i_bad]  # bad_img, then bad_pts come first in sorted order: both skipped
    assert int(item["skipped_images"]) == 2 and ds.skipped == 2
    assert "bad_img.png" in caplog.text and "bad_pts.pts" in caplog.text
    good = ds[[k for k, (_, p) in enumerate(ds.pairs) if p.endswith("image_0001.pts")][0]]
    assert int(good["skipped_images"]) == 0 and good["image"].shape == (3, 64, 64)
    # the annotation lands on the bright dots it marks, through the crop
    img = good["image"].mean(0)
    for k in (30, 36, 45):
        u, v = good["landmarks"][k]
        assert img[int(v), int(u)] > 0.8, (k, float(img[int(v), int(u)]))
    with pytest.raises(UserError, match=".pts file of the same name"):
        PtsFolderFaces(_empty(tmp_path))
    val = PtsFolderFaces(tmp_path, image_size=32, split="val", val_fraction=0.3)
    train = PtsFolderFaces(tmp_path, image_size=32, split="train", val_fraction=0.3)
    assert len(val) + len(train) == 7 and not set(val.pairs) & set(train.pairs)


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return d


class _Pixels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch):
        from engine.train import StepResult

        return StepResult(loss=((batch["image"].mean((-1, -2)) - self.w) ** 2).mean())


def build_data_toy(cfg):
    """A trainer factory whose data come from build_dataset (kind, augment, mixed...)."""
    from engine.train import MethodBundle

    return MethodBundle(_Pixels(), build_dataset(cfg.data, "train"))


def test_corrupt_pts_counted_in_the_run_summary(tmp_path, capsys):
    from engine.train.__main__ import main

    _pts_folder(tmp_path / "faces")
    run = tmp_path / "run"
    # one batch = all 7 items; in sorted order bad_img.png, bad_pts.pts, image_0000.png: the item
    # of bad_img skips both broken pairs, the item of bad_pts skips one: 3 per step
    assert main(["--resume", "none", "method=test_data_real:build_data_toy", f"run_dir={run}", "device=cpu",
                 "batch_size=7", "max_steps=2", "log_every=1", "ckpt_every=0", "progress=off", "tensorboard=false",
                 "image_every=0", "data.kind=pts", f"data.root={tmp_path / 'faces'}", "data.image_size=16",
                 "data.num_workers=0", "data.options.val_fraction=0"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["skipped_images"] == 6
    assert "3 training image(s) could not be read" in out.err  # the one-time warning, at the first log step
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "loss_step" in x]
    assert [r["data/skipped_images"] for r in rec] == [3, 6]


# ----------------------------------------------------------------------------- videos
def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(np.ascontiguousarray(f[..., ::-1]))
    out.release()


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    """VoxCeleb-style: <person>/<video>/<clip>.mp4 of a real face (the astronaut) moving,
    indexed by train/prepare_images.py; plus an undecodable mp4."""
    pytest.importorskip("mediapipe")
    import importlib.util

    from skimage import data

    root = tmp_path_factory.mktemp("vox")
    face = data.astronaut()[0:256, 96:352]
    for person, video, shift in (("id0001", "vidA", 0), ("id0002", "vidB", 4)):
        (root / person / video).mkdir(parents=True)
        frames = [np.roll(face, shift + 3 * k, axis=1)[::2, ::2].copy() for k in range(6)]
        _write_video(root / person / video / "00001.mp4", frames)
    (root / "id0002" / "vidB" / "00002.mp4").write_bytes(b"\x00\x00\x00 ftyp garbage")
    spec = importlib.util.spec_from_file_location("prepare_images",
                                                  Path(__file__).resolve().parents[1] / "train" / "prepare_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.prepare(root, progress=False, frame_step=2)
    assert (out["ok"], out["corrupt"], out["noface"]) == (6, 1, 0)  # frames 0, 2, 4 of each good video
    assert mod.prepare(root, progress=False, frame_step=2)["new"] == 0  # cached
    return root


def test_video_clips(video_folder):
    from engine.data.folders import read_index

    idx = read_index(video_folder)
    assert sorted(set(idx.frames.tolist())) == [0, 2, 4]
    ds = ClipFolderFaces(video_folder, image_size=48, clip_length=2)
    assert len(ds) == 2 and ds.sources == ["id0001/vidA/00001.mp4", "id0002/vidB/00001.mp4"]
    item = ds[1]
    assert item["image"].shape == (2, 3, 48, 48) and item["landmarks"].shape == (2, 68, 2)
    assert int(item["person"]) == 1 and int(item["skipped_images"]) == 0
    assert torch.equal(ds[1]["image"], item["image"])  # deterministic
    # consecutive indexed frames of one video
    assert item["frames"].tolist() in ([0, 2], [2, 4])
    # every indexed frame is also a photo for data.kind=images
    photos = ImageFolderFaces(video_folder, image_size=32)
    assert len(photos) == 6 and photos[0]["image"].shape == (3, 32, 32)


def test_video_unreadable_after_indexing_is_skipped_and_counted(video_folder, tmp_path):
    import shutil

    root = tmp_path / "vox"
    shutil.copytree(video_folder, root)
    (root / "id0001" / "vidA" / "00001.mp4").write_bytes(b"truncated")
    ds = ClipFolderFaces(root, image_size=32, clip_length=3)
    item = ds[0]  # the broken video's clip is replaced by the next one
    assert int(item["clip"]) == 1 and int(item["skipped_images"]) == 1 and ds.skipped == 1


# ----------------------------------------------------------------------------- mixing
def _index_folder(root: Path, n: int = 4) -> None:
    from engine.data.folders import INDEX_NAME

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"p{i}.png" for i in range(n)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(root / name)
    np.savez(root / INDEX_NAME, paths=np.array(names), landmarks=np.array([LM] * n), status=np.array(["ok"] * n))


def test_mixed_sources_in_one_run(tmp_path):
    from torch.utils.data import default_collate

    from engine.train.config import load_config

    _index_folder(tmp_path / "photos")
    _pts_folder(tmp_path / "pts")
    import yaml

    sources = [{"kind": "synthetic", "weight": 1.0, "n_samples": 20},
               {"kind": "images", "root": str(tmp_path / "photos"), "weight": 2.0,
                "options": {"val_fraction": 0.0, "augment": {"flip": 1.0}}},
               {"kind": "pts", "root": str(tmp_path / "pts"), "weight": 1.0}]
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump({"data": {
        "kind": "mixed", "image_size": 32, "n_samples": 400, "val_samples": 8, "head_model": "open",
        "sources": sources}}))
    cfg = load_config(tmp_path / "mixed.yaml")
    assert cfg.data.sources[1].options["augment"] == {"flip": 1.0}
    ds = build_dataset(cfg.data, "train")
    assert isinstance(ds, MixedFaces) and len(ds) == 400
    picks = np.array([ds.pick(i)[0] for i in range(400)])
    assert np.allclose(np.bincount(picks, minlength=3) / 400, [0.25, 0.5, 0.25], atol=0.07)
    items = [ds[i] for i in range(12)]
    assert {int(x["source"]) for x in items} == {0, 1, 2}
    assert set(items[0]) == {"image", "landmarks", "landmarks_valid", "skipped_images", "source"}
    batch = default_collate(items)
    assert batch["image"].shape == (12, 3, 32, 32) and batch["landmarks"].shape == (12, 68, 2)
    assert torch.equal(ds[5]["image"], items[5]["image"])
    val = build_dataset(cfg.data, "val")  # the images source has no validation split
    assert len(val) == 8 and {int(val[i]["source"]) for i in range(8)} <= {0, 2}


@pytest.mark.parametrize("overrides, sources, match", [
    (["data.kind=mixed"], [], "needs data.sources"),
    (["data.kind=images", "data.root=x"], [{"kind": "synthetic"}], "needs data.kind=mixed"),
    (["data.kind=mixed"], [{"kind": "mixed"}], r"data.sources\[0\].kind"),
    (["data.kind=mixed"], [{"kind": "synthetic", "weight": 0}], r"data.sources\[0\].weight"),
    (["data.kind=mixed"], [{"kind": "images"}], r"data.sources\[0\].root"),
    (["data.kind=mixed", "data.clip_length=4"], [{"kind": "pts", "root": "x"}], "mix clips with clips"),
    (["data.kind=mixed"], [{"kind": "clips", "root": "x"}], "clip_length > 1"),
    (["data.kind=mixed"], [{"kind": "synthetic", "options": {"augment": {"flip": 2}}}],
     r"data.sources\[0\].options.augment.flip"),
    (["data.options.augment.spin=1"], [], r"data.options.augment.spin"),
])
def test_data_config_validation(tmp_path, overrides, sources, match):
    import yaml

    from engine.train.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"sources": sources}} if sources else {}))
    with pytest.raises(ConfigError, match=match):
        load_config(cfg_file, overrides)


def test_defaults_unchanged():
    from engine.train.config import DataConfig, load_config

    d = load_config(None).data
    assert (d.kind, d.sources, d.options, d.clip_length) == ("synthetic", [], {}, 1)
    assert DataConfig().sources == []
