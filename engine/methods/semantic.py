"""Learned methods whose encoder regresses a semantic code (MoFA, DECA's coarse stage).

What they share, moved here from MoFA so that each method is only its config, its loss list
and what is really its own:

* :class:`SemanticConfig`: backbone, code sizes, the reflectance basis, the canonical
  camera, the photometric region and visibility, ``losses`` (loss-library weights);
* :class:`SemanticCodeMethod`: the encoder (:class:`engine.encoders.MofaEncoder`: a CNN
  backbone and zero-initialised linear heads, so the first prediction is the mean face),
  the code -> :class:`FaceParams` mapping (identity in prior-std units, ARKit expression,
  predicted joints such as the jaw, a perspective camera with a fixed canonical focal
  length, a Laplacian reflectance basis, SH light with MoFA's ambient offset), the
  photometric visibility, and the loss assembly over :mod:`engine.losses.terms`
  (:meth:`SemanticCodeMethod.loss`, with a hook, :meth:`~SemanticCodeMethod.loss_extras`,
  for a method's own :class:`LossInputs` fields) and a ``training_step``.

This module declares no ``METHOD``: it is not itself in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from engine.encoders import CodeLayout, MofaEncoder, SemanticCode
from engine.face import Decoded, FaceParams, LaplacianReflectance
from engine.losses import landmark_weights_68
from engine.losses.terms import LossInputs, check_weights, weighted_sum
from engine.methods.base import LearnedMethod, flatten_groups, recentre_camera
from engine.render import PerspectiveCamera, axis_angle_to_matrix, frontal_rotation
from engine.render.shading import SH_CONSTANTS
from engine.train.method import StepResult

__all__ = ["SKIN_MEAN", "TRUTH_FIELDS", "SemanticConfig", "SemanticCodeMethod", "recentre_camera"]

SKIN_MEAN = (0.62, 0.45, 0.38)  # engine.losses.SkinColourPrior's mean

#: a batch's ground-truth tensors that feed the supervised loss terms (LossInputs fields)
TRUTH_FIELDS = ("gt_vertices", "gt_K", "gt_R", "gt_t", "gt_identity", "gt_expression", "gt_pose", "gt_albedo",
                "gt_displacement")


@dataclass
class SemanticConfig:
    """Architecture, decoder and loss options shared by semantic-code methods (their
    ``model:`` section; subclasses add their own fields and default ``losses``)."""

    backbone: str = "resnet18"
    width: float = 1.0
    norm: str = "batch"
    head_model: str = "open"
    head_model_path: str = ""
    image_size: int = 224
    n_identity: int = 0  # 0 = all of the head model's identity modes
    n_expression: int = 0  # 0 = all expression units
    n_reflectance: int = 10
    refl_std_global: float = 0.15
    refl_std_local: float = 0.05
    focal: float = 3.375  # focal length in units of the crop side (a ~0.9 m portrait lens)
    depth_m: float = 0.9  # canonical camera distance (translation z at a zero code)
    xy_scale_m: float = 0.1  # metres per unit of the predicted x/y translation
    depth_scale_m: float = 0.3  # metres per unit of the predicted z translation
    depth_lr_scale: float = 0.1  # MoFA's reduced learning rate for depth
    region: str = "face_skin"  # the photometric term's region of the head model
    visibility: str = "raster"  # raster (z-buffer at visibility_size) | normals (back-face only)
    visibility_size: int = 64
    losses: dict[str, float] = field(default_factory=dict)
    # supervised terms (engine.losses.terms: vertices, shape, rotation, ...) on synthetic items'
    # gt_* tensors: the vertex terms weigh the vertices of this region ("" = all vertices)
    gt_region: str = "face_skin"
    # leave face skin hidden by props (items' occlusion_mask) out of the photometric term
    mask_occlusions: bool = True
    # predict_photo: give the photo camera its principal point at the photo's centre (the
    # network's camera is turned about its centre to keep the face where it was); False keeps
    # the crop centre's preimage as the principal point (networks trained before this option)
    recentre: bool = False
    # predict the jaw rotation (axis-angle, three code values between reflectance and camera);
    # False keeps MoFA's layout (networks trained before this option)
    predict_jaw: bool = False


class SemanticCodeMethod(LearnedMethod):
    """Encoder heads onto a :class:`SemanticCode` + the shared decoder with a Laplacian
    reflectance + a loss list (see the module docstring). Subclasses set ``name``,
    ``config_class`` (a :class:`SemanticConfig`), ``default_losses`` and, to predict
    articulated joints, ``pose_joints`` (joint names of the head model; ``predict_jaw``
    sets it to the jaw)."""

    default_losses: ClassVar[dict[str, float]] = {}
    pose_joints: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: SemanticConfig, head=None) -> None:
        object.__setattr__(self, "pose_joints", ("jaw",) if cfg.predict_jaw else ())
        super().__init__(cfg, head)
        head = self.head
        n_id = cfg.n_identity or head.n_identity
        n_exp = cfg.n_expression or head.n_expression
        if n_id > head.n_identity or n_exp > head.n_expression:
            raise ValueError("n_identity/n_expression exceed the head model's")
        missing = [j for j in self.pose_joints if j not in head.joint_names]
        if missing:
            raise ValueError(f"{self.name} predicts the joints {list(self.pose_joints)}; head model "
                             f"{cfg.head_model!r} has no {missing}")
        self.joint_index = [head.joint_names.index(j) for j in self.pose_joints]
        self.losses = check_weights({**self.default_losses, **cfg.losses}, "model.losses")
        self.layout = CodeLayout(n_id, n_exp, cfg.n_reflectance, 3 * len(self.pose_joints))
        self.encoder = MofaEncoder(self.layout, cfg.backbone, cfg.width, cfg.norm)
        self.reflectance = LaplacianReflectance(head.template, cfg.n_reflectance, cfg.refl_std_global,
                                                cfg.refl_std_local, SKIN_MEAN)
        self.register_buffer("region_mask", head.regions[cfg.region].clone())
        with torch.no_grad():
            centre = head.landmarks(head.template[None])[0].mean(0)
        self.register_buffer("t0", torch.tensor([0.0, 0.0, cfg.depth_m]) - frontal_rotation() @ centre.cpu())
        self.register_buffer("lmk_weights", landmark_weights_68())
        # the joints the pose_gt term counts: the predicted ones (not saved)
        joints = torch.zeros(head.n_joints)
        joints[self.joint_index] = 1.0
        self.register_buffer("pose_joint_weights", joints, persistent=False)
        # weights of the supervised vertex terms (not saved: checkpoints without it still load)
        self.register_buffer("gt_weights", head.regions[cfg.gt_region].to(torch.float32).clone()
                             if cfg.gt_region else None, persistent=False)

    # ------------------------------------------------------------------ training API
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        depth = set(map(id, self.encoder.depth_parameters()))
        rest = [p for p in self.encoder.parameters() if id(p) not in depth]
        return [{"params": rest},
                {"params": self.encoder.depth_parameters(), "lr_scale": self.cfg.depth_lr_scale}]

    def adopt_weights(self, checkpoint: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """A semantic-code checkpoint (MoFA, DECA's coarse stage) whose code has other joint
        rows than this network's (e.g. a MoFA network without the jaw as the start of one
        with ``predict_jaw``): its tensors with the head's joint rows fitted to this layout,
        the rows it has copied, new ones zero (a closed jaw, as before), extra ones dropped.
        None when the head's rows already match (tensors are then matched by name)."""
        state = checkpoint.get("model", {})
        W, b = state.get("encoder.head.weight"), state.get("encoder.head.bias")
        own = self.encoder.head.weight
        if W is None or b is None or W.ndim != 2 or W.shape[1] != own.shape[1] or W.shape[0] == own.shape[0]:
            return None
        n_pose = self.layout.n_pose
        n_pose_old = W.shape[0] - (own.shape[0] - n_pose)
        if n_pose_old < 0 or n_pose_old % 3:
            return None  # another code altogether: by name (the head is then left as it is)
        o = sum(self.layout.sizes[:3])  # identity, expression, reflectance: the joint rows follow
        keep = min(n_pose, n_pose_old)

        def fit_rows(t: Tensor) -> Tensor:
            new = t.new_zeros((n_pose,) + tuple(t.shape[1:]))
            new[:keep] = t[o:o + keep]
            return torch.cat([t[:o], new, t[o + n_pose_old:]])

        return {**state, "encoder.head.weight": fit_rows(W), "encoder.head.bias": fit_rows(b)}

    # ------------------------------------------------------------------ encoder heads -> FaceParams
    def encode(self, images: Tensor) -> SemanticCode:
        """Semantic code for crops (B, 3, S, S) RGB in [0, 1]."""
        return self.encoder(images)

    def intrinsics(self, batch: int, device, dtype=torch.float32) -> Tensor:
        S = self.cfg.image_size
        f = self.cfg.focal * S
        K = torch.tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
        return K.expand(batch, 3, 3)

    def decode(self, code: SemanticCode) -> FaceParams:
        """The code's FaceParams in the crop frame (float32): identity scaled by the prior
        std, the rotation after the frontal camera flip, the translation around the
        canonical ``t0``, the predicted joints' rotations, SH with MoFA's ambient offset (so
        a zero code is lit)."""
        code = code.to(torch.float32)
        B, head = code.batch_size, self.head
        n_id, n_exp = self.layout.n_identity, self.layout.n_expression
        ident = code.identity.new_zeros(B, head.n_identity)
        ident[:, :n_id] = code.identity * head.identity_std[:n_id] * self.identity_orientation()[:n_id]
        expr = code.expression.new_zeros(B, head.n_expression)
        expr[:, :n_exp] = code.expression
        pose = ident.new_zeros(B, head.n_joints, 3)
        if code.pose is not None and self.joint_index:
            pose[:, self.joint_index] = code.pose
        R = frontal_rotation(device=code.rotation.device) @ axis_angle_to_matrix(code.rotation)
        scale = code.translation.new_tensor([self.cfg.xy_scale_m, self.cfg.xy_scale_m, self.cfg.depth_scale_m])
        t = self.t0 + code.translation * scale
        S = self.cfg.image_size
        camera = PerspectiveCamera(self.intrinsics(B, R.device), R, t, (S, S))
        ambient = torch.zeros(9, 1, device=code.sh.device)
        ambient[0, 0] = 1.0 / SH_CONSTANTS[0]
        return FaceParams(identity=ident, expression=expr, pose=pose, camera=camera,
                          sh=code.sh + ambient, reflectance=code.reflectance)

    def visibility(self, decoded: Decoded) -> Tensor:
        """(B, V) bool: vertices the photometric term may use (region ∧ visibility)."""
        if self.cfg.visibility == "normals":
            vis = decoded.facing() > 0
        else:  # z-buffer at a reduced resolution: occlusion needs no full-size raster
            vis = decoded.visibility(size=(self.cfg.visibility_size,) * 2)
        return vis & self.region_mask

    # ------------------------------------------------------------------ losses
    def loss_extras(self, images: Tensor, group_size: int) -> dict[str, Any]:
        """Further :class:`LossInputs` fields a method's own terms read (default: none)."""
        return {}

    def active_losses(self, landmarks: Tensor | None) -> dict[str, float]:
        """The weights used for a batch (default: the config's, the landmark-based terms
        only when the batch has landmarks)."""
        from engine.losses.terms import LANDMARK_TERMS

        return {k: v for k, v in self.losses.items() if landmarks is not None or k not in LANDMARK_TERMS}

    def loss(self, images: Tensor, params: FaceParams, landmarks: Tensor | None = None,
             landmark_valid: Tensor | None = None, truth: Mapping[str, Tensor] | None = None,
             occlusion: Tensor | None = None, group_size: int = 1) -> tuple[Tensor, dict[str, Tensor], Decoded]:
        """Per-batch loss (scalar), its terms (batch means), and the decoded faces.

        ``truth``: a synthetic batch's ``gt_*`` tensors, for the supervised terms (a term
        with a weight whose ground truth is missing is an error). ``occlusion (B, S, S)``:
        face skin hidden by props, left out of the photometric term (``mask_occlusions``).
        ``group_size``: consecutive items showing one person (K views folded into the batch)."""
        dec = self.decoder(params)
        vis = self.visibility(dec)
        photo_w = vis.float()
        if occlusion is not None and self.cfg.mask_occlusions:
            photo_w = photo_w * (~dec.covered(occlusion)).float()
        w = self.lmk_weights
        if landmark_valid is not None:
            w = w * landmark_valid.to(w.dtype)
        truth = {k: v.float() for k, v in (truth or {}).items()}
        inputs = LossInputs(dec, observed=dec.sample(images.float()), photo_weights=photo_w,
                            landmarks=None if landmarks is None else landmarks.float(), landmark_weights=w,
                            landmark_scale=float(self.cfg.image_size),
                            vertex_weights=self.gt_weights, albedo_weights=self.region_mask,
                            pose_joint_weights=self.pose_joint_weights,
                            occlusion=occlusion if self.cfg.mask_occlusions else None,
                            **{k: truth.get(k) for k in TRUTH_FIELDS}, **self.loss_extras(images, group_size))
        weights = self.active_losses(landmarks)
        total, terms = weighted_sum(weights, inputs, log=("landmark",) if landmarks is not None else ())
        scalars = {k: v.mean().detach() for k, v in terms.items()}
        scalars["visible_fraction"] = vis.float().mean().detach()
        if landmarks is not None:
            scalars["landmark_px"] = (dec.landmarks2d - landmarks).norm(dim=-1).mean().detach()
        return total.mean(), scalars, dec

    def decode_for_training(self, code: SemanticCode, batch: Mapping[str, Tensor]) -> FaceParams:
        """The code's FaceParams in a training step (the flattened ``batch`` at hand; default:
        :meth:`decode`, as at inference)."""
        return self.decode(code)

    def training_step(self, batch: dict[str, Tensor]) -> StepResult:
        """One step on crops ``(B, 3, S, S)`` or clips/identity groups ``(B, T, 3, S, S)``
        (folded into B·T images; terms that use the groups see ``group_size = T``)."""
        group = int(batch["image"].shape[1]) if batch["image"].dim() == 5 else 1
        batch = flatten_groups(batch)
        images = batch["image"]
        code = self.encode(images)
        truth = self.complete_truth({k: batch[k] for k in TRUTH_FIELDS if k in batch})
        with torch.autocast(images.device.type, enabled=False):
            params = self.decode_for_training(code, batch)
            loss, terms, _ = self.loss(images, params, batch.get("landmarks"), batch.get("landmarks_valid"),
                                       truth, batch.get("occlusion_mask"), group_size=group)
        return StepResult(loss, terms, {"code": code.detach(), "params": params.detach(), "images": images})
