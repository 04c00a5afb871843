"""One photo in, a complete head out: the API behind ``python -m engine reconstruct``.

``reconstruct(photo_path, out_dir, model="open", device="cpu", face=None, progress=cb)``
loads the photo, detects faces (largest first), fits the head model by analysis-by-synthesis
(:mod:`engine.fitting`) and writes the output folder of docs/conventions.md atomically:
everything goes into a temporary sibling folder that is renamed to ``out_dir`` only when
all files are written, so a failure never leaves half an output behind.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.errors import NoFaceError, UserError

ProgressFn = Callable[[str, float, str], None]

METHODS = ("fit", "learned", "hybrid")


def hybrid_config(base: Any = None) -> Any:
    """Fitter schedule for ``--method hybrid``: the network's prediction replaces the PnP
    start, the pose-only stage and most landmark steps; a short joint refinement follows."""
    import dataclasses

    from engine.fitting import FitConfig

    base = base or FitConfig()
    return dataclasses.replace(base, pose_iters=0, shape_iters=15, joint_iters=20)


DEFAULT_CHECKPOINTS = {"open": Path(__file__).resolve().parent / "assets" / "mofa_open_default.pt"}
"""Committed networks we trained ourselves (docs/training.md says how), used when no
``--checkpoint`` is given."""


def load_learned(checkpoint: str | os.PathLike[str] | None, method: str, device: Any = "cpu",
                 model: str = "open"):
    """The MoFA network of a checkpoint (the model's committed default when none is given),
    with a clear UserError when it is missing or wrong."""
    from engine.errors import ModelFileError

    if not checkpoint:
        default = DEFAULT_CHECKPOINTS.get(model)
        if default is None or not default.is_file():
            raise UserError(f"--method {method} needs --checkpoint CKPT (a MoFA training or exported "
                            f"checkpoint); there is no default network for head model {model!r}")
        checkpoint = default
    from engine.methods.mofa import load_checkpoint

    try:
        return load_checkpoint(checkpoint, device)
    except ModelFileError:
        raise
    except Exception as exc:  # a readable file of another kind: missing keys, wrong shapes
        raise ModelFileError(f"checkpoint {checkpoint} cannot be used for --method {method} "
                             f"({type(exc).__name__}: {exc})") from None


def predict_face(head, rgb: np.ndarray, landmarks68: np.ndarray, detection: Any, method: str = "fit",
                 config: Any = None, network: Any = None, progress: ProgressFn | None = None):
    """One face -> FitResult by ``method``: ``fit`` (analysis-by-synthesis), ``learned``
    (the network alone) or ``hybrid`` (network initialisation + a short fit)."""
    from engine.fitting import FitConfig, fit_photo

    native = conv = None
    if detection is not None and getattr(detection, "landmarks_native", None) is not None:
        native, conv = detection.landmarks_native, detection.convention
    if method == "fit":
        return fit_photo(head, rgb, landmarks68, config or FitConfig(), progress=progress, native=native,
                         native_convention=conv)
    from engine.methods.mofa import predict_photo

    t0 = time.perf_counter()
    pred = predict_photo(network, rgb, landmarks68)
    pred.timings = {"network": time.perf_counter() - t0}
    if network.head.name != head.name or network.head.n_vertices != head.n_vertices:
        raise UserError(f"the checkpoint was trained for head model {network.head.name!r}, "
                        f"not {head.name!r}; pass --model {network.head.name}")
    if method == "learned":
        return pred
    res = fit_photo(head, rgb, landmarks68, hybrid_config(config), progress=progress, native=native,
                    native_convention=conv, init=pred)
    res.timings = {**pred.timings, **res.timings}
    return res


@dataclass
class ReconstructionResult:
    """What :func:`reconstruct` wrote and measured."""

    out_dir: Path
    params: dict[str, Any]
    n_faces: int
    face_index: int
    timings: dict[str, float] = field(default_factory=dict)
    fit: Any = None  # engine.fitting.FitResult


def _resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU here "
                        "(this torch build is CPU-only or no driver is installed); use --device cpu")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; use cpu or cuda")
    return torch.device(device)


def _select_face(faces: list, face: int | None, name: str) -> tuple[int, Any]:
    """The chosen (index, detection); ``face=None`` means "the only face" and refuses to guess when
    there are several (a group photo would otherwise silently give the wrong person)."""
    if not faces:
        raise NoFaceError(f"no face found in {name}")
    if face is None:
        if len(faces) > 1:
            raise UserError(f"{name} shows {len(faces)} faces; choose one with --face N (0 = largest, "
                            f"{len(faces) - 1} = smallest; see them numbered with "
                            f"python -m engine.detect {name} --out faces.png)")
        face = 0
    if face < 0 or face >= len(faces):
        raise UserError(f"{name} has {len(faces)} face(s); --face {face} is out of range "
                        f"(use 0 to {len(faces) - 1}, 0 = largest)")
    chosen = faces[face]
    if chosen.landmarks68 is None:
        raise NoFaceError(f"the face detector found a face in {name} but no landmarks for it")
    return face, chosen


def reconstruct(
    photo_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: str = "open",
    device: str = "cpu",
    face: int | None = None,
    progress: ProgressFn | None = None,
    model_path: str | None = None,
    method: str = "fit",
    backend: str = "default",
    config: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ReconstructionResult:
    """Reconstruct the ``face``-th largest face of a photo into ``out_dir`` (see module doc).

    ``face=None`` (default): the photo must show exactly one face; with several, a
    :class:`UserError` asks for an index (0 = largest).
    """
    from engine.detect import detect_faces
    from engine.export.atomic import atomic_output_folder, check_output_folder
    from engine.fitting import FitConfig
    from engine.head import load_head_model
    from engine.photo import load_image
    from engine.plausibility import check_fit

    report = progress or (lambda stage, fraction, message: None)
    if method not in METHODS:
        raise UserError(f"method {method!r} is not available; choose one of {', '.join(METHODS)}")
    if checkpoint and method == "fit":
        raise UserError("--checkpoint is used only by --method learned or hybrid, not by --method fit")
    dev = _resolve_device(device)
    check_output_folder(out_dir)
    network = load_learned(checkpoint, method, dev, model=model) if method != "fit" else None
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    report("load", 0.0, f"reading {photo_path}")
    photo = load_image(photo_path)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    report("detect", 0.05, "detecting faces")
    faces = detect_faces(photo, backend=backend)
    face, det = _select_face(faces, face, photo.path)
    timings["detect"] = time.perf_counter() - t
    report("detect", 0.08, f"found {len(faces)} face(s); using face {face}"
           + (" (the largest)" if face == 0 else ""))

    t = time.perf_counter()
    report("model", 0.1, f"loading head model {model!r}")
    head = load_head_model(model, model_path, device=dev)
    timings["model"] = time.perf_counter() - t

    cfg = config or FitConfig()
    landmarks_rgb = det.landmarks68[:, :2] * photo.scale
    if det.landmarks_native is not None and photo.scale != 1.0:
        det = dataclasses.replace(det, landmarks_native=det.landmarks_native * photo.scale)
    fit = predict_face(head, photo.rgb, landmarks_rgb, det, method, cfg, network,
                       progress=lambda s, f, m: report(s, 0.1 + 0.75 * f, m))
    timings.update({f"fit_{k}": v for k, v in fit.timings.items()})
    timings["fit"] = sum(fit.timings.values())

    t = time.perf_counter()
    report("write", 0.88, "writing meshes, textures and parameters")
    with atomic_output_folder(out_dir) as tmp:
        params = write_outputs(tmp, head, fit, photo, cfg, method=method)
        params["warnings"] = check_fit(params["landmarks68_detected_px"], params["landmarks68_image_px"])
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        params["timings"] = {k: round(v, 4) for k, v in timings.items()}
        params["faces_found"] = len(faces)
        params["face_index"] = face
        params["detector"] = det.backend
        from engine.outputs import write_params

        write_params(tmp / "params.json", params)
    final = Path(os.fspath(out_dir)).expanduser().absolute()
    report("done", 1.0, str(final))
    return ReconstructionResult(final, params, len(faces), face, timings, fit)


def expression_morph_targets(model, identity: torch.Tensor, pose: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-expression vertex deltas at the fitted identity and joint pose (model frame).

    LBS is affine in the rest-pose vertices, so an expression's displacement after skinning
    is its basis rotated by the skinning rotations: exact when joints do not move with the
    expression (the model's joint-expression basis is ignored here).
    """
    from engine.head.lbs import axis_angle_to_matrix, rigid_transforms

    with torch.no_grad():
        out = model(identity[None], None, pose[None] if pose.numel() else None)
        if pose.numel():
            joints = model.joint_template[None] + torch.einsum("bk,kjc->bjc", identity[None], model.joint_identity_basis)
            _, T = rigid_transforms(axis_angle_to_matrix(pose[None]), joints, model.joint_parents)
            Rv = torch.einsum("vj,jxy->vxy", model.skin_weights, T[0, :, :3, :3])
            basis = torch.einsum("vxy,kvy->kvx", Rv, model.expression_basis)
        else:
            basis = model.expression_basis
    del out
    return {name: basis[i].cpu().numpy() for i, name in enumerate(model.expression_names)}


def write_outputs(folder: Path, model, fit, photo, cfg, method: str = "fit") -> dict[str, Any]:
    """Write every file of the output folder except ``params.json``; return the params dict."""
    from engine.export.gltf import write_glb
    from engine.export.obj import write_obj
    from engine.fitting.fitter import _work_crop, model_cache
    from engine.outputs import (bake_albedo, build_params, build_rig, fit_overlay, png_bytes, render_geometry,
                                render_textured, side_by_side, write_png, write_rig)
    from engine.render.camera import PerspectiveCamera
    from engine.render.shading import camera_to_view, sh_basis, vertex_normals

    folder = Path(folder)
    cache = model_cache(model)
    cpu = lambda x: x.detach().cpu()  # noqa: E731
    faces = cpu(model.faces)
    uv, face_uv = cpu(model.uv), cpu(model.face_uv)
    verts = fit.vertices
    R, t, K = fit.R, fit.t, fit.K
    img = photo.rgb
    H, W = img.shape[:2]

    # --- albedo texture from a face crop of the photo (enough pixels for the texture size)
    lm = fit.landmarks_target.numpy()
    src_size = int(cfg.texture_size * 1.5)
    crop, s, origin = _work_crop(img, lm, src_size, cfg.crop_scale, 0.0)
    S = torch.tensor([[s, 0, -s * origin[0]], [0, s, -s * origin[1]], [0, 0, 1.0]], dtype=torch.float32)
    K_src = S @ K
    source_camera = PerspectiveCamera(K_src[None], R[None], t[None], crop.shape[:2])
    screen = source_camera.to_screen(verts[None])[0]
    n_view = camera_to_view(source_camera.rotate_normals(vertex_normals(verts[None], model.faces.cpu())))[0]
    shading_v = (sh_basis(n_view) @ fit.sh).clamp_min(0)
    source = torch.from_numpy(crop).permute(2, 0, 1)[None]
    cpu_model = model.to("cpu") if model.template.device.type != "cpu" else model
    albedo_img = bake_albedo(cpu_model, screen, fit.visibility, shading_v, fit.albedo, cpu(cache.mirror), source,
                             cfg.texture_size)
    albedo_png = png_bytes(albedo_img)
    (folder / "albedo.png").write_bytes(albedo_png)
    albedo_map = torch.from_numpy(albedo_img.astype(np.float32) / 255.0).permute(2, 0, 1)

    # --- meshes
    write_obj(folder / "head.obj", verts.numpy(), faces.numpy(), uv.numpy(), face_uv.numpy(),
              texture_path=folder / "albedo.png")
    write_obj(folder / "head_camera.obj", (verts @ R.T + t).numpy(), faces.numpy(), uv.numpy(), face_uv.numpy(),
              texture_path=folder / "albedo.png", material_name="head_camera")
    pose = fit.pose
    # head.glb is the mesh at pose 0 (sliders at zero = neutral); rig.json carries the joints,
    # skin weights and the fitted pose so Blender poses bones instead of a baked jaw/neck.
    with torch.no_grad():
        base = cpu_model(fit.identity[None], None, None).vertices[0]
    targets = expression_morph_targets(cpu_model, fit.identity, pose.new_zeros(0))
    weights = {n: float(v) for n, v in zip(model.expression_names, fit.expression.tolist())}
    write_glb(folder / "head.glb", base.numpy(), faces.numpy(), uv.numpy(), face_uv.numpy(), morph_targets=targets,
              texture_png=albedo_png, morph_weights=weights)
    write_rig(folder / "rig.json", build_rig(cpu_model, fit.identity.cpu(), fit.expression.cpu(), pose.cpu()))

    # --- overlay on the (possibly reduced) photo, summary on the face crop
    scale = min(1.0, cfg.overlay_max_side / max(H, W))
    oh, ow = max(1, round(H * scale)), max(1, round(W * scale))
    import cv2

    photo_small = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA) if scale < 1 else img
    Ko = torch.diag(torch.tensor([ow / W, oh / H, 1.0])) @ K
    # the textured render reproduces the photo almost exactly (the texture is baked from it),
    # so the overlay shows the geometry alone, grey under a fixed light, with both landmark sets
    lm3 = model.landmarks(verts[None].to(model.template.device))[0].cpu()
    lm_px = fit.project(lm3)
    grey, mask = render_geometry(cpu_model, verts, R, t, Ko, (oh, ow))
    write_png(folder / "overlay.png", fit_overlay(photo_small, grey, mask, lm * (ow / W), lm_px.numpy() * (ow / W)))
    ccrop, cs, corigin = _work_crop(img, lm, 256, cfg.crop_scale, 0.0)
    Kc = torch.tensor([[cs, 0, -cs * corigin[0]], [0, cs, -cs * corigin[1]], [0, 0, 1.0]], dtype=torch.float32) @ K
    colour, shading, alb, mask = render_textured(cpu_model, verts, R, t, Kc, (256, 256), albedo_map, fit.sh)
    # raw SH shading is mostly ambient and exceeds 1 (the albedo absorbs the light's scale):
    # stretch its 1st..99th percentile over the face to black..white so it is not blown out
    lum = shading.mean(-1)
    lo, hi = (np.percentile(lum[mask], [1, 99]) if mask.any() else (0.0, 1.0))
    grey = np.repeat((np.clip((lum - lo) / max(hi - lo, 1e-6), 0, 1) * mask)[..., None], 3, -1)
    render_on = np.where(mask[..., None], colour, ccrop * 0.3)
    write_png(folder / "summary.png", side_by_side([ccrop, render_on, grey, alb], 256,
                                                   ["photo", "render", "shading p1-p99", "albedo"]))

    # --- parameters
    lm_cam = lm3 @ R.T + t
    # photo.rgb may be a reduced copy of the original file: report in original pixels
    inv = 1.0 / photo.scale
    K_orig = torch.diag(torch.tensor([inv, inv, 1.0])) @ K
    pose_dict = {name: pose[j].tolist() for j, name in enumerate(model.joint_names)} if pose.numel() else {}
    return build_params(
        model=model.name, image_size=photo.original_size, K=K_orig.numpy(), R=R.numpy(), t=t.numpy(),
        identity=fit.identity.tolist(), expression=weights, pose=pose_dict, sh=fit.sh.numpy(),
        landmarks68_image_px=(lm_px * inv).numpy(), landmarks68_camera=lm_cam.numpy(), timings=fit.timings,
        photo=str(photo.path), method=method,
        extra={"landmarks68_detected_px": (fit.landmarks_target * inv).numpy(),
               "fit_losses": fit.losses, "focal_guess": {"fov_deg": cfg.fov_deg, "min_distance_m": cfg.min_distance_m}},
    )
