"""animation.json and the Live Link Face CSV: round trips, the app's own timecodes, the
rotation conventions, readable errors; the reader works without the engine package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.head.arkit import ARKIT_NAMES
from engine.render.rotation import axis_angle_to_matrix, euler_to_matrix
from engine.video import formats as fmt

REPO = Path(__file__).resolve().parents[1]


def _animation(T: int = 40, fps: float = 30.0) -> fmt.Animation:
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 1, (T, len(ARKIT_NAMES)))
    joints = {"jaw": rng.normal(0, 0.1, (T, 3)), "neck": np.zeros((T, 3))}
    tracked = np.ones(T, bool)
    tracked[5:8] = False
    return fmt.Animation(fps=fps, times=np.arange(T) / fps + 2.0, names=list(ARKIT_NAMES), weights=weights,
                         joints=joints, head_rotation=rng.normal(0, 0.3, (T, 3)), tracked=tracked,
                         frames=np.arange(T) + 60,
                         camera={"R": np.tile(np.diag([1.0, -1, -1]), (T, 1, 1)), "t": rng.normal(0, 1, (T, 3)),
                                 "K": np.tile(np.eye(3), (T, 1, 1))},
                         meta={"model": "open", "notes": ["a note"]})


def test_json_round_trip(tmp_path):
    a = _animation()
    fmt.write_json(tmp_path / "animation.json", a)
    b = fmt.read_json(tmp_path / "animation.json")
    assert b.names == a.names and b.fps == a.fps and b.meta["model"] == "open" and b.meta["notes"] == ["a note"]
    np.testing.assert_allclose(b.weights, a.weights, atol=1e-5)
    np.testing.assert_allclose(b.times, a.times, atol=1e-6)
    np.testing.assert_allclose(b.joints["jaw"], a.joints["jaw"], atol=1e-6)
    np.testing.assert_allclose(b.head_rotation, a.head_rotation, atol=1e-6)
    np.testing.assert_allclose(b.camera["t"], a.camera["t"], atol=1e-6)
    assert b.tracked.tolist() == a.tracked.tolist() and b.frames.tolist() == a.frames.tolist()
    assert fmt.read_animation(tmp_path / "animation.json").n_frames == a.n_frames


def test_live_link_csv_round_trip_and_column_order(tmp_path):
    a = _animation(T=45)  # crosses a second boundary at 30 fps
    ypr = fmt.yaw_pitch_roll(fmt.rotvec_to_matrix(a.head_rotation))
    eyes = np.random.default_rng(2).normal(0, 0.1, (2, a.n_frames, 3))
    fmt.write_live_link_csv(tmp_path / "a.csv", a.times - a.times[0], a.fps, a.weights, ypr, eyes[0], eyes[1])
    lines = (tmp_path / "a.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft"]
    assert header[-9:] == list(fmt.ROTATION_COLUMNS) and len(header) == 2 + 52 + 9
    first = lines[1].split(",")
    assert first[0] == "00:00:00:00.000" and first[1] == "61"
    assert lines[31].split(",")[0] == "00:00:01:00.000"
    # the JawOpen column holds jawOpen's value (Live Link order differs from ARKIT_NAMES')
    col = header.index("JawOpen")
    assert float(first[col]) == pytest.approx(a.weights[0, ARKIT_NAMES.index("jawOpen")], abs=1e-6)
    b = fmt.read_live_link_csv(tmp_path / "a.csv")
    assert b.fps == 30.0 and b.names[17] == "jawOpen"
    np.testing.assert_allclose(b.times, a.times - a.times[0], atol=1e-6)
    np.testing.assert_allclose(b.weight("mouthSmileLeft"), a.weight("mouthSmileLeft"), atol=1e-6)
    np.testing.assert_allclose(fmt.rotvec_to_matrix(b.head_rotation), fmt.rotvec_to_matrix(a.head_rotation),
                               atol=1e-5)
    np.testing.assert_allclose(b.eye_rotations["left"], eyes[0], atol=1e-6)


def test_reads_the_apps_csv_with_wall_clock_timecodes(tmp_path):
    names = ",".join(fmt.LIVE_LINK_ORDER)
    rows = ["Timecode,BlendShapeCount," + names + "," + ",".join(fmt.ROTATION_COLUMNS)]
    stamps = ["19:37:33:58.383", "19:37:33:59.383", "19:37:34:00.383", "19:37:34:01.383"]
    for k, s in enumerate(stamps):
        vals = ["0.0"] * 61
        vals[fmt.LIVE_LINK_ORDER.index("JawOpen")] = f"{0.1 * k:.3f}"
        vals[52] = "0.25"  # HeadYaw
        rows.append(f"{s},61," + ",".join(vals))
    (tmp_path / "app.csv").write_text("\n".join(rows) + "\n")
    a = fmt.read_live_link_csv(tmp_path / "app.csv")
    assert a.fps == 60.0  # the frame counter wraps after 59
    np.testing.assert_allclose(a.times, np.arange(4) / 60.0, atol=1e-9)
    np.testing.assert_allclose(a.weight("jawOpen"), [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(fmt.yaw_pitch_roll(fmt.rotvec_to_matrix(a.head_rotation))[:, 0], 0.25, atol=1e-9)
    assert fmt.read_live_link_csv(tmp_path / "app.csv", fps=30.0).times[1] == pytest.approx(1 / 30)


def test_rotation_helpers_agree_with_the_engines():
    rv = np.random.default_rng(3).normal(0, 0.8, (6, 3))
    np.testing.assert_allclose(fmt.rotvec_to_matrix(rv), axis_angle_to_matrix(torch.tensor(rv)).numpy(), atol=1e-12)
    np.testing.assert_allclose(fmt.quaternion_to_rotvec(fmt.rotvec_to_quaternion(rv)), rv, atol=1e-12)
    ypr = np.array([[0.3, -0.2, 0.1], [1.0, 0.5, -0.7]])
    R = euler_to_matrix(torch.tensor(ypr), "YXZ").numpy()  # R_Y(yaw) R_X(pitch) R_Z(roll)
    np.testing.assert_allclose(fmt.yaw_pitch_roll(R), ypr, atol=1e-12)
    np.testing.assert_allclose(fmt.rotvec_to_matrix(fmt.yaw_pitch_roll_to_rotvec(ypr)), R, atol=1e-12)


def test_unreadable_files_are_one_sentence_errors(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(fmt.AnimationFileError, match="not a facerecon-animation"):
        fmt.read_animation(tmp_path / "x.json")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(fmt.AnimationFileError, match="not a Live Link Face CSV"):
        fmt.read_animation(tmp_path / "x.csv")
    with pytest.raises(fmt.AnimationFileError, match="animation.json or a Live Link Face"):
        fmt.read_animation(tmp_path / "x.txt")


def test_the_reader_loads_without_the_engine_package(tmp_path):
    """Blender loads formats.py by path with no engine package (and no torch) importable."""
    a = _animation(T=3)
    fmt.write_json(tmp_path / "animation.json", a)
    code = ("import importlib.util, sys; sys.modules['torch'] = None; sys.modules['engine'] = None; "
            f"spec = importlib.util.spec_from_file_location('f', {str(REPO / 'engine/video/formats.py')!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['f'] = m; spec.loader.exec_module(m); "
            f"a = m.read_animation({str(tmp_path / 'animation.json')!r}); print(a.n_frames, len(m.ARKIT_NAMES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "52"]
