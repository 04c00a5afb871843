"""Your own character animated by a video: which of its shape keys is which ARKit unit, which
bone turns its head, and that turn in the bone's own axes (bpy-free, tested without Blender;
the keying is :func:`blender_addon.animation.apply_to_character`).

A character made for ARKit (Ready Player Me, Faceit, Polywink, Character Creator's ARKit
morphs, a Maya blend shape node, …) carries the 52 units under its own spelling:
``eyeBlinkLeft``, ``EyeBlinkLeft``, ``eyeBlink_L``, ``Eye_Blink_L``, ``eye_blink_left``,
``blendShape1.eyeBlinkLeft``, ``ARKit_eyeBlinkLeft``, ``A01_Brow_Inner_Up``.
:func:`match_arkit` compares names case- and separator-blind, with ``Left``/``Right`` also
as ``L``/``R``, after any namespace (``….``, ``…:``, ``…|``) and, failing that, after leading
``_``/``-``/space-separated tokens (a prefix). Several keys may take one unit (a head and its
teeth, each with ``jawOpen``).

The head's turn (the animation's head rotation, model axes, relative to the camera's line
of sight) goes on one bone: :func:`guess_head_bone` finds the usual one (``head``,
``Head``, ``mixamorig:Head``, ``CC_Base_Head``, ``J_Bip_C_Head``; else a neck). The
character is taken to stand upright facing Blender's front (−Y), turned by its armature
object's rotation about the world's Z (an FBX import's 90° about X is allowed):
:func:`head_bone_rotation` gives the pose rotation in the bone's axes that turns the bone
in the world as the subject's head turned, when its parents are at rest (added to their
pose otherwise: the head turns relative to the body).

The curves themselves, for any target (our heads too): :func:`adjust_weights` (the panel's
*Strength* and *Rest frame*), :func:`mirror_order` and :func:`mirror_rotations` (*Mirror*, a
mirrored selfie video).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

_NAMESPACE = re.compile(r"^.*[.:|]")
_TOKENS = re.compile(r"[_\-\s]+")


def _plain(name: str) -> str:
    """Lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def spellings(arkit_name: str) -> set[str]:
    """The plain forms an ARKit unit is known by: ``eyeblinkleft`` and ``eyeblinkl``."""
    base = _plain(arkit_name)
    out = {base}
    for side, short in (("left", "l"), ("right", "r")):
        if base.endswith(side):
            out.add(base[: -len(side)] + short)
    return out


def _candidates(key_name: str) -> list[str]:
    """Plain forms of a shape key's name to look up, most specific first: the name without its
    namespace, then without one, two, … leading tokens."""
    tail = _NAMESPACE.sub("", key_name)
    tokens = [t for t in _TOKENS.split(tail) if t]
    return [_plain("".join(tokens[i:])) for i in range(len(tokens))]


@dataclass
class ArkitMatch:
    """Which shape keys take each ARKit unit, and what is left on either side."""

    keys: dict[str, list[str]] = field(default_factory=dict)  # ARKit name -> shape keys (their order)
    missing: list[str] = field(default_factory=list)  # ARKit units no key takes
    unused: list[str] = field(default_factory=list)  # shape keys that are no ARKit unit

    @property
    def n_units(self) -> int:
        return len(self.keys)


def match_arkit(key_names: Iterable[str], arkit_names: Sequence[str]) -> ArkitMatch:
    """Match shape-key names to ARKit units (module docstring). A key takes the first unit one
    of its candidate forms spells; ``arkit_names`` in ARKit's spelling (``browDownLeft``)."""
    lookup: dict[str, str] = {}
    for unit in arkit_names:
        for s in spellings(unit):
            lookup.setdefault(s, unit)
    out = ArkitMatch()
    for key in key_names:
        unit = next((lookup[c] for c in _candidates(key) if c in lookup), None)
        if unit is None:
            out.unused.append(key)
        else:
            out.keys.setdefault(unit, []).append(key)
    out.missing = [u for u in arkit_names if u not in out.keys]
    return out


