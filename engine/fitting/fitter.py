"""Analysis-by-synthesis fitting of a head model to one photo (MoFA's energy, optimised).

Coarse to fine:

1. **camera**: a guessed focal length (:mod:`engine.fitting.camera_init`) and PnP from the
   detected 2-D landmarks to the template's 3-D landmarks (closed form + LM, ~1 ms);
2. **landmarks**: pose, then identity/expression/jaw on the landmark term and the priors
   (Adam on a landmark-only submodel, so each step touches ~200 vertices, not all);
3. **appearance**: visibility from a rasterised depth test, the photo sampled at the
   projected vertices, SH lighting and per-vertex albedo by alternating linear solves;
4. **joint refinement**: everything geometric plus lighting on MoFA's ℓ2,1 photometric term
   over visible skin + landmarks + priors, visibility and albedo refreshed every few steps.

The photometric term is per vertex (photo sampled at projected vertices), not per pixel:
one rasterisation per visibility refresh instead of one per step keeps a fit interactive.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as Fn

from engine.fitting.appearance import Appearance, fit_appearance, neighbour_average_matrix, symmetric_albedo
from engine.fitting.camera_init import guess_intrinsics, solve_pnp
from engine.fitting.config import FitConfig
from engine.fitting.optim import Adam
from engine.head.model import HeadModel
from engine.losses import (
    SkinColourPrior,
    landmark_loss,
    landmark_weights_68,
    mesh_edges,
    mirror_vertex_map,
    photometric_l21,
    range_penalty,
    tikhonov,
)
from engine.render.rotation import axis_angle_to_matrix, matrix_to_axis_angle
from engine.render.camera import PerspectiveCamera
from engine.render.shading import camera_to_view, sh_basis, vertex_normals
from engine.render.vertex_sampling import sample_image

ProgressFn = Callable[[str, float, str], None]


@dataclass
class FitResult:
    """Everything a fit produced, in the photo's original pixel frame (numpy/torch on CPU)."""

    identity: torch.Tensor  # (K_id,)
    expression: torch.Tensor  # (K_exp,)
    pose: torch.Tensor  # (J, 3) joint axis-angles
    R: torch.Tensor  # (3, 3) model -> OpenCV camera
    t: torch.Tensor  # (3,) metres
    K: torch.Tensor  # (3, 3) intrinsics of the original photo
    image_size: tuple[int, int]  # (W, H) of the original photo
    sh: torch.Tensor  # (9, 3) raw SH lighting, view frame
    albedo: torch.Tensor  # (V, 3) per-vertex albedo in [0, 1]
    vertices: torch.Tensor  # (V, 3) posed vertices, model frame
    visibility: torch.Tensor  # (V,) float in [0, 1] from the last depth test
    landmarks_target: torch.Tensor  # (68, 2) the detected landmarks used, photo px
    timings: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)

    @property
    def vertices_camera(self) -> torch.Tensor:
        return self.vertices @ self.R.T + self.t

    @property
    def camera(self) -> PerspectiveCamera:
        """The photo's camera (batch of one)."""
        width, height = self.image_size
        return PerspectiveCamera(self.K[None], self.R[None], self.t[None], (height, width))

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Model-frame points (N, 3) -> photo pixels (N, 2)."""
        return self.camera.project(points[None])[0][0]


@dataclass
class _ModelCache:
    """Per-model data computed once (mirror map, adjacency, landmark submodel)."""

    mirror: torch.Tensor
    adjacency: torch.Tensor
    skin: torch.Tensor  # (V,) bool: colour is skin (lighting solve)
    photo_mask: torch.Tensor  # (V,) bool: vertices in the photometric term
    lmk_model: HeadModel
    jaw_index: int | None
    expression_mask: torch.Tensor  # (K_exp,) 1 = free, 0 = fixed at zero


# Keyed by the model object itself, weakly: an entry goes with its model. (Keyed by id(),
# every reconstruct() - which loads a fresh model - added a few MB for good, and a new model
# could inherit a collected one's id and with it the wrong mirror map or landmark submodel.)
_CACHE: "weakref.WeakKeyDictionary[HeadModel, _ModelCache]" = weakref.WeakKeyDictionary()
_SUBMODELS: "weakref.WeakKeyDictionary[HeadModel, dict[str | None, HeadModel]]" = weakref.WeakKeyDictionary()


def _landmark_submodel(model: HeadModel, tri_ids: torch.Tensor | None = None) -> HeadModel:
    """A HeadModel restricted to the vertices of the landmark triangles ``tri_ids`` (default:
    the 68 iBUG triangles); its ``faces`` are those triangles in the same order, so embedded
    points are exact. Its own 68-landmark embedding is a placeholder (triangle 0)."""
    if tri_ids is None:
        tri_ids = model.lmk_faces
    tri = model.faces[tri_ids]  # (M, 3)
    idx, inverse = torch.unique(tri.reshape(-1), return_inverse=True)
    sub_faces = inverse.reshape(-1, 3)
    arrays = {
        "template": model.template[idx],
        "faces": sub_faces,
        "uv": model.uv[:1],
        "face_uv": torch.zeros_like(sub_faces),
        "identity_basis": model.identity_basis[:, idx],
        "identity_std": model.identity_std,
        "expression_basis": model.expression_basis[:, idx],
        "expression_range": model.expression_range,
        "joint_template": model.joint_template,
        "joint_identity_basis": model.joint_identity_basis,
        "joint_expression_basis": model.joint_expression_basis,
        "joint_parents": model.joint_parents,
        "skin_weights": model.skin_weights[idx],
        "lmk_faces": torch.zeros(68, dtype=torch.int64),
        "lmk_bary": model.lmk_bary,
    }
    arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    if model.pose_basis.shape[0]:
        arrays["pose_basis"] = model.pose_basis[:, idx].detach().cpu().numpy()
    regions = {k: m[idx].cpu().numpy() for k, m in model.regions.items()}
    return HeadModel(model.name + "-landmarks", arrays, model.expression_names, model.joint_names,
                     regions).to(model.template.device)


def model_cache(model: HeadModel) -> _ModelCache:
    """Mirror map, mesh adjacency and the landmark submodel of ``model`` (memoised)."""
    key = model
    if key in _CACHE and _CACHE[key].mirror.device == model.template.device:
        return _CACHE[key]
    regions = model.regions
    mirror = mirror_vertex_map(model.template)
    adjacency = neighbour_average_matrix(mesh_edges(model.faces), model.n_vertices)
    skin = regions["face_skin"].clone()
    photo_mask = regions["face_skin"].clone()
    jaw = model.joint_names.index("jaw") if "jaw" in model.joint_names else None
    exp_mask = torch.ones(model.n_expression, device=model.template.device)
    if jaw is not None and "jawOpen" in model.expression_names:
        # one jaw-opening mechanism per fit: the jaw joint (shared by all models)
        exp_mask[model.expression_names.index("jawOpen")] = 0.0
    cache = _ModelCache(mirror, adjacency, skin, photo_mask, _landmark_submodel(model), jaw, exp_mask)
    _CACHE[key] = cache
    return cache


def _work_crop(image: np.ndarray, landmarks: np.ndarray, size: int, crop_scale: float,
               blur_sigma: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Axis-aligned square crop around the landmarks resized to ``size``.

    Returns (crop float32 [0,1] (size, size, 3), s, origin) with
    ``crop_px = s · (photo_px − origin)`` (pixel edges at integers in both).
    """
    import cv2

    lo, hi = landmarks.min(0), landmarks.max(0)
    centre = (lo + hi) / 2.0
    side = max(float((hi - lo).max()) * crop_scale, 8.0)
    origin = centre - side / 2.0
    s = size / side
    src = image
    if s < 0.5:  # pre-shrink so the bilinear warp does not alias
        factor = s * 2.0
        src = cv2.resize(image, (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor))),
                         interpolation=cv2.INTER_AREA)
        fx = src.shape[1] / image.shape[1]
        fy = src.shape[0] / image.shape[0]
    else:
        fx = fy = 1.0
    # index-space affine: i' + 0.5 = s ((i + 0.5)/f − origin)
    M = np.array([[s / fx, 0.0, s * (0.5 / fx - origin[0]) - 0.5],
                  [0.0, s / fy, s * (0.5 / fy - origin[1]) - 0.5]])
    crop = cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    crop = crop.astype(np.float32) / 255.0
    if blur_sigma > 0:
        crop = cv2.GaussianBlur(crop, (0, 0), blur_sigma)
    return crop, s, origin


