"""From a head model's estimate to what face-capture tools exchange: 52 ARKit weights, head
and eye rotations (Live Link Face's columns).

* Weights: the model's expression units under their ARKit names (open and ICT name theirs
  after ARKit; ICT's ``_L``/``_R`` suffixes map to ``Left``/``Right``); ARKit units the model
  lacks are written as zeros and listed in :attr:`ArkitRig.missing`; model units that are not
  ARKit units are dropped from the CSV (kept in animation.json). FLAME's PCA expressions
  have no ARKit meaning: :meth:`ArkitRig.check_arkit` refuses them.
* ``jawOpen``: fits open the mouth with the jaw *joint* (one mechanism per fit, see
  docs/conventions.md), a CSV consumer expects the ``jawOpen`` weight. The jaw angle whose
  skinned mesh best matches the model's own ``jawOpen`` blendshape at weight 1 (a 1-D
  search, :attr:`ArkitRig.jaw_rad_per_weight`) converts one into the other.
* Eye rotations: the open model moves the eyeballs with its ``eyeLook*`` blendshapes (the
  fit never rotates the eye joints); how far each unit turns the gaze (the mean direction
  of the eyeball's cornea cap seen from the eye joint) at weight 1
  (:attr:`ArkitRig.eye_rad_per_weight`) turns the weights into the yaw/pitch/roll a CSV
  carries.
* Head rotation "as the camera sees it": the head pose is the camera's ``R, t``. A panning
  camera (or a head off the image centre) changes ``R`` without the head turning, so the
  rotation is taken relative to the line of sight to the head (:func:`head_rotation`):
  ``R = R_los · F · R_head`` with ``F = diag(1, -1, -1)`` (frontal camera) and ``R_los`` the
  smallest rotation taking the optical axis onto the ray through the head's origin.
* Angles: ``R_head = R_Y(yaw) · R_X(pitch) · R_Z(roll)`` in model axes (+X the subject's left,
  +Y up, +Z out of the face): yaw > 0 turns the face to the subject's left, pitch > 0 nods
  down, roll > 0 tilts the head towards the subject's right shoulder; radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import UserError
from engine.head.arkit import ARKIT_NAMES, arkit_name
from engine.head.model import HeadModel
from engine.render.rotation import skew
from engine.video.formats import yaw_pitch_roll

__all__ = ["ArkitRig", "head_rotation", "yaw_pitch_roll"]

_EYE_UNITS = ("eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp")


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations ``(T, 3, 3)`` taking unit vectors ``a (3,)`` onto ``b (T, 3)``."""
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    c = b @ a
    K = skew(torch.from_numpy(np.cross(a, b))).numpy()
    return np.eye(3) + K + (K @ K) / (1.0 + c)[..., None, None]


