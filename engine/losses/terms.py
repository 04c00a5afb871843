"""The loss library: named terms over decoded faces, combined with weights from YAML.

A term is a small function ``term(inputs: LossInputs) -> Tensor (B,)`` over what
:class:`engine.face.FaceDecoder` produced and what the image says (the photo sampled at the
projected vertices, detected landmarks, contour points). Fitting and every learned method
pick terms by name with weights, e.g. a training config's

    model:
      losses: {photometric: 1.92, landmark: 300, identity_prior: 2.9e-5, expression_range: 1.0}

and :func:`weighted_sum` returns the weighted total and each term for logging. Terms:

=================  ==============================================================
photometric        MoFA's ℓ2,1 per-vertex colour residual over ``photo_weights``
landmark           weighted mean squared landmark distance (in ``landmark_scale`` units)
contour            detected contour points to the model's silhouette (along its normal)
identity_prior     Σ (identity / head.identity_std)²
expression_prior   Σ expression²
expression_l1      Σ |expression| (sparsity), each unit times ``expression_l1_weights``
expression_range   squared excursion outside ``head.expression_range``
jaw_prior          squared jaw rotation (radians²)
reflectance_prior  Σ reflectance coefficients² (prior-std units)
eye_closure        DECA's: L1 between the model's and the target's upper-to-lower
                   eyelid offsets (iBUG 37-41, 38-40, 43-47, 44-46), ``landmark_scale`` units
identity           DECA's: 1 − cosine of face-recognition descriptors
                   (``identity_net``, frozen) of the render composited over ``image``
                   and of ``image``, both cut as face chips from the *target* landmarks;
                   gradients reach the render
shape_consistency  DECA's: swap the identity codes within each group of ``group_size``
                   consecutive items (views of one person), decode, and apply the
                   ``consistency_weights`` terms (default photometric + landmark, with
                   ``image`` re-sampled at the new vertices) to the swapped faces
photometric_l1     masked ℓ1 per-vertex colour residual over ``photo_weights`` (CEST)
reflectance_symmetry  photometric_l1 of the face rendered with its UV ``albedo_map``
                   mirrored left/right (:func:`engine.texture.flip_uv_map`; CEST)
clip_consistency   photometric_l1 of each frame rendered with the identity and
                   reflectance of one other frame of its clip, drawn at random
                   (``group_size`` consecutive items form a clip; one extra render per
                   frame: O(T) per clip, not O(T²); CEST)
light_level        (mean shading over ``photo_weights`` − ``light_level``)², per colour
                   channel: the fitter's light-level prior (issue #17) as a term, fixing
                   the scale that albedo × light leaves free (CEST's default network)
detail_photometric DECA's: ℓ1 between ``image`` and the render shaded with the detail
                   normals (``params.displacement``) over the ``detail_region`` pixels,
                   minus ``occlusion``; per pixel (the detail is finer than the mesh)
detail_consistency DECA's: the detail codes swapped within each group of
                   ``group_size`` views of one person, re-decoded with each view's own
                   expression and jaw (``detail_decoder``), then detail_photometric
detail_regularisation  mean |displacement| over ``detail_texels`` (UV mask), mm
detail_symmetry    mean |D − mirrored D| over ``detail_texels`` (soft symmetry), mm
=================  ==============================================================

Supervised terms, for synthetic data that knows the answer (``LossInputs.gt_*``, e.g. from
a synthetic item's ``gt_*`` tensors). The true camera is first turned about its centre so
that its ray through the *predicted* camera's principal point becomes its optical axis
(:func:`view_aligned_rotation`): a network whose camera has the principal point at the crop
centre (MoFA) then learns the head's rotation as seen along that ray, which is what the crop
shows (for a face off the true optical axis the two differ by the off-axis angle).

=================  ==============================================================
vertices           mean distance (mm) of camera-frame vertices, each mesh centred at
                   its ``vertex_weights`` centroid, to the (view-aligned) truth:
                   pose, shape and expression together, without the translation
shape              mean distance (mm) of posed model-frame vertices to the truth
                   (shape and expression; no camera)
rotation           squared angle (radians²) between the predicted and the
                   (view-aligned) true camera rotation
identity_gt        Σ ((identity − gt_identity) / head.identity_std)²
expression_gt      Σ (expression − gt_expression)²
pose_gt            Σ over joints of the squared axis-angle difference (radians²); only
                   the joints ``pose_joint_weights`` weighs, when given (a network's
                   predicted joints: the others it cannot move)
albedo             mean |albedo − gt_albedo| over ``albedo_weights`` (default the
                   head's ``face_skin`` region), sRGB units
detail_gt          mean |displacement − gt_displacement| over ``detail_texels``, mm
                   (the truth resampled to the prediction's size)
detail_gt_l2       the same, squared, in (0.1 mm)² (optimum: the expected detail)
=================  ==============================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as Fn
from torch import Tensor

from engine.errors import UserError
from engine.face.decoder import Decoded
from engine.losses.landmark import eye_closure_loss, landmark_loss
from engine.losses.photometric import photometric_l1, photometric_l21
from engine.losses.priors import range_penalty, tikhonov

__all__ = ["LANDMARK_TERMS", "LossInputs", "TERMS", "clip_partners", "contour_loss", "identity_distance",
           "register_term", "weighted_sum", "check_weights", "swap_group_identities", "view_aligned_rotation"]

#: terms that need target landmarks (a batch without them leaves them out)
LANDMARK_TERMS = ("landmark", "eye_closure", "identity")


@dataclass
class LossInputs:
    """What the terms read. Only the fields a selected term needs must be set.

    ``decoded``: the decoder's output for the current parameters. ``observed (B, V, 3)``:
    the image sampled at the projected vertices (``decoded.sample(image)``), with
    ``photo_weights (B, V)`` in [0, 1] (visibility × region). ``landmarks (B, N, 2)``:
    target pixels for ``landmark_points (B, N, 2)`` (default ``decoded.landmarks2d``),
    weighted by ``landmark_weights (N,)|(B, N)``, distances divided by ``landmark_scale``
    (e.g. the crop size, so the term is resolution-independent). ``contour (B, M, 2)``:
    detected silhouette points in pixels, matched to vertices of
    ``decoded.silhouette(contour_band, contour_region)``.
    """

    decoded: Decoded
    observed: Tensor | None = None
    photo_weights: Tensor | None = None
    landmarks: Tensor | None = None
    landmark_points: Tensor | None = None
    landmark_weights: Tensor | None = None
    landmark_scale: float = 1.0
    contour: Tensor | None = None
    contour_band: float = 0.3
    contour_region: Tensor | None = None
    expression_l1_weights: Tensor | None = None  # (K_exp,) | (B, K_exp) per-unit ℓ1 weights (default 1)
    # the photo itself (B, 3, H, W) in [0, 1] in the camera's pixels (identity, shape_consistency)
    image: Tensor | None = None
    # frozen face-recognition network: (B, 3, 150, 150) chips in [0, 1] -> (B, D) descriptors
    identity_net: Callable[[Tensor], Tensor] | None = None
    # items b·K .. b·K+K-1 show one person (shape_consistency: views; clip_consistency: the
    # frames of one clip, B = clips · group_size)
    group_size: int = 1
    # light_level: the mean shading the term pulls towards (sRGB-space units, 1 = a white
    # surface renders white; engine.fitting.FitConfig.light_level's default, tuned there)
    light_level: float = 0.85
    consistency_weights: Mapping[str, float] | None = None
    # ground truth (synthetic data), for the supervised terms
    gt_vertices: Tensor | None = None  # (B, V, 3) posed, model frame, metres
    gt_K: Tensor | None = None  # (B, 3, 3) true camera of the image the prediction was made on
    gt_R: Tensor | None = None  # (B, 3, 3)
    gt_t: Tensor | None = None  # (B, 3)
    gt_identity: Tensor | None = None  # (B, K_id)
    gt_expression: Tensor | None = None  # (B, K_exp)
    gt_pose: Tensor | None = None  # (B, J, 3)
    pose_joint_weights: Tensor | None = None  # (J,) joints pose_gt counts (default all: 1)
    gt_albedo: Tensor | None = None  # (B, V, 3) sRGB
    gt_displacement: Tensor | None = None  # (B, 1, S, S) UV detail, metres
    # DECA's detail stage: (codes (B, D), expression (B, E), pose (B, J, 3)) -> (B, 1, M, M)
    detail_decoder: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    detail_texels: Tensor | None = None  # (1, 1, M, M) UV mask of the texels the detail terms count
    detail_region: Tensor | None = None  # (V,) vertices whose pixels detail_photometric counts
    occlusion: Tensor | None = None  # (B, H, W) pixels hidden by props (left out of detail_photometric)
    vertex_weights: Tensor | None = None  # (V,) | (B, V) weights of the vertex terms (default uniform)
    albedo_weights: Tensor | None = None  # (V,) | (B, V) weights of the albedo term (default face_skin)

    @property
    def params(self):
        return self.decoded.params

    @property
    def head(self):
        return self.decoded.head


def _need(value, name: str, term: str):
    if value is None:
        raise ValueError(f"loss term {term!r} needs LossInputs.{name}")
    return value


def _photometric(x: LossInputs) -> Tensor:
    obs = _need(x.observed, "observed", "photometric")
    w = _need(x.photo_weights, "photo_weights", "photometric")
    return photometric_l21(x.decoded.colour, obs, w)


def _photometric_l1(x: LossInputs) -> Tensor:
    obs = _need(x.observed, "observed", "photometric_l1")
    w = _need(x.photo_weights, "photo_weights", "photometric_l1")
    return photometric_l1(x.decoded.colour, obs, w)


def _rerendered(x: LossInputs, term: str, **changes) -> Tensor:
    """photometric_l1 of the face decoded again with ``changes`` to its parameters, against
    the same observation and weights (one more decoder call for the whole batch)."""
    obs = _need(x.observed, "observed", term)
    w = _need(x.photo_weights, "photo_weights", term)
    decoded = x.decoded.decoder(x.params.replace(**changes))
    return photometric_l1(decoded.colour, obs, w)


def _reflectance_symmetry(x: LossInputs) -> Tensor:
    from engine.texture import flip_uv_map, uv_layout

    uv_map = _need(x.params.albedo_map, "decoded.params.albedo_map", "reflectance_symmetry")
    flipped = flip_uv_map(uv_map, uv_layout(x.head, uv_map.shape[-1]))
    return _rerendered(x, "reflectance_symmetry", albedo_map=flipped, albedo=None, reflectance=None)


def clip_partners(n_clips: int, length: int, device: torch.device | str | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """``(n_clips · length,)`` for every frame of every clip (frames consecutive) the flat
    index of one other frame of the same clip, drawn uniformly (itself when ``length == 1``)."""
    frame = torch.arange(length).repeat(n_clips)
    start = torch.arange(n_clips).repeat_interleave(length) * length
    if length < 2:
        return (start + frame).to(device)
    shift = torch.randint(1, length, (n_clips * length,), generator=generator)
    return (start + (frame + shift) % length).to(device)


def _clip_consistency(x: LossInputs) -> Tensor:
    p, T = x.params, int(x.group_size)
    B = p.batch_size
    if T < 2:
        return p.identity.new_zeros(B)
    if B % T:
        raise ValueError(f"clip_consistency: batch of {B} is not a whole number of clips of {T}")
    j = clip_partners(B // T, T, p.identity.device)
    changes = {k: getattr(p, k)[j] for k in ("identity", "albedo", "reflectance", "albedo_map")
               if getattr(p, k) is not None}
    return _rerendered(x, "clip_consistency", **changes)


def _landmark(x: LossInputs) -> Tensor:
    target = _need(x.landmarks, "landmarks", "landmark")
    pred = x.landmark_points if x.landmark_points is not None else x.decoded.landmarks2d
    s = float(x.landmark_scale)
    if s != 1.0:
        return landmark_loss(pred / s, target / s, x.landmark_weights)
    return landmark_loss(pred, target, x.landmark_weights)


def contour_loss(decoded: Decoded, contour: Tensor, band: float, region: Tensor | None = None) -> Tensor:
    """Mean squared distance ``(B,)``, along the model's 2-D outward normal, from each
    detected contour point ``(B, M, 2)`` to its nearest silhouette vertex (correspondence
    chosen anew at every call, without gradient); 0 where fewer than 3 candidates exist."""
    uv = decoded.uv
    cand = decoded.silhouette(band, region)
    out = []
    for b in range(uv.shape[0]):
        idx = torch.nonzero(cand[b])[:, 0]
        if idx.numel() < 3:
            out.append(uv.new_zeros(()))
            continue
        cuv = uv[b, idx]
        with torch.no_grad():
            nearest = torch.cdist(contour[b], cuv).argmin(1)
            n2 = Fn.normalize(decoded.normals_camera[b, idx[nearest], :2], dim=-1)
        r = ((cuv[nearest] - contour[b]) * n2).sum(-1)
        out.append((r**2).mean())
    return torch.stack(out)


def _eye_closure(x: LossInputs) -> Tensor:
    target = _need(x.landmarks, "landmarks", "eye_closure")
    pred = x.landmark_points if x.landmark_points is not None else x.decoded.landmarks2d
    return eye_closure_loss(pred, target, x.landmark_weights, float(x.landmark_scale))


def identity_distance(rendered: Tensor, photo: Tensor, landmarks: Tensor, net: Callable[[Tensor], Tensor]) -> Tensor:
    """``1 − cos`` ``(B,)`` between the face-recognition descriptors of ``rendered`` and of
    ``photo`` (both ``(B, 3, H, W)`` in [0, 1]), each cut as a dlib face chip
    (:func:`engine.encoders.face_chip`) from the same ``landmarks (B, 68|5, 2)``. The photo's
    descriptor is a constant; gradients flow into ``rendered`` (the network is frozen)."""
    from engine.encoders.face_chip import face_chip

    lm = landmarks.detach().float()
    with torch.no_grad():
        target = net(face_chip(photo.float(), lm))
    desc = net(face_chip(rendered.float(), lm))
    return 1.0 - Fn.cosine_similarity(desc, target, dim=-1)


def _identity(x: LossInputs) -> Tensor:
    image = _need(x.image, "image", "identity")
    net = _need(x.identity_net, "identity_net", "identity")
    landmarks = _need(x.landmarks, "landmarks", "identity")
    render = x.decoded.render(background=image.to(x.decoded.vertices.dtype))
    return identity_distance(render.image.clamp(0, 1), image, landmarks, net)


def swap_group_identities(identity: Tensor, group_size: int) -> Tensor:
    """Identity codes ``(B, K_id)`` rolled by one inside each group of ``group_size``
    consecutive items (a pair swaps): item ``b`` gets the code of another view of its person."""
    B = identity.shape[0]
    if group_size < 2 or B % group_size:
        raise ValueError(f"loss term 'shape_consistency' needs groups of >= 2 views of one person "
                         f"(data.views_per_identity > 1); got group_size={group_size} for a batch of {B}")
    return identity.reshape(B // group_size, group_size, -1).roll(1, dims=1).reshape(B, -1)


def _shape_consistency(x: LossInputs) -> Tensor:
    image = _need(x.image, "image", "shape_consistency")
    params = x.params.replace(identity=swap_group_identities(x.params.identity, int(x.group_size)))
    swapped = x.decoded.decoder(params)
    inputs = dataclasses.replace(x, decoded=swapped, observed=swapped.sample(image.to(swapped.vertices.dtype)),
                                 landmark_points=None)
    weights = dict(x.consistency_weights) if x.consistency_weights is not None else {"photometric": 1.0,
                                                                                      "landmark": 1.0}
    total = params.identity.new_zeros(params.batch_size)
    for name, w in weights.items():
        if name == "shape_consistency":
            raise ValueError("shape_consistency cannot apply itself to the swapped faces")
        if w and (x.landmarks is not None or name not in LANDMARK_TERMS):
            total = total + w * TERMS[name](inputs)
    return total


def _detail_map(x: LossInputs, term: str) -> Tensor:
    return _need(x.params.displacement, "decoded.params.displacement", term)


def _masked_mean_mm(values: Tensor, mask: Tensor | None) -> Tensor:
    """Per-item mean of ``values (B, 1, M, M)`` (metres) over ``mask (1, 1, M, M)``, in mm."""
    m = torch.ones_like(values[:1]) if mask is None else mask.to(values.dtype)
    return (values * m).sum((1, 2, 3)) / m.sum().clamp_min(1.0) * 1000.0


def detail_photometric(decoded: Decoded, image: Tensor, region: Tensor | None,
                       occlusion: Tensor | None = None) -> Tensor:
    """``(B,)`` mean ℓ1 colour error between ``image (B, 3, H, W)`` and ``decoded``'s render
    (shaded with its detail normals when it has a displacement) over the pixels of ``region
    (V,)`` (all covered pixels when None) that ``occlusion (B, H, W)`` does not hide."""
    out = decoded.render(region=region, antialias=False)
    w = (out.region if out.region is not None else out.mask).clamp(0, 1) * out.mask
    if occlusion is not None:
        w = w * (1.0 - occlusion.to(w.dtype)[:, None])
    err = (out.image - image.to(out.image.dtype)).abs().mean(1, keepdim=True)
    return (err * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1.0)


def _detail_photometric(x: LossInputs) -> Tensor:
    _detail_map(x, "detail_photometric")
    image = _need(x.image, "image", "detail_photometric")
    return detail_photometric(x.decoded, image, x.detail_region, x.occlusion)


def _detail_consistency(x: LossInputs) -> Tensor:
    image = _need(x.image, "image", "detail_consistency")
    decode = _need(x.detail_decoder, "detail_decoder", "detail_consistency")
    codes = _need(x.params.detail_code, "decoded.params.detail_code", "detail_consistency")
    B = codes.shape[0]
    if int(x.group_size) < 2 or B % int(x.group_size):
        raise ValueError(f"loss term 'detail_consistency' needs groups of >= 2 views of one person "
                         f"(data.views_per_identity > 1); got group_size={x.group_size} for a batch of {B}")
    swapped = codes.reshape(B // x.group_size, x.group_size, -1).roll(1, dims=1).reshape(B, -1)
    p = x.params
    decoded = x.decoded.decoder(p.replace(displacement=decode(swapped, p.expression, p.pose), detail_code=swapped))  # same window
    return detail_photometric(decoded, image, x.detail_region, x.occlusion)


def _full_size(d: Tensor, window: Tensor | None) -> int:
    """Side of a whole-layout map with (at least) the texel density of ``d`` over ``window``."""
    if window is None:
        return d.shape[-1]
    side = float((window[0, 2:] - window[0, :2]).min())
    return int(-(-d.shape[-1] / side // 64) * 64)


def _detail_symmetry(x: LossInputs) -> Tensor:
    from engine.render.uv import full_to_window, window_to_full
    from engine.texture import flip_uv_map, uv_layout

    d = _detail_map(x, "detail_symmetry")
    win = x.params.displacement_window
    if win is None:
        flipped = flip_uv_map(d, uv_layout(x.head, d.shape[-1]))
    else:  # mirrored in the whole layout (the mirror partner may lie anywhere), read back in the window
        S = _full_size(d, win)
        flipped = full_to_window(flip_uv_map(window_to_full(d, win, S), uv_layout(x.head, S)), win, d.shape[-1])
    return _masked_mean_mm((d - flipped).abs(), x.detail_texels)


def _detail_truth(x: LossInputs, term: str) -> tuple[Tensor, Tensor]:
    """(prediction, truth) maps: the truth is a whole-layout map (the generator's), resampled
    onto the prediction's window, or area-averaged to its size without one."""
    from engine.render.uv import full_to_window

    d = _detail_map(x, term)
    gt = _need(x.gt_displacement, "gt_displacement", term).to(d.dtype)
    win = x.params.displacement_window
    if win is not None:
        gt = full_to_window(gt, win, d.shape[-1])
    elif gt.shape[-1] != d.shape[-1]:
        gt = Fn.interpolate(gt, size=d.shape[-2:], mode="area")
    return d, gt


def _detail_gt(x: LossInputs) -> Tensor:
    d, gt = _detail_truth(x, "detail_gt")
    return _masked_mean_mm((d - gt).abs(), x.detail_texels)


def _detail_gt_l2(x: LossInputs) -> Tensor:
    """Mean squared error in (0.1 mm)²: its optimum is the expected detail (a groove whose
    place varies from person to person comes out as a shallower, wider groove), where ℓ1's is
    the median (for fine grooves in uncertain places: nothing)."""
    d, gt = _detail_truth(x, "detail_gt_l2")
    return _masked_mean_mm(((d - gt) * 1e4) ** 2, x.detail_texels) / 1000.0


def _contour(x: LossInputs) -> Tensor:
    return contour_loss(x.decoded, _need(x.contour, "contour", "contour"), x.contour_band, x.contour_region)


def _expression_l1(x: LossInputs) -> Tensor:
    a = x.params.expression.abs()
    if x.expression_l1_weights is not None:
        a = a * x.expression_l1_weights.to(a.dtype)
    return a.sum(-1)


def _jaw_prior(x: LossInputs) -> Tensor:
    names = x.head.joint_names
    pose = x.params.pose
    if "jaw" not in names:
        return pose.new_zeros(pose.shape[0])
    return (pose[:, names.index("jaw")] ** 2).sum(-1)


def _reflectance_prior(x: LossInputs) -> Tensor:
    refl = _need(x.params.reflectance, "decoded.params.reflectance", "reflectance_prior")
    return tikhonov(refl.flatten(1))


def view_aligned_rotation(K_true: Tensor, K_pred: Tensor) -> Tensor:
    """``(B, 3, 3)`` rotation ``Q`` turning the true camera (intrinsics ``K_true``) about its
    centre so that its ray through the predicted camera's principal point (``K_pred``)
    becomes the optical axis (the smallest such turn). Identity when the principal points agree."""
    pp = torch.stack([K_pred[:, 0, 2], K_pred[:, 1, 2], torch.ones_like(K_pred[:, 0, 2])], -1)
    d = Fn.normalize(torch.linalg.solve(K_true, pp[..., None])[..., 0], dim=-1)  # (B, 3)
    z = torch.zeros_like(d)
    z[:, 2] = 1.0
    axis = torch.linalg.cross(d, z)  # d -> z
    s = axis.norm(dim=-1, keepdim=True)
    c = (d * z).sum(-1, keepdim=True)
    k = axis / s.clamp_min(1e-12)
    Kx = torch.zeros(d.shape[0], 3, 3, dtype=d.dtype, device=d.device)
    Kx[:, 0, 1], Kx[:, 0, 2], Kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    Kx = Kx - Kx.transpose(1, 2)
    eye = torch.eye(3, dtype=d.dtype, device=d.device).expand_as(Kx)
    return eye + s[..., None] * Kx + (1 - c)[..., None] * (Kx @ Kx)  # Rodrigues


def _true_camera_frame(x: LossInputs, term: str) -> tuple[Tensor, Tensor]:
    """The true rotation and camera-frame vertices, view-aligned to the predicted camera."""
    R = _need(x.gt_R, "gt_R", term)
    K = _need(x.gt_K, "gt_K", term)
    cam = x.decoded.camera
    Q = view_aligned_rotation(K.to(cam.K.dtype), cam.K).to(R.dtype)
    return Q @ R, Q


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over the last axis of ``values (B, V)`` with optional ``weights (V,)|(B, V)``."""
    if weights is None:
        return values.mean(-1)
    w = weights.to(values.dtype).expand_as(values)
    return (values * w).sum(-1) / w.sum(-1).clamp_min(1e-12)


def _centred(points: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return points - points.mean(1, keepdim=True)
    w = weights.to(points.dtype).expand(points.shape[:2])[..., None]
    return points - (points * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-12)


def _vertices(x: LossInputs) -> Tensor:
    gt = _need(x.gt_vertices, "gt_vertices", "vertices")
    R_true, _ = _true_camera_frame(x, "vertices")
    cam = x.decoded.camera
    pred = x.decoded.vertices @ cam.R.transpose(-1, -2)  # camera frame up to the translation
    true = gt.to(pred.dtype) @ R_true.to(pred.dtype).transpose(-1, -2)
    d = (_centred(pred, x.vertex_weights) - _centred(true, x.vertex_weights)).norm(dim=-1) * 1000.0
    return _weighted_mean(d, x.vertex_weights)


def _shape(x: LossInputs) -> Tensor:
    gt = _need(x.gt_vertices, "gt_vertices", "shape")
    d = (x.decoded.vertices - gt.to(x.decoded.vertices.dtype)).norm(dim=-1) * 1000.0
    return _weighted_mean(d, x.vertex_weights)


def _rotation(x: LossInputs) -> Tensor:
    R_true, _ = _true_camera_frame(x, "rotation")
    rel = x.decoded.camera.R.transpose(-1, -2) @ R_true.to(x.decoded.camera.R.dtype)
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.acos(cos) ** 2


def _identity_gt(x: LossInputs) -> Tensor:
    gt = _need(x.gt_identity, "gt_identity", "identity_gt")
    return tikhonov(x.params.identity - gt.to(x.params.identity.dtype), x.head.identity_std)


def _expression_gt(x: LossInputs) -> Tensor:
    gt = _need(x.gt_expression, "gt_expression", "expression_gt")
    return ((x.params.expression - gt.to(x.params.expression.dtype)) ** 2).sum(-1)


def _pose_gt(x: LossInputs) -> Tensor:
    gt = _need(x.gt_pose, "gt_pose", "pose_gt")
    err = ((x.params.pose - gt.to(x.params.pose.dtype)) ** 2).sum(-1)  # (B, J)
    if x.pose_joint_weights is not None:
        err = err * x.pose_joint_weights.to(err.dtype)
    return err.sum(-1)


def _light_level(x: LossInputs) -> Tensor:
    w = _need(x.photo_weights, "photo_weights", "light_level")
    w = w.to(x.decoded.shading.dtype)
    mean = (x.decoded.shading * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)  # (B, 3)
    return ((mean - float(x.light_level)) ** 2).mean(-1)


def _albedo(x: LossInputs) -> Tensor:
    gt = _need(x.gt_albedo, "gt_albedo", "albedo")
    pred = _need(x.decoded.albedo, "decoded.albedo", "albedo")
    w = x.albedo_weights if x.albedo_weights is not None else x.head.regions["face_skin"]
    return _weighted_mean((pred - gt.to(pred.dtype)).abs().mean(-1), w)


TERMS: dict[str, Callable[[LossInputs], Tensor]] = {
    "photometric": _photometric,
    "photometric_l1": _photometric_l1,
    "reflectance_symmetry": _reflectance_symmetry,
    "clip_consistency": _clip_consistency,
    "landmark": _landmark,
    "contour": _contour,
    "identity_prior": lambda x: tikhonov(x.params.identity, x.head.identity_std),
    "expression_prior": lambda x: tikhonov(x.params.expression),
    "expression_l1": _expression_l1,
    "expression_range": lambda x: range_penalty(x.params.expression, x.head.expression_range),
    "jaw_prior": _jaw_prior,
    "reflectance_prior": _reflectance_prior,
    "eye_closure": _eye_closure,
    "identity": _identity,
    "shape_consistency": _shape_consistency,
    "detail_photometric": _detail_photometric,
    "detail_consistency": _detail_consistency,
    "detail_regularisation": lambda x: _masked_mean_mm(_detail_map(x, "detail_regularisation").abs(),
                                                       x.detail_texels),
    "detail_symmetry": _detail_symmetry,
    "detail_gt": _detail_gt,
    "detail_gt_l2": _detail_gt_l2,
    "vertices": _vertices,
    "shape": _shape,
    "rotation": _rotation,
    "identity_gt": _identity_gt,
    "expression_gt": _expression_gt,
    "pose_gt": _pose_gt,
    "albedo": _albedo,
    "light_level": _light_level,
}


def register_term(name: str, fn: Callable[[LossInputs], Tensor]) -> None:
    """Add a term (a method's own loss, e.g. CEST's clip consistency) under ``name``."""
    TERMS[name] = fn


def check_weights(weights: Mapping[str, float], where: str = "losses") -> dict[str, float]:
    """Validate a ``{term: weight}`` mapping from a config: known names, finite numbers."""
    import math

    out = {}
    for name, w in weights.items():
        if name not in TERMS:
            raise UserError(f"unknown loss term '{where}.{name}'; known terms: {', '.join(sorted(TERMS))}")
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise UserError(f"loss weight '{where}.{name}' must be a number, got {w!r}") from None
        if not math.isfinite(value):
            raise UserError(f"loss weight '{where}.{name}' must be finite, got {w!r}")
        out[name] = value
    return out


def weighted_sum(weights: Mapping[str, float], inputs: LossInputs,
                 log: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """``Σ weight · term`` per batch item ``(B,)`` over the terms with a non-zero weight, and
    every computed term (those plus the ``log``-only ones, weight or not) for logging."""
    total = None
    terms: dict[str, Tensor] = {}
    for name, w in weights.items():
        if w == 0 and name not in log:
            continue
        value = TERMS[name](inputs)
        terms[name] = value
        if w != 0:
            total = w * value if total is None else total + w * value
    for name in log:
        if name not in terms:
            terms[name] = TERMS[name](inputs)
    if total is None:
        total = inputs.params.identity.new_zeros(inputs.params.batch_size)
    return total, terms
