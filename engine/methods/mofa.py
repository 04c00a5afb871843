"""MoFA (Tewari et al., ICCV 2017): a CNN encoder trained through a fixed analytic decoder.

encoder (:class:`engine.encoders.MofaEncoder`) -> semantic code -> :class:`FaceParams`
(identity in prior-std units, ARKit expression, perspective camera with a fixed canonical
focal length, reflectance coefficients, SH light with MoFA's ambient offset) -> the shared
:class:`engine.face.FaceDecoder` with a Laplacian reflectance basis
(:class:`engine.face.LaplacianReflectance`). Loss: the loss library's terms with the
weights of the config's ``losses`` (paper's weights by default):

    1.92 · photometric (ℓ2,1 over visible face-skin vertices)
  + 2.9e-5 · (identity_prior + 1.7e-3 · reflectance_prior + 0.8 · expression_prior)
  + 1.0 · expression_range (ours: ARKit weights live in [0, 1])
  + landmark (optional; distances in units of the crop size)

The encoder, the code -> FaceParams mapping, the visibility and the loss assembly are the
semantic-code family's (:mod:`engine.methods.semantic`, shared with DECA's coarse stage);
this module is MoFA's config, its loss list and its checkpoint history.

Inference: ``Mofa.load(path)``; ``predict_photo(rgb, landmarks68)`` (from
:class:`engine.methods.base.LearnedMethod`) returns FaceParams in the photo's frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.methods.semantic import SKIN_MEAN, SemanticCodeMethod, SemanticConfig, recentre_camera

__all__ = ["DEFAULT_LOSSES", "Mofa", "MofaConfig", "SKIN_MEAN", "recentre_camera"]

METHOD = {
    "name": "mofa",
    "kind": "learned",
    "label": "MoFA (learned encoder)",
    "description": "One pass of a CNN encoder trained through the analytic decoder (milliseconds per face).",
    "needs": "a checkpoint (--checkpoint; the open model has a committed default network)",
    "entry": "Mofa",
    "train_config": "train/configs/mofa.yaml",
    "checkpoints": {"open": "assets/mofa_open_default.pt"},
    "aliases": ["learned"],
    "order": 20,
}

#: MoFA's paper weights (Tewari et al. 2017, sec. 6) as loss-library terms.
DEFAULT_LOSSES = {"photometric": 1.92, "identity_prior": 2.9e-5, "reflectance_prior": 2.9e-5 * 1.7e-3,
                  "expression_prior": 2.9e-5 * 0.8, "expression_range": 1.0, "landmark": 0.0}


@dataclass
class MofaConfig(SemanticConfig):
    """Architecture, decoder and loss options (``model:`` section of a training config;
    the fields are :class:`engine.methods.semantic.SemanticConfig`'s)."""

    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSSES))


#: Loss weights of configs written before the loss library (checkpoints keep them):
#: photometric = w_photo, priors = w_reg · (1, w_beta, w_delta), range = w_range, landmark = w_land.
_LEGACY_WEIGHTS = ("w_photo", "w_land", "w_reg", "w_beta", "w_delta", "w_range")


def _legacy_losses(d: Mapping[str, Any]) -> dict[str, float]:
    w = {"w_photo": 1.92, "w_land": 0.0, "w_reg": 2.9e-5, "w_beta": 1.7e-3, "w_delta": 0.8, "w_range": 1.0}
    w.update({k: float(d[k]) for k in _LEGACY_WEIGHTS if k in d})
    return {"photometric": w["w_photo"], "identity_prior": w["w_reg"], "reflectance_prior": w["w_reg"] * w["w_beta"],
            "expression_prior": w["w_reg"] * w["w_delta"], "expression_range": w["w_range"], "landmark": w["w_land"]}


class Mofa(SemanticCodeMethod):
    """MoFA: encoder heads + the shared decoder with a Laplacian reflectance + its loss list."""

    name = "mofa"
    config_class = MofaConfig

    default_losses = DEFAULT_LOSSES

    @classmethod
    def config_from_dict(cls, data: Mapping[str, Any]) -> MofaConfig:
        data = dict(data)
        if any(k in data for k in _LEGACY_WEIGHTS):  # a checkpoint or YAML from before the loss library
            legacy = _legacy_losses(data)
            for k in _LEGACY_WEIGHTS:
                data.pop(k, None)
            data["losses"] = {**legacy, **data.get("losses", {})}
        return super().config_from_dict(data)

    # Checkpoints written before the shared decoder name the reflectance basis differently
    # and store the frontal rotation (now engine.render.frontal_rotation()).
    _RENAMED = {"refl_basis": "reflectance.basis", "refl_mean": "reflectance.mean"}

    @classmethod
    def upgrade_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        return {cls._RENAMED.get(k, k): v for k, v in state.items() if k != "frontal"}