def head_rotation(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera extrinsics ``R (T, 3, 3)``, ``t (T, 3)`` -> the head's rotation relative to the
    line of sight, ``R_head (T, 3, 3)`` in model axes (module docstring)."""
    R = np.asarray(R, np.float64)
    los = _rotation_between(np.array([0.0, 0.0, 1.0]), np.asarray(t, np.float64))
    F = np.diag([1.0, -1.0, -1.0])
    return F @ np.swapaxes(los, -1, -2) @ R


@dataclass
class ArkitRig:
    """How one head model's estimate maps onto ARKit weights and eye rotations."""

    model: str
    expression_names: list[str]
    arkit_of_unit: list[str | None]  # ARKit name of each model unit (None: not an ARKit unit)
    missing: list[str] = field(default_factory=list)  # ARKit units the model lacks (written as 0)
    jaw_index: int | None = None  # joint
    jaw_rad_per_weight: float = 0.0  # jaw x-rotation equivalent to jawOpen = 1
    eye_rad_per_weight: dict[str, np.ndarray] = field(default_factory=dict)  # ARKit eye unit -> (3,) rad
    eye_of_unit: dict[str, str] = field(default_factory=dict)  # ARKit eye unit -> "left" | "right"

    @property
    def is_arkit(self) -> bool:
        return "jawOpen" in [n for n in self.arkit_of_unit if n]

    def check_arkit(self) -> None:
        if not self.is_arkit:
            raise UserError(f"the {self.model} head model's expressions ({self.expression_names[0]}, ...) are "
                            "not ARKit blendshapes, so no Live Link Face CSV can be written for it; "
                            "animation.json keeps them (use --model open or ict for ARKit curves)")

    @classmethod
    @torch.no_grad()
    def from_head(cls, head: HeadModel) -> "ArkitRig":
        names = list(head.expression_names)
        mapped = [arkit_name(n) if arkit_name(n) in ARKIT_NAMES else None for n in names]
        rig = cls(head.name, names, mapped, [n for n in ARKIT_NAMES if n not in mapped])
        if not rig.is_arkit:
            return rig
        joints = list(head.joint_names)
        rig.jaw_index = joints.index("jaw") if "jaw" in joints else None
        template = head.template
        if rig.jaw_index is not None:
            k = mapped.index("jawOpen")
            target = template + head.expression_basis[k]
            moved = head.expression_basis[k].norm(dim=-1) > 1e-5
            angles = torch.linspace(0.0, 0.8, 161)
            pose = torch.zeros(len(angles), head.n_joints, 3)
            pose[:, rig.jaw_index, 0] = angles
            verts = head(None, None, pose).vertices[:, moved]
            err = (verts - target[moved]).pow(2).sum((-1, -2))
            rig.jaw_rad_per_weight = float(angles[int(err.argmin())])
        rest = head.joint_template
        eye_joints = [j for j in ("eye_left", "eye_right") if j in joints]
        eyes = head.regions["eyes"]
        for side, joint in (("Left", "eye_left"), ("Right", "eye_right")):
            if joint not in eye_joints:
                continue
            # the eyeball's cornea cap (front vertices of this eye): its mean direction from
            # the eye joint is the gaze; a unit's rotation is how far it turns that direction
            r = template - rest[joints.index(joint)]
            dist = torch.stack([(template - rest[joints.index(o)]).norm(dim=-1) for o in eye_joints]).amin(0)
            own = eyes & (r.norm(dim=-1) <= dist + 1e-9)
            if not own.any():
                continue
            radius = r[own].norm(dim=-1).median()
            cap = own & (r.norm(dim=-1) < 1.3 * radius) & (r[:, 2] > 0.8 * r.norm(dim=-1))
            if not cap.any():
                continue
            a = r[cap].mean(0).double()
            for unit in _EYE_UNITS:
                name = unit + side
                if name not in mapped:
                    continue
                b = a + head.expression_basis[mapped.index(name)][cap].mean(0).double()
                axis = torch.linalg.cross(a, b)
                angle = torch.atan2(axis.norm(), a @ b)
                rig.eye_rad_per_weight[name] = (axis / axis.norm().clamp_min(1e-12) * angle).numpy()
                rig.eye_of_unit[name] = side.lower()
        return rig

    # ------------------------------------------------------------------ conversions
    def arkit_weights(self, expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """``(T, K_exp)`` model weights + ``(T, J, 3)`` joint pose -> ``(T, 52)`` ARKit weights
        (ARKIT_NAMES order; jawOpen includes the jaw joint's opening)."""
        self.check_arkit()
        e = np.asarray(expression, np.float64)
        out = np.zeros((len(e), len(ARKIT_NAMES)))
        for i, name in enumerate(self.arkit_of_unit):
            if name is not None:
                out[:, ARKIT_NAMES.index(name)] += e[:, i]
        if self.jaw_index is not None and self.jaw_rad_per_weight > 0 and np.size(pose):
            jaw = np.asarray(pose, np.float64)[:, self.jaw_index, 0]
            out[:, ARKIT_NAMES.index("jawOpen")] += np.maximum(jaw, 0.0) / self.jaw_rad_per_weight
        return np.clip(out, 0.0, 1.0)

    def eye_rotations(self, arkit: np.ndarray) -> dict[str, np.ndarray]:
        """``(T, 52)`` ARKit weights -> ``{"left", "right"}: (T, 3)`` eye axis-angles (model axes)."""
        w = np.asarray(arkit, np.float64)
        out = {"left": np.zeros((len(w), 3)), "right": np.zeros((len(w), 3))}
        for name, omega in self.eye_rad_per_weight.items():
            out[self.eye_of_unit[name]] += w[:, [ARKIT_NAMES.index(name)]] * omega[None]
        return out
