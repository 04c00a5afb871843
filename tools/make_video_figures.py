"""Figures of docs/video.md from one synthetic clip with ground truth:

* ``docs/video_contact_sheet.png``: 8 frames of the clip; under each, the reconstructed head
  (grey geometry of the smoothed estimate) over the frame, and the animated head seen from
  the front (expression, jaw and head rotation of that frame on the clip's identity);
* ``docs/video_curves.png``: a few curves over time — truth, per-frame estimate, two-pass
  One Euro (the default) and the causal filter; still stretches shaded.

    python tools/make_video_figures.py [--seed 10] [--frames 150] [--method fit] [--out docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.face import FaceDecoder, FaceParams  # noqa: E402
from engine.generator import SyntheticConfig  # noqa: E402
from engine.head import load_head_model  # noqa: E402
from engine.outputs import blend_overlay, render_geometry, side_by_side, write_png  # noqa: E402
from engine.render.camera import PerspectiveCamera, frontal_camera  # noqa: E402
from engine.video.animate import AnimateConfig, estimate_clip, to_animation  # noqa: E402
from engine.video.arkit import head_rotation  # noqa: E402
from engine.video.formats import quaternion_multiply, quaternion_to_rotvec, rotvec_to_quaternion  # noqa: E402
from engine.video.formats import yaw_pitch_roll  # noqa: E402
from engine.video.smooth import OneEuroConfig  # noqa: E402
from engine.video.source import Frame  # noqa: E402
from engine.video.synthetic import LongClipConfig, render_long_clip  # noqa: E402


def _params(head, identity, expr, pose, K, R, t, size) -> FaceParams:
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)[None]  # noqa: E731
    cam = PerspectiveCamera(f(K), f(R), f(t), size)
    return FaceParams(identity=f(identity), expression=f(expr), pose=f(pose), camera=cam, sh=torch.zeros(1, 9, 3))


def contact_sheet(head, clip, anim, identity, out: Path, n: int = 8) -> None:
    S = clip.samples[0].image.shape[0]
    dec = FaceDecoder(head)
    picks = np.round(np.linspace(0, anim.n_frames - 1, n)).astype(int)
    neck = head.joint_names.index("neck")
    cols = []
    for k in picks:
        frame = clip.samples[k].image
        pose = np.stack([anim.joints[j][k] for j in head.joint_names])
        p = _params(head, identity, anim.weights[k], pose, anim.camera["K"][k], anim.camera["R"][k],
                    anim.camera["t"][k], (S, S))
        grey, mask = render_geometry(dec(p))
        overlay = blend_overlay(frame, np.repeat(grey[..., None], 3, -1), mask, alpha=0.65)
        pose_f = pose.copy()
        pose_f[neck] = quaternion_to_rotvec(quaternion_multiply(rotvec_to_quaternion(anim.head_rotation[k]),
                                                                rotvec_to_quaternion(pose[neck])))
        cam = frontal_camera(distance=0.75, focal_px=3.2 * S, image_size=(S, S))
        q = _params(head, identity, anim.weights[k], pose_f, cam.K[0], cam.R[0], cam.t[0], (S, S))
        front, fmask = render_geometry(dec(q))
        front = np.where(fmask, front, 1.0)
        cols.append(np.concatenate([frame, overlay, np.repeat((front * 255).astype(np.uint8)[..., None], 3, -1)], 0))
    sheet = side_by_side(cols, height=3 * 180, labels=[f"frame {k}" for k in picks])
    import cv2

    for r, label in enumerate(("video frame", "estimate over the frame", "animated head, front")):
        y = r * 180 + 170
        cv2.putText(sheet, label, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(sheet, label, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    write_png(out, sheet)


def curves(head, clip, truth: dict, anims: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = clip.times
    jaw = head.joint_names.index("jaw")
    # the unit the truth moves most, and the one the estimate moves most (if another)
    est_range = np.ptp(anims["per-frame"].weights, 0)
    moving_units = list(dict.fromkeys([int(np.argmax(np.ptp(truth["expression"], 0))), int(np.argmax(est_range))]))
    if len(moving_units) == 1:
        moving_units.append(int(np.argsort(-est_range)[1]))
    panels = [("jaw opening (deg)", lambda e, p, h: np.degrees(p[:, jaw, 0]))]
    for u in moving_units:
        panels.append((f"{head.expression_names[u]} (weight)", lambda e, p, h, u=u: e[:, u]))
    panels.append(("head yaw (deg)", lambda e, p, h: np.degrees(yaw_pitch_roll(h)[:, 0])))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    style = {"truth": dict(color="black", lw=2.2, alpha=0.45), "per-frame": dict(color="tab:red", lw=0.9, alpha=0.8),
             "One Euro two-pass (default)": dict(color="tab:blue", lw=1.5),
             "One Euro causal": dict(color="tab:green", lw=1.1, ls="--")}
    still = clip.still
    for ax, (title, fn) in zip(axes, panels):
        for a, b in _runs(still):
            ax.axvspan(t[a], t[b - 1], color="0.93", lw=0)
        ax.plot(t, fn(truth["expression"], truth["pose"], truth["head"]), label="truth", **style["truth"])
        for name, anim in anims.items():
            pose = np.stack([anim.joints[j] for j in head.joint_names], 1)
            from engine.video.formats import rotvec_to_matrix

            ax.plot(anim.times, fn(anim.weights, pose, rotvec_to_matrix(anim.head_rotation)), label=name, **style[name])
        ax.set_ylabel(title, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1].set_xlabel("time (s); grey: the face holds still")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--method", default="fit")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    head = load_head_model("open")
    clip = render_long_clip(head, args.seed, LongClipConfig(n_frames=args.frames, n_keys=5), SyntheticConfig())
    R = np.stack([p["R"].numpy() for p in clip.params]).astype(np.float64)
    t = np.stack([p["t"].numpy() for p in clip.params]).astype(np.float64)
    truth = {"expression": np.stack([p["expression"].numpy() for p in clip.params]),
             "pose": np.stack([p["pose"].numpy() for p in clip.params]), "head": head_rotation(R, t)}
    frames = [Frame(i, i / clip.fps, s.image) for i, s in enumerate(clip.samples)]
    est = estimate_clip(frames, head, AnimateConfig(method=args.method))
    anims = {"per-frame": to_animation(est, head, None, clip.fps),
             "One Euro two-pass (default)": to_animation(est, head, OneEuroConfig(), clip.fps),
             "One Euro causal": to_animation(est, head, OneEuroConfig(two_pass=False), clip.fps)}
    out = Path(args.out)
    contact_sheet(head, clip, anims["One Euro two-pass (default)"], est.identity, out / "video_contact_sheet.png")
    curves(head, clip, truth, anims, out / "video_curves.png")
    print(f"wrote {out / 'video_contact_sheet.png'} and {out / 'video_curves.png'}")


if __name__ == "__main__":
    main()