def guess_head_bone(bone_names: Sequence[str]) -> str | None:
    """The bone that turns a character's head: one named ``head`` (any case, namespace or
    separators), else one whose name ends in ``head`` (``CC_Base_Head``), else the same for
    ``neck``; None when there is none. ``HeadTop_End``-like leaf bones are not taken."""
    plain = [(b, _plain(_NAMESPACE.sub("", b))) for b in bone_names]
    for word in ("head", "neck"):
        for rule in (lambda p: p == word, lambda p: p.endswith(word)):
            hit = next((b for b, p in plain if rule(p)), None)
            if hit is not None:
                return hit
    return None


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _orthonormal(m: np.ndarray) -> np.ndarray:
    """The rotation of a 3x3 matrix with scale (an FBX armature's 0.01): its polar factor."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    r = u @ vt
    return r if np.linalg.det(r) > 0 else u @ np.diag([1.0, 1.0, -1.0]) @ vt


def character_yaw(armature_world: np.ndarray) -> float:
    """The armature object's turn about the world's Z (radians; Blender's XYZ Euler ``z``)."""
    r = _orthonormal(armature_world)
    return math.atan2(r[1, 0], r[0, 0])


def head_bone_rotation(turn_blender: np.ndarray, bone_rest: np.ndarray, armature_world: np.ndarray) -> np.ndarray:
    """The pose rotation (3x3, the bone's own axes) that turns a bone in the world by
    ``turn_blender`` (the head's turn in Blender's axes for a character facing −Y) turned with
    the character (:func:`character_yaw`). ``bone_rest``: the bone's rest matrix in armature
    space (``bone.matrix_local``, 3x3); ``armature_world``: the armature object's world matrix
    (3x3, scale allowed)."""
    yaw = _rotation_z(character_yaw(armature_world))
    world = yaw @ np.asarray(turn_blender, np.float64) @ yaw.T
    a = _orthonormal(armature_world)
    b = _orthonormal(bone_rest)
    return b.T @ (a.T @ world @ a) @ b


def adjust_weights(weights: np.ndarray, strength: float = 1.0, rest: np.ndarray | None = None) -> np.ndarray:
    """Expression curves (T, K) made stronger or weaker, from a rest face: with ``rest`` (K,)
    (the weights of a frame where the face is at rest) each unit's weight becomes
    ``(w − r) / (1 − r)`` (the rest frame reads 0, a full 1 stays 1), then it is scaled by
    ``strength``; the result stays in [0, 1], the shape keys' range."""
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a number ≥ 0, not {strength}")
    w = np.asarray(weights, np.float64)
    if rest is not None:
        r = np.clip(np.asarray(rest, np.float64), 0.0, 0.99)
        w = (w - r) / (1.0 - r)
    return np.clip(w * strength, 0.0, 1.0)


def _other_side(name: str) -> str | None:
    """``eyeBlinkLeft`` → ``eyeBlinkRight``, ``browDown_L`` → ``browDown_R`` (and back); None
    for a name without a side."""
    for a, b in (("Left", "Right"), ("_L", "_R"), ("Right", "Left"), ("_R", "_L")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return None


def mirror_order(names: Sequence[str]) -> list[int]:
    """For curves named ``names``, the column each mirrored curve takes its values from: a unit
    of one side from its twin of the other side (when the animation has it), others from
    themselves."""
    index = {n: i for i, n in enumerate(names)}
    return [index.get(_other_side(n) or n, i) for i, n in enumerate(names)]


def mirror_rotations(rotvecs: np.ndarray) -> np.ndarray:
    """Axis-angle rotations (…, 3), model axes (+X the subject's left), seen in a mirror that
    swaps left and right: the reflection ``S R S`` with ``S = diag(−1, 1, 1)``, whose axis-angle
    vector is ``(x, −y, −z)`` (a turn to the left becomes a turn to the right, a tilt likewise,
    a nod stays)."""
    return np.asarray(rotvecs, np.float64) * np.array([1.0, -1.0, -1.0])