@torch.no_grad()
def vertex_visibility(verts_cam: torch.Tensor, uv: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                      tolerance: float) -> torch.Tensor:
    """(B, V) bool: vertex in the image and not hidden (rasterised depth test)."""
    from engine.render.rasterize import rasterize

    H, W = size
    screen = torch.cat([uv, verts_cam[..., 2:3]], -1)
    frags = rasterize(screen, faces, (H, W), perspective=True, cull_backfaces=True)
    px = uv[..., 0].floor().long()
    py = uv[..., 1].floor().long()
    inside = (px >= 0) & (px < W) & (py >= 0) & (py < H)
    pxc, pyc = px.clamp(0, W - 1), py.clamp(0, H - 1)
    b = torch.arange(uv.shape[0], device=uv.device)[:, None].expand_as(px)
    zbuf = frags.depth[b, pyc, pxc]
    covered = frags.tri_id[b, pyc, pxc] >= 0
    return inside & covered & (verts_cam[..., 2] <= zbuf + tolerance)


class _Scene:
    """Differentiable per-vertex image formation in the working crop."""

    def __init__(self, model: HeadModel, K_work: torch.Tensor, work: torch.Tensor, cfg: FitConfig) -> None:
        self.model = model
        self.K = K_work
        self.work = work  # (1, 3, S, S)
        self.cfg = cfg
        self.size = (work.shape[-2], work.shape[-1])

    def project(self, pts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pc = pts @ R.transpose(-1, -2) + t[:, None]
        z = pc[..., 2:3].clamp_min(1e-3)
        uv = pc[..., :2] / z * torch.stack([self.K[0, 0], self.K[1, 1]]) + torch.stack([self.K[0, 2], self.K[1, 2]])
        return uv, pc

    def camera_normals(self, verts: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """Vertex normals (B, V, 3) in the OpenCV camera frame."""
        return vertex_normals(verts, self.model.faces) @ R.transpose(-1, -2)

    def shading_basis(self, verts: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        n_view = camera_to_view(self.camera_normals(verts, R))
        return sh_basis(n_view), n_view


#: MediaPipe face-mesh outline (FACEMESH_FACE_OVAL order); the side points are silhouette points
MEDIAPIPE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def _pose_tensor(model: HeadModel, jaw: torch.Tensor, jaw_index: int | None) -> torch.Tensor | None:
    if model.n_joints == 0:
        return None
    pose = jaw.new_zeros(1, model.n_joints, 3)
    if jaw_index is not None:
        pose = pose.index_put((torch.tensor([0]), torch.tensor([jaw_index])), jaw)
    return pose


def fit_photo(
    model: HeadModel,
    image: np.ndarray,
    landmarks: np.ndarray,
    config: FitConfig | None = None,
    progress: ProgressFn | None = None,
    native: np.ndarray | None = None,
    native_convention: str | None = None,
    init: FitResult | None = None,
) -> FitResult:
    """Fit ``model`` to ``image`` (H, W, 3) uint8 given iBUG-68 ``landmarks`` (68, 2) in its pixels.

    ``native`` (N, 2+) are the detector's own points in photo pixels, named by
    ``native_convention`` (e.g. ``"mediapipe-478"``); when the model has a dense embedding for
    that convention (:mod:`engine.head.dense_landmarks`) and ``config.use_dense`` is set, the
    landmark term uses them (weighted by the embedding's per-point spread) and iBUG-68 only
    with ``config.ibug_share_with_dense`` of the weight. ``init`` starts from another result
    (camera, identity, expression, jaw), e.g. a network's prediction (hybrid method).

    Runs on the model's device. On CPU the fit runs with ``config.cpu_threads`` intra-op
    threads (default 1: its tensors are small, and extra threads cost more in
    synchronisation than they save, several-fold on a busy machine). See the module
    docstring for the stages.
    """
    cfg = config or FitConfig()
    extra = dict(native=native, native_convention=native_convention, init=init)
    if model.template.device.type != "cpu" or not cfg.cpu_threads:
        return _fit_photo(model, image, landmarks, cfg, progress, **extra)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.cpu_threads)
    try:
        return _fit_photo(model, image, landmarks, cfg, progress, **extra)
    finally:
        torch.set_num_threads(before)


def _fit_photo(
    model: HeadModel,
    image: np.ndarray,
    landmarks: np.ndarray,
    config: FitConfig | None = None,
    progress: ProgressFn | None = None,
    native: np.ndarray | None = None,
    native_convention: str | None = None,
    init: FitResult | None = None,
) -> FitResult:
    cfg = config or FitConfig()
    dev = model.template.device
    report = progress or (lambda stage, fraction, message: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cache = model_cache(model)
    H_img, W_img = image.shape[:2]
    lm_np = np.asarray(landmarks, dtype=np.float64)[:, :2]

    # ---------------------------------------------------------------- stage 1: camera
    report("camera", 0.0, "initial camera from landmarks (PnP)")
    lmw = landmark_weights_68(jaw=cfg.jaw_landmark_weight).to(dev)
    dense = None
    if native is not None and native_convention and cfg.use_dense:
        from engine.head.dense_landmarks import load_dense_embedding

        dense = load_dense_embedding(model, native_convention)
        if dense is not None and int(dense.indices.max()) >= len(native):
            dense = None  # e.g. a 468-point mesh without the iris points the file indexes
    if init is not None:
        K_img = init.K.detach().cpu().double().numpy()
        R0, t0_ = init.R.detach().cpu().double().numpy(), init.t.detach().cpu().double().numpy()
    else:
        K_img = guess_intrinsics((W_img, H_img), lm_np, cfg.fov_deg, cfg.min_distance_m)
        with torch.no_grad():
            if dense is not None:
                pts3 = dense.points(model, model.template[None])[0].cpu().numpy()
                pts2 = np.asarray(native, np.float64)[dense.indices.cpu().numpy(), :2]
                R0, t0_ = solve_pnp(pts3, pts2, K_img)
            else:
                lm3 = model.landmarks(model.template[None])[0].cpu().numpy()
                R0, t0_ = solve_pnp(lm3, lm_np, K_img, weights=np.where(np.arange(68) < 17, 0.0, 1.0))
    crop, s, origin = _work_crop(image, lm_np, cfg.work_size, cfg.crop_scale, cfg.blur_sigma_px)
    # crop_px = s (photo_px - origin): K_work = S @ K_img
    S = np.array([[s, 0, -s * origin[0]], [0, s, -s * origin[1]], [0, 0, 1.0]])
    K_work = torch.tensor(S @ K_img, dtype=torch.float32, device=dev)
    work = torch.from_numpy(crop).permute(2, 0, 1)[None].to(dev)
    target = torch.tensor((lm_np - origin) * s, dtype=torch.float32, device=dev)[None]
    scene = _Scene(model, K_work, work, cfg)
    # landmark set: the 68 iBUG points, plus the detector's dense points when embedded
    lmk_tri, lmk_bary = model.lmk_faces, model.lmk_bary
    lmk_w = lmw / lmw.sum()
    if dense is not None:
        dense_px = (np.asarray(native, np.float64)[dense.indices.cpu().numpy(), :2] - origin) * s
        target = torch.cat([target, torch.tensor(dense_px, dtype=torch.float32, device=dev)[None]], 1)
        lmk_tri = torch.cat([lmk_tri, dense.faces])
        lmk_bary = torch.cat([lmk_bary, dense.bary])
        # per-point noise: detector noise (σ) and the embedding's spread seen at the face's depth
        spread_px = dense.spread_m * float(K_work[0, 0]) / float(max(t0_[2], 1e-3)) * cfg.dense_spread_scale
        sig = cfg.landmark_sigma_px * cfg.work_size / 192.0
        wd = sig**2 / (sig**2 + spread_px**2)
        share = cfg.ibug_share_with_dense
        lmk_w = torch.cat([lmk_w * share, wd / wd.sum() * (1.0 - share)])
    lmk_w = lmk_w.to(dev)
    contour_px = None
    if dense is not None and cfg.w_contour > 0 and native_convention == "mediapipe-478":
        embedded = set(dense.indices.tolist())
        oval = [i for i in MEDIAPIPE_OVAL if i not in embedded and i < len(native)]
        pts = (np.asarray(native, np.float64)[oval, :2] - origin) * s
        # points outside the working crop (or missing) are no contour evidence
        ok = np.isfinite(pts).all(1) & (pts > -0.25 * cfg.work_size).all(1) & (pts < 1.25 * cfg.work_size).all(1)
        if ok.sum() >= 3:
            contour_px = torch.tensor(pts[ok], dtype=torch.float32, device=dev)
    subs = _SUBMODELS.setdefault(model, {})
    lmk_key = None if dense is None else dense.convention
    sub = subs.get(lmk_key)
    if sub is None or sub.template.device != model.template.device:
        sub = subs[lmk_key] = _landmark_submodel(model, lmk_tri)
    timings["camera"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- parameters
    f32 = dict(dtype=torch.float32, device=dev)
    rvec = torch.tensor(matrix_to_axis_angle(torch.tensor(R0, dtype=torch.float64)).numpy(), **f32)[None]
    rvec.requires_grad_(True)
    tvec = torch.tensor(t0_, **f32)[None].requires_grad_(True)
    beta = torch.zeros(1, model.n_identity, **f32)
    psi = torch.zeros(1, model.n_expression, **f32)
    jaw = torch.zeros(1, 3, **f32)
    if init is not None:
        beta[0] = init.identity.to(dev)
        psi[0] = init.expression.to(dev)
        if cache.jaw_index is not None and init.pose.shape[0] == model.n_joints:
            jaw[0] = init.pose[cache.jaw_index].to(dev)
    for p_ in (beta, psi, jaw):
        p_.requires_grad_(True)
    exp_mask = cache.expression_mask[None]
    id_std = model.identity_std
    exp_range = model.expression_range
    # landmark noise (px at the working size) sets the prior strength: MAP weights σ²/68
    lmk_sigma = cfg.landmark_sigma_px * cfg.work_size / 192.0

    def priors(beta_, psi_, jaw_) -> torch.Tensor:
        return (cfg.w_identity * tikhonov(beta_, id_std) + cfg.w_expression * tikhonov(psi_ * exp_mask)
                + cfg.w_expression_range * range_penalty(psi_ * exp_mask, exp_range)
                + cfg.w_jaw * (jaw_**2).sum(-1)
                + cfg.w_expression_l1 * (psi_ * exp_mask).abs().sum(-1))

    def lmk_points(faces: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
        return (verts[:, faces] * lmk_bary[None, :, :, None]).sum(2)

    def lmk_energy(sub: HeadModel) -> tuple[torch.Tensor, torch.Tensor]:
        R = axis_angle_to_matrix(rvec)
        out = sub(beta, psi * exp_mask, _pose_tensor(model, jaw, cache.jaw_index))
        uv, _ = scene.project(lmk_points(sub.faces, out.vertices), R, tvec)
        e = landmark_loss(uv, target, lmk_w) / lmk_sigma**2
        return e, uv

    # ---------------------------------------------------------------- stage 2: landmarks
    t1 = time.perf_counter()
    report("landmarks", 0.1, "fitting pose, identity and expression to landmarks")
    opt = Adam([(rvec, cfg.lr_pose), (tvec, cfg.lr_pose * 0.05)])
    for _ in range(cfg.pose_iters):
        opt.zero_grad()
        e, _ = lmk_energy(sub)
        e.sum().backward()
        opt.step()
    opt = Adam([(rvec, cfg.lr_pose * 0.5), (tvec, cfg.lr_pose * 0.025), (beta, cfg.lr_shape),
                (psi, cfg.lr_shape * 0.5), (jaw, cfg.lr_pose)], total_steps=cfg.shape_iters)
    id_keep = None
    if 0 < cfg.landmark_identity_modes < model.n_identity:
        id_keep = torch.zeros_like(beta)
        id_keep[:, :cfg.landmark_identity_modes] = 1.0
    for i in range(cfg.shape_iters):
        opt.zero_grad()
        e, _ = lmk_energy(sub)
        (e + priors(beta, psi, jaw)).sum().backward()
        if id_keep is not None:
            beta.grad.mul_(id_keep)
        opt.step()
    with torch.no_grad():
        psi.clamp_(exp_range[:, 0], exp_range[:, 1])
    timings["landmarks"] = time.perf_counter() - t1

    # ---------------------------------------------------------------- stage 3: appearance
    t2 = time.perf_counter()
    report("appearance", 0.45, "visibility, lighting and albedo")
    prior = SkinColourPrior()

    def geometry():
        R = axis_angle_to_matrix(rvec)
        verts = model(beta, psi * exp_mask, _pose_tensor(model, jaw, cache.jaw_index)).vertices
        uv, pc = scene.project(verts, R, tvec)
        return R, verts, uv, pc

    def refresh(albedo_init: torch.Tensor | None = None) -> tuple[torch.Tensor, Appearance]:
        with torch.no_grad():
            R, verts, uv, pc = geometry()
            vis = vertex_visibility(pc, uv, model.faces, scene.size, cfg.depth_tolerance_m)[0]
            basis, n_view = scene.shading_basis(verts, R)
            facing = n_view[0, :, 2].clamp(0, 1)
            w = vis.float() * (facing / 0.3).clamp(0, 1)
            obs = sample_image(work, uv)[0]
            app = fit_appearance(basis[0], obs, w, cache.skin, cache.mirror, cache.adjacency, prior,
                                 rounds=cfg.appearance_rounds, prior_weight=cfg.albedo_prior_weight,
                                 sh_reg=cfg.sh_reg, albedo_init=albedo_init)
        return w, app

    weights, app = refresh()
    contour_cand = model.regions["skin"].to(dev)

    def contour_energy(n: torch.Tensor, uv: torch.Tensor, pc: torch.Tensor) -> torch.Tensor:
        """Mean squared distance, along the model's 2-D outward normal, from each detected
        contour point to its nearest silhouette vertex (correspondence chosen per step);
        ``n`` (1, V, 3) vertex normals in the OpenCV camera frame."""
        ray = Fn.normalize(pc, dim=-1)
        facing = -(n * ray).sum(-1)[0]
        cand = contour_cand & (facing >= 0) & (facing < cfg.contour_band)
        idx = torch.nonzero(cand)[:, 0]
        if idx.numel() < 3:
            return uv.new_zeros(1)
        cuv = uv[0, idx]
        with torch.no_grad():
            nearest = torch.cdist(contour_px, cuv).argmin(1)
            n2 = Fn.normalize(n[0, idx[nearest], :2], dim=-1)
        r = ((cuv[nearest] - contour_px) * n2).sum(-1)
        return (r**2).mean()[None]

    timings["appearance"] = time.perf_counter() - t2

    # ---------------------------------------------------------------- stage 4: joint refinement
    t3 = time.perf_counter()
    report("refine", 0.6, "joint photometric refinement")
    sh = app.sh.clone()[None].requires_grad_(True)

    def joint_albedo(a: Appearance) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, V, 3) albedo of the joint stage (mirror-symmetric and optionally low-pass, see
        FitConfig) and the (V,) photometric keep-mask of vertices whose albedo the low-pass holds."""
        alb = a.albedo
        if cfg.joint_albedo_symmetry > 0:
            alb = symmetric_albedo(alb, weights, cache.mirror, cfg.joint_albedo_symmetry)
        for _ in range(cfg.joint_albedo_smooth_iters):
            alb = torch.sparse.mm(cache.adjacency, alb)
        keep = torch.ones_like(alb[:, 0])
        if cfg.joint_albedo_feature_tau > 0 and cfg.joint_albedo_smooth_iters > 0:
            keep = ((a.albedo - alb).abs().amax(-1) < cfg.joint_albedo_feature_tau).to(alb.dtype)
        return alb[None], keep

    albedo_full = app.albedo
    albedo, feat_keep = joint_albedo(app)
    pmask = cache.photo_mask.float()
    opt = Adam([(rvec, cfg.lr_joint * 0.2), (tvec, cfg.lr_joint * 0.01), (beta, cfg.lr_joint * 2),
                (psi, cfg.lr_joint), (jaw, cfg.lr_joint * 0.2), (sh, cfg.lr_joint * 2)])
    last = {}
    for i in range(cfg.joint_iters):
        if i > 0 and i % cfg.visibility_every == 0:
            weights, app2 = refresh(albedo_init=albedo_full)
            albedo_full = app2.albedo
            albedo, feat_keep = joint_albedo(app2)
        opt.zero_grad()
        R, verts, uv, pc = geometry()
        n_cam = scene.camera_normals(verts, R)  # once per step: shading and contour
        basis = sh_basis(camera_to_view(n_cam))
        pred = albedo * torch.bmm(basis, sh)
        obs = sample_image(work, uv)
        e_photo = photometric_l21(pred, obs, (weights * pmask * feat_keep)[None])
        lmk_uv, _ = scene.project(lmk_points(model.faces[lmk_tri], verts), R, tvec)
        e_lmk = landmark_loss(lmk_uv, target, lmk_w) / lmk_sigma**2
        total = e_lmk + cfg.w_photo * e_photo + priors(beta, psi, jaw)
        if contour_px is not None:
            total = total + cfg.w_contour * contour_energy(n_cam, uv, pc) / lmk_sigma**2
        total.sum().backward()
        opt.step()
        with torch.no_grad():
            psi.clamp_(exp_range[:, 0], exp_range[:, 1])
        last = {"photometric": float(e_photo.detach()), "landmark_px": float(e_lmk.detach().sqrt() * lmk_sigma)}
    weights, app = refresh(albedo_init=albedo_full)
    timings["refine"] = time.perf_counter() - t3

    with torch.no_grad():
        R = axis_angle_to_matrix(rvec)[0]
        pose = _pose_tensor(model, jaw, cache.jaw_index)
        verts = model(beta, psi * exp_mask, pose).vertices[0]
        K_img_t = torch.tensor(K_img, dtype=torch.float32, device=dev)
    report("fit", 0.8, "fit done")
    return FitResult(
        identity=beta.detach()[0].cpu(),
        expression=(psi * exp_mask).detach()[0].cpu(),
        pose=(pose[0].detach().cpu() if pose is not None else torch.zeros(0, 3)),
        R=R.cpu(), t=tvec.detach()[0].cpu(), K=K_img_t.cpu(), image_size=(W_img, H_img),
        sh=app.sh.cpu(), albedo=app.albedo.cpu(), vertices=verts.cpu(), visibility=weights.cpu(),
        landmarks_target=torch.tensor(lm_np, dtype=torch.float32),
        timings=timings, losses=last,
    )
