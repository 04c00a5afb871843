"""The Cycles validation set: two tiny samples rendered by Blender in a child process (bpy
can hang at interpreter exit), their ground truth checked against the render, and the
evaluation run end to end with a predictor that returns the ground truth."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HAS_BPY = importlib.util.find_spec("bpy") is not None


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        env[var] = str(home)
    return env


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    if not HAS_BPY:
        pytest.skip("the bpy module (Blender as a Python module) is not installed")
    tmp = tmp_path_factory.mktemp("cycles")
    out = tmp / "set"
    cmd = [sys.executable, "-m", "engine.eval", "cycles-set", "build", "--out", str(out), "--n", "2", "--seed", "3",
           "--model", "open", "--size", "128", "--samples", "2", "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rendered"] == 2 and summary["model"] == "open"
    return out


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_ground_truth_matches_the_render(tiny_set, head):
    from engine.eval.cycles_set import CyclesSetConfig, load_sample, read_set, sample_scene
    from engine.render import PerspectiveCamera, rasterize

    meta = read_set(tiny_set)
    assert meta["model"] == "open" and meta["seed"] == 3 and (tiny_set / ".gitignore").is_file()
    cfg = CyclesSetConfig(**{**meta["config"], "focal_mm": tuple(meta["config"]["focal_mm"]),
                             "face_fraction": tuple(meta["config"]["face_fraction"]),
                             "n_expressions": tuple(meta["config"]["n_expressions"])})
    for i in range(2):
        s = load_sample(tiny_set, i)
        g = s.gt
        assert s.image.shape == (128, 128, 3) and s.mask is not None
        # the ground truth is a function of the seed alone
        again = sample_scene(head, 3, i, cfg)
        assert np.allclose(again["vertices_model"], g["vertices_model"], atol=1e-6)
        assert np.allclose(again["albedo"], g["albedo"])
        # camera frame = R · model + t, landmarks project with K
        assert np.allclose(g["vertices_model"] @ g["R"].T + g["t"], g["vertices_camera"], atol=1e-5)
        lc = g["landmarks3d_camera"]
        uv = lc[:, :2] / lc[:, 2:] * np.diag(g["K"])[:2] + g["K"][:2, 2]
        assert np.allclose(uv, g["landmarks2d"], atol=1e-3)
        # our rasteriser's silhouette of the ground truth = Cycles' object mask
        V = torch.tensor(g["vertices_camera"], dtype=torch.float64)[None]
        cam = PerspectiveCamera(torch.tensor(g["K"])[None], torch.eye(3, dtype=torch.float64)[None],
                                torch.zeros(1, 3, dtype=torch.float64), (128, 128))
        ours = rasterize(cam.to_screen(V), torch.tensor(g["faces"]).long(), (128, 128)).mask[0].numpy()
        iou = (ours & s.mask).sum() / (ours | s.mask).sum()
        assert iou > 0.97, iou
        # the head is lit and stands out from its background
        assert abs(s.image[s.mask].mean() - s.image[~s.mask].mean()) > 3
        assert 0 < g["skin_luminance"] < 1 and g["face_mask"].sum() > 500


class _GroundTruthPredictor:
    """Returns the set's own ground truth, in order: every score should be ~0."""

    name = "ground-truth"

    def __init__(self, head, samples) -> None:
        self.head, self.samples = head, list(samples)

    def __call__(self, face, progress=None):
        from engine.face import FaceParams
        from engine.render import PerspectiveCamera

        g = self.samples.pop(0).gt
        cam = PerspectiveCamera(torch.tensor(g["K"], dtype=torch.float32)[None],
                                torch.tensor(g["R"], dtype=torch.float32)[None],
                                torch.tensor(g["t"], dtype=torch.float32)[None], tuple(int(x) for x in g["image_size"]))
        return FaceParams(identity=torch.tensor(g["identity"])[None], expression=torch.tensor(g["expression"])[None],
                          pose=torch.tensor(g["pose"])[None], camera=cam, sh=torch.zeros(1, 9, 3),
                          albedo=torch.tensor(g["albedo"])[None])


