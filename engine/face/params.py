"""``FaceParams``: the one description of faces in images that every predictor returns.

The fitter, the learned methods (MoFA, and later CEST/DECA), the synthetic generator's
ground truth and the output writers all speak this dataclass, and
:class:`engine.face.FaceDecoder` turns it into geometry, landmarks, shading and images.

Batch-first: every tensor has a leading batch dimension ``B`` (one photo -> ``B = 1``).
Units: metres in the model frame (docs/conventions.md); the camera maps model-frame points
to pixels of an image of ``camera.image_size = (H, W)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from engine.render.camera import Camera, PerspectiveCamera, WeakPerspectiveCamera

__all__ = ["FaceParams", "stack_params"]

_TENSOR_FIELDS = ("identity", "expression", "pose", "sh", "albedo", "reflectance", "albedo_map", "displacement",
                  "displacement_window", "detail_code", "visibility", "landmarks")


def _camera_map(camera: Camera, fn) -> Camera:
    """Apply ``fn`` to every tensor of a camera (both camera kinds)."""
    if isinstance(camera, PerspectiveCamera):
        return PerspectiveCamera(fn(camera.K), fn(camera.R), fn(camera.t), camera.image_size)
    if isinstance(camera, WeakPerspectiveCamera):
        return WeakPerspectiveCamera(fn(camera.scale), fn(camera.translation), camera.image_size,
                                     camera.depth_offset)
    raise TypeError(f"unknown camera type {type(camera).__name__}")


@dataclass
class FaceParams:
    """Head-model coefficients, pose, camera, lighting and reflectance of ``B`` faces.

    Estimated quantities (decoded by :class:`engine.face.FaceDecoder`):

    * ``identity (B, K_id)``, ``expression (B, K_exp)``: head-model coefficients in the
      model's own units (identity prior std is ``head.identity_std``; ARKit weights for
      open/ICT);
    * ``pose (B, J, 3)``: local joint axis-angles (jaw, neck, eyes; docs/conventions.md),
      zeros for a model without joints (``J = 0``);
    * ``camera``: :class:`~engine.render.PerspectiveCamera` (``K, R, t``: the global head
      pose is the camera's ``R, t``) or :class:`~engine.render.WeakPerspectiveCamera`;
    * ``sh (B, 9, 3)``: raw SH lighting in the view frame (no ambient offset;
      ``colour = albedo · sh_basis(n) @ sh``);
    * reflectance: ``albedo (B, V, 3)`` per vertex, ``reflectance (B, K, 3)`` coefficients of
      the decoder's reflectance model (e.g. MoFA's basis), and/or ``albedo_map (B, 3, S, S)``
      a UV texture (v up); colours are linear RGB in [0, 1];
    * ``displacement (B, 1, S, S)``: optional UV detail along the normals, metres, over the
      whole UV layout or, with ``displacement_window (B, 4)`` = ``(u0, v0, u1, v1)``, over
      that UV sub-rectangle only (0 outside; :func:`engine.render.uv.to_window`);
      ``detail_code (B, D)``: the DECA detail code it was decoded from (with the method's
      detail decoder it gives the detail at any other expression: animated detail maps).

    Measurements that came with the estimate (carried to the outputs, not decoded):
    ``visibility (B, V)`` in [0, 1] (how well each vertex was seen in the image),
    ``landmarks (B, 68, 2)`` (the detected iBUG-68 points it was fitted to, image pixels),
    ``timings`` and ``losses`` (seconds / final loss terms, for the whole batch).
    """

    identity: Tensor
    expression: Tensor
    pose: Tensor
    camera: Camera
    sh: Tensor
    albedo: Tensor | None = None
    reflectance: Tensor | None = None
    albedo_map: Tensor | None = None
    displacement: Tensor | None = None
    displacement_window: Tensor | None = None
    detail_code: Tensor | None = None
    visibility: Tensor | None = None
    landmarks: Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        return int(self.identity.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image the camera projects into."""
        return tuple(self.camera.image_size)  # type: ignore[return-value]

    # ------------------------------------------------------------------ tensor plumbing
    def map(self, fn) -> "FaceParams":
        """A copy with ``fn`` applied to every tensor (camera included)."""
        kw: dict[str, Any] = {k: (fn(getattr(self, k)) if getattr(self, k) is not None else None)
                              for k in _TENSOR_FIELDS}
        return dataclasses.replace(self, camera=_camera_map(self.camera, fn), timings=dict(self.timings),
                                   losses=dict(self.losses), **kw)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FaceParams":
        """Move (and optionally cast floating tensors); integer tensors keep their dtype."""
        def move(x: Tensor) -> Tensor:
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)
        return self.map(move)

    def cpu(self) -> "FaceParams":
        return self.to("cpu")

    def detach(self) -> "FaceParams":
        return self.map(lambda x: x.detach())

    def select(self, index: int | slice) -> "FaceParams":
        """Batch items ``index`` (an int keeps a batch of one)."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        return self.map(lambda x: x[sl])

    def replace(self, **changes: Any) -> "FaceParams":
        """``dataclasses.replace`` (e.g. ``params.replace(albedo=None)``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def neutral(cls, head, camera: Camera, batch_size: int | None = None) -> "FaceParams":
        """Zero coefficients and pose, white ambient light (SH band 0 only), no reflectance."""
        from engine.render.shading import SH_CONSTANTS

        B = camera.batch_size if batch_size is None else batch_size
        ref = head.template
        sh = ref.new_zeros(B, 9, 3)
        sh[:, 0] = 1.0 / SH_CONSTANTS[0]
        return cls(identity=ref.new_zeros(B, head.n_identity), expression=ref.new_zeros(B, head.n_expression),
                   pose=ref.new_zeros(B, head.n_joints, 3), camera=camera, sh=sh)


def stack_params(items: list[FaceParams]) -> FaceParams:
    """Concatenate batches of the same kind (same optional fields present) along dim 0."""
    if not items:
        raise ValueError("nothing to stack")
    first = items[0]
    cat = lambda name: (torch.cat([getattr(p, name) for p in items]) if getattr(first, name) is not None  # noqa: E731
                        else None)
    cams = [p.camera for p in items]
    if isinstance(first.camera, PerspectiveCamera):
        camera: Camera = PerspectiveCamera(torch.cat([c.K for c in cams]), torch.cat([c.R for c in cams]),
                                           torch.cat([c.t for c in cams]), first.camera.image_size)
    else:
        camera = WeakPerspectiveCamera(torch.cat([c.scale for c in cams]), torch.cat([c.translation for c in cams]),
                                       first.camera.image_size, first.camera.depth_offset)
    return FaceParams(camera=camera, timings=dict(first.timings), losses=dict(first.losses),
                      **{k: cat(k) for k in _TENSOR_FIELDS})
