"""Real photos and videos: image folders (any layout) and clips, with cached landmarks.

``train/prepare_images.py ROOT`` detects the face in every image once (``engine.detect``)
and in every ``frame_step``-th frame of every video (mp4, avi, mov, mkv, webm, m4v; decoded
with OpenCV), and writes ``ROOT/landmarks68.npz``: relative ``paths``, ``frames`` (the
frame number inside a video, −1 for an image), iBUG-68 ``landmarks`` in original-image
pixels and a ``status`` per entry (ok / noface / corrupt). The data sets read that index,
load the photo with ``engine.photo.load_image`` (or decode the video frame) and crop it with
``engine.photo.align_crop``; landmarks come back in crop pixels.

Files that stopped decoding since the index was written are skipped (the next valid file
is used), logged (a warning naming the file on the ``engine.data`` logger) and counted:
``dataset.skipped`` in this process, and in every item as ``skipped_images`` (how many
unreadable files were passed over to make it), which the trainer sums into
``data/skipped_images`` of ``metrics.jsonl`` and the run summary - the item is the only
channel that works with DataLoader workers, each of which has its own copy of the data set.

Layouts: FFHQ / CelebA (a flat or nested folder of images) -> ``data.kind: images``;
VoxCeleb (``ROOT/<person>/<video>/<clip>.mp4``, or extracted frames ``.../<clip>/*.jpg``)
-> ``data.kind: clips`` (one clip source per video file, or per folder of frames) or
``data.kind: images`` (every indexed frame as a photo).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import ImageError, UserError

INDEX_NAME = "landmarks68.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
log = logging.getLogger("engine.data")


def _find(root: Path, suffixes: set[str]) -> list[Path]:
    out = [p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
           and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(out)


def find_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden folders skipped)."""
    return _find(root, IMAGE_SUFFIXES)


def find_videos(root: Path) -> list[Path]:
    """All video files under ``root`` (recursive, sorted, hidden folders skipped)."""
    return _find(root, VIDEO_SUFFIXES)


class FolderIndex(NamedTuple):
    """The usable entries of a prepared folder: relative ``paths``, ``landmarks (N, 68, 2)``
    and ``frames (N,)`` (frame number in a video, −1 for an image)."""

    paths: list[str]
    landmarks: np.ndarray
    frames: np.ndarray


def read_index(root: Path) -> FolderIndex:
    """The usable (status ok) entries of a prepared folder's index."""
    p = Path(root) / INDEX_NAME
    if not p.is_file():
        raise UserError(f"{root} has no {INDEX_NAME}; run python train/prepare_images.py {root} first")
    with np.load(p, allow_pickle=False) as z:
        paths, lms, status = z["paths"], z["landmarks"], z["status"]
        frames = z["frames"] if "frames" in z.files else np.full(len(paths), -1)  # indexes before videos
    ok = status == "ok"
    return FolderIndex([str(x) for x in paths[ok]], lms[ok].astype(np.float32), frames[ok].astype(np.int64))