def test_evaluation_of_the_ground_truth_scores_zero(tiny_set, head, tmp_path):
    pytest.importorskip("mediapipe")
    from engine.eval.cycles import evaluate_cycles, format_summary, load_prediction
    from engine.eval.cycles_set import load_sample

    samples = [load_sample(tiny_set, i) for i in range(2)]
    from engine.eval.cycles import detect

    found = [s for s in samples if detect(s.image) is not None]
    if not found:
        pytest.skip("the detector finds neither tiny render")
    rep = evaluate_cycles(tiny_set, head, _GroundTruthPredictor(head, found), save=tmp_path, timing=False, n_scan=1500)
    d = rep.summary()
    assert d["faces"] == len(found) and d["detection_failures"] == 2 - len(found)
    assert d["now_median_mm"] < 0.01 and d["landmark_px_median"] < 0.01 and d["rotation_err_median"] < 0.01
    for s in rep.scores:
        assert s.skin_pred == pytest.approx(s.skin_true, abs=1e-6)
        assert s.mean_face_median_mm > 0.3  # the template is not the sampled head
        # the same model's ARKit weights and jaw come back exactly
        assert len(s.arkit_true) == 52 and s.arkit_pred == pytest.approx(s.arkit_true, abs=1e-6)
        assert s.jaw_pred_deg == pytest.approx(s.jaw_true_deg, abs=1e-4)
        assert 0.0 < s.skin_photo < 1.0
    assert "better than the mean face on 100 %" in format_summary(rep)
    from engine.eval.cycles import format_table

    table = format_table([rep.to_dict()]).splitlines()
    assert len(table) == 7 and table[2].startswith("| ground-truth | ") and table[6].startswith("| ground-truth | ")
    assert "| 0.000 (1.00× fit)" not in table[2]  # no fit report given: no ratios
    params, detected = load_prediction(tmp_path / f"{found[0].index:05d}.npz")
    assert params.identity.shape == (1, head.n_identity) and detected.shape == (68, 2)


def test_photo_skin_luminance_reads_the_pixels_under_the_facing_skin():
    """A cap of skin 0.5 m in front of the camera, bulging towards it, over a two-tone photo:
    the median luma of the pixels it covers, whichever way its triangles wind; the same cap
    bulging away (the back of a head) faces away: nothing."""
    from engine.eval.cycles import photo_skin_luminance
    from engine.eval.cycles_set import luminance

    g = np.linspace(-0.05, 0.05, 11)
    xx, yy = np.meshgrid(g, g)
    bulge = 0.02 * (1 - (xx ** 2 + yy ** 2) / 0.005)
    X = np.stack([xx.ravel(), yy.ravel(), 0.5 - bulge.ravel()], 1)
    faces = np.array([[r * 11 + c, r * 11 + c + 1, (r + 1) * 11 + c] for r in range(10) for c in range(10)]
                     + [[r * 11 + c + 1, (r + 1) * 11 + c + 1, (r + 1) * 11 + c] for r in range(10) for c in range(10)])
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :] = (200, 150, 120)
    image[:, :20] = (0, 0, 0)  # not under the cap (it covers columns ~30-70)
    mask = np.ones(len(X), bool)
    gt = {"vertices_camera": X, "faces": faces, "K": np.array([[200.0, 0, 50], [0, 200.0, 50], [0, 0, 1]]),
          "skin_face_mask": mask, "face_mask": mask}
    expected = float(luminance(np.array([[200, 150, 120]]) / 255.0)[0])
    assert photo_skin_luminance(image, gt) == pytest.approx(expected, abs=1e-6)
    assert photo_skin_luminance(image, dict(gt, faces=faces[:, ::-1])) == pytest.approx(expected, abs=1e-6)
    away = X.copy()
    away[:, 2] = 0.5 + bulge.ravel()
    assert np.isnan(photo_skin_luminance(image, dict(gt, vertices_camera=away)))


def test_network_timing(head):
    from engine.eval.cycles import network_ms
    from engine.methods import build_predictor

    wall, cpu = network_ms(build_predictor("mofa", head), repeats=2)
    assert wall > 0 and cpu > 0
    assert network_ms(build_predictor("fit", head)) is None


def test_rotation_helpers_roundtrip():
    from engine.eval.cycles import rotation_errors
    from engine.eval.cycles_set import _rotation, head_angles

    angles = np.array([12.0, -33.0, 7.5])
    R = _rotation(np.radians(angles))
    assert np.allclose(head_angles(R), angles)
    d, total = rotation_errors(R, _rotation(np.radians(angles + [0, 5, 0])))
    assert np.allclose(d, [0, 5, 0], atol=1e-9) and total == pytest.approx(5.0, abs=1e-6)


def test_cli_reports_a_missing_set_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.eval", "cycles", "--set", str(tmp_path / "nope"),
                           "--method", "fit", "--quiet"], cwd=REPO, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and "cycles-set build" in lines[-1], proc.stderr


