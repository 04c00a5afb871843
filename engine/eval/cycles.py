"""Every method on the Cycles validation set (:mod:`engine.eval.cycles_set`).

    python -m engine.eval cycles --set data/cycles_val --method fit|mofa|hybrid [--model open]
        [--limit N] [--json] [--save DIR]

For each sample: the face detector runs on the render (as for a user's photo; a miss is
counted, and the same detections serve every method), the method reconstructs the face
with its head model (``--model``; the committed network is open-model only), and the
result is scored against the ground truth:

* **geometry**: NoW-style scan-to-mesh error (:mod:`engine.eval.now`) of the predicted
  mesh against 5,000 area-uniform points on the ground-truth face region; the mean face
  (the head model's template, aligned the same way) is the baseline;
* **2-D landmarks**: mean distance (px, and as a fraction of the image width) between the
  predicted model's projected iBUG-68 points and the ground truth's (each model's own
  iBUG-68 embedding); the detector's own error is reported beside it;
* **pose**: |Δ pitch|, |Δ yaw|, |Δ roll| (degrees) of the predicted head rotation, in the
  ground-truth model's frame (the two templates' frames are related by the rotation that
  aligns their inner landmarks, identity for the same model), and the total angle;
* **skin tone**: median Rec. 709 luma of the reconstructed albedo over the face region
  against the same statistic of the true albedo; Spearman's rank correlation and the
  least-squares slope across faces;
* **expressions** (both models with ARKit units: open, ICT): the true and the predicted
  weights by ARKit name (``jawOpen`` left out: both models open the mouth with the jaw
  joint, scored as the jaw angle), pooled over the faces' active units (true ≥ 0.1) as the
  expression benchmark does (:func:`engine.eval.expressions.pooled_recovery`: slope of
  predicted on true through the origin, MAE, weight on unused units), the per-unit
  correlation over units active in ≥ 3 faces, the mean activation on the faces without any
  expression or jaw opening, and the jaw angle's correlation / MAE. The two models' units
  are made by different artists, so a slope below 1 is partly the models' difference;
* **time**: seconds per face (wall and CPU: the machine is shared), and for learned methods
  the network alone on a 224-px input with one CPU thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.eval.cycles_set import face_region, head_angles, load_sample, luminance, read_set, set_indices
from engine.eval.now import SurfaceQuery, now_error, scan_points
from engine.eval.synthetic import umeyama
from engine.face import FaceDecoder, FaceParams
from engine.head.model import HeadModel
from engine.methods.base import FaceObservation, Predictor
from engine.threads import torch_threads

SCAN_POINTS = 5000
INNER_LANDMARKS = list(range(17, 68))  # brows, nose, eyes, mouth: the frame-defining points


@dataclass
class CyclesFaceScore:
    index: int
    now_median_mm: float
    now_mean_mm: float
    now_p90_mm: float
    mean_face_median_mm: float
    mean_face_mean_mm: float
    landmark_px: float
    landmark_frac: float  # landmark_px / image width
    detector_px: float
    pitch_err: float
    yaw_err: float
    roll_err: float
    rotation_err: float  # total angle of the rotation error, degrees
    true_pitch: float
    true_yaw: float
    true_roll: float
    skin_true: float
    skin_pred: float
    seconds: float
    cpu_seconds: float
    # ARKit weights (ARKIT_NAMES order, jawOpen 0) and jaw angle, true and predicted; empty /
    # nan when a model has no ARKit units
    arkit_true: list[float] = field(default_factory=list)
    arkit_pred: list[float] = field(default_factory=list)
    jaw_true_deg: float = float("nan")
    jaw_pred_deg: float = float("nan")
    skin_photo: float = float("nan")  # photo_skin_luminance: the photo's own skin brightness


@dataclass
class CyclesReport:
    set_dir: str
    set_model: str
    method: str
    model: str
    n_images: int = 0
    detection_failures: list[int] = field(default_factory=list)
    scores: list[CyclesFaceScore] = field(default_factory=list)
    network_ms_224: tuple[float, float] | None = None  # (wall, CPU) ms, one thread
    network_ms_input: tuple[int, float, float] | None = None  # (its input size px, wall, CPU) ms, one thread
    pooled: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"method": [], "mean_face": []}, repr=False)

    def summary(self) -> dict[str, float]:
        rows = self.scores
        if not rows:
            return {"faces": 0}

        def col(k: str) -> np.ndarray:
            return np.array([getattr(r, k) for r in rows], np.float64)

        pm, pb = np.concatenate(self.pooled["method"]), np.concatenate(self.pooled["mean_face"])
        rho, slope = tone_agreement(col("skin_true"), col("skin_pred"))
        out = {
            "faces": len(rows), "images": self.n_images, "detection_failures": len(self.detection_failures),
            # NoW's statistics over all scan points of all faces (the same number per face)
            "now_median_mm": float(np.median(pm)), "now_mean_mm": float(np.mean(pm)),
            "now_std_mm": float(np.std(pm)), "now_p90_mm": float(np.quantile(pm, 0.9)),
            "mean_face_median_mm": float(np.median(pb)), "mean_face_mean_mm": float(np.mean(pb)),
            "better_than_mean_face": float(np.mean(col("now_mean_mm") < col("mean_face_mean_mm"))),
            "landmark_px_median": float(np.median(col("landmark_px"))), "landmark_px_mean": float(col("landmark_px").mean()),
            "landmark_frac_median": float(np.median(col("landmark_frac"))),
            "detector_px_median": float(np.median(col("detector_px"))),
            "pitch_err_median": float(np.median(col("pitch_err"))), "yaw_err_median": float(np.median(col("yaw_err"))),
            "roll_err_median": float(np.median(col("roll_err"))),
            "rotation_err_median": float(np.median(col("rotation_err"))),
            "skin_spearman": rho, "skin_slope": slope,
            "skin_photo_spearman": tone_agreement(col("skin_true"), col("skin_photo"))[0],
            "seconds_median": float(np.median(col("seconds"))), "cpu_seconds_median": float(np.median(col("cpu_seconds"))),
        }
        out.update(expression_summary(rows))
        if self.network_ms_224 is not None:
            out["network_ms_224_wall"], out["network_ms_224_cpu"] = self.network_ms_224
        if self.network_ms_input is not None:
            out["network_input_px"], out["network_ms_input_wall"], out["network_ms_input_cpu"] = self.network_ms_input
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"set": self.set_dir, "set_model": self.set_model, "method": self.method, "model": self.model,
                "summary": self.summary(), "detection_failures": self.detection_failures,
                "expression_units": expression_units(self.scores), "faces": [asdict(s) for s in self.scores]}


def _arkit_rows(rows: list[CyclesFaceScore]) -> tuple[list[CyclesFaceScore], np.ndarray, np.ndarray]:
    """The faces that carry ARKit weights, and their true and predicted weights (N, 52)."""
    rows = [r for r in rows if r.arkit_true and r.arkit_pred]
    return rows, np.array([r.arkit_true for r in rows]), np.array([r.arkit_pred for r in rows])


def expression_units(rows: list[CyclesFaceScore]) -> list[dict[str, Any]]:
    """Per ARKit unit over the faces with ARKit weights
    (:func:`engine.eval.expressions.per_unit_recovery`)."""
    from engine.eval.expressions import per_unit_recovery
    from engine.head.arkit import ARKIT_NAMES

    rows, T, P = _arkit_rows(rows)
    return per_unit_recovery(T, P, list(ARKIT_NAMES)) if rows else []


def expression_summary(rows: list[CyclesFaceScore]) -> dict[str, float]:
    """The expression figures over faces that carry ARKit weights (module docstring); empty
    when none does."""
    from engine.eval.expressions import ACTIVE, pooled_recovery

    rows, T, P = _arkit_rows(rows)
    if not rows:
        return {}
    jt, jp = np.array([r.jaw_true_deg for r in rows]), np.array([r.jaw_pred_deg for r in rows])
    expressive = (T >= ACTIVE).any(1)
    out = {f"expression_{k}": v for k, v in pooled_recovery(T[expressive], P[expressive]).items()}
    corr = [u["corr"] for u in expression_units(rows) if "corr" in u]
    if corr:
        out["expression_units_scored"], out["expression_corr_mean"] = float(len(corr)), float(np.mean(corr))
    neutral = ~(T > 0).any(1) & ~(jt > 1.0)
    if neutral.any():
        out["neutral_faces"] = float(neutral.sum())
        out["neutral_mean_activation"] = float(np.abs(P[neutral]).mean())
        out["neutral_mean_max"] = float(np.abs(P[neutral]).max(1).mean())
    ok = np.isfinite(jt) & np.isfinite(jp)
    if ok.sum() > 2 and jt[ok].std() > 0 and jp[ok].std() > 0:
        out["jaw_corr"] = float(np.corrcoef(jt[ok], jp[ok])[0, 1])
        out["jaw_mae_deg"] = float(np.abs(jt[ok] - jp[ok]).mean())
    return out


def arkit_vector(head: HeadModel | None, names: list[str], expression: np.ndarray) -> list[float]:
    """``expression (K,)`` of a model with unit ``names`` as 52 ARKit weights (ARKIT_NAMES
    order; units without an ARKit name dropped, ``jawOpen`` zeroed when ``head`` has a jaw
    joint, which opens the mouth instead); empty when no unit is an ARKit one."""
    from engine.head.arkit import ARKIT_NAMES, arkit_name

    out = np.zeros(len(ARKIT_NAMES))
    found = False
    for n, w in zip(names, np.asarray(expression, np.float64).reshape(-1)):
        a = arkit_name(n)
        if a in ARKIT_NAMES and not (a == "jawOpen" and head is not None and "jaw" in head.joint_names):
            out[ARKIT_NAMES.index(a)] = w
            found = True
    return out.tolist() if found else []


def _jaw_deg(joint_names: list[str], pose: np.ndarray) -> float:
    if "jaw" not in joint_names or np.size(pose) == 0:
        return float("nan")
    return float(np.degrees(np.linalg.norm(np.asarray(pose, np.float64).reshape(-1, 3)[joint_names.index("jaw")])))


def frame_rotation(gt_head: HeadModel | np.ndarray, pred_head: HeadModel) -> np.ndarray:
    """Rotation ``R_a`` with ``X_pred ≈ s R_a X_gt + t`` between two head models' frames,
    from their templates' inner iBUG-68 landmarks (identity for the same model)."""
    def lms(h: HeadModel) -> np.ndarray:
        with torch.no_grad():
            return h.landmarks(h.template[None])[0].double().cpu().numpy()

    gt = gt_head if isinstance(gt_head, np.ndarray) else lms(gt_head)
    _, R, _ = umeyama(gt[INNER_LANDMARKS], lms(pred_head)[INNER_LANDMARKS])
    return R


