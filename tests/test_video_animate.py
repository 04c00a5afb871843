"""``python -m engine animate``: a clip with a gap in, the head files, animation.json, the Live
Link Face CSV and an animated GLB out; progress lines; user errors; Ctrl-C keeps the frames
done so far as a valid, shorter animation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.export.gltf import read_glb
from engine.generator import SyntheticConfig
from engine.head import load_head_model
from engine.video import formats as fmt
from engine.video.synthetic import LongClipConfig, render_long_clip

pytest.importorskip("mediapipe")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """12 synthetic frames (one person, expression changing) with two empty frames at 6-7."""
    head = load_head_model("open")
    clip = render_long_clip(head, 5, LongClipConfig(n_frames=12, n_keys=2), SyntheticConfig(image_size=192))
    folder = tmp_path_factory.mktemp("clip")
    images = [s.image for s in clip.samples]
    images[6:6] = [np.full_like(images[0], 120)] * 2
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"f{i:03d}.png")
    return folder


def _main(argv, capsys):
    from engine.__main__ import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_animate_writes_head_and_animation(clip_folder, tmp_path, capsys):
    out = tmp_path / "anim"
    code, stdout, stderr = _main(["animate", str(clip_folder), "--out", str(out), "--method", "mofa",
                                  "--key-frames", "2", "--progress", "jsonl"], capsys)
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert {"identity", "frames"} <= {e["stage"] for e in events}  # a network estimates while tracking
    assert events[-1] == {"stage": "done", "fraction": 1.0, "out": str(out)}
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions)
    for name in ("head.obj", "head.glb", "albedo.png", "rig.json", "params.json", "animation.json", "animation.csv",
                 "animation.glb"):
        assert (out / name).is_file(), name
    head = load_head_model("open")
    anim = fmt.read_json(out / "animation.json")
    assert anim.n_frames == 14 and anim.fps == 30.0 and anim.names == list(head.expression_names)
    np.testing.assert_allclose(anim.times, np.arange(14) / 30.0, atol=1e-6)
    assert anim.tracked.tolist() == [True] * 6 + [False] * 2 + [True] * 6
    assert anim.meta["missing_frames"] == [6, 7] and anim.meta["method"] == "mofa"
    assert len(anim.meta["identity"]) == head.n_identity and len(anim.meta["key_frames"]) == 2
    assert ((anim.weights >= 0) & (anim.weights <= 1)).all()
    # frames without a face lie between their neighbours (interpolated, not zeros)
    lo, hi = np.minimum(anim.weights[5], anim.weights[8]), np.maximum(anim.weights[5], anim.weights[8])
    assert ((anim.weights[6] >= lo - 1e-6) & (anim.weights[6] <= hi + 1e-6)).all()
    assert set(anim.joints) == set(head.joint_names) and anim.head_rotation.shape == (14, 3)
    params = json.loads((out / "params.json").read_text())
    assert params["video"] == str(clip_folder) and params["method"] == "mofa"
    assert params["identity"] == pytest.approx(anim.meta["identity"], abs=1e-5)  # one identity for head and clip
    # Live Link Face CSV: 14 rows, 61 values each
    # (a CSV does not store its rate; under a second of frames it cannot be read off the timecodes)
    csv_anim = fmt.read_live_link_csv(out / "animation.csv", fps=30.0)
    assert csv_anim.n_frames == 14
    np.testing.assert_allclose(csv_anim.weight("mouthSmileLeft"), anim.weight("mouthSmileLeft"), atol=1e-5)
    # animated GLB: skinned, morph-weight and joint-rotation channels over 14 key times
    doc, _ = read_glb(out / "animation.glb")
    (animation,) = doc["animations"]
    acc = doc["accessors"]
    paths = sorted(c["target"]["path"] for c in animation["channels"])
    assert paths == ["rotation"] * head.n_joints + ["weights"]
    for s in animation["samplers"]:
        assert acc[s["input"]]["count"] == 14
    weights = next(s for s, c in zip(animation["samplers"], animation["channels"]) if c["target"]["path"] == "weights")
    assert acc[weights["output"]]["count"] == 14 * head.n_expression
    assert doc["skins"][0]["joints"] and "JOINTS_0" in doc["meshes"][0]["primitives"][0]["attributes"]


@pytest.mark.parametrize("case, message", [
    ("broken", "cannot be decoded as a video"),
    ("late", "--start 60 s is past the end"),
    ("grey", "no face found in any frame"),
])
def test_user_errors_are_one_line(case, message, tmp_path, capsys):
    if case == "broken":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"\x00" * 100)
        extra = []
    else:
        video = tmp_path / "frames"
        video.mkdir()
        for i in range(3):
            Image.fromarray(np.full((96, 128, 3), 100 + i, np.uint8)).save(video / f"{i}.png")
        extra = ["--start", "60"] if case == "late" else []
    code, _, stderr = _main(["animate", str(video), "--out", str(tmp_path / "out"), "--progress", "none", *extra],
                            capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_keeps_the_frames_done_so_far(clip_folder, tmp_path):
    frames = tmp_path / "long"
    frames.mkdir()
    files = sorted(clip_folder.glob("*.png"))
    for i in range(12):  # the clip without its empty frames
        src = files[[k for k in range(len(files)) if k not in (6, 7)][i % 12]]
        (frames / f"{i:03d}.png").write_bytes(src.read_bytes())
    out = tmp_path / "anim"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "animate", str(frames), "--out", str(out), "--method",
                             "hybrid", "--key-frames", "1", "--progress", "jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # wait until the per-frame pass has begun
        if json.loads(line)["stage"] == "frames" and "frame 1/" not in line:  # two frames done
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: kept the first"), stderr
    assert "Traceback" not in stderr
    anim = fmt.read_json(out / "animation.json")
    assert 1 < anim.n_frames < 12 and anim.meta["interrupted"] is True
    assert anim.tracked.all()
    assert fmt.read_live_link_csv(out / "animation.csv", fps=30.0).n_frames == anim.n_frames
    doc, _ = read_glb(out / "animation.glb")
    assert doc["accessors"][doc["animations"][0]["samplers"][0]["input"]]["count"] == anim.n_frames
    assert json.loads(rest.splitlines()[-1])["stage"] == "done"


class _Interrupted:
    """A clip whose reading is interrupted (Ctrl-C) after ``stop`` frames."""

    def __init__(self, frames, stop):
        self.frames, self.stop = frames, stop

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        for k, f in enumerate(self.frames):
            if k == self.stop:
                raise KeyboardInterrupt
            yield f


def test_ctrl_c_during_a_networks_single_pass_keeps_its_frames(clip_folder):
    from engine.video.animate import AnimateConfig, estimate_clip, to_animation
    from engine.video.source import open_clip

    head = load_head_model("open")
    frames = list(open_clip(clip_folder))
    est = estimate_clip(_Interrupted(frames, 5), head, AnimateConfig(method="mofa", key_frames=2))
    assert est.interrupted and est.n_done == 5 and est.tracked[:5].all()
    anim = to_animation(est, head, None, 30.0)
    assert anim.n_frames == 5 and np.isfinite(anim.weights).all()
    with pytest.raises(KeyboardInterrupt):  # a fit estimates nothing while tracking: nothing to keep
        estimate_clip(_Interrupted(frames, 5), head, AnimateConfig(method="fit", key_frames=1))
