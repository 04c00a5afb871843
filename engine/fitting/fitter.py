"""Analysis-by-synthesis fitting of a head model to one photo (MoFA's energy, optimised).

Four named stages, each a method of :class:`PhotoFit` (one fit's state):

1. :meth:`~PhotoFit.camera`: a guessed focal length (:mod:`engine.fitting.camera_init`) and
   PnP from the detected 2-D landmarks to the template's 3-D landmarks (~1 ms), and the
   working crop the photometric term reads;
2. :meth:`~PhotoFit.landmarks`: pose, then identity/expression/jaw on the landmark term and
   the priors (Adam on a landmark-only submodel, so each step touches ~200 vertices);
3. :meth:`~PhotoFit.appearance`: visibility from a rasterised depth test, the photo sampled
   at the projected vertices, SH lighting and per-vertex albedo by alternating linear solves;
4. :meth:`~PhotoFit.refine`: everything geometric plus lighting on MoFA's ℓ2,1 photometric
   term over visible skin + landmarks + contour + priors, visibility and albedo refreshed
   every few steps.

Image formation is :class:`engine.face.FaceDecoder`'s and every energy term comes from the
loss library (:mod:`engine.losses.terms`), weighted by :class:`FitConfig`. The photometric
term is per vertex (photo sampled at projected vertices), not per pixel: one rasterisation
per visibility refresh instead of one per step keeps a fit interactive.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.face import FaceDecoder, FaceParams
from engine.fitting.appearance import Appearance, fit_appearance, neighbour_average_matrix, symmetric_albedo
from engine.fitting.camera_init import guess_intrinsics, solve_pnp
from engine.fitting.config import FitConfig
from engine.fitting.gauss_newton import CoefficientJacobian
from engine.fitting.optim import Adam, orthant_levenberg_marquardt
from engine.head.model import HeadModel
from engine.losses import SkinColourPrior, landmark_weights_68, mesh_edges
from engine.losses.terms import LossInputs, weighted_sum
from engine.photo.crop import align_crop, landmark_box
from engine.render.camera import PerspectiveCamera
from engine.render.rotation import axis_angle_to_matrix, matrix_to_axis_angle
from engine.threads import torch_threads

ProgressFn = Callable[[str, float, str], None]

__all__ = ["FitConfig", "PhotoFit", "fit_photo", "model_cache", "work_crop", "MEDIAPIPE_OVAL"]

#: MediaPipe face-mesh outline (FACEMESH_FACE_OVAL order); the side points are silhouette points
MEDIAPIPE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


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
    mirror = model.mirror
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


def work_crop(image: np.ndarray, landmarks: np.ndarray, size: int, crop_scale: float,
              blur_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The fitter's working crop: :func:`engine.photo.align_crop` of the landmarks' bounding
    box (side = ``crop_scale`` × its larger extent) at ``size``, as float32 [0, 1], blurred by
    ``blur_sigma`` px. Returns (crop (size, size, 3), A (3, 3)) with ``crop_px = A @ [px, 1]``."""
    crop = align_crop(image, landmark_box(landmarks), size=size, scale=crop_scale)
    img = crop.image.astype(np.float32) / 255.0
    if blur_sigma > 0:
        import cv2

        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    return img, np.vstack([crop.matrix, [0.0, 0.0, 1.0]])


def _ibug_coverage(indices: torch.Tensor, dense_weights: torch.Tensor, n_native: int) -> torch.Tensor:
    """(68,) how well dense points of weights ``dense_weights`` (N,) at MediaPipe ``indices``
    (N,) cover each iBUG-68 point: the iBUG mapping's mix of those weights (0 where a point's
    MediaPipe sources are not embedded)."""
    from engine.detect.ibug68 import mapping_matrix

    W = torch.as_tensor(mapping_matrix(), dtype=torch.float32)
    per_point = torch.zeros(max(W.shape[1], n_native))
    per_point[indices.cpu()] = dense_weights.detach().float().cpu()
    return (W @ per_point[: W.shape[1]]).clamp(0.0, 1.0)


def _pose_tensor(model: HeadModel, jaw: torch.Tensor, jaw_index: int | None) -> torch.Tensor:
    """``(B, J, 3)`` pose: every joint at rest but the jaw, ``jaw (B, 3)``."""
    pose = jaw.new_zeros(jaw.shape[0], model.n_joints, 3)
    if jaw_index is not None:
        pose = torch.cat([pose[:, :jaw_index], jaw[:, None], pose[:, jaw_index + 1:]], 1)
    return pose


