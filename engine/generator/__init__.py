"""Synthetic face generators (faces with known parameters, for training and evaluation).

* :mod:`engine.generator.basic` — the original generator (MoFA's ground-truth protocol: the
  evaluation's faces and the default network's training data). Its names are re-exported
  here, so ``from engine.generator import render_sample`` keeps working; its output is
  frozen (bit-identical images per seed).
* :mod:`engine.generator.realistic` — photo-like faces (procedural UV skin of every tone,
  eyes, hair, occluders, directional lights with shadows, wide cameras, degradations):
  :func:`render_realistic`, :func:`render_realistic_views` (K photos of one person),
  :class:`RealisticConfig`; its fine detail (wrinkles, pores: a UV displacement map with
  per-unit ground truth) is :mod:`engine.generator.wrinkles`. Imported lazily (``from
  engine.generator import render_realistic`` works too).
"""

from engine.generator.basic import (
    ClipConfig,
    SyntheticConfig,
    SyntheticSample,
    clip_frame_params,
    directional_sh,
    face_params,
    identity_view_params,
    render_clip,
    render_colours,
    render_identity_views,
    render_params,
    render_sample,
    sample_params,
    vertex_colours,
)

__all__ = [
    "ClipConfig",
    "SyntheticConfig",
    "SyntheticSample",
    "clip_frame_params",
    "directional_sh",
    "face_params",
    "identity_view_params",
    "render_clip",
    "render_colours",
    "render_identity_views",
    "render_params",
    "render_sample",
    "sample_params",
    "vertex_colours",
    "RealisticConfig",
    "RealisticSample",
    "render_realistic",
    "render_realistic_views",
]


def __getattr__(name: str):
    if name in ("RealisticConfig", "RealisticSample", "render_realistic", "render_realistic_views"):
        from engine.generator import realistic

        return getattr(realistic, name)
    raise AttributeError(f"module 'engine.generator' has no attribute {name!r}")
