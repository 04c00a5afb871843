"""Real photos: image folders (any layout) and video-frame clips, with cached landmarks.

``train/prepare_images.py ROOT`` detects the face in every image once (``engine.detect``)
and writes ``ROOT/landmarks68.npz``: relative ``paths``, iBUG-68 ``landmarks`` in
original-image pixels and a ``status`` per file (ok / noface / corrupt). The data sets
read that index, load the photo with ``engine.photo.load_image`` and crop it with
``engine.photo.align_crop``; landmarks come back in crop pixels. Files that stopped
decoding since the index was written are skipped (the next valid file is used) and counted:
``dataset.skipped`` in this process, and in every item as ``skipped_images`` (how many
unreadable files were passed over to make it), which the trainer sums into
``data/skipped_images`` - the item is the only channel that works with DataLoader workers,
each of which has its own copy of the data set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import UserError

INDEX_NAME = "landmarks68.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def find_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden folders skipped)."""
    out = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
           and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(out)


def read_index(root: Path) -> tuple[list[str], np.ndarray]:
    """Relative paths and (N, 68, 2) landmarks of the usable images of a prepared folder."""
    p = root / INDEX_NAME
    if not p.is_file():
        raise UserError(f"{root} has no {INDEX_NAME}; run python train/prepare_images.py {root} first")
    with np.load(p, allow_pickle=False) as z:
        paths, lms, status = z["paths"], z["landmarks"], z["status"]
    ok = status == "ok"
    return [str(x) for x in paths[ok]], lms[ok].astype(np.float32)


class _CropMixin:
    root: Path
    image_size: int
    crop_scale: float
    skipped: int

    def _load(self, rel: str, lm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        from engine.photo import align_crop, load_image

        try:
            photo = load_image(self.root / rel)
        except UserError:
            self.skipped += 1
            return None
        crop = align_crop(photo.rgb, lm, size=self.image_size, scale=self.crop_scale)
        img = torch.from_numpy(crop.image).permute(2, 0, 1).float() / 255.0
        return img, torch.from_numpy(crop.to_crop(lm).astype(np.float32))


class ImageFolderFaces(Dataset, _CropMixin):
    """Aligned face crops of a prepared folder: image (3,S,S), landmarks (68,2) crop px."""

    def __init__(self, root: str | Path, image_size: int = 224, split: str = "train",
                 val_fraction: float = 0.0, crop_scale: float = 1.25) -> None:
        self.root, self.image_size, self.crop_scale = Path(root), image_size, crop_scale
        paths, lms = read_index(self.root)
        n_val = int(round(len(paths) * val_fraction))
        # a fixed, hash-free split: every k-th file is validation
        idx = np.arange(len(paths))
        is_val = (idx % max(int(1 / val_fraction), 1) == 0) if n_val else np.zeros(len(paths), bool)
        keep = is_val if split == "val" else ~is_val
        self.paths = [p for p, k in zip(paths, keep) if k]
        self.landmarks = lms[keep]
        self.skipped = 0
        if not self.paths:
            raise UserError(f"{self.root} has no usable {split} images (see {INDEX_NAME})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        for k in range(len(self.paths)):
            j = (i + k) % len(self.paths)
            got = self._load(self.paths[j], self.landmarks[j])
            if got is not None:
                img, lm = got
                return {"image": img, "landmarks": lm, "landmarks_valid": torch.ones(68, dtype=torch.bool),
                        "index": torch.tensor(j), "skipped_images": torch.tensor(k)}
        raise UserError(f"no image under {self.root} could be read")


class ClipFolderFaces(Dataset, _CropMixin):
    """Clips grouped by parent folder (one folder = one video/identity). Item ``i`` is
    ``clip_length`` frames of clip ``i mod n_clips``, chosen by a generator seeded with
    ``i`` (deterministic): image (T,3,S,S), landmarks (T,68,2)."""

    def __init__(self, root: str | Path, image_size: int = 224, clip_length: int = 2,
                 crop_scale: float = 1.25, min_frames: int = 2) -> None:
        self.root, self.image_size, self.crop_scale = Path(root), image_size, crop_scale
        self.clip_length = clip_length
        paths, lms = read_index(self.root)
        groups: dict[str, list[int]] = {}
        for k, p in enumerate(paths):
            groups.setdefault(str(Path(p).parent), []).append(k)
        self.clips = [v for _, v in sorted(groups.items()) if len(v) >= min_frames]
        self.paths, self.landmarks, self.skipped = paths, lms, 0
        if not self.clips:
            raise UserError(f"{self.root} has no folder with at least {min_frames} usable frames")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames = self.clips[i % len(self.clips)]
        g = np.random.default_rng(i)
        pick = g.choice(frames, size=self.clip_length, replace=len(frames) < self.clip_length)
        imgs, lms = [], []
        before = self.skipped
        for j in pick:
            got = self._load(self.paths[j], self.landmarks[j])
            if got is None:
                got = next((x for x in (self._load(self.paths[f], self.landmarks[f]) for f in frames)
                            if x), None)
            if got is None:
                raise UserError(f"no frame of clip folder {Path(self.paths[frames[0]]).parent} under "
                                f"{self.root} could be read")
            imgs.append(got[0])
            lms.append(got[1])
        return {"image": torch.stack(imgs), "landmarks": torch.stack(lms),
                "landmarks_valid": torch.ones(self.clip_length, 68, dtype=torch.bool),
                "clip": torch.tensor(i % len(self.clips)),
                "skipped_images": torch.tensor(self.skipped - before)}
