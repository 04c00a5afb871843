"""Losses shared by the optimisation-based fitter and the learned encoders.

Named terms over decoded faces, weighted from configs, live in :mod:`engine.losses.terms`
(:func:`weighted_sum`); the functions below are their building blocks.

MoFA-style photometric ℓ2,1 term over visible vertices, landmark reprojection, DECA's
eye closure (eyelid offsets) and identity distance (face-recognition descriptors), statistical
(Tikhonov) priors scaled by each model's std, and regularisers for a free per-vertex albedo
(smoothness on the mesh graph, left/right symmetry, a skin-colour prior). All functions are
batch-first and return one value per batch element unless stated otherwise.
"""

from engine.losses.albedo import (
    SkinColourPrior,
    albedo_smoothness,
    albedo_symmetry,
    mesh_edges,
    mirror_vertex_map,
    skin_colour_prior,
)
from engine.losses.landmark import EYELID_PAIRS, eye_closure_loss, landmark_loss, landmark_weights_68
from engine.losses.photometric import photometric_l1, photometric_l21
from engine.losses.priors import range_penalty, tikhonov
from engine.losses.terms import (TERMS, LossInputs, check_weights, contour_loss, identity_distance, register_term,
                                 weighted_sum)

__all__ = [
    "EYELID_PAIRS",
    "LossInputs",
    "TERMS",
    "check_weights",
    "contour_loss",
    "register_term",
    "weighted_sum",
    "SkinColourPrior",
    "albedo_smoothness",
    "albedo_symmetry",
    "eye_closure_loss",
    "identity_distance",
    "landmark_loss",
    "landmark_weights_68",
    "mesh_edges",
    "mirror_vertex_map",
    "photometric_l1",
    "photometric_l21",
    "range_penalty",
    "skin_colour_prior",
    "tikhonov",
]
