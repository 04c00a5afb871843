"""Detail maps in the output folder: 16-bit displacement PNGs, the animated-detail entry of
``params.json``, and "bake detail for this pose" (``python -m engine bake-detail``).

Encoding (docs/conventions.md): a 16-bit grey PNG in the head's export UV layout
(:mod:`engine.export.uv_pack`, the layout of ``albedo.png`` and the meshes; row 0 = ``v``
of 1), zero displacement at grey 32768, ``params.json["displacement_scale_m"]`` metres per
grey step, positive = outwards along the surface normal. Files:

    displacement.png          the neutral detail D(code, expression 0, jaw 0)
    detail/<unit>.png         D(code, unit at weight 1) − D(code, 0): a delta, same encoding
    detail/jaw.png            D(code, jaw opened by ``jaw.rad``) − D(code, 0)

and ``params.json["detail"] = {"units": {name: file}, "jaw": {"file", "rad"} | None,
"method", "checkpoint", "code", "uv_size", "max_m"}``. Blender mixes the deltas with the
shape-key values (docs/blender_addon.md, "Animated detail"); the exact map of a pose is the
network's own decoder, :func:`bake_detail_pose`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.errors import UserError

__all__ = ["MID_LEVEL", "decode_displacement_png", "displacement_png", "bake_detail_pose", "whole_layout",
           "write_detail_maps"]

MID_LEVEL = 32768  # grey value of zero displacement


def displacement_png(values_m: np.ndarray, scale_m: float) -> bytes:
    """A ``(M, M)`` map in metres as 16-bit PNG bytes (clipped to the encodable range)."""
    import cv2

    grey = np.clip(np.rint(np.asarray(values_m, np.float64) / scale_m) + MID_LEVEL, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", grey)
    if not ok:
        raise RuntimeError("PNG encoding of a displacement map failed")
    return buf.tobytes()


def decode_displacement_png(path: str | Path, scale_m: float) -> np.ndarray:
    """A 16-bit displacement PNG back to metres ``(M, M)`` float64."""
    import cv2

    grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if grey is None or grey.dtype != np.uint16 or grey.ndim != 2:
        raise UserError(f"{path} is not a 16-bit grey displacement map")
    return (grey.astype(np.float64) - MID_LEVEL) * scale_m


def whole_layout(maps: "torch.Tensor", window: tuple[float, float, float, float] | None) -> tuple["torch.Tensor", int]:
    """Maps ``(N, 1, M, M)`` over a UV ``window`` placed into whole-layout maps (what Blender's
    UV look-up needs) at the smallest multiple of 64 texels that keeps their texel density;
    maps without a window are returned as they are. Returns the maps and their side."""
    from engine.render.uv import window_to_full

    if window is None:
        return maps, int(maps.shape[-1])
    side = min(window[2] - window[0], window[3] - window[1])
    size = int(np.ceil(maps.shape[-1] / side / 64.0) * 64)
    return window_to_full(maps.float(), window, size), size


def write_detail_maps(folder: str | Path, maps: Any, head: Any, method: str, checkpoint: str | None) -> dict[str, Any]:
    """Write ``displacement.png`` and ``detail/*.png`` of :class:`engine.methods.deca.DetailMaps`
    ``maps`` into ``folder``; returns the ``params.json`` entries (``displacement_scale_m``,
    ``detail``). The scale is the network's bound over 32000 grey steps, so every value fits.
    Maps over a UV window are placed in the whole model layout (:func:`whole_layout`), then
    carried into the export layout (:func:`engine.export.uv_pack.to_export_layout`)."""
    from engine.export.uv_pack import to_export_layout

    folder = Path(folder)
    scale_m = float(maps.max_m) / 32000.0
    names = list(maps.units)
    stack = [maps.neutral] + [maps.units[n] for n in names] + ([maps.jaw] if maps.jaw is not None else [])
    full, size = whole_layout(torch.cat(stack, 0), maps.window)
    padded = to_export_layout(full, head)[:, 0].numpy()  # the files' layout (engine.export.uv_pack), padded
    (folder / "displacement.png").write_bytes(displacement_png(padded[0], scale_m))
    units: dict[str, str] = {}
    if names or maps.jaw is not None:
        (folder / "detail").mkdir(exist_ok=True)
    for k, name in enumerate(names):
        rel = f"detail/{name}.png"
        (folder / rel).write_bytes(displacement_png(padded[1 + k], scale_m))
        units[name] = rel
    jaw = None
    if maps.jaw is not None:
        (folder / "detail" / "jaw.png").write_bytes(displacement_png(padded[-1], scale_m))
        jaw = {"file": "detail/jaw.png", "rad": float(maps.jaw_rad)}
    return {"displacement_scale_m": scale_m,
            "detail": {"units": units, "jaw": jaw, "method": method, "checkpoint": checkpoint,
                       "code": [round(float(x), 6) for x in maps.code.tolist()], "uv_size": size,
                       "max_m": float(maps.max_m)}}


def _pose_vectors(pose: Mapping[str, Any], head: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(expression (E,), jaw (3,))`` from a pose dictionary ``{"expression": {name: w},
    "jaw": [rx, ry, rz]}`` (missing units 0; unknown names are an error)."""
    if not isinstance(pose, Mapping):
        raise UserError("the pose must be a JSON object with 'expression' and 'jaw'")
    names = list(head.expression_names)
    expr = np.zeros(len(names))
    weights = pose.get("expression", {}) or {}
    if not isinstance(weights, Mapping):
        raise UserError("pose 'expression' must map ARKit unit names to weights")
    unknown = sorted(k for k in weights if k not in names)
    if unknown:
        raise UserError(f"pose names unknown expression units: {', '.join(unknown[:5])}")
    for k, w in weights.items():
        try:
            expr[names.index(k)] = float(w)
        except (TypeError, ValueError):
            raise UserError(f"pose weight of {k!r} is not a number: {w!r}") from None
    jaw = pose.get("jaw", [0.0, 0.0, 0.0])
    try:
        jaw_v = np.asarray(jaw if jaw is not None else [0.0, 0.0, 0.0], np.float64).reshape(3)
    except (TypeError, ValueError):
        raise UserError(f"pose 'jaw' must be three angles in radians, got {jaw!r}") from None
    if not (np.isfinite(expr).all() and np.isfinite(jaw_v).all()):
        raise UserError("pose values must be finite numbers")
    return expr, jaw_v


def bake_detail_pose(result_dir: str | Path, pose: Mapping[str, Any], out: str | Path,
                     checkpoint: str | None = None) -> Path:
    """The exact detail map of a pose: the network recorded in ``result_dir/params.json``
    decodes its detail code with the pose's expression weights and jaw rotation; written to
    ``out`` as a 16-bit PNG with the folder's ``displacement_scale_m``. ``checkpoint``
    overrides the recorded network file (e.g. after moving it)."""

    from engine.methods import registry

    folder = Path(result_dir).expanduser()
    params_path = folder / "params.json"
    if not params_path.is_file():
        raise UserError(f"{folder} is not a reconstruction folder (no params.json)")
    try:
        params = json.loads(params_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {params_path}: {exc}") from None
    detail = params.get("detail")
    if not isinstance(detail, Mapping) or "code" not in detail:
        raise UserError(f"{folder} has no detail code: reconstruct with a method that has a detail stage "
                        "(--method deca with a detail checkpoint)")
    ckpt = checkpoint or detail.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise UserError(f"the detail network {ckpt!r} recorded in {params_path} is not there; "
                        "pass --checkpoint with its current path")
    spec = registry.get(str(detail.get("method", "deca")))
    network = registry.load_entry(spec).load(ckpt)
    if getattr(network, "detail_decoder", None) is None:
        raise UserError(f"{ckpt} has no detail stage")
    expr, jaw = _pose_vectors(pose, network.head)
    code = torch.tensor(detail["code"], dtype=torch.float32)[None]
    if code.shape[1] != network.detail_decoder.code_dim:
        raise UserError(f"the detail code in {params_path} has {code.shape[1]} values; {ckpt} expects "
                        f"{network.detail_decoder.code_dim}")
    with torch.no_grad():
        d = network.detail_decoder(code, torch.tensor(expr, dtype=torch.float32)[None],
                                   torch.tensor(jaw, dtype=torch.float32)[None])
    from engine.export.uv_pack import to_export_layout
    from engine.head.teeth import with_teeth

    window = network.window_batch(1)
    full, size = whole_layout(d, None if window is None else tuple(float(x) for x in window[0]))
    scale_m = float(params.get("displacement_scale_m") or network.cfg.detail_max_m / 32000.0)
    out = Path(out).expanduser()
    from engine.export.atomic import atomic_write

    files_model = with_teeth(network.head)  # displacement.png's layout is that of the files' mesh
    atomic_write(out, displacement_png(to_export_layout(full, files_model)[0, 0].numpy(), scale_m))
    return out
