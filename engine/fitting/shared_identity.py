"""One person in several photos: one identity for all of them (``reconstruct --same-person``).

Each photo is first reconstructed on its own (any method). From there each is fitted again
with the identity prior's weight divided by the number of photos N: a joint fit of N photos
weighs one prior against N photos' evidence, and for photos that constrain the identity
alike, the mean of N such fits is that joint fit's answer (for quadratic energies with equal
curvature: (1/N) Σ (H + λ/N)⁻¹ H m_i = (N H + λ)⁻¹ H Σ m_i). Their identities are combined
as a video's key frames are (:func:`engine.video.identity.combine_identities`: a weighted
mean in prior-std units, each photo weighing by how well its estimate follows its
landmarks, robust to one that lies far from the others), and every photo is fitted a last
time with that identity fixed (expression, jaw, head pose, camera, light and albedo free:
:attr:`engine.fitting.FitConfig.fix_identity`). What it buys on photos of one head under
other poses, expressions, lights and lenses: docs/fitting.md, "One person, several photos".
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["SharedIdentity", "share_identity"]


@dataclasses.dataclass
class SharedIdentity:
    """The combined ``identity (K_id,)``, each photo's ``weights`` in it (sum 1), the photos'
    estimates fitted again with it (``estimates``, in the given order) and the seconds that took."""

    identity: np.ndarray
    weights: np.ndarray
    estimates: list[Any]
    seconds: float


def share_identity(head: Any, observations: Sequence[Any], estimates: Sequence[Any],
                   config: Any = None) -> SharedIdentity:
    """One identity for the photos of one person (module doc). ``observations``: each photo's
    :class:`engine.methods.FaceObservation`; ``estimates``: each one's own
    :class:`engine.face.FaceParams`; ``config``: the :class:`engine.fitting.FitConfig` of the
    second fits (default: the fit's own), with ``fix_identity`` set here."""
    from engine.fitting import FitConfig
    from engine.methods.fit import FitPredictor
    from engine.video.identity import combine_identities, landmark_rms

    if len(observations) != len(estimates) or not estimates:
        raise ValueError("share_identity needs one estimate per observation, at least one")
    t = time.perf_counter()
    cfg = config or FitConfig()
    if len(estimates) > 1:  # each photo's share of the joint fit's prior
        loose = FitPredictor(head, dataclasses.replace(cfg, w_identity=cfg.w_identity / len(estimates)))
        estimates = [loose(o, init=e) for o, e in zip(observations, estimates)]
    identities = np.stack([e.identity[0].detach().cpu().double().numpy() for e in estimates])
    errors = np.array([landmark_rms(head, e, o.landmarks68) for o, e in zip(observations, estimates)])
    identity, weights = combine_identities(identities, errors, head.identity_std.detach().cpu().double().numpy())
    fit = FitPredictor(head, dataclasses.replace(cfg, fix_identity=True))
    shared = torch.as_tensor(identity, dtype=torch.float32)[None]
    refitted = [fit(o, init=e.replace(identity=shared.to(e.identity.device, e.identity.dtype)))
                for o, e in zip(observations, estimates)]
    return SharedIdentity(identity, weights, refitted, time.perf_counter() - t)