def _with_intrinsics(K: np.ndarray, t: np.ndarray, K_new: np.ndarray) -> np.ndarray:
    """The camera translation ``t`` (model origin in the camera frame, metres) moved so that
    under ``K_new`` the origin projects to the same pixel as under ``K`` and at the same scale
    (depth × focal ratio). The rotation is kept; the landmark stage settles the rest."""
    p = K @ t
    z = t[2] * K_new[0, 0] / K[0, 0]
    return z * np.linalg.solve(K_new, p / p[2])


class PhotoFit:
    """The state of one fit: the photo's landmarks, the working crop and the parameters
    being optimised (camera rotation/translation, identity, expression, jaw, lighting).
    Run the stages in order, then :meth:`result`; :func:`fit_photo` does all of it."""

    def __init__(self, model: HeadModel, image: np.ndarray, landmarks: np.ndarray, cfg: FitConfig,
                 progress: ProgressFn | None = None, native: np.ndarray | None = None,
                 native_convention: str | None = None, init: FaceParams | None = None) -> None:
        self.model, self.image, self.cfg, self.init = model, image, cfg, init
        self.dev = model.template.device
        self.report = progress or (lambda stage, fraction, message: None)
        self.timings: dict[str, float] = {}
        self.cache = model_cache(model)
        self.lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
        self.native, self.native_convention = native, native_convention
        self.decoder = FaceDecoder(model)
        self.losses: dict[str, float] = {}
        self.l1_weights: torch.Tensor | None = None  # per-unit ℓ1 weights once reweighted (None = all 1)
        self._coef_jacobian: CoefficientJacobian | None = None  # the "lm" landmark stage's, built once

    # ------------------------------------------------------------------ parameters -> FaceParams
    def params(self, albedo: torch.Tensor | None = None, head: HeadModel | None = None) -> FaceParams:
        """The current estimate in the working crop (differentiable)."""
        R = axis_angle_to_matrix(self.rvec)
        camera = PerspectiveCamera(self.K_work[None], R, self.tvec, self.size)
        return FaceParams(identity=self.beta, expression=self.psi * self.exp_mask,
                          pose=_pose_tensor(self.model, self.jaw * self.jaw_mask, self.cache.jaw_index), camera=camera,
                          sh=self.sh, albedo=albedo)

    def _priors_weights(self, l1: bool = True) -> dict[str, float]:
        """The priors' loss weights; ``l1=False`` leaves the ℓ1 prior out (the "lm" landmark
        stage handles it in its solver)."""
        c = self.cfg
        out = {"identity_prior": c.w_identity, "expression_prior": c.w_expression,
               "expression_range": c.w_expression_range, "jaw_prior": c.w_jaw}
        if l1:
            out["expression_l1"] = c.w_expression_l1
        return out

    # ------------------------------------------------------------------ stage 1: camera
    def camera(self) -> None:
        """Intrinsics guess + PnP start (or the ``init`` estimate's camera), the working crop,
        the landmark set (iBUG-68 plus embedded dense detector points) and the contour points."""
        cfg, model, dev, t0 = self.cfg, self.model, self.dev, time.perf_counter()
        self.report("camera", 0.0, "initial camera from landmarks (PnP)")
        H_img, W_img = self.image.shape[:2]
        lm_np, native = self.lm, self.native
        lmw = landmark_weights_68(jaw=cfg.jaw_landmark_weight).to(dev)
        dense = None
        if native is not None and self.native_convention and cfg.use_dense:
            from engine.head.dense_landmarks import load_dense_embedding

            dense = load_dense_embedding(model, self.native_convention)
            if dense is not None and int(dense.indices.max()) >= len(native):
                dense = None  # e.g. a 468-point mesh without the iris points the file indexes
        if self.init is not None:
            cam = self.init.camera
            K_img = cam.K[0].detach().cpu().double().numpy()
            R0, t0_ = cam.R[0].detach().cpu().double().numpy(), cam.t[0].detach().cpu().double().numpy()
            if cfg.init_intrinsics == "guess":
                K_guess = guess_intrinsics((W_img, H_img), lm_np, cfg.fov_deg, cfg.min_distance_m)
                t0_, K_img = _with_intrinsics(K_img, t0_, K_guess), K_guess
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
        self.K_img = K_img
        crop, A = work_crop(self.image, lm_np, cfg.work_size, cfg.crop_scale, cfg.blur_sigma_px)
        self.K_work = torch.tensor(A @ K_img, dtype=torch.float32, device=dev)
        self.work = torch.from_numpy(crop).permute(2, 0, 1)[None].to(dev)
        self.size = (self.work.shape[-2], self.work.shape[-1])
        to_work = lambda p: np.asarray(p, np.float64)[:, :2] @ A[:2, :2].T + A[:2, 2]  # noqa: E731
        target = torch.tensor(to_work(lm_np), dtype=torch.float32, device=dev)[None]
        # landmark set: the 68 iBUG points, plus the detector's dense points when embedded
        lmk_tri, lmk_bary = model.lmk_faces, model.lmk_bary
        lmk_w = lmw / lmw.sum()
        if dense is not None:
            dense_px = to_work(np.asarray(native, np.float64)[dense.indices.cpu().numpy()])
            target = torch.cat([target, torch.tensor(dense_px, dtype=torch.float32, device=dev)[None]], 1)
            lmk_tri = torch.cat([lmk_tri, dense.faces])
            lmk_bary = torch.cat([lmk_bary, dense.bary])
            # per-point noise: detector noise (σ) and the embedding's spread seen at the face's depth
            spread_px = dense.spread_m * float(self.K_work[0, 0]) / float(max(t0_[2], 1e-3)) * cfg.dense_spread_scale
            sig = cfg.landmark_sigma_px * cfg.work_size / 192.0
            wd = sig**2 / (sig**2 + spread_px**2)
            share = cfg.ibug_share_with_dense
            ibug_w = lmk_w * share
            if cfg.ibug_uncovered_weight > 0 and self.native_convention == "mediapipe-478":
                uncovered = (1.0 - _ibug_coverage(dense.indices, wd, len(native))) * cfg.ibug_uncovered_weight
                uncovered[:17] = 0.0  # the jawline: silhouette points, left to the contour term
                ibug_w = ibug_w + uncovered.to(lmk_w) * lmw * (1.0 - share) / wd.sum()
            lmk_w = torch.cat([ibug_w, wd / wd.sum() * (1.0 - share)])
        self.target, self.lmk_tri, self.lmk_bary, self.lmk_w = target, lmk_tri, lmk_bary, lmk_w.to(dev)
        self.contour_px = None
        if dense is not None and cfg.w_contour > 0 and self.native_convention == "mediapipe-478":
            embedded = set(dense.indices.tolist())
            oval = [i for i in MEDIAPIPE_OVAL if i not in embedded and i < len(native)]
            pts = to_work(np.asarray(native, np.float64)[oval])
            # points outside the working crop (or missing) are no contour evidence
            ok = (np.isfinite(pts).all(1) & (pts > -0.25 * cfg.work_size).all(1)
                  & (pts < 1.25 * cfg.work_size).all(1))
            if ok.sum() >= 3:
                self.contour_px = torch.tensor(pts[ok], dtype=torch.float32, device=dev)[None]
        subs = _SUBMODELS.setdefault(model, {})
        key = None if dense is None else dense.convention
        sub = subs.get(key)
        if sub is None or sub.template.device != model.template.device:
            sub = subs[key] = _landmark_submodel(model, lmk_tri)
        self.sub_decoder = FaceDecoder(sub)
        self.sub_tri = torch.arange(len(lmk_tri), device=dev)  # the submodel's faces are lmk_tri, in order
        # parameters
        f32 = dict(dtype=torch.float32, device=dev)
        rvec = torch.tensor(matrix_to_axis_angle(torch.tensor(R0, dtype=torch.float64)).numpy(), **f32)[None]
        self.rvec = rvec.requires_grad_(True)
        self.tvec = torch.tensor(t0_, **f32)[None].requires_grad_(True)
        self.beta = torch.zeros(1, model.n_identity, **f32)
        self.psi = torch.zeros(1, model.n_expression, **f32)
        self.jaw = torch.zeros(1, 3, **f32)
        self.sh = torch.zeros(1, 9, 3, **f32)
        if self.init is not None:
            self.beta[0] = self.init.identity[0].to(dev)
            self.psi[0] = self.init.expression[0].to(dev)
            if self.cache.jaw_index is not None and self.init.pose.shape[1] == model.n_joints:
                self.jaw[0] = self.init.pose[0, self.cache.jaw_index].to(dev)
        # a fixed identity (video: one per clip) gets no gradient, so Adam leaves it alone
        for p_ in ((self.psi, self.jaw) if cfg.fix_identity else (self.beta, self.psi, self.jaw)):
            p_.requires_grad_(True)
        self.exp_mask = self.cache.expression_mask[None]
        # the jaw joint opens the mouth (its x rotation); sideways motion is the jawLeft/jawRight
        # blendshapes' (with a free joint, a jaw shift went into a y/z rotation that no ARKit
        # weight carries)
        self.jaw_mask = torch.ones(1, 3, **f32)
        if cfg.jaw_opening_only and "jawLeft" in model.expression_names:
            self.jaw_mask[0, 1:] = 0.0
        # landmark noise (px at the working size) sets the prior strength: MAP weights σ²/68
        self.lmk_sigma = cfg.landmark_sigma_px * cfg.work_size / 192.0
        self.timings["camera"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ stage 2: landmarks
    def _landmark_energy(self, priors: bool, l1: bool = True) -> torch.Tensor:
        dec = self.sub_decoder(self.params())
        pts = dec.project(dec.points(self.sub_tri, self.lmk_bary))
        weights = {"landmark": 1.0 / self.lmk_sigma**2, **(self._priors_weights(l1) if priors else {})}
        total, _ = weighted_sum(weights, LossInputs(dec, landmarks=self.target, landmark_points=pts,
                                                    landmark_weights=self.lmk_w,
                                                    expression_l1_weights=self.l1_weights))
        return total

    def landmarks(self) -> None:
        """Pose alone, then pose + identity + expression + jaw on landmarks and priors."""
        cfg, t1 = self.cfg, time.perf_counter()
        self.report("landmarks", 0.1, "fitting pose, identity and expression to landmarks")
        if cfg.landmark_solver == "lm":
            self._landmarks_lm()
            self.timings["landmarks"] = time.perf_counter() - t1
            return
        opt = Adam([(self.rvec, cfg.lr_pose), (self.tvec, cfg.lr_pose * 0.05)])
        for _ in range(cfg.pose_iters):
            opt.zero_grad()
            self._landmark_energy(priors=False).sum().backward()
            opt.step()
        opt = Adam([(self.rvec, cfg.lr_pose * 0.5), (self.tvec, cfg.lr_pose * 0.025), (self.beta, cfg.lr_shape),
                    (self.psi, cfg.lr_shape * 0.5), (self.jaw, cfg.lr_pose)], total_steps=cfg.shape_iters)
        id_keep = None
        if 0 < cfg.landmark_identity_modes < self.model.n_identity:
            id_keep = torch.zeros_like(self.beta)
            id_keep[:, :cfg.landmark_identity_modes] = 1.0
        self._shape_steps(opt, cfg.shape_iters, id_keep)
        if (cfg.expression_reweight_eps > 0 and cfg.w_expression_l1 > 0 and cfg.expression_reweight_iters > 0
                and cfg.shape_iters > 0):
            # reweighted ℓ1 (Candès, Wakin & Boyd 2008): a unit the landmarks clearly use is
            # no longer pulled towards zero; unused units keep the full sparsity weight
            self._clamp_expression()
            with torch.no_grad():
                eps = cfg.expression_reweight_eps
                self.l1_weights = eps / (eps + self.psi.detach().abs())
            opt = Adam([(self.rvec, cfg.lr_pose * 0.5), (self.tvec, cfg.lr_pose * 0.025), (self.beta, cfg.lr_shape),
                        (self.psi, cfg.lr_shape * 0.5), (self.jaw, cfg.lr_pose)],
                       total_steps=cfg.expression_reweight_iters)
            self._shape_steps(opt, cfg.expression_reweight_iters, id_keep)
        self._clamp_expression()
        self.timings["landmarks"] = time.perf_counter() - t1

    def _shape_steps(self, opt: Adam, steps: int, id_keep: torch.Tensor | None) -> None:
        for _ in range(steps):
            opt.zero_grad()
            self._landmark_energy(priors=True).sum().backward()
            if id_keep is not None and self.beta.grad is not None:
                self.beta.grad.mul_(id_keep)
            opt.step()

    # ------------------------------------------------------------------ stage 2 by Levenberg–Marquardt
    def _leaves(self) -> list[torch.Tensor]:
        return [self.rvec, self.tvec, self.beta, self.psi, self.jaw]

    def _flat_slices(self) -> dict[str, slice]:
        """Where rvec, tvec, beta (identity), psi (expression) and jaw sit in :meth:`_flat`."""
        out, i = {}, 0
        for name, p in zip(("rvec", "tvec", "beta", "psi", "jaw"), self._leaves()):
            out[name] = slice(i, i + p.shape[1])
            i += p.shape[1]
        return out

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach()[0] for p in self._leaves()])

    @torch.no_grad()
    def _set_flat(self, theta: torch.Tensor) -> None:
        for p, where in zip(self._leaves(), self._flat_slices().values()):
            p[0] = theta[where]

    def _landmarks_lm(self) -> None:
        """The landmark stage's energy minimised by :func:`orthant_levenberg_marquardt`, in
        the Adam schedule's order: pose alone (landmarks only; skipped when ``pose_iters`` is
        0, as in the hybrid), then everything on landmarks and priors, then again with the
        reweighted ℓ1 weights. Each solve is run to convergence (at most
        ``landmark_lm_iters`` steps), and units whose landmark evidence is weaker than their
        ℓ1 weight end exactly at zero."""
        cfg, model = self.cfg, self.model
        at = self._flat_slices()
        P = at["jaw"].stop
        free_pose = torch.zeros(P, dtype=torch.bool, device=self.dev)
        free_pose[at["rvec"]] = free_pose[at["tvec"]] = True
        if cfg.pose_iters > 0:  # the hybrid starts from its network's pose instead
            self._lm_solve(free_pose, priors=False, l1=None)
        free = torch.ones(P, dtype=torch.bool, device=self.dev)
        psi_slice = at["psi"]
        free[psi_slice] = self.exp_mask[0] > 0
        free[at["jaw"]] = (self.jaw_mask[0] > 0) & (self.cache.jaw_index is not None)
        if cfg.fix_identity:
            free[at["beta"]] = False
        elif 0 < cfg.landmark_identity_modes < model.n_identity:
            free[at["beta"].start + cfg.landmark_identity_modes:at["beta"].stop] = False
        if cfg.shape_iters <= 0:
            return
        l1 = None
        if cfg.w_expression_l1 > 0:
            l1 = torch.zeros(P, device=self.dev)
            l1[psi_slice] = cfg.w_expression_l1 * self.exp_mask[0]
        self._lm_solve(free, priors=True, l1=l1)
        self._clamp_expression()
        if (l1 is not None and cfg.expression_reweight_eps > 0 and cfg.expression_reweight_iters > 0):
            with torch.no_grad():  # reweighted ℓ1, as the Adam schedule's
                eps = cfg.expression_reweight_eps
                self.l1_weights = eps / (eps + self.psi.detach().abs())
            l1[psi_slice] = cfg.w_expression_l1 * self.l1_weights[0] * self.exp_mask[0]
            self._lm_solve(free, priors=True, l1=l1)
            self._clamp_expression()

    def _lm_solve(self, free: torch.Tensor, priors: bool, l1: torch.Tensor | None) -> None:
        def energy(theta: torch.Tensor) -> float:
            self._set_flat(theta)
            with torch.no_grad():
                return float(self._landmark_energy(priors, l1=False).sum())

        def system(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self._set_flat(theta)
            return self._lm_system(priors)

        # the expression weights stay inside the model's range (a bound, not only the soft
        # range prior: the prior's kink at the bound slowed Gauss–Newton down)
        lower = torch.full((len(free),), float("-inf"), device=self.dev)
        upper = torch.full((len(free),), float("inf"), device=self.dev)
        psi = self._flat_slices()["psi"]
        lower[psi] = self.model.expression_range[:, 0]
        upper[psi] = self.model.expression_range[:, 1]
        theta, _ = orthant_levenberg_marquardt(self._flat(), energy, system, free, l1, lower=lower, upper=upper,
                                               iters=self.cfg.landmark_lm_iters, tol=1e-4)
        self._set_flat(theta)

    @torch.no_grad()
    def _lm_system(self, priors: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient and Gauss–Newton Hessian ``2 JᵀJ`` (+ the quadratic priors' curvature) of
        the landmark energy (ℓ1 prior left out) over (rvec, tvec, identity, expression, jaw):
        ``J`` is the residuals' Jacobian — identity and expression columns from
        :class:`engine.fitting.gauss_newton.CoefficientJacobian`, the camera's six by
        forward differences of the projection, the jaw's three by forward differences of
        the decoded points (one batched pass) — and the priors' gradient comes from autograd
        (they need no decode)."""
        cfg, model = self.cfg, self.model
        if self._coef_jacobian is None:
            self._coef_jacobian = CoefficientJacobian(self.sub_decoder.head, self.sub_tri, self.lmk_bary)
        w = self.lmk_w / self.lmk_w.sum()
        scale = (w.sqrt() / self.lmk_sigma)[:, None, None]  # residual = scale · (u − target)
        # the jaw's columns: the unperturbed and three perturbed jaws in one decode
        h = 1e-3
        jaw = (self.jaw.detach() + torch.cat([torch.zeros(1, 3, device=self.dev), h * torch.eye(3, device=self.dev)])) * self.jaw_mask
        B = 4
        camera = PerspectiveCamera(self.K_work[None].expand(B, 3, 3), axis_angle_to_matrix(self.rvec.detach()).expand(B, 3, 3),
                                   self.tvec.detach().expand(B, 3), self.size)
        params = FaceParams(identity=self.beta.detach().expand(B, -1), expression=(self.psi * self.exp_mask).detach().expand(B, -1),
                            pose=_pose_tensor(model, jaw, self.cache.jaw_index), camera=camera, sh=self.sh.expand(B, 9, 3))
        points = self.sub_decoder(params).points(self.sub_tri, self.lmk_bary)  # (4, N, 3)
        u = camera.project(points)[0]
        J_jaw = (u[1:] - u[:1]).permute(1, 2, 0) / h  # (N, 2, 3)
        # the camera's columns: rotate / move the posed points (no decode)
        x = points[0]
        steps = torch.tensor([1e-3] * 3 + [1e-4] * 3, device=self.dev)
        dr = torch.cat([torch.zeros(1, 3, device=self.dev), torch.diag(steps[:3]), torch.zeros(3, 3, device=self.dev)])
        dt = torch.cat([torch.zeros(4, 3, device=self.dev), torch.diag(steps[3:])])
        cams = PerspectiveCamera(self.K_work[None].expand(7, 3, 3), axis_angle_to_matrix(self.rvec.detach() + dr),
                                 self.tvec.detach() + dt, self.size)
        uc = cams.project(x.expand(7, -1, -1))[0]
        J_cam = (uc[1:] - uc[:1]).permute(1, 2, 0) / steps  # (N, 2, 6)
        J_coef = self._coef_jacobian(self.params(), x)
        J_coef[..., model.n_identity:] *= self.exp_mask[0]
        J = (torch.cat([J_cam, J_coef, J_jaw], -1) * scale).reshape(-1, J_coef.shape[-1] + 9)  # the order of _flat
        r = ((u[0] - self.target[0]) * scale[:, :, 0]).reshape(-1)
        H = 2.0 * J.T @ J
        g = 2.0 * J.T @ r
        if priors:
            with torch.enable_grad():
                total, _ = weighted_sum(self._priors_weights(l1=False), LossInputs(self.sub_decoder(self.params()),
                                                            expression_l1_weights=self.l1_weights))
                leaves = self._leaves()
                live = [p for p in leaves if p.requires_grad]
                grads = iter(torch.autograd.grad(total.sum(), live, allow_unused=True))
                prior_g = []
                for p in leaves:
                    gp = next(grads) if p.requires_grad else None
                    prior_g.append(torch.zeros_like(p[0]) if gp is None else gp[0])
            g = g + torch.cat(prior_g)
            # the curvature of the loss library's quadratic priors (identity_prior,
            # expression_prior, expression_range, jaw_prior), one coefficient each
            at = self._flat_slices()
            curv = torch.zeros(H.shape[0], device=self.dev)
            curv[at["beta"]] = 2.0 * cfg.w_identity / model.identity_std.clamp_min(1e-12) ** 2
            psi = (self.psi * self.exp_mask)[0]
            rng = model.expression_range
            outside = ((psi < rng[:, 0]) | (psi > rng[:, 1])).float()
            curv[at["psi"]] = 2.0 * (cfg.w_expression + cfg.w_expression_range * outside) * self.exp_mask[0]
            curv[at["jaw"]] = 2.0 * cfg.w_jaw * self.jaw_mask[0]
            H = H + torch.diag(curv)
        return g, H

    def _clamp_expression(self) -> None:
        rng = self.model.expression_range
        with torch.no_grad():
            self.psi.clamp_(rng[:, 0], rng[:, 1])

    # ------------------------------------------------------------------ stage 3: appearance
    def _refresh(self, albedo_init: torch.Tensor | None = None) -> tuple[torch.Tensor, Appearance]:
        """Visibility × facing weights (V,) and the closed-form lighting + albedo solve."""
        cfg = self.cfg
        with torch.no_grad():
            dec = self.decoder(self.params())
            vis = dec.visibility(tolerance=cfg.depth_tolerance_m)[0]
            facing = (-dec.normals_camera[0, :, 2]).clamp(0, 1)  # normal towards the optical axis
            w = vis.float() * (facing / 0.3).clamp(0, 1)
            level = cfg.light_level
            if cfg.light_level_from_init and self.init is not None and self.init.sh is not None:
                # the learned start's own light: its mean shading over the same skin
                shade = dec.sh_basis[0] @ self.init.sh[0].to(dec.sh_basis.dtype)
                level = float((shade.mean(-1) * w).sum() / w.sum().clamp_min(1e-6))
            app = fit_appearance(dec.sh_basis[0], dec.sample(self.work)[0], w, self.cache.skin, self.cache.mirror,
                                 self.cache.adjacency, SkinColourPrior(), rounds=cfg.appearance_rounds,
                                 prior_weight=cfg.albedo_prior_weight, sh_reg=cfg.sh_reg, albedo_init=albedo_init,
                                 light_level=level, light_level_weight=cfg.light_level_weight)
        return w, app

    def appearance(self) -> None:
        t2 = time.perf_counter()
        self.report("appearance", 0.45, "visibility, lighting and albedo")
        self.weights, self.app = self._refresh()
        self.timings["appearance"] = time.perf_counter() - t2

    # ------------------------------------------------------------------ stage 4: joint refinement
    def _joint_albedo(self, a: Appearance) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, V, 3) albedo of the joint stage (mirror-symmetric and optionally low-pass, see
        FitConfig) and the (V,) photometric keep-mask of vertices whose albedo the low-pass holds."""
        cfg, cache = self.cfg, self.cache
        alb = a.albedo
        if cfg.joint_albedo_symmetry > 0:
            alb = symmetric_albedo(alb, self.weights, cache.mirror, cfg.joint_albedo_symmetry)
        for _ in range(cfg.joint_albedo_smooth_iters):
            alb = torch.sparse.mm(cache.adjacency, alb)
        keep = torch.ones_like(alb[:, 0])
        if cfg.joint_albedo_feature_tau > 0 and cfg.joint_albedo_smooth_iters > 0:
            keep = ((a.albedo - alb).abs().amax(-1) < cfg.joint_albedo_feature_tau).to(alb.dtype)
        return alb[None], keep

    def refine(self) -> None:
        cfg, t3 = self.cfg, time.perf_counter()
        self.report("refine", 0.6, "joint photometric refinement")
        self.sh = self.app.sh.clone()[None].requires_grad_(True)
        albedo_full = self.app.albedo
        albedo, feat_keep = self._joint_albedo(self.app)
        pmask = self.cache.photo_mask.float()
        skin = self.model.regions["skin"]
        opt = Adam([(self.rvec, cfg.lr_joint * 0.2), (self.tvec, cfg.lr_joint * 0.01), (self.beta, cfg.lr_joint * 2),
                    (self.psi, cfg.lr_joint * cfg.joint_expression_lr_scale), (self.jaw, cfg.lr_joint * 0.2), (self.sh, cfg.lr_joint * 2)])
        inv_var = 1.0 / self.lmk_sigma**2
        weights = {"landmark": inv_var, "photometric": cfg.w_photo, **self._priors_weights()}
        if self.contour_px is not None:
            weights["contour"] = cfg.w_contour * inv_var
        for i in range(cfg.joint_iters):
            if i > 0 and i % cfg.visibility_every == 0:
                self.weights, app2 = self._refresh(albedo_init=albedo_full)
                albedo_full = app2.albedo
                albedo, feat_keep = self._joint_albedo(app2)
            opt.zero_grad()
            dec = self.decoder(self.params(albedo=albedo))
            inputs = LossInputs(dec, observed=dec.sample(self.work),
                                photo_weights=(self.weights * pmask * feat_keep)[None], landmarks=self.target,
                                landmark_points=dec.project(dec.points(self.lmk_tri, self.lmk_bary)),
                                landmark_weights=self.lmk_w, contour=self.contour_px, contour_band=cfg.contour_band,
                                contour_region=skin, expression_l1_weights=self.l1_weights)
            total, terms = weighted_sum(weights, inputs)
            total.sum().backward()
            opt.step()
            self._clamp_expression()
            self.losses = {"photometric": float(terms["photometric"].detach()),
                           "landmark_px": float(terms["landmark"].detach().sqrt())}
        self.weights, self.app = self._refresh(albedo_init=albedo_full)
        self.timings["refine"] = time.perf_counter() - t3

    # ------------------------------------------------------------------ result
    def result(self) -> FaceParams:
        """The fit in the photo's own pixel frame (CPU tensors, batch of one)."""
        H_img, W_img = self.image.shape[:2]
        with torch.no_grad():
            R = axis_angle_to_matrix(self.rvec)
            pose = _pose_tensor(self.model, self.jaw * self.jaw_mask, self.cache.jaw_index)
            K_img = torch.tensor(self.K_img, dtype=torch.float32)[None]
        self.report("fit", 0.8, "fit done")
        camera = PerspectiveCamera(K_img, R.detach().cpu(), self.tvec.detach().cpu(), (H_img, W_img))
        app = getattr(self, "app", None)  # None when the appearance stages did not run
        sh = app.sh.detach().cpu()[None] if app is not None else (
            self.init.sh.detach().cpu() if self.init is not None else self.sh.detach().cpu())
        return FaceParams(
            identity=self.beta.detach().cpu(), expression=(self.psi * self.exp_mask).detach().cpu(),
            pose=pose.detach().cpu(), camera=camera, sh=sh,
            albedo=None if app is None else app.albedo.detach().cpu()[None],
            visibility=None if app is None else self.weights.detach().cpu()[None],
            landmarks=torch.tensor(self.lm, dtype=torch.float32)[None], timings=dict(self.timings),
            losses=dict(self.losses))


def fit_photo(
    model: HeadModel,
    image: np.ndarray,
    landmarks: np.ndarray,
    config: FitConfig | None = None,
    progress: ProgressFn | None = None,
    native: np.ndarray | None = None,
    native_convention: str | None = None,
    init: FaceParams | None = None,
) -> FaceParams:
    """Fit ``model`` to ``image`` (H, W, 3) uint8 given iBUG-68 ``landmarks`` (68, 2) in its
    pixels; returns :class:`engine.face.FaceParams` (batch of one) in the photo's frame.

    ``native`` (N, 2+) are the detector's own points in photo pixels, named by
    ``native_convention`` (e.g. ``"mediapipe-478"``); when the model has a dense embedding for
    that convention (:mod:`engine.head.dense_landmarks`) and ``config.use_dense`` is set, the
    landmark term uses them (weighted by the embedding's per-point spread) and iBUG-68 only
    with ``config.ibug_share_with_dense`` of the weight. ``init`` starts from another estimate
    (camera, identity, expression, jaw), e.g. a network's prediction (hybrid method).

    Runs on the model's device. On CPU the fit runs with ``config.cpu_threads`` intra-op
    threads (default 1: its tensors are small, and extra threads cost more in
    synchronisation than they save, several-fold on a busy machine).
    """
    cfg = config or FitConfig()
    fit = PhotoFit(model, image, landmarks, cfg, progress, native, native_convention, init)
    with torch_threads(cfg.cpu_threads if model.template.device.type == "cpu" else 0):
        fit.camera()
        fit.landmarks()
        if cfg.appearance:
            fit.appearance()
            fit.refine()
        return fit.result()