def test_expression_scores_across_models():
    """ARKit vectors from ICT-style and open unit names (jawOpen left to the jaw joint), and
    the pooled expression figures: half of every weight gives slope 0.5; the neutral face's
    activation is its mean weight."""
    from types import SimpleNamespace

    from engine.eval.cycles import CyclesFaceScore, arkit_vector, expression_summary
    from engine.head.arkit import ARKIT_NAMES

    with_jaw = SimpleNamespace(joint_names=["global", "jaw"])
    v = arkit_vector(with_jaw, ["mouthSmile_L", "jawOpen", "notArkit"], np.array([0.6, 0.5, 0.9]))
    assert v[ARKIT_NAMES.index("mouthSmileLeft")] == pytest.approx(0.6)
    assert v[ARKIT_NAMES.index("jawOpen")] == 0.0 and sum(v) == pytest.approx(0.6)
    no_jaw = SimpleNamespace(joint_names=["global"])
    assert arkit_vector(no_jaw, ["jawOpen"], np.array([0.5]))[ARKIT_NAMES.index("jawOpen")] == 0.5
    assert arkit_vector(no_jaw, ["exp00", "exp01"], np.array([1.0, 2.0])) == []  # FLAME-like: no ARKit units

    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        true = np.zeros(52)
        if k:
            true[rng.choice(52, 2, replace=False)] = rng.uniform(0.2, 0.7, 2)
        pred = 0.5 * true + (0.02 if k == 0 else 0.0)
        jaw = float(rng.uniform(0, 15)) if k else 0.0
        rows.append(CyclesFaceScore(k, *([0.0] * 19), arkit_true=true.tolist(), arkit_pred=pred.tolist(),
                                    jaw_true_deg=jaw, jaw_pred_deg=0.8 * jaw))
    d = expression_summary(rows)
    assert d["expression_slope_active"] == pytest.approx(0.5)
    assert d["expression_mean_inactive"] == pytest.approx(0.0)
    assert d["neutral_faces"] == 1 and d["neutral_mean_activation"] == pytest.approx(0.02)
    assert d["jaw_corr"] == pytest.approx(1.0) and d["jaw_mae_deg"] > 0
    assert expression_summary([]) == {}


def test_paired_rows_compare_each_report_per_face_with_the_first():
    """The per-face table matches faces by sample index (order and missing faces do not
    matter) and counts the faces that moved by more than 0.1 mm each way."""
    from engine.eval.cycles import paired_rows

    def report(errors: dict[int, float]) -> dict:
        return {"faces": [{"index": i, "now_median_mm": e} for i, e in errors.items()]}

    base = report({0: 1.0, 1: 1.5, 2: 2.0, 3: 1.2})
    other = report({3: 1.25, 2: 1.7, 0: 1.3})  # face 1 missing, another order
    rows = paired_rows([base, other, base], ["fit", "hybrid", "fit again"])
    assert rows[0].startswith("| per face against fit |")
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[:2] == ["hybrid", "3"]
    assert cells[2] == "+0.050 / +0.017"  # differences +0.3, -0.3, +0.05
    assert cells[3:] == ["1", "1"]
    assert [c.strip() for c in rows[3].strip("|").split("|")][2:] == ["+0.000 / +0.000", "0", "0"]