def decode_frames(path: Path, frames: list[int]) -> list[np.ndarray]:
    """RGB uint8 frames (by frame number, ascending) of a video, decoded with OpenCV; an
    unreadable file or a missing frame is an :class:`ImageError`."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError(f"{path} could not be opened as a video")
        out = []
        pos = -1
        for f in frames:
            if f != pos + 1:
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(f))
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise ImageError(f"{path} has no readable frame {f}")
            pos = f
            out.append(np.ascontiguousarray(bgr[..., ::-1]))
        return out
    finally:
        cap.release()


class _CropMixin:
    root: Path
    image_size: int
    crop_scale: float
    skipped: int

    def _crop(self, rgb: np.ndarray, lm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from engine.photo import align_crop

        crop = align_crop(rgb, lm, size=self.image_size, scale=self.crop_scale)
        img = torch.from_numpy(crop.image).permute(2, 0, 1).float() / 255.0
        return img, torch.from_numpy(crop.to_crop(lm).astype(np.float32))

    def _skip(self, what: str, exc: Exception) -> None:
        self.skipped += 1
        log.warning("skipped unreadable %s (%s)", what, exc)

    def _load(self, rel: str, lm: np.ndarray, frame: int = -1) -> tuple[torch.Tensor, torch.Tensor] | None:
        from engine.photo import load_image

        try:
            rgb = decode_frames(self.root / rel, [frame])[0] if frame >= 0 else load_image(self.root / rel).rgb
        except UserError as exc:
            self._skip(f"{rel}" + (f" frame {frame}" if frame >= 0 else ""), exc)
            return None
        return self._crop(rgb, lm)


def split_mask(n: int, split: str, val_fraction: float) -> np.ndarray:
    """A fixed, hash-free split of ``n`` sorted entries: every k-th one (k = 1 / val_fraction)
    is validation; a positive fraction of a folder of two or more keeps at least one."""
    n_val = int(round(n * val_fraction)) or int(val_fraction > 0 and n >= 2)
    idx = np.arange(n)
    is_val = (idx % max(int(1 / val_fraction), 1) == 0) if n_val else np.zeros(n, bool)
    return is_val if split == "val" else ~is_val


class ImageFolderFaces(Dataset, _CropMixin):
    """Aligned face crops of a prepared folder (photos, and indexed video frames):
    image (3,S,S), landmarks (68,2) crop px."""

    def __init__(self, root: str | Path, image_size: int = 224, split: str = "train",
                 val_fraction: float = 0.0, crop_scale: float = 1.25) -> None:
        self.root, self.image_size, self.crop_scale = Path(root), image_size, crop_scale
        idx = read_index(self.root)
        keep = split_mask(len(idx.paths), split, val_fraction)
        self.paths = [p for p, k in zip(idx.paths, keep) if k]
        self.landmarks = idx.landmarks[keep]
        self.frames = idx.frames[keep]
        self.skipped = 0
        if not self.paths:
            raise UserError(f"{self.root} has no usable {split} images (see {INDEX_NAME})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        for k in range(len(self.paths)):
            j = (i + k) % len(self.paths)
            got = self._load(self.paths[j], self.landmarks[j], int(self.frames[j]))
            if got is not None:
                img, lm = got
                return {"image": img, "landmarks": lm, "landmarks_valid": torch.ones(68, dtype=torch.bool),
                        "index": torch.tensor(j), "skipped_images": torch.tensor(k)}
        raise UserError(f"no image under {self.root} could be read")


class ClipFolderFaces(Dataset, _CropMixin):
    """Clips of one person: a clip source is one video file (its indexed frames) or one
    folder of frame images. Item ``i`` is ``clip_length`` consecutive indexed frames of
    source ``i mod n_sources`` starting at a position drawn from a generator seeded with
    ``i`` (deterministic; a source shorter than the clip repeats its last frame): image
    (T,3,S,S), landmarks (T,68,2), ``clip`` (the source), ``person`` (its top-level
    folder, e.g. a VoxCeleb identity) and ``frames`` (T,) (frame numbers, −1 for images). A source none of whose frames decode is replaced by
    the next one, and its frames are counted in ``skipped_images``."""

    def __init__(self, root: str | Path, image_size: int = 224, clip_length: int = 2,
                 crop_scale: float = 1.25, min_frames: int = 2) -> None:
        self.root, self.image_size, self.crop_scale = Path(root), image_size, crop_scale
        self.clip_length = clip_length
        idx = read_index(self.root)
        groups: dict[str, list[int]] = {}
        for k, (p, f) in enumerate(zip(idx.paths, idx.frames)):
            groups.setdefault(p if f >= 0 else str(Path(p).parent), []).append(k)
        order = sorted((g, sorted(v, key=lambda k: (int(idx.frames[k]), idx.paths[k]))) for g, v in groups.items())
        self.sources = [g for g, v in order if len(v) >= min_frames]
        self.clips = [v for _, v in order if len(v) >= min_frames]
        people = sorted({Path(g).parts[0] if len(Path(g).parts) > 1 else "." for g in self.sources})
        self.person = [people.index(Path(g).parts[0] if len(Path(g).parts) > 1 else ".") for g in self.sources]
        self.paths, self.landmarks, self.frames, self.skipped = idx.paths, idx.landmarks, idx.frames, 0
        if not self.clips:
            raise UserError(f"{self.root} has no video or folder with at least {min_frames} usable frames")

    def __len__(self) -> int:
        return len(self.clips)

    def _window(self, i: int) -> list[int]:
        frames = self.clips[i % len(self.clips)]
        T = self.clip_length
        if len(frames) < T:
            return frames + [frames[-1]] * (T - len(frames))
        start = int(np.random.default_rng(i).integers(0, len(frames) - T + 1))
        return frames[start:start + T]

    def _read_clip(self, pick: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        first = pick[0]
        if self.frames[first] >= 0:  # one video: decode the window in one pass
            rel = self.paths[first]
            wanted = sorted({int(self.frames[j]) for j in pick})
            try:
                rgb = dict(zip(wanted, decode_frames(self.root / rel, wanted)))
            except UserError as exc:
                self._skip(rel, exc)
                return None
            return [self._crop(rgb[int(self.frames[j])], self.landmarks[j]) for j in pick]
        out = []
        for j in pick:
            got = self._load(self.paths[j], self.landmarks[j])
            if got is None:
                return None
            out.append(got)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        before = self.skipped
        for k in range(len(self.clips)):
            c = (i + k) % len(self.clips)
            pick = self._window(i if k == 0 else c)
            got = self._read_clip(pick)
            if got is None:
                continue
            return {"image": torch.stack([g[0] for g in got]), "landmarks": torch.stack([g[1] for g in got]),
                    "landmarks_valid": torch.ones(self.clip_length, 68, dtype=torch.bool),
                    "clip": torch.tensor(c), "person": torch.tensor(self.person[c]),
                    "frames": torch.tensor([int(self.frames[j]) for j in pick]),
                    "skipped_images": torch.tensor(self.skipped - before)}
        raise UserError(f"no clip under {self.root} could be read")
