"""Training data: synthetic faces with ground truth, prepared image folders, video clips.

``build_dataset(data_cfg, split, head)`` picks one from ``data.kind``.
"""

from __future__ import annotations

from engine.data.folders import ClipFolderFaces, ImageFolderFaces, find_images, read_index
from engine.data.synthetic import SyntheticClips, SyntheticFaces, SyntheticIdentities, clip_seed, face_seed, identity_seed


def build_dataset(cfg, split: str, head=None):
    """Dataset for ``cfg.kind`` (synthetic | images | clips); ``split`` is train or val."""
    from engine.train.config import ConfigError

    opts = dict(cfg.options)
    if cfg.kind == "synthetic":
        n = cfg.n_samples if split == "train" else cfg.val_samples
        if head is None:
            from engine.head import load_head_model

            head = load_head_model(cfg.head_model, cfg.head_model_path or None)
        if cfg.clip_length > 1:  # one synthetic person per item, clip_length frames
            return SyntheticClips(head, n, cfg.clip_length, cfg.image_size, cfg.seed, split, **opts)
        if getattr(cfg, "views_per_identity", 1) > 1:  # K independent photos of one person per item
            return SyntheticIdentities(head, n, cfg.views_per_identity, cfg.image_size, cfg.seed, split, **opts)
        return SyntheticFaces(head, n, cfg.image_size, cfg.seed, split, **opts)
    if not cfg.root:
        raise ConfigError(f"data.kind={cfg.kind} needs data.root (a folder prepared by "
                          f"train/prepare_images.py)")
    if cfg.kind == "images":
        frac = float(opts.pop("val_fraction", 0.02))
        if split == "val" and frac <= 0:
            return None
        return ImageFolderFaces(cfg.root, cfg.image_size, split, frac, **opts)
    if cfg.kind == "clips":
        if split == "val":
            return None
        return ClipFolderFaces(cfg.root, cfg.image_size, max(cfg.clip_length, 1), **opts)
    raise ConfigError(f"data.kind must be synthetic, images or clips, got '{cfg.kind}'")


__all__ = ["ClipFolderFaces", "ImageFolderFaces", "SyntheticClips", "SyntheticFaces", "SyntheticIdentities",
           "build_dataset", "clip_seed", "face_seed", "find_images", "identity_seed", "read_index"]
