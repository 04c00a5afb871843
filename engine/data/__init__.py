"""Training data: synthetic faces with ground truth, prepared image folders, 300-W ``.pts``
folders, video clips, weighted mixtures of them, and augmentation for all of them.

``build_dataset(data_cfg, split, head)`` picks one from ``data.kind`` (synthetic | images |
pts | clips | mixed) and, for the training split, wraps it in :class:`AugmentedFaces` when
``data.options.augment`` is set (a mixed source's own ``options.augment`` applies to that
source alone).
"""

from __future__ import annotations

from engine.data.augment import IBUG68_MIRROR, AugmentConfig, AugmentedFaces, augment_item, parse_augment
from engine.data.folders import ClipFolderFaces, ImageFolderFaces, find_images, find_videos, read_index
from engine.data.mixed import MixedFaces
from engine.data.pts import PtsFolderFaces, read_pts, write_pts
from engine.data.synthetic import SyntheticClips, SyntheticFaces, SyntheticIdentities, clip_seed, face_seed, identity_seed


def _source(cfg, kind: str, root: str, options: dict, split: str, head, n_samples: int):
    """One plain data set (no augmentation) of ``kind``; None when it has no ``split``."""
    from engine.train.config import ConfigError

    opts = dict(options)
    if kind == "synthetic":
        n = n_samples if split == "train" else cfg.val_samples
        if head is None:
            from engine.head import load_head_model

            head = load_head_model(cfg.head_model, cfg.head_model_path or None)
        if cfg.clip_length > 1:  # one synthetic person per item, clip_length frames
            return SyntheticClips(head, n, cfg.clip_length, cfg.image_size, cfg.seed, split, **opts)
        if getattr(cfg, "views_per_identity", 1) > 1:  # K independent photos of one person per item
            return SyntheticIdentities(head, n, cfg.views_per_identity, cfg.image_size, cfg.seed, split, **opts)
        return SyntheticFaces(head, n, cfg.image_size, cfg.seed, split, **opts)
    if kind not in ("images", "pts", "clips"):
        raise ConfigError(f"data.kind must be synthetic, images, pts, clips or mixed, got '{kind}'")
    if not root:
        raise ConfigError(f"data.kind={kind} needs data.root (a folder prepared by train/prepare_images.py, "
                          f"or for pts a folder of images with .pts files)")
    if kind in ("images", "pts"):
        frac = float(opts.pop("val_fraction", 0.02))
        if split == "val" and frac <= 0:
            return None
        cls = ImageFolderFaces if kind == "images" else PtsFolderFaces
        return cls(root, cfg.image_size, split, frac, **opts)
    if split == "val":
        return None
    return ClipFolderFaces(root, cfg.image_size, max(cfg.clip_length, 1), **opts)


def _augmented(ds, options: dict, split: str):
    aug = parse_augment(options.get("augment"))
    return AugmentedFaces(ds, aug) if (ds is not None and aug is not None and split == "train") else ds


def build_dataset(cfg, split: str, head=None):
    """Dataset for ``cfg.kind`` (synthetic | images | pts | clips | mixed); ``split`` is train or val."""
    opts = {k: v for k, v in dict(cfg.options).items() if k != "augment"}
    if cfg.kind != "mixed":
        ds = _source(cfg, cfg.kind, cfg.root, opts, split, head, cfg.n_samples)
        return _augmented(ds, dict(cfg.options), split)
    from engine.train.config import ConfigError

    parts, weights, index = [], [], []
    for k, s in enumerate(cfg.sources or []):
        sopts = {key: v for key, v in dict(s.options or {}).items() if key != "augment"}
        ds = _source(cfg, s.kind, s.root, sopts, split, head, s.n_samples or cfg.n_samples)
        if ds is not None:
            parts.append(_augmented(ds, dict(s.options or {}), split))
            weights.append(s.weight)
            index.append(k)
    if not parts:
        if split == "val":
            return None
        raise ConfigError("data.kind=mixed needs at least one entry in data.sources")
    # a source without a validation split (clips) is left out of "val"; items keep their data.sources position
    mixed = MixedFaces(parts, weights, cfg.n_samples if split == "train" else cfg.val_samples,
                       seed=cfg.seed + (0 if split == "train" else 1), ids=index)
    return _augmented(mixed, dict(cfg.options), split)


__all__ = ["IBUG68_MIRROR", "AugmentConfig", "AugmentedFaces", "ClipFolderFaces", "ImageFolderFaces", "MixedFaces",
           "PtsFolderFaces", "SyntheticClips", "SyntheticFaces", "SyntheticIdentities", "augment_item",
           "build_dataset", "clip_seed", "face_seed", "find_images", "find_videos", "identity_seed", "parse_augment",
           "read_index", "read_pts", "write_pts"]