def test_cycles_by_jaw_splits_faces_by_the_true_jaw(tmp_path, capsys, load_tool):
    """tools/cycles_by_jaw.py: faces split at --deg, the share better than the mean face and
    the mean gain per side, the jaw's correlation / MAE only where a jaw is predicted."""
    mod = load_tool("cycles_by_jaw")
    faces = [dict(jaw_true_deg=0.0, now_mean_mm=1.0, mean_face_mean_mm=1.1, jaw_pred_deg=1.0),
             dict(jaw_true_deg=1.0, now_mean_mm=1.3, mean_face_mean_mm=1.1, jaw_pred_deg=0.0),
             dict(jaw_true_deg=10.0, now_mean_mm=1.0, mean_face_mean_mm=1.4, jaw_pred_deg=9.0),
             dict(jaw_true_deg=14.0, now_mean_mm=1.2, mean_face_mean_mm=1.5, jaw_pred_deg=12.0)]
    (tmp_path / "with_jaw.json").write_text(json.dumps({"faces": faces}))
    (tmp_path / "no_jaw.json").write_text(json.dumps({"faces": [dict(f, jaw_pred_deg=None) for f in faces]}))
    assert mod.main([str(tmp_path / "with_jaw.json"), str(tmp_path / "no_jaw.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| with_jaw | 2 / 2 | 50 % / 100 % | +0.050 / -0.350 | ")
    assert out[2].endswith(" / 1.25 |")  # |1 - 0|, |0 - 1|, |9 - 10|, |12 - 14|
    assert out[3].startswith("| no_jaw | 2 / 2 | 50 % / 100 % |") and out[3].endswith("| – |")


def test_sheet_tool_prints_real_photo_lines_for_given_networks(tmp_path, capsys, load_tool):
    """tools/make_cycles_sheets.py --photos-only: one line per example photo and method (a
    NAME=CHECKPOINT network labelled by its file), no picture written; an unknown method or a
    missing checkpoint is one clean error."""
    from engine.photo.examples import EXAMPLE_PHOTOS

    mod = load_tool("make_cycles_sheets")
    ckpt = REPO / "engine" / "assets" / "mofa_open_default.pt"
    assert mod.main(["--photos-only", "--method", "mofa", "--method", f"mofa={ckpt}", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 * len(EXAMPLE_PHOTOS)
    for i, name in enumerate(EXAMPLE_PHOTOS):
        assert out[3 * i].startswith(f"{name}: detected eye line")
        assert out[3 * i + 1].strip().startswith("mofa ") and f"({ckpt})" in out[3 * i + 2]
        # the same network twice: the same landmarks
        assert out[3 * i + 1].split("landmarks")[1].split("|")[0] == out[3 * i + 2].split("landmarks")[1].split("|")[0]
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit) as e:
        mod.main(["--photos-only", "--method", "nope"])
    assert e.value.code == 2 and "unknown method 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        mod.main(["--photos-only", "--method", f"mofa={tmp_path / 'none.pt'}"])
    assert e.value.code == 2 and "no checkpoint file" in capsys.readouterr().err


def test_skin_vs_light_reads_the_ratio_and_its_light(tmp_path, capsys, load_tool):
    """tools/skin_vs_light.py: the median reconstructed / true ratio, and its rank correlation
    with each face's light from the set's scene records (+1 when the error follows the light)."""
    mod = load_tool("skin_vs_light")
    lights = [0.5, 1.0, 2.0, 4.0]
    for i, e in enumerate(lights):
        scene = {"lights": {"lights": [{"irradiance": e, "colour": [1.0, 1.0, 1.0]}], "environment": {"strength": 0.0}}}
        np.savez(tmp_path / f"{i:05d}.npz", scene=np.array(json.dumps(scene)))
    true = [0.3, 0.5, 0.4, 0.6]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "follows.json").write_text(json.dumps({"faces": [
        dict(index=i, skin_true=t, skin_pred=t * e / 2.0) for i, (t, e) in enumerate(zip(true, lights))]}))
    assert mod.face_light(json.loads(str(np.load(tmp_path / "00002.npz")["scene"]))) == pytest.approx(2.0)
    assert mod.main(["--set", str(tmp_path), str(tmp_path / "runs" / "follows.json")]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("| runs/follows | 4 |") and row.endswith("| 0.75 | +1.00 |")  # ratios 0.25, 0.5, 1, 2
    with pytest.raises(SystemExit) as e:
        mod.main(["--set", str(tmp_path / "nowhere"), str(tmp_path / "runs" / "follows.json")])
    assert e.value.code == 2


def test_views_draw_one_person_per_group_and_leave_the_set_without_them_unchanged(head):
    """--views V: samples k..k+V-1 share the identity, skin albedo and material and differ in
    everything else; V = 1 draws exactly what the set drew before the option existed."""
    import numpy as np

    from engine.eval.cycles_set import CyclesSetConfig, sample_scene

    plain = sample_scene(head, 3, 4)
    rng = np.random.default_rng([3, 4])  # the first draw of a sample is its identity
    std = head.identity_std.detach().cpu().numpy()
    assert np.allclose(plain["identity"], np.clip(rng.normal(0, 1, head.n_identity), -2.5, 2.5) * std)
    cfg = CyclesSetConfig(views=3)
    a, b, c = (sample_scene(head, 3, k, cfg) for k in (3, 4, 5))  # person 1's three photos
    other = sample_scene(head, 3, 6, cfg)  # person 2
    for x in (b, c):
        assert np.array_equal(x["identity"], a["identity"]) and np.array_equal(x["albedo"], a["albedo"])
        assert x["skin"] == a["skin"] and not np.allclose(x["R"], a["R"]) and x["lights"] != a["lights"]
    assert not np.allclose(other["identity"], a["identity"])


def test_same_person_needs_a_set_with_views(tiny_set, head):
    from engine.errors import UserError
    from engine.eval.cycles import evaluate_same_person

    with pytest.raises(UserError, match="--views"):
        evaluate_same_person(tiny_set, head, None)
