"""CEST: sequential conditional estimators trained on clips through the shared decoder.

Four estimators, each conditioned on the previous ones' outputs (issue #13):

* ``f_v`` (viewpoint): a CNN backbone on the crop -> head rotation and translation of a
  perspective camera with a fixed canonical focal length (the translation's depth is the
  scale);
* ``f_s`` (shape): a CNN backbone on the crop re-aligned to a canonical view with ``f_v``'s
  pose (a similarity warp: the head's projected centre to the crop centre, its roll undone,
  its size normalised to the canonical depth) -> identity, expression and jaw;
* the photo unwrapped into UV space through that shape and viewpoint
  (:func:`engine.render.unwrap_photo`: the *illuminated texture* and its visibility mask);
* ``f_r`` (reflectance): a small U-Net (:class:`engine.encoders.UNet`) on the illuminated
  texture and its mask -> a UV reflectance map ``albedo_map (B, 3, U, U)``;
* ``f_ℓ`` (light): a small CNN on the image, the illuminated texture, its mask and the
  reflectance (all at ``U × U``) -> 9×3 SH coefficients.

The pose fed to the warp and the unwrapped texture are detached: each estimator learns from
the losses through its own outputs, the conditioning inputs are inputs. With ``independent:
true`` (IEST, the ablation) the same networks see the image alone: ``f_s`` the unwarped crop,
``f_r`` the crop resized to ``U × U`` (mask channel 1), ``f_ℓ`` the crop (other channels 0).

Losses (loss library terms, weights from the config's ``losses``):
``photometric_l1`` (masked ℓ1 over the visible face skin), ``reflectance_symmetry`` (the
same with the UV reflectance mirrored, :func:`engine.texture.flip_uv_map`),
``clip_consistency`` (each frame rendered with the identity and reflectance of one random
other frame of its clip: O(T) renders per clip), ``landmark`` and the statistical priors.
Defaults λ1 = 1 (clip consistency), λ2 = 0.1 (symmetry) as in the paper; see docs/cest.md.

Inference: ``Cest.load(path)``; ``predict_photo`` returns FaceParams with the UV
``albedo_map`` (and its per-vertex samples as ``albedo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor
import torch.nn.functional as Fn

from engine.encoders import CodeLayout, ConvEncoder, UNet, build_backbone
from engine.errors import ConfigError
from engine.face import Decoded, FaceParams
from engine.losses import landmark_weights_68
from engine.losses.terms import LossInputs, check_weights, weighted_sum
from engine.methods.base import LearnedMethod, flatten_groups
from engine.methods.semantic import SKIN_MEAN, TRUTH_FIELDS  # SKIN_MEAN: the reflectance of a zero U-Net output
from engine.render import PerspectiveCamera, axis_angle_to_matrix, frontal_rotation, unwrap_photo
from engine.render.shading import SH_CONSTANTS
from engine.train.method import StepResult

METHOD = {
    "name": "cest",
    "kind": "learned",
    "label": "CEST (sequential estimators, UV reflectance)",
    "description": "Viewpoint, shape, UV reflectance and light estimated in sequence, trained on clips.",
    "needs": "a checkpoint (--checkpoint; the open model has a committed network)",
    "entry": "Cest",
    "train_config": "train/configs/cest.yaml",
    "checkpoints": {"open": "assets/cest_open_default.pt"},
    "order": 40,
}


#: λ1 (clip consistency) = 1 and λ2 (reflectance symmetry) = 0.1 as in the paper; landmark
#: and prior weights as for MoFA's small configs.
DEFAULT_LOSSES = {"photometric_l1": 1.0, "clip_consistency": 1.0, "reflectance_symmetry": 0.1,
                  "landmark": 1.0, "identity_prior": 2.9e-5, "expression_prior": 2.32e-5,
                  "expression_range": 1.0, "jaw_prior": 1e-2}


@dataclass
class CestConfig:
    """Architecture, decoder and loss options (``model:`` section of a training config)."""

    head_model: str = "open"
    head_model_path: str = ""
    image_size: int = 224
    backbone: str = "resnet18"  # f_v and f_s (engine.encoders.build_backbone)
    width: float = 1.0
    norm: str = "batch"
    n_identity: int = 0  # 0 = all of the head model's identity modes
    n_expression: int = 0  # 0 = all expression units
    uv_size: int = 64  # the illuminated texture and the reflectance map (U × U texels)
    unet_width: int = 16  # f_r: channels of the U-Net's first level
    unet_depth: int = 3
    light_width: int = 16  # f_ℓ: channels of its first convolution
    independent: bool = False  # IEST: every estimator from the image alone (the ablation)
    focal: float = 3.375  # focal length in units of the crop side
    depth_m: float = 0.9  # canonical camera distance (translation z at a zero code)
    xy_scale_m: float = 0.1  # metres per unit of the predicted x/y translation
    depth_scale_m: float = 0.3  # metres per unit of the predicted z translation
    region: str = "face_skin"  # the photometric terms' region
    visibility_size: int = 64  # z-buffer size of the visibility test (photometric weights, unwrap)
    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    # leave face skin hidden by props (realistic items' occlusion_mask) out of the photometric terms
    mask_occlusions: bool = True
    # predict_photo: the camera's principal point at the photo's centre (as MoFA's networks)
    recentre: bool = False


@dataclass
class CestCode:
    """The estimators' outputs: ``rotation``/``translation (B, 3)`` (f_v), ``identity (B,
    K_id)`` in prior-std units, ``expression (B, K_exp)``, ``jaw (B, 3)`` (f_s), ``albedo_map
    (B, 3, U, U)`` (f_r), ``sh (B, 9, 3)`` (f_ℓ, before the ambient offset), and the
    illuminated ``texture (B, 3, U, U)`` with its ``texture_mask (B, 1, U, U)``."""

    rotation: Tensor
    translation: Tensor
    identity: Tensor
    expression: Tensor
    jaw: Tensor
    albedo_map: Tensor | None = None
    sh: Tensor | None = None
    texture: Tensor | None = None
    texture_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.rotation.shape[0]

    def detach(self) -> "CestCode":
        return CestCode(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).detach()
                           for f in fields(self)})


class Cest(LearnedMethod):
    """CEST / IEST: f_v, f_s, f_r, f_ℓ over the shared decoder with a UV reflectance map."""

    name = "cest"
    config_class = CestConfig

    def __init__(self, cfg: CestConfig, head=None) -> None:
        super().__init__(cfg, head)
        head = self.head
        n_id = cfg.n_identity or head.n_identity
        n_exp = cfg.n_expression or head.n_expression
        if n_id > head.n_identity or n_exp > head.n_expression:
            raise ConfigError("model.n_identity/n_expression exceed the head model's")
        if cfg.uv_size % 2**cfg.unet_depth:
            raise ConfigError(f"model.uv_size ({cfg.uv_size}) must be divisible by 2^unet_depth "
                              f"({2**cfg.unet_depth})")
        if cfg.region not in head.regions:
            raise ConfigError(f"model.region {cfg.region!r} is not a region of the head model "
                              f"({', '.join(head.regions)})")
        self.losses = check_weights({**DEFAULT_LOSSES, **cfg.losses}, "model.losses")
        self.n_id, self.n_exp = n_id, n_exp
        self.jaw_index = head.joint_names.index("jaw") if "jaw" in head.joint_names else -1
        self.f_v = build_backbone(cfg.backbone, cfg.width, cfg.norm)
        self.f_v_head = torch.nn.Linear(self.f_v.out_features, 6)
        self.f_s = build_backbone(cfg.backbone, cfg.width, cfg.norm)
        self.f_s_head = torch.nn.Linear(self.f_s.out_features, n_id + n_exp + 3)
        for lin in (self.f_v_head, self.f_s_head):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        self.f_r = UNet(4, 3, cfg.unet_width, cfg.unet_depth)
        self.f_l = ConvEncoder(10, 27, cfg.light_width)
        self.register_buffer("region_mask", head.regions[cfg.region].clone())
        self.register_buffer("lmk_weights", landmark_weights_68())
        with torch.no_grad():
            centre = head.landmarks(head.template[None])[0].mean(0).cpu()
        self.register_buffer("centre", centre)
        self.register_buffer("t0", torch.tensor([0.0, 0.0, cfg.depth_m]) - frontal_rotation() @ centre)

    # ------------------------------------------------------------------ pieces
    def camera(self, rotation: Tensor, translation: Tensor) -> PerspectiveCamera:
        """f_v's outputs -> the crop's perspective camera (principal point at its centre)."""
        S = self.cfg.image_size
        B = rotation.shape[0]
        f = self.cfg.focal * S
        K = rotation.new_tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]).expand(B, 3, 3)
        R = frontal_rotation(device=rotation.device) @ axis_angle_to_matrix(rotation)
        scale = translation.new_tensor([self.cfg.xy_scale_m, self.cfg.xy_scale_m, self.cfg.depth_scale_m])
        return PerspectiveCamera(K, R, self.t0 + translation * scale, (S, S))

    def canonical_view(self, images: Tensor, camera: PerspectiveCamera) -> Tensor:
        """The crops warped (similarity) so the head's projected centre is at the crop centre,
        its roll undone and its size that of a head at the canonical depth."""
        with torch.no_grad():
            S = images.shape[-1]
            c = (camera.R @ self.centre.to(camera.R.dtype)) + camera.t  # (B, 3) camera frame
            px = (camera.K @ c[..., None])[..., 0]
            xy = px[:, :2] / px[:, 2:3]  # pixels
            zoom = self.cfg.depth_m / c[:, 2].clamp_min(1e-3)  # image scale relative to the canonical depth
            roll = torch.atan2(camera.R[:, 1, 0], camera.R[:, 0, 0])  # the model x axis in the image
            cos, sin = torch.cos(roll) / zoom, torch.sin(roll) / zoom
            theta = torch.stack([torch.stack([cos, -sin, 2 * xy[:, 0] / S - 1], -1),
                                 torch.stack([sin, cos, 2 * xy[:, 1] / S - 1], -1)], 1)
            grid = Fn.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return Fn.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def uv_fragments(self):
        """The rasterised UV layout at ``uv_size`` (the shared decoder's cache: once per head,
        size and device, not saved)."""
        return self.decoder.uv_fragments(self.cfg.uv_size)

    def unwrap(self, images: Tensor, decoded: Decoded) -> tuple[Tensor, Tensor]:
        """The illuminated texture ``(B, 3, U, U)`` and its visibility mask ``(B, 1, U, U)``."""
        with torch.no_grad():
            vis = decoded.visibility(size=(self.cfg.visibility_size,) * 2)
            h = self.head
            return unwrap_photo(images.float(), decoded.screen.detach().float(), vis, h.faces, h.uv.float(),
                                h.face_uv, self.cfg.uv_size, uv_fragments=self.uv_fragments())

    # ------------------------------------------------------------------ encoder heads -> FaceParams
    def encode(self, images: Tensor) -> CestCode:
        """The four estimators in sequence on crops (B, 3, S, S) RGB in [0, 1]."""
        images = images.float()
        U = self.cfg.uv_size
        v = self.f_v_head(self.f_v(images).float())
        rotation, translation = v[:, :3], v[:, 3:]
        shape_in = images if self.cfg.independent else self.canonical_view(
            images, self.camera(rotation.detach(), translation.detach()))
        s = self.f_s_head(self.f_s(shape_in).float())
        code = CestCode(rotation, translation, s[:, :self.n_id], s[:, self.n_id:self.n_id + self.n_exp],
                        s[:, self.n_id + self.n_exp:])
        small = Fn.interpolate(images, size=(U, U), mode="bilinear", align_corners=False, antialias=True)
        if self.cfg.independent:
            texture, mask = small, torch.ones_like(small[:, :1])
        else:
            texture, mask = self.unwrap(images, self.decoder(self.decode(code)))
        logit = torch.logit(images.new_tensor(SKIN_MEAN))[None, :, None, None]
        albedo_map = torch.sigmoid(logit + self.f_r(torch.cat([texture, mask], 1)))
        if self.cfg.independent:
            light_in = torch.cat([small, torch.zeros_like(small), torch.zeros_like(small[:, :1]),
                                  torch.zeros_like(small)], 1)
        else:
            light_in = torch.cat([small, texture, mask, albedo_map.detach()], 1)
        sh = self.f_l(light_in).view(-1, 9, 3)
        code.albedo_map, code.sh, code.texture, code.texture_mask = albedo_map, sh, texture, mask
        return code

    def decode(self, code: CestCode) -> FaceParams:
        """The code's FaceParams in the crop frame (float32): identity scaled by the prior
        std, jaw rotation, SH with an ambient offset (a zero code is lit), the UV reflectance."""
        B, head = code.batch_size, self.head
        ident = code.identity.new_zeros(B, head.n_identity)
        ident[:, :self.n_id] = code.identity * head.identity_std[:self.n_id] * self.identity_orientation()[:self.n_id]
        expr = code.expression.new_zeros(B, head.n_expression)
        expr[:, :self.n_exp] = code.expression
        pose = ident.new_zeros(B, head.n_joints, 3)
        if self.jaw_index >= 0:
            pose[:, self.jaw_index] = code.jaw
        sh = ident.new_zeros(B, 9, 3)
        sh[:, 0] = 1.0 / SH_CONSTANTS[0]
        if code.sh is not None:
            sh = sh + code.sh
        return FaceParams(identity=ident, expression=expr, pose=pose, camera=self.camera(code.rotation,
                                                                                          code.translation),
                          sh=sh, albedo_map=code.albedo_map)

    def visibility(self, decoded: Decoded) -> Tensor:
        """(B, V) bool: visible face-region vertices (z-buffer at ``visibility_size``)."""
        return decoded.visibility(size=(self.cfg.visibility_size,) * 2) & self.region_mask

    def adopt_weights(self, checkpoint) -> dict[str, Tensor] | None:
        """A semantic-code network's checkpoint (MoFA, DECA's coarse stage: ``encoder.backbone``,
        ``encoder.head``, ``encoder.head_depth``) as this network's starting weights: its
        backbone for both ``f_v`` and ``f_s`` (same architecture), its rotation and
        translation rows for ``f_v``'s head and its identity and expression rows for
        ``f_s``'s (the jaw starts at zero); every camera and code convention is the same
        (``focal``, ``depth_m``, the translation scales, prior-std identity units). The
        reflectance U-Net and the light estimator have no counterpart and start fresh.
        None for any other checkpoint."""
        state = checkpoint.get("model", {})
        export = checkpoint.get("export", {}).get(checkpoint.get("method"), {})
        if "encoder.head.weight" not in state or "encoder.head_depth.weight" not in state or not export:
            return None
        if (export.get("backbone"), float(export.get("width", 0))) != (self.cfg.backbone, float(self.cfg.width)):
            raise ConfigError(f"init_from: the {checkpoint.get('method')} network has a {export.get('backbone')} "
                              f"x{export.get('width')} backbone; model.backbone/width here are "
                              f"{self.cfg.backbone} x{self.cfg.width}")
        for key in ("focal", "depth_m", "xy_scale_m", "depth_scale_m"):
            if key in export and abs(float(export[key]) - float(getattr(self.cfg, key))) > 1e-9:
                raise ConfigError(f"init_from: the {checkpoint.get('method')} network's model.{key} is "
                                  f"{export[key]}, here {getattr(self.cfg, key)}: the cameras would differ")
        W, b = state["encoder.head.weight"].float(), state["encoder.head.bias"].float()
        Wz, bz = state["encoder.head_depth.weight"].float(), state["encoder.head_depth.bias"].float()
        # the encoder's code (engine.encoders.CodeLayout) less its depth row (MofaEncoder.head_depth):
        # identity, expression, 3 x reflectance, pose, rotation 3, translation 3 (z apart), SH 27
        n_refl = int(export.get("n_reflectance", 10))
        n_pose = W.shape[0] + 1 - CodeLayout(self.n_id, self.n_exp, n_refl).dim
        if n_pose < 0:
            raise ConfigError(f"init_from: the {checkpoint.get('method')} network's code does not have "
                              f"{self.n_id} identity and {self.n_exp} expression values")
        rot = sum(CodeLayout(self.n_id, self.n_exp, n_refl, n_pose).sizes[:4])
        out = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        for name in ("f_v", "f_s"):
            out.update({f"{name}.{k[len('encoder.backbone.'):]}": v for k, v in state.items()
                        if k.startswith("encoder.backbone.")})
        out["f_v_head.weight"] = torch.cat([W[rot:rot + 5], Wz])
        out["f_v_head.bias"] = torch.cat([b[rot:rot + 5], bz])
        k = self.n_id + self.n_exp
        jaw_w = W[k + 3 * n_refl:k + 3 * n_refl + 3] if n_pose >= 3 else W.new_zeros(3, W.shape[1])
        jaw_b = b[k + 3 * n_refl:k + 3 * n_refl + 3] if n_pose >= 3 else b.new_zeros(3)
        out["f_s_head.weight"] = torch.cat([W[:k], jaw_w])
        out["f_s_head.bias"] = torch.cat([b[:k], jaw_b])
        return out

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor]) -> StepResult:
        """One step on clips ``(B, T, 3, S, S)`` (or single crops, T = 1: no clip term)."""
        T = batch["image"].shape[1] if batch["image"].dim() == 5 else 1
        batch = flatten_groups(batch)
        images = batch["image"].float()
        with torch.autocast(images.device.type, enabled=False):
            code = self.encode(images)
            params = self.decode(code)
            dec = self.decoder(params)
            vis = self.visibility(dec)
            photo_w = vis.float()
            occlusion = batch.get("occlusion_mask") if self.cfg.mask_occlusions else None
            if occlusion is not None:
                photo_w = photo_w * (~dec.covered(occlusion)).float()
            landmarks = batch.get("landmarks")
            w = self.lmk_weights
            if batch.get("landmarks_valid") is not None:
                w = w * batch["landmarks_valid"].to(w.dtype)
            truth = self.complete_truth({k: batch[k].float() for k in TRUTH_FIELDS if k in batch})
            inputs = LossInputs(dec, observed=dec.sample(images), photo_weights=photo_w,
                                landmarks=None if landmarks is None else landmarks.float(), landmark_weights=w,
                                landmark_scale=float(self.cfg.image_size), group_size=T,
                                vertex_weights=self.region_mask.float(), albedo_weights=self.region_mask,
                                **{k: truth.get(k) for k in TRUTH_FIELDS})
            weights = {k: v for k, v in self.losses.items()
                       if (k != "landmark" or landmarks is not None) and (k != "clip_consistency" or T > 1)}
            total, terms = weighted_sum(weights, inputs)
        scalars = {k: v.mean().detach() for k, v in terms.items()}
        scalars["visible_fraction"] = vis.float().mean().detach()
        scalars["texture_coverage"] = code.texture_mask.mean().detach()
        return StepResult(total.mean(), scalars, {"code": code.detach(), "params": params.detach(),
                                                  "images": images})

    @torch.no_grad()
    def visuals(self, batch, result) -> dict[str, Tensor]:
        """The base class's input / render / overlay, plus the illuminated texture and the
        reflectance map (UV space, upsampled to the crop size)."""
        out = super().visuals(batch, result)
        code: CestCode = result.outputs["code"]
        n, S = out["input"].shape[0], self.cfg.image_size
        for key, value in (("texture", code.texture), ("reflectance", code.albedo_map)):
            out[key] = Fn.interpolate(value[:n].float(), size=(S, S), mode="nearest")
        return out
