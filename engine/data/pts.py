"""300-W / iBUG ``.pts`` landmark files and folders of images annotated with them.

The format (one file per annotated face)::

    version: 1
    n_points:  68
    {
    446.000 91.000
    ...
    }

Coordinates are 1-based pixel positions (the 300-W convention: the first pixel's centre is
at (1, 1)); ours put the first pixel's centre at (0.5, 0.5) (docs/conventions.md), so
:func:`read_pts` subtracts 0.5 (``one_based=False``: files whose first pixel centre is at
(0, 0) get 0.5 added).

:class:`PtsFolderFaces` (``data.kind: pts``) pairs every image under a folder with the
``.pts`` file of the same stem next to it (300-W, LFPW, HELEN, AFW, iBUG, Menpo-68 as
distributed), or with ``STEM_N.pts`` files for several annotated faces in one image; no
``prepare_images.py`` step is needed. A ``.pts`` file that does not parse as 68 points, or
an image that does not decode, is skipped (the next entry is used), logged and counted in
the item's ``skipped_images`` like the other folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.data.folders import _CropMixin, find_images, split_mask
from engine.errors import ImageError, UserError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class AnnotationError(ImageError):
    """A landmark file that cannot be used (an :class:`ImageError`: skipped like a bad image)."""


def read_pts(path: str | Path, n_points: int | None = 68, one_based: bool = True) -> np.ndarray:
    """Points ``(N, 2)`` of a ``.pts`` file in our pixel convention; an unreadable file, a
    malformed one or (with ``n_points``) one with another number of points is an
    :class:`AnnotationError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} could not be read as a .pts file ({exc.__class__.__name__})") from None
    m = re.search(r"n_points\s*:\s*(\d+)\s*\{(.*?)\}", text, re.S)
    if not m:
        raise AnnotationError(f"{path} is not a .pts file (no 'n_points: N' header followed by {{ ... }})")
    declared = int(m.group(1))
    tokens = m.group(2).split()
    if len(tokens) != 2 * declared or not all(re.fullmatch(_NUMBER, t) for t in tokens):
        raise AnnotationError(f"{path} declares {declared} points but its body does not hold {declared} x/y pairs")
    pts = np.asarray(tokens, np.float64).reshape(declared, 2)
    if n_points is not None and declared != n_points:
        raise AnnotationError(f"{path} has {declared} points, not {n_points}")
    if not np.isfinite(pts).all():
        raise AnnotationError(f"{path} holds non-finite coordinates")
    return (pts - 0.5 if one_based else pts + 0.5).astype(np.float32)


def write_pts(path: str | Path, points: np.ndarray, one_based: bool = True) -> None:
    """Write points ``(N, 2)`` in our pixel convention as a 300-W ``.pts`` file."""
    pts = np.asarray(points, np.float64) + (0.5 if one_based else -0.5)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    Path(path).write_text(f"version: 1\nn_points:  {len(pts)}\n{{\n{body}\n}}\n")


def pair_annotations(root: Path) -> list[tuple[str, str]]:
    """``(image, pts)`` relative paths: each ``.pts`` with the image of the same stem in its
    folder, else (``STEM_N.pts``) the image ``STEM``; sorted, unmatched files ignored."""
    images: dict[tuple[str, str], str] = {}
    for p in find_images(root):
        rel = p.relative_to(root)
        images.setdefault((rel.parent.as_posix(), rel.stem), rel.as_posix())
    pairs = []
    for p in sorted(root.rglob("*.pts")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        folder = rel.parent.as_posix()
        img = images.get((folder, rel.stem))
        if img is None and re.fullmatch(r".+_\d+", rel.stem):
            img = images.get((folder, rel.stem.rsplit("_", 1)[0]))
        if img is not None:
            pairs.append((img, rel.as_posix()))
    return pairs


class PtsFolderFaces(Dataset, _CropMixin):
    """Aligned face crops of a folder of images with ``.pts`` annotations: image (3,S,S),
    landmarks (68,2) crop px (the annotation, not a detector's)."""

    def __init__(self, root: str | Path, image_size: int = 224, split: str = "train",
                 val_fraction: float = 0.0, crop_scale: float = 1.25, one_based: bool = True) -> None:
        self.root, self.image_size, self.crop_scale = Path(root), image_size, crop_scale
        self.one_based = one_based
        if not self.root.is_dir():
            raise UserError(f"{self.root} is not a folder")
        pairs = pair_annotations(self.root)
        keep = split_mask(len(pairs), split, val_fraction)
        self.pairs = [p for p, k in zip(pairs, keep) if k]
        self.skipped = 0
        if not self.pairs:
            raise UserError(f"{self.root} has no {split} image with a .pts file of the same name next to it")

    def __len__(self) -> int:
        return len(self.pairs)

    def _get(self, j: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        img, pts = self.pairs[j]
        try:
            lm = read_pts(self.root / pts, 68, self.one_based)
        except UserError as exc:
            self._skip(pts, exc)
            return None
        return self._load(img, lm)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        before = self.skipped
        for k in range(len(self.pairs)):
            j = (i + k) % len(self.pairs)
            got = self._get(j)
            if got is not None:
                img, lm = got
                return {"image": img, "landmarks": lm, "landmarks_valid": torch.ones(68, dtype=torch.bool),
                        "index": torch.tensor(j), "skipped_images": torch.tensor(self.skipped - before)}
        raise UserError(f"no annotated image under {self.root} could be read")
