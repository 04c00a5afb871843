"""Animation files: ``animation.json`` (ours) and the Live Link Face CSV, read and written.

This module needs only the standard library and numpy: the Blender add-on (whose Python has
no PyTorch) loads this file on its own, by path, to read what it keyframes — one reader for
the engine, its tests and Blender.

:class:`Animation` is what both formats hold in memory: per frame a time, blendshape
``weights`` under ``names``, local joint rotations (axis-angle, model axes, as in
docs/conventions.md) and the head's rotation relative to the line of sight (model axes;
engine/video/arkit.py) — plus, in animation.json, the camera's ``R, t, K`` per frame.

``animation.json``::

    {"format": "facerecon-animation", "version": 1, "fps": 30.0, "model": "open",
     "expression_names": [...], "joint_names": [...], "identity": [...], "source": ...,
     "frames": [{"frame": 0, "time": 0.0, "tracked": true, "expression": [...],
                 "pose": {"jaw": [rx, ry, rz], ...},
                 "head": {"rotation": [rx, ry, rz], "yaw_pitch_roll": [y, p, r],
                          "R": [[...]], "t": [...]}, "K": [[...]]}, ...]}

Live Link Face CSV: ``Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,
HeadRoll,LeftEyeYaw,...,RightEyeRoll`` — the 52 ARKit weights in Live Link Face's column
order, then head and eye rotations in radians; ``Timecode`` is ``HH:MM:SS:FF.fff`` (frame
``FF`` within the second at the clip's rate, ``.fff`` a sub-frame fraction) and
``BlendShapeCount`` is 61. Angles: ``R = R_Y(yaw) R_X(pitch) R_Z(roll)`` in model axes (yaw > 0
turns the face to the subject's left, pitch > 0 nods down, roll > 0 tilts towards the
subject's right shoulder); other tools may use other signs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "facerecon-animation"
VERSION = 1

try:  # the engine package (engine process, tests)
    from engine.head.arkit import ARKIT_NAMES
except ImportError:  # loaded by file path from the Blender add-on: no engine package there
    import importlib.util as _util

    _spec = _util.spec_from_file_location("_facerecon_arkit", Path(__file__).resolve().parents[1] / "head" / "arkit.py")
    _arkit = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_arkit)
    ARKIT_NAMES = _arkit.ARKIT_NAMES

#: Live Link Face's column order of the 52 ARKit weights (capitalised names)
LIVE_LINK_ORDER: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawLeft", "JawRight", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthLeft", "MouthRight", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut")
ROTATION_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                    "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
STANDARD_RATES = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 100.0, 120.0)

__all__ = ["Animation", "AnimationFileError", "FORMAT", "LIVE_LINK_ORDER", "ROTATION_COLUMNS", "quaternion_to_rotvec",
           "read_animation", "read_json", "read_live_link_csv", "rotvec_to_matrix", "rotvec_to_quaternion",
           "write_json", "write_live_link_csv", "yaw_pitch_roll", "yaw_pitch_roll_to_rotvec", "natural_key"]


class AnimationFileError(ValueError):
    """An animation file cannot be read (the message names the file and the reason)."""


@dataclass
class Animation:
    """Curves of one clip (see the module docstring). Arrays are time-first."""

    fps: float
    times: np.ndarray  # (T,) seconds
    names: list[str]  # blendshape names of ``weights``' columns
    weights: np.ndarray  # (T, K)
    joints: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, 3) local axis-angle
    head_rotation: np.ndarray | None = None  # (T, 3) axis-angle, model axes, relative to the line of sight
    tracked: np.ndarray | None = None  # (T,) bool: a face was seen (else interpolated)
    frames: np.ndarray | None = None  # (T,) source frame index
    camera: dict[str, np.ndarray] = field(default_factory=dict)  # "R" (T,3,3), "t" (T,3), "K" (T,3,3)
    eye_rotations: dict[str, np.ndarray] = field(default_factory=dict)  # "left"/"right" -> (T, 3) yaw/pitch/roll
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.times))

    def weight(self, name: str) -> np.ndarray:
        return self.weights[:, self.names.index(name)]


def _r(x: np.ndarray, digits: int = 6) -> list:
    return np.round(np.asarray(x, np.float64), digits).tolist()


# ---------------------------------------------------------------------------- animation.json
def write_json(path: str | Path, anim: Animation) -> None:
    """Write ``animation.json`` (the module docstring's layout)."""
    T = anim.n_frames
    frames = []
    for i in range(T):
        rec: dict[str, Any] = {"frame": int(anim.frames[i]) if anim.frames is not None else i,
                               "time": round(float(anim.times[i]), 6),
                               "tracked": bool(anim.tracked[i]) if anim.tracked is not None else True,
                               "expression": _r(anim.weights[i], 5),
                               "pose": {k: _r(v[i]) for k, v in anim.joints.items()}}
        head: dict[str, Any] = {}
        if anim.head_rotation is not None:
            head["rotation"] = _r(anim.head_rotation[i])
            head["yaw_pitch_roll"] = _r(yaw_pitch_roll(rotvec_to_matrix(anim.head_rotation[i])))
        if "R" in anim.camera:
            head["R"] = _r(anim.camera["R"][i])
            head["t"] = _r(anim.camera["t"][i])
        rec["head"] = head
        if "K" in anim.camera:
            rec["K"] = _r(anim.camera["K"][i], 4)
        frames.append(rec)
    doc = {"format": FORMAT, "version": VERSION, "fps": float(anim.fps), **anim.meta,
           "expression_names": list(anim.names), "joint_names": list(anim.joints), "frames": frames}
    Path(path).write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Animation:
    """Read ``animation.json``; :class:`AnimationFileError` when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnimationFileError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AnimationFileError(f"{path} is not a {FORMAT} file (no \"format\": \"{FORMAT}\")")
    if int(doc.get("version", 0)) > VERSION:
        raise AnimationFileError(f"{path} is animation format version {doc.get('version')}; this reader "
                                 f"knows up to {VERSION}")
    try:
        names = list(doc["expression_names"])
        joints = list(doc.get("joint_names", []))
        frames = doc["frames"]
        if not frames:
            raise ValueError("it has no frames")
        T = len(frames)
        weights = np.array([f["expression"] for f in frames], np.float64).reshape(T, len(names))
        anim = Animation(
            fps=float(doc["fps"]), times=np.array([f["time"] for f in frames], np.float64), names=names,
            weights=weights, joints={j: np.array([f["pose"][j] for f in frames], np.float64) for j in joints},
            tracked=np.array([bool(f.get("tracked", True)) for f in frames]),
            frames=np.array([int(f.get("frame", i)) for i, f in enumerate(frames)]),
            meta={k: v for k, v in doc.items() if k not in ("frames", "expression_names", "joint_names", "fps",
                                                           "format", "version")})
        if all("rotation" in f.get("head", {}) for f in frames):
            anim.head_rotation = np.array([f["head"]["rotation"] for f in frames], np.float64)
        if all("R" in f.get("head", {}) for f in frames):
            anim.camera["R"] = np.array([f["head"]["R"] for f in frames], np.float64)
            anim.camera["t"] = np.array([f["head"]["t"] for f in frames], np.float64)
        if all("K" in f for f in frames):
            anim.camera["K"] = np.array([f["K"] for f in frames], np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnimationFileError(f"{path} is not a valid animation file: {type(exc).__name__} {exc}") from None
    return anim


def natural_key(name: str) -> list:
    """Sort key of a frame file's name in natural order (``frame2`` before ``frame10``): how a
    folder of frames is a clip, for the engine and for the Blender add-on alike."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------- rotations (numpy)
# Here rather than in a module of their own so that Blender, which loads this file alone,
# has them too; quaternions are (w, x, y, z).
def rotvec_to_quaternion(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle ``(..., 3)`` -> unit quaternions ``(..., 4)``."""
    v = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(θ/2)/θ, with its limit 1/2 at θ = 0
    k = np.where(angle > 1e-9, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([np.cos(half), v * k], -1)


def quaternion_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` (normalised here) -> axis-angle ``(..., 3)``, angle in [0, π]."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    factor = np.where(s > 1e-9, angle / np.maximum(s, 1e-12), 2.0 / q[..., :1])
    return q[..., 1:] * factor


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` (the rotation ``b`` then ``a``)."""
    w1, x1, y1, z1 = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle ``(..., 3)`` -> rotation matrices ``(..., 3, 3)`` (through the quaternion)."""
    w, x, y, z = np.moveaxis(rotvec_to_quaternion(rotvec), -1, 0)
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def yaw_pitch_roll(R: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` -> ``(..., 3)`` (yaw, pitch, roll) with ``R = R_Y(yaw) R_X(pitch) R_Z(roll)``."""
    R = np.asarray(R, np.float64)
    return np.stack([np.arctan2(R[..., 0, 2], R[..., 2, 2]), np.arcsin(np.clip(-R[..., 1, 2], -1.0, 1.0)),
                     np.arctan2(R[..., 1, 0], R[..., 1, 1])], -1)


def yaw_pitch_roll_to_rotvec(ypr: np.ndarray) -> np.ndarray:
    """``(..., 3)`` (yaw, pitch, roll) -> axis-angle ``(..., 3)`` (inverse of :func:`yaw_pitch_roll`)."""
    a = np.asarray(ypr, np.float64)
    q = [rotvec_to_quaternion(a[..., i:i + 1] * np.asarray(axis, np.float64))
         for i, axis in enumerate(((0, 1, 0), (1, 0, 0), (0, 0, 1)))]
    return quaternion_to_rotvec(quaternion_multiply(quaternion_multiply(q[0], q[1]), q[2]))


# ---------------------------------------------------------------------------- Live Link Face CSV
def timecode(t: float, fps: float) -> str:
    """``HH:MM:SS:FF.fff`` of time ``t`` seconds at ``fps``."""
    frames = t * fps
    rate = int(round(fps))
    whole = int(math.floor(frames + 1e-6))
    sub = max(frames - whole, 0.0)
    secs, ff = divmod(whole, rate)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(round(sub * 1000)) % 1000:03d}"


def write_live_link_csv(path: str | Path, times: np.ndarray, fps: float, arkit: np.ndarray,
                        head_ypr: np.ndarray, left_eye_ypr: np.ndarray, right_eye_ypr: np.ndarray) -> None:
    """Write a Live Link Face CSV: ``arkit (T, 52)`` in :data:`ARKIT_NAMES` order, yaw/pitch/roll
    ``(T, 3)`` of the head and the eyes (radians)."""
    order = [ARKIT_NAMES.index(n[0].lower() + n[1:]) for n in LIVE_LINK_ORDER]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Timecode", "BlendShapeCount", *LIVE_LINK_ORDER, *ROTATION_COLUMNS])
    n = len(LIVE_LINK_ORDER) + len(ROTATION_COLUMNS)
    for i, t in enumerate(np.asarray(times, np.float64)):
        row = [*np.asarray(arkit[i])[order], *head_ypr[i], *left_eye_ypr[i], *right_eye_ypr[i]]
        w.writerow([timecode(float(t), fps), n, *(f"{float(v):.6f}" for v in row)])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


_TIMECODE = re.compile(r"^\s*(\d+):(\d+):(\d+)[:;.](\d+(?:\.\d+)?)\s*$")


def read_live_link_csv(path: str | Path, fps: float | None = None) -> Animation:
    """Read a Live Link Face CSV (ours or the app's). Times start at 0. ``fps``: the recording's
    rate; by default the frame counter's wrap-around (or the smallest standard rate above
    its largest value) tells it. A bare frame number is accepted as ``Timecode`` too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnimationFileError(f"{path} cannot be read as text: {exc}") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise AnimationFileError(f"{path} is empty")
    header = [c.strip() for c in rows[0]]
    lower = [c.lower() for c in header]
    shape_cols = {n: lower.index(n.lower()) for n in LIVE_LINK_ORDER if n.lower() in lower}
    if "timecode" not in lower or len(shape_cols) < 10:
        raise AnimationFileError(f"{path} is not a Live Link Face CSV (its header has no Timecode and "
                                 "ARKit blendshape columns such as EyeBlinkLeft, JawOpen)")
    tc = lower.index("timecode")
    stamps: list[tuple[int, int, int, float] | float] = []
    values = []
    for k, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise AnimationFileError(f"{path} line {k} has {len(row)} columns, the header {len(header)}")
        m = _TIMECODE.match(row[tc])
        try:
            stamps.append((int(m[1]), int(m[2]), int(m[3]), float(m[4])) if m else float(row[tc]))
            values.append([float(row[i]) if i != tc and row[i].strip() else 0.0 for i in range(len(header))])
        except ValueError:
            raise AnimationFileError(f"{path} line {k}: a value is not a number") from None
    if not values:
        raise AnimationFileError(f"{path} has a header but no frames")
    data = np.array(values, np.float64)
    if fps is None:
        fps = _guess_rate(stamps)
    times = np.array([(3600 * s[0] + 60 * s[1] + s[2] + s[3] / fps) if isinstance(s, tuple) else s / fps
                      for s in stamps])
    times = times - times[0]
    names = [n[0].lower() + n[1:] for n in LIVE_LINK_ORDER]
    weights = np.stack([data[:, shape_cols[n]] if n in shape_cols else np.zeros(len(data))
                        for n in LIVE_LINK_ORDER], 1)

    def ypr(prefix: str) -> np.ndarray | None:
        cols = [f"{prefix}{a}".lower() for a in ("Yaw", "Pitch", "Roll")]
        if not all(c in lower for c in cols):
            return None
        return data[:, [lower.index(c) for c in cols]]

    anim = Animation(fps=float(fps), times=times, names=names, weights=weights,
                     tracked=np.ones(len(times), bool), frames=np.arange(len(times)),
                     meta={"source": str(path), "format_read": "live-link-face-csv"})
    head = ypr("Head")
    if head is not None:
        anim.head_rotation = yaw_pitch_roll_to_rotvec(head)
    for side, prefix in (("left", "LeftEye"), ("right", "RightEye")):
        eye = ypr(prefix)
        if eye is not None:
            anim.eye_rotations[side] = eye
    return anim


def _guess_rate(stamps: list) -> float:
    """The frame counter's rate: one more than its value before it wraps to the next second."""
    tuples = [s for s in stamps if isinstance(s, tuple)]
    if not tuples:
        return 30.0
    wraps = [int(a[3]) + 1 for a, b in zip(tuples, tuples[1:]) if b[2] != a[2] and int(b[3]) < int(a[3])]
    top = max(wraps) if wraps else int(max(s[3] for s in tuples)) + 1
    return next((r for r in STANDARD_RATES if r >= top), float(top))


def read_animation(path: str | Path, fps: float | None = None) -> Animation:
    """``animation.json`` or a Live Link Face ``.csv`` by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_json(path)
    if suffix == ".csv":
        return read_live_link_csv(path, fps)
    raise AnimationFileError(f"{path}: animation files are animation.json or a Live Link Face .csv")
