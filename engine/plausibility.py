"""Is a fitted head plausible for its photo? Cheap checks that catch confident wrong answers.

A fit can end in a wrong minimum that still reports a modest landmark error on average, e.g.
an upright head fitted to an upside-down face with its eyes on the mouth.
:func:`check_fit` compares the landmarks the detector found with the fitted model's own
landmarks projected into the photo (both iBUG-68, photo pixels) and returns one sentence
per problem; an empty list means nothing looks wrong. ``reconstruct`` stores the list as
``params["warnings"]`` and the CLI prints it as one ``warning: ...`` line.
"""

from __future__ import annotations

import math

import numpy as np

#: the fitted landmarks may miss the detected ones by this fraction of the eye distance on
#: average (inner face, points 17-67; the jaw contour is matched loosely on purpose)
MAX_MEAN_ERROR_IOD = 0.3
#: largest angle (degrees) between the detected and the fitted face's eyes-to-mouth direction
MAX_TURN_DEG = 45.0

_EYES = slice(36, 48)
_MOUTH = slice(48, 68)
_INNER = slice(17, 68)


def _up(lm: np.ndarray) -> np.ndarray:
    """Mouth-to-eyes vector: the face's "up" in the image."""
    return lm[_EYES].mean(0) - lm[_MOUTH].mean(0)


#: the fit's landmark residual (``fit_losses["landmark_px"]``, pixels at its 192-px working
#: crop) above which ``reconstruct`` asks a learned network whether the detector is lost: on
#: 98 realistic frames (seeds 500 and 700) every lost one was above 3.5 (the others' median
#: 3.1; the astronaut 2.7): photos the fit follows well pay nothing for the check
LOST_CHECK_RESIDUAL_PX = 3.4


def learned_disagreement(head, observation, device=None) -> float | None:
    """How far the detected landmarks of ``observation`` (:class:`engine.methods.FaceObservation`)
    are from a learned network's estimate of the same face
    (:func:`engine.methods.hybrid.landmark_disagreement`), with the first learned method that
    has a committed network for ``head``; None when there is none or it fails. A fit has
    nothing else to tell a lost detector by: above ``FitConfig.hybrid_lost_landmarks`` it
    follows landmarks that are not the face's."""
    from engine.methods import build_predictor, registry
    from engine.methods.hybrid import landmark_disagreement

    spec = registry.default_learned(head.name)
    if spec is None:
        return None
    try:
        network = build_predictor(spec.name, head, device=device)
        return landmark_disagreement(network(observation), head, observation.landmarks68)
    except Exception:  # noqa: BLE001 - a check that cannot run says nothing
        return None


def lost_detector_warning(disagreement: float, followed: bool) -> str:
    """The warning for a face whose detected landmarks disagree as a whole with a learned
    network's estimate (``disagreement``: their median distance over the landmarks' box size;
    :func:`engine.methods.hybrid.landmark_disagreement`): a fit ``followed`` them (it is told
    of the hybrid); a hybrid kept its network's geometry instead (this replaces
    :func:`check_fit`'s warning, which would compare the head with the landmarks it chose
    not to follow)."""
    what = ("and the fit followed it; the hybrid method (--method hybrid, or Method: Hybrid in Blender) keeps the "
            "network's head on such faces" if followed else "so the head keeps the network's shape and pose")
    return (f"the detected landmarks disagree with the learned network's estimate as a whole ({100 * disagreement:.0f} % "
            f"of the face's size): the detector is probably lost on this face (a profile or an occluded face){'' if followed else ','} "
            f"{what}; check overlay.png")


def check_fit(detected_px: np.ndarray, model_px: np.ndarray) -> list[str]:
    """Warnings (one sentence each) for a fit whose projected model landmarks ``model_px``
    (68, 2) disagree with the detected landmarks ``detected_px`` (68, 2), both in photo pixels.

    * the fitted face is turned against the detected one (its eyes-to-mouth direction more
      than MAX_TURN_DEG off), or its eyes are below its mouth along the detected face's up;
    * the fitted landmarks are on average more than MAX_MEAN_ERROR_IOD eye distances from
      the detected ones (inner face).

    Non-finite input is itself a warning.
    """
    det = np.asarray(detected_px, dtype=np.float64).reshape(-1, 2)[:68]
    fit = np.asarray(model_px, dtype=np.float64).reshape(-1, 2)[:68]
    if det.shape != (68, 2) or fit.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {np.shape(detected_px)} and {np.shape(model_px)}")
    if not (np.all(np.isfinite(det)) and np.all(np.isfinite(fit))):
        return ["the fitted head's landmarks are not finite numbers; the reconstruction is not usable"]
    warnings: list[str] = []
    iod = float(np.linalg.norm(det[36:42].mean(0) - det[42:48].mean(0)))
    iod = max(iod, 1e-6)
    up_det, up_fit = _up(det), _up(fit)
    n_det, n_fit = np.linalg.norm(up_det), np.linalg.norm(up_fit)
    if n_det > 1e-6 and n_fit > 1e-6:
        cos = float(np.clip(up_det @ up_fit / (n_det * n_fit), -1.0, 1.0))
        turn = math.degrees(math.acos(cos))
        if up_fit @ up_det <= 0:
            warnings.append(f"the fitted head's eyes are below its mouth in the photo (turned {turn:.0f}° against "
                            "the detected face); the head is probably upside down")
        elif turn > MAX_TURN_DEG:
            warnings.append(f"the fitted head is turned {turn:.0f}° in the image plane against the detected face")
    err = float(np.linalg.norm(fit[_INNER] - det[_INNER], axis=1).mean())
    if err > MAX_MEAN_ERROR_IOD * iod:
        warnings.append(f"the fitted head does not follow the detected landmarks (mean error {err:.0f} px, "
                        f"{err / iod:.0%} of the eye distance); check overlay.png")
    return warnings