def rotation_errors(R_true: np.ndarray, R_pred_gt_frame: np.ndarray) -> tuple[np.ndarray, float]:
    """(|Δ pitch|, |Δ yaw|, |Δ roll|) degrees and the total rotation angle between two head rotations."""
    d = np.abs(head_angles(R_pred_gt_frame) - head_angles(R_true))
    d = np.minimum(d, 360.0 - d)
    rel = R_true.T @ R_pred_gt_frame
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))))
    return d, angle


def tone_agreement(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Skin-tone recovery across faces: Spearman rank correlation (nan under 3 faces) and the
    least-squares slope of predicted on true luma (nan under 2; 1 = tones kept)."""
    from scipy.stats import spearmanr

    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    rho = float(spearmanr(true, pred).statistic) if len(true) > 2 else float("nan")
    slope = float(np.polyfit(true, pred, 1)[0]) if len(true) > 1 else float("nan")
    return rho, slope


def face_luminance(albedo: np.ndarray, region: np.ndarray) -> float:
    """Median Rec. 709 luma of a per-vertex albedo (sRGB, [0, 1]) over a vertex region."""
    return float(np.median(luminance(np.clip(np.asarray(albedo, np.float64)[np.asarray(region, bool)], 0, 1))))


def photo_skin_luminance(image: np.ndarray, gt: dict[str, Any]) -> float:
    """Median Rec. 709 luma (sRGB, [0, 1]) of the photo's pixels under the true face-region
    skin vertices that face the camera: the skin's brightness as the photo shows it, light
    included. Across faces, its rank agreement with the true albedo's is what reading the
    photo's brightness alone gives, before any separation of light and albedo."""
    from engine.render.shading import vertex_normals_np

    X = np.asarray(gt["vertices_camera"], np.float64)
    n = vertex_normals_np(X, gt["faces"])
    region = np.asarray(gt["skin_face_mask"], bool) & np.asarray(gt["face_mask"], bool)
    if np.sum(n[region] * (X[region] - X[region].mean(0))) < 0:  # inward winding: flip
        n = -n
    facing = region & (np.einsum("vc,vc->v", n, X) < 0)
    uvw = X[facing] @ np.asarray(gt["K"], np.float64).T
    uv = np.floor(uvw[:, :2] / uvw[:, 2:3]).astype(np.int64)
    H, W = image.shape[:2]
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    if not ok.any():
        return float("nan")
    px = np.asarray(image, np.float64)[uv[ok, 1], uv[ok, 0], :3] / 255.0
    return float(np.median(luminance(px)))


def network_ms(predictor: Predictor, size: int = 224, repeats: int = 20) -> tuple[float, float] | None:
    """Median (wall, CPU) milliseconds of one forward pass of a learned predictor's network
    (encoder + code-to-parameters decode, no cropping) on a ``size``-px image with one CPU
    thread; None for a predictor without a network (the fit). On a shared machine the CPU
    time is the fairer figure (the wall time includes waiting for a core)."""
    net = getattr(predictor, "network", None) or getattr(getattr(predictor, "init", None), "network", None)
    if net is None:
        return None
    with torch_threads(1):
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        wall, cpu = [], []
        with torch.no_grad():
            for k in range(repeats + 3):
                t0, c0 = time.perf_counter(), time.process_time()
                net.decode(net.encode(x))
                if k >= 3:  # warm-up
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
    return float(np.median(wall) * 1000.0), float(np.median(cpu) * 1000.0)


def detect(image: np.ndarray, backend: str = "default") -> Any | None:
    """The largest detected face with iBUG-68 landmarks, or None."""
    from engine.detect import detect_faces

    faces = [f for f in detect_faces(image, backend=backend) if f.landmarks68 is not None]
    return faces[0] if faces else None


def save_prediction(path: Path, params: FaceParams, landmarks68: np.ndarray) -> None:
    """What the contact sheets need to redraw a prediction (coefficients and camera)."""
    cam = params.camera
    np.savez_compressed(path, identity=params.identity[0].numpy(), expression=params.expression[0].numpy(),
                        pose=params.pose[0].numpy(), K=cam.K[0].numpy(), R=cam.R[0].numpy(), t=cam.t[0].numpy(),
                        image_size=np.array(cam.image_size), detected=np.asarray(landmarks68, np.float32))


def load_prediction(path: str | Path) -> tuple[FaceParams, np.ndarray]:
    """FaceParams (geometry and camera only) and the detected landmarks saved by :func:`save_prediction`."""
    from engine.render.camera import PerspectiveCamera

    with np.load(path) as z:
        cam = PerspectiveCamera(torch.tensor(z["K"])[None], torch.tensor(z["R"])[None], torch.tensor(z["t"])[None],
                                tuple(int(x) for x in z["image_size"]))
        return (FaceParams(identity=torch.tensor(z["identity"])[None], expression=torch.tensor(z["expression"])[None],
                           pose=torch.tensor(z["pose"])[None], camera=cam,
                           sh=torch.zeros(1, 9, 3)), z["detected"])


def evaluate_cycles(folder: str | Path, head: HeadModel, predictor: Predictor, backend: str = "default",
                    limit: int | None = None, log: Callable[[str], None] | None = None,
                    save: str | Path | None = None, timing: bool = True, n_scan: int = SCAN_POINTS) -> CyclesReport:
    """Run ``predictor`` (built for ``head``) on the set in ``folder`` and score it against
    ``n_scan`` ground-truth surface points per face."""
    meta = read_set(folder)
    indices = set_indices(folder, limit)
    rep = CyclesReport(set_dir=str(folder), set_model=str(meta["model"]), method=str(predictor.name), model=head.name)
    if timing:
        rep.network_ms_224 = network_ms(predictor)
        net = getattr(predictor, "network", None) or getattr(getattr(predictor, "init", None), "network", None)
        if net is not None and getattr(net, "image_size", 224) != 224:  # the size predict_photo feeds it
            ms = network_ms(predictor, size=int(net.image_size))
            rep.network_ms_input = (int(net.image_size), *ms) if ms else None
    save_dir = Path(save) if save else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    region = face_region(head)
    pred_faces = head.faces.cpu().numpy()
    with torch.no_grad():
        template = head.template.detach().double().cpu().numpy()
        template_lm = head.landmarks(head.template[None])[0].double().cpu().numpy()
    template_query = SurfaceQuery(template, pred_faces)
    R_a = None
    decoder = FaceDecoder(head)
    for i in indices:
        s = load_sample(folder, i)
        g = s.gt
        rep.n_images += 1
        det = detect(s.image, backend)
        if det is None:
            rep.detection_failures.append(i)
            if log:
                log(f"sample {i}: the detector found no face")
            continue
        face = FaceObservation.from_detection(s.image, det)
        t0, c0 = time.perf_counter(), time.process_time()
        params = predictor(face)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        params = params.detach().cpu()
        with torch.no_grad():
            dec = decoder(params.to(dtype=torch.float32))
            verts = dec.vertices[0].double().numpy()
            lm3 = dec.landmarks3d[0].double().numpy()
            lm2 = dec.landmarks2d[0].double().numpy()
            albedo = dec.albedo
        scan = scan_points(g["vertices_camera"], g["faces"], g["face_mask"], n_scan, seed=0)
        score = now_error(verts, pred_faces, lm3, scan, g["landmarks3d_camera"])
        base = now_error(template, pred_faces, template_lm, scan, g["landmarks3d_camera"], query=template_query)
        rep.pooled["method"].append(score.distances_mm)
        rep.pooled["mean_face"].append(base.distances_mm)
        W = float(g["image_size"][0])
        lm_px = float(np.linalg.norm(lm2 - g["landmarks2d"], axis=1).mean())
        det_px = float(np.linalg.norm(face.landmarks68[:, :2] - g["landmarks2d"], axis=1).mean())
        if R_a is None:
            R_a = frame_rotation(_template_landmarks(g), head)
        R_pred = params.camera.R[0].double().numpy() @ R_a
        d_ang, total = rotation_errors(g["R"], R_pred)
        true_ang = head_angles(g["R"])
        skin_true = face_luminance(g["albedo"], g["face_mask"])
        skin_pred = face_luminance(albedo[0].numpy(), region) if albedo is not None else float("nan")
        gt_head = _gt_head(g)
        arkit_true = arkit_vector(gt_head, list(gt_head.expression_names), g["expression"])
        arkit_pred = arkit_vector(head, list(head.expression_names), params.expression[0].numpy())
        if not (arkit_true and arkit_pred):
            arkit_true, arkit_pred = [], []
        rep.scores.append(CyclesFaceScore(
            index=i, now_median_mm=score.median_mm, now_mean_mm=score.mean_mm, now_p90_mm=score.p90_mm,
            mean_face_median_mm=base.median_mm, mean_face_mean_mm=base.mean_mm, landmark_px=lm_px,
            landmark_frac=lm_px / W, detector_px=det_px, pitch_err=float(d_ang[0]), yaw_err=float(d_ang[1]),
            roll_err=float(d_ang[2]), rotation_err=total, true_pitch=float(true_ang[0]), true_yaw=float(true_ang[1]),
            true_roll=float(true_ang[2]), skin_true=skin_true, skin_pred=skin_pred, seconds=secs, cpu_seconds=cpu,
            arkit_true=arkit_true, arkit_pred=arkit_pred, jaw_true_deg=_jaw_deg(list(gt_head.joint_names), g["pose"]),
            jaw_pred_deg=_jaw_deg(list(head.joint_names), params.pose[0].numpy()),
            skin_photo=photo_skin_luminance(s.image, g)))
        if save_dir:
            save_prediction(save_dir / f"{i:05d}.npz", params, face.landmarks68)
        if log:
            log(f"sample {i}: NoW {score.median_mm:.2f} mm (mean face {base.median_mm:.2f}), landmarks {lm_px:.1f} px "
                f"(detector {det_px:.1f}), pose error {total:.1f}°, skin {skin_pred:.2f} vs {skin_true:.2f}, {secs:.2f} s")
    return rep


def _gt_head(gt: dict[str, Any]) -> HeadModel:
    """The ground-truth head model (loaded by name, once)."""
    from engine.head import load_head_model

    key = str(gt["model"])
    if key not in _GT_HEADS:
        _GT_HEADS[key] = load_head_model(key)
    return _GT_HEADS[key]


def _template_landmarks(gt: dict[str, Any]) -> np.ndarray:
    """The ground-truth model's template landmarks."""
    key = str(gt["model"])
    hit = _GT_TEMPLATE_LM.get(key)
    if hit is None:
        h = _gt_head(gt)
        with torch.no_grad():
            hit = _GT_TEMPLATE_LM[key] = h.landmarks(h.template[None])[0].double().cpu().numpy()
    return hit


_GT_TEMPLATE_LM: dict[str, np.ndarray] = {}
_GT_HEADS: dict[str, HeadModel] = {}


def format_summary(rep: CyclesReport) -> str:
    """The report as the lines the CLI prints."""
    d = rep.summary()
    if not d.get("faces"):
        return f"cycles set {rep.set_dir}: method={rep.method}: no face scored ({len(rep.detection_failures)} detector misses)"
    net = (f"; network alone at 224 px, 1 thread: {d['network_ms_224_cpu']:.1f} ms CPU "
           f"({d['network_ms_224_wall']:.1f} ms wall)" if "network_ms_224_cpu" in d else "")
    if "network_ms_input_cpu" in d:
        net += (f", at its {d['network_input_px']} px input: {d['network_ms_input_cpu']:.1f} ms CPU "
                f"({d['network_ms_input_wall']:.1f} ms wall)")
    return "\n".join([
        f"cycles set {rep.set_dir} ({rep.set_model} heads): method={rep.method} model={rep.model} "
        f"faces={d['faces']}/{d['images']} (detector misses {d['detection_failures']})",
        f"  geometry (NoW-style, mm): median {d['now_median_mm']:.2f}  mean {d['now_mean_mm']:.2f}  "
        f"std {d['now_std_mm']:.2f}  p90 {d['now_p90_mm']:.2f}  | mean face median {d['mean_face_median_mm']:.2f} "
        f"mean {d['mean_face_mean_mm']:.2f}  | better than the mean face on {100 * d['better_than_mean_face']:.0f} % of faces",
        f"  2-D landmarks: median {d['landmark_px_median']:.2f} px ({100 * d['landmark_frac_median']:.2f} % of the "
        f"image width), mean {d['landmark_px_mean']:.2f} px  | detector {d['detector_px_median']:.2f} px",
        f"  pose error (median, deg): pitch {d['pitch_err_median']:.1f}  yaw {d['yaw_err_median']:.1f}  "
        f"roll {d['roll_err_median']:.1f}  total {d['rotation_err_median']:.1f}",
        f"  skin luminance: Spearman {d['skin_spearman']:.3f}  slope {d['skin_slope']:.3f}  | the photo's own skin "
        f"brightness: Spearman {d['skin_photo_spearman']:.3f}",
        *_expression_lines(d, rep.scores),
        f"  time: {d['seconds_median']:.3f} s/face wall, {d['cpu_seconds_median']:.3f} s CPU{net}",
    ])


def _expression_lines(d: dict[str, float], rows: list[CyclesFaceScore]) -> list[str]:
    if "expression_slope_active" not in d:
        return []
    scored = sorted((u for u in expression_units(rows) if "corr" in u), key=lambda u: -u["corr"])
    best = ", ".join(f"{u['unit']} {u['corr']:.2f}" for u in scored[:8])

    def g(key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(d[key]) if key in d else "–"

    return [f"  expressions (ARKit): slope {g('expression_slope_active')}  MAE {g('expression_mae_active')} on active "
            f"units, {g('expression_mean_inactive')} on unused | per-unit correlation {g('expression_corr_mean')} "
            f"({g('expression_units_scored', '{:.0f}')} units) | neutral faces ({g('neutral_faces', '{:.0f}')}): "
            f"mean {g('neutral_mean_activation')}, largest {g('neutral_mean_max')} | jaw correlation "
            f"{g('jaw_corr')}, MAE {g('jaw_mae_deg', '{:.2f}')}°",
            f"  best units (correlation): {best}"]


def _expression_cell(d: dict[str, Any]) -> str:
    if "expression_slope_active" not in d:
        return "–"
    return " / ".join(f"{d[k]:.3f}" if k in d else "–"
                      for k in ("expression_slope_active", "expression_corr_mean", "neutral_mean_activation", "jaw_corr"))


def paired_rows(reports: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Markdown rows comparing each report's per-face NoW-style error with the first
    report's on the same faces (by sample index): the median and mean per-face difference
    and how many faces got worse / better by more than 0.1 mm. Medians of two runs can hide
    a change that most faces share; the per-face difference shows it."""
    base = {x["index"]: x["now_median_mm"] for x in reports[0]["faces"]}
    rows = [f"| per face against {labels[0]} | faces | NoW difference median / mean mm | worse by > 0.1 mm | better by > 0.1 mm |",
            "|" + "---|" * 5]
    for r, label in zip(reports[1:], labels[1:]):
        d = np.array([x["now_median_mm"] - base[x["index"]] for x in r["faces"] if x["index"] in base])
        if len(d) == 0:
            rows.append(f"| {label} | 0 | – | – | – |")
            continue
        rows.append(f"| {label} | {len(d)} | {np.median(d):+.3f} / {d.mean():+.3f} | {int((d > 0.1).sum())} "
                    f"| {int((d < -0.1).sum())} |")
    return rows


def format_table(reports: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    """A markdown table of several methods' reports (``CyclesReport.to_dict()``, e.g. the
    ``--json`` outputs), with the issue's ratios against the fit (the ``fit`` report when
    given), the methods by head yaw, and (:func:`paired_rows`) each report per face against
    the first one; ``labels`` name the reports there (default: their methods)."""
    fit = next((r["summary"] for r in reports if r["method"] == "fit"), None)

    def ratio(d: dict[str, float], key: str) -> str:
        return f" ({d[key] / fit[key]:.2f}× fit)" if fit and fit.get(key) else ""

    head = ("| method | faces (detector misses) | NoW median mm | mean face median mm | better than mean face "
            "| 2-D landmarks median px (% of width) | pose error median yaw / pitch / roll ° | skin Spearman / slope "
            "| expressions: slope / per-unit corr / neutral mean / jaw corr "
            "| s per face wall (CPU) | network 224 px, 1 thread, ms CPU |")
    rows = [head, "|" + "---|" * 11]
    for r in reports:
        d = r["summary"]
        net = f"{d['network_ms_224_cpu']:.1f}" if "network_ms_224_cpu" in d else "–"
        if "network_ms_input_cpu" in d:
            net += f" ({d['network_ms_input_cpu']:.1f} at its {d['network_input_px']} px input)"
        rows.append(
            f"| {r['method']} | {d['faces']} ({d['detection_failures']}) | {d['now_median_mm']:.3f}{ratio(d, 'now_median_mm')} "
            f"| {d['mean_face_median_mm']:.3f} | {100 * d['better_than_mean_face']:.0f} % "
            f"| {d['landmark_px_median']:.2f}{ratio(d, 'landmark_px_median')} ({100 * d['landmark_frac_median']:.2f} %) "
            f"| {d['yaw_err_median']:.1f} / {d['pitch_err_median']:.1f} / {d['roll_err_median']:.1f} "
            f"| {d['skin_spearman']:.3f} / {d['skin_slope']:.3f} | {_expression_cell(d)} "
            f"| {d['seconds_median']:.2f} ({d['cpu_seconds_median']:.2f}) "
            f"| {net} |")
    # by head yaw: where the methods break down
    bins = ((0, 15), (15, 30), (30, 90))
    names = [f"yaw within ±{a}–{b}°" if b < 90 else f"yaw beyond ±{a}°" for a, b in bins]
    rows += ["", "| method (faces, median pose error °, landmarks px, NoW mm) | " + " | ".join(names) + " |",
             "|" + "---|" * 4]
    for r in reports:
        cells = []
        for a, b in bins:
            f = [x for x in r["faces"] if a <= abs(x["true_yaw"]) < b]
            if not f:
                cells.append("–")
                continue
            med = {k: float(np.median([x[k] for x in f])) for k in ("rotation_err", "landmark_px", "now_median_mm")}
            cells.append(f"{len(f)}, {med['rotation_err']:.1f}, {med['landmark_px']:.2f}, {med['now_median_mm']:.2f}")
        rows.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    if len(reports) > 1:
        rows += [""] + paired_rows(reports, labels or [r["method"] for r in reports])
    return "\n".join(rows)


def evaluate_same_person(folder: str | Path, head: HeadModel, predictor: Predictor, config: Any = None,
                         backend: str = "default", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One person, several photos (:mod:`engine.fitting.shared_identity`), on a set built with
    ``--views V`` (samples k .. k+V-1 show one head): every photo reconstructed on its own by
    ``predictor``, then again with the identity shared by the person's photos; both scored
    NoW-style against each photo's own ground truth (and the mean face, the baseline).
    Returns the per-photo rows and their medians."""
    from engine.errors import UserError
    from engine.fitting.shared_identity import share_identity

    views = int(read_set(folder).get("config", {}).get("views", 1))
    if views < 2:
        raise UserError(f"{folder} shows every person once; build a set with cycles-set build --views 3")
    people: dict[int, list[int]] = {}
    for i in set_indices(folder):
        people.setdefault(i // views, []).append(i)
    decoder, faces = FaceDecoder(head), head.faces.cpu().numpy()
    with torch.no_grad():
        template = head.template.detach().double().cpu().numpy()
        template_lm = head.landmarks(head.template[None])[0].double().cpu().numpy()
    template_query = SurfaceQuery(template, faces)

    def now(params: Any, scan: np.ndarray, g: dict[str, Any]) -> float:
        """NoW-style median of an estimate (None: the mean face) against one photo's scan."""
        if params is None:
            return now_error(template, faces, template_lm, scan, g["landmarks3d_camera"], query=template_query).median_mm
        with torch.no_grad():
            dec = decoder(params.detach().cpu().to(dtype=torch.float32))
        return now_error(dec.vertices[0].double().numpy(), faces, dec.landmarks3d[0].double().numpy(), scan,
                         g["landmarks3d_camera"]).median_mm

    rows: list[dict[str, Any]] = []
    for person, indices in people.items():
        seen = []
        for i in indices:
            s = load_sample(folder, i)
            det = detect(s.image, backend)
            if det is not None:
                face = FaceObservation.from_detection(s.image, det)
                seen.append((i, s.gt, face, predictor(face).detach().cpu()))
        if len(seen) < 2:
            if log:
                log(f"person {person}: {len(seen)} photo(s) with a detected face, skipped")
            continue
        shared = share_identity(head, [f for _, _, f, _ in seen], [e for _, _, _, e in seen], config)
        for (i, g, _, own), both, w in zip(seen, shared.estimates, shared.weights):
            scan = scan_points(g["vertices_camera"], g["faces"], g["face_mask"], SCAN_POINTS, seed=0)  # once a photo
            row = {"index": i, "person": person, "own_mm": now(own, scan, g), "shared_mm": now(both, scan, g),
                   "mean_face_mm": now(None, scan, g), "weight": float(w), "yaw": float(head_angles(g["R"])[1])}
            rows.append(row)
            if log:
                log(f"sample {i} (person {person}, yaw {row['yaw']:+.0f}°): own {row['own_mm']:.2f} mm, shared "
                    f"{row['shared_mm']:.2f} mm, mean face {row['mean_face_mm']:.2f} mm, weight {w:.2f}")
    own = np.array([r["own_mm"] for r in rows])
    both = np.array([r["shared_mm"] for r in rows])
    base = np.array([r["mean_face_mm"] for r in rows])
    return {"set_dir": str(folder), "method": str(predictor.name), "model": head.name, "views": views,
            "people": len({r["person"] for r in rows}), "photos": len(rows),
            "own_median_mm": float(np.median(own)) if len(rows) else float("nan"),
            "shared_median_mm": float(np.median(both)) if len(rows) else float("nan"),
            "mean_face_median_mm": float(np.median(base)) if len(rows) else float("nan"),
            "shared_lower": float(np.mean(both < own)) if len(rows) else float("nan"),
            "own_better_than_mean_face": float(np.mean(own < base)) if len(rows) else float("nan"),
            "shared_better_than_mean_face": float(np.mean(both < base)) if len(rows) else float("nan"),
            "rows": rows}


def format_same_person(rep: dict[str, Any]) -> str:
    """The summary of :func:`evaluate_same_person`, with the paired comparison photo by photo
    (means, the median of shared − own, Wilcoxon's signed-rank p)."""
    from scipy.stats import wilcoxon

    own = np.array([r["own_mm"] for r in rep["rows"]])
    both = np.array([r["shared_mm"] for r in rep["rows"]])
    paired = (f"\n  photo by photo: mean {own.mean():.3f} -> {both.mean():.3f} mm, median of shared - own "
              f"{np.median(both - own):+.3f} mm, Wilcoxon p = {wilcoxon(both, own).pvalue:.4f}") if len(own) > 1 else ""
    return (f"one person, several photos: set {rep['set_dir']} ({rep['views']} photos per person), method="
            f"{rep['method']} model={rep['model']}: {rep['people']} people, {rep['photos']} photos\n"
            f"  NoW-style median per photo: own identity {rep['own_median_mm']:.3f} mm, shared identity "
            f"{rep['shared_median_mm']:.3f} mm, mean face {rep['mean_face_median_mm']:.3f} mm\n"
            f"  shared lower than own on {100 * rep['shared_lower']:.0f} % of photos; better than the mean face: "
            f"own {100 * rep['own_better_than_mean_face']:.0f} %, shared {100 * rep['shared_better_than_mean_face']:.0f} %"
            + paired)
