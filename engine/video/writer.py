"""The ``animate`` output folder: the usual head files once, plus the animation three ways.

Written atomically (:func:`engine.outputs.atomic_output_folder`): the folder appears only
when every file is there.

* the head: :func:`engine.outputs.write_outputs` on the clip's most frontal estimated frame
  (the clip's identity; ``params.json`` names the video, the frame and its time);
* ``animation.json`` (:mod:`engine.video.formats`): per frame time, the model's expression
  weights, joint rotations, head rotation / transform and camera;
* ``animation.csv``: Live Link Face columns (52 ARKit weights, head and eye yaw/pitch/roll;
  :mod:`engine.video.arkit` converts the jaw joint into ``jawOpen`` and the ``eyeLook*``
  weights into eye rotations); not written for FLAME, whose expressions are not ARKit units
  (the reason is in ``animation.json``'s ``notes``);
* ``animation.glb``: the head (identity at rest, albedo, one morph target per expression),
  skinned to the model's joints, with one animation: morph weights per frame and the jaw,
  eye and neck joints' rotations (the head's rotation is played on the neck joint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.head.model import HeadModel
from engine.video.animate import ClipEstimate
from engine.video.arkit import ArkitRig
from engine.video.formats import (Animation, quaternion_multiply, rotvec_to_matrix, rotvec_to_quaternion,
                                  write_json, write_live_link_csv, yaw_pitch_roll)

__all__ = ["write_animation_folder", "write_animation_glb", "write_csv"]


def write_csv(path: Path, anim: Animation, rig: ArkitRig) -> None:
    """``animation.csv`` (Live Link Face) of ``anim`` for an ARKit head model."""
    pose = np.stack([anim.joints[n] for n in anim.joints], 1) if anim.joints else np.zeros((anim.n_frames, 0, 3))
    arkit = rig.arkit_weights(anim.weights, pose)
    eyes = rig.eye_rotations(arkit)
    head = (yaw_pitch_roll(rotvec_to_matrix(anim.head_rotation)) if anim.head_rotation is not None
            else np.zeros((anim.n_frames, 3)))
    write_live_link_csv(path, anim.times - anim.times[0], anim.fps, arkit, head,
                        yaw_pitch_roll(rotvec_to_matrix(eyes["left"])), yaw_pitch_roll(rotvec_to_matrix(eyes["right"])))


@torch.no_grad()
def write_animation_glb(path: Path, head: HeadModel, identity: np.ndarray, anim: Animation,
                        texture_png: bytes | None) -> None:
    """``animation.glb``: skinned head with morph-weight and joint-rotation channels."""
    from engine.export.gltf import write_glb
    from engine.export.uv_pack import export_layout
    from engine.head.teeth import with_teeth
    from engine.outputs import expression_morph_targets

    model = with_teeth(head.to("cpu") if head.template.device.type != "cpu" else head)  # the files' mesh
    ident = torch.as_tensor(identity, dtype=torch.float32)
    out = model(ident[None], None, None)
    base, rest = out.vertices[0].numpy(), out.joints[0].numpy()
    targets = expression_morph_targets(model, ident, ident.new_zeros(0))
    skin = {"joint_names": list(model.joint_names), "joint_parents": model.joint_parents.tolist(),
            "rest_joints": rest, "weights": model.skin_weights.numpy()}
    rotations = {}
    for name, rv in anim.joints.items():
        q = rotvec_to_quaternion(rv)
        if name == "neck" and anim.head_rotation is not None:
            q = quaternion_multiply(rotvec_to_quaternion(anim.head_rotation), q)
        rotations[name] = q[:, [1, 2, 3, 0]]  # glTF: x, y, z, w
    animation = {"name": "face", "times": anim.times - anim.times[0], "morph_weights": anim.weights,
                 "rotations": rotations}
    exported = export_layout(model)  # albedo.png's layout (engine.export.uv_pack)
    write_glb(path, base, model.faces.numpy(), exported.uv.numpy(), exported.face_uv.numpy(), morph_targets=targets,
              texture_png=texture_png, name="head", skin=skin, animation=animation)


def write_animation_folder(out_dir: str | os.PathLike[str], head: HeadModel, est: ClipEstimate, anim: Animation,
                           source: str, method: str, extra: dict[str, Any] | None = None) -> tuple[Path, list[str]]:
    """Write the folder (module docstring); returns its path and the files written."""
    from engine.outputs import atomic_output_folder, write_outputs, write_params
    from engine.photo import Photo

    rig = ArkitRig.from_head(head)
    notes = list(anim.meta.get("notes", []))
    if rig.is_arkit:
        if rig.missing:
            notes.append(f"the {head.name} model has no {', '.join(rig.missing)}: written as 0 in animation.csv")
        if rig.jaw_index is not None:
            notes.append(f"animation.csv's JawOpen includes the jaw joint's opening ({rig.jaw_rad_per_weight:.3f} rad "
                         "= 1, the angle whose mesh matches the jawOpen blendshape)")
        if rig.eye_rad_per_weight:
            notes.append("animation.csv's eye rotations come from the eyeLook* weights (how far each turns the "
                         "eyeball at weight 1)")
    else:
        notes.append(f"no animation.csv: the {head.name} model's expressions are not ARKit blendshapes")
    anim.meta["notes"] = notes
    written = []
    with atomic_output_folder(out_dir) as tmp:
        photo = Photo.from_array(est.head_rgb, name=source)
        k = est.head_position
        info = {"video": source, "video_frame": int(est.frames[k]), "video_time_s": round(float(est.times[k]), 4),
                **(extra or {})}
        params = write_outputs(tmp, head, est.head_estimate, photo, method=method, extra=info)
        params["timings"] = {name: round(v, 4) for name, v in est.timings.items()}
        write_params(tmp / "params.json", params)
        write_json(tmp / "animation.json", anim)
        if rig.is_arkit:
            write_csv(tmp / "animation.csv", anim, rig)
        write_animation_glb(tmp / "animation.glb", head, est.identity, anim, (tmp / "albedo.png").read_bytes())
        written = sorted(p.name for p in tmp.iterdir())
    return Path(os.fspath(out_dir)).expanduser().absolute(), written
