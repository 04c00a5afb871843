"""Head-model command line.

python -m engine.head info --model open|ict|flame [--path P] [--landmarks F] [--json] [--identity-effect N]
python -m engine.head export --model open --out head.obj|head.glb [--expression jawOpen=0.8 ...]
    [--identity 0=1.5 ...] [--pose jaw=0.3,0,0 ...] [--path P]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engine.errors import UserError, cli_errors
from engine.head import MODEL_NAMES, HeadModel, load_head_model


def _load(args: argparse.Namespace) -> HeadModel:
    if args.model == "flame" and getattr(args, "landmarks", None):
        from engine.head.flame import load_flame
        return load_flame(args.path, landmarks=args.landmarks)
    return load_head_model(args.model, args.path)


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        if "=" not in it:
            raise UserError(f"--{what} {it!r} is not of the form NAME=VALUE.")
        k, v = it.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def coefficients(model: HeadModel, identity: list[str], expression: list[str], pose: list[str]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parse CLI NAME=VALUE lists into (1,K_id), (1,K_exp), (1,J,3) tensors."""
    beta = torch.zeros(1, model.n_identity)
    psi = torch.zeros(1, model.n_expression)
    theta = torch.zeros(1, model.n_joints, 3)
    try:
        for k, v in _pairs(identity, "identity"):
            i = int(k.removeprefix("id"))
            if not 0 <= i < model.n_identity:
                raise UserError(f"--identity index {i} is outside 0..{model.n_identity - 1}.")
            beta[0, i] = float(v)
        for k, v in _pairs(expression, "expression"):
            if k not in model.expression_names:
                raise UserError(f"--expression {k!r} is not an expression of the {model.name} model "
                                f"(e.g. {', '.join(model.expression_names[:4])}, ...).")
            psi[0, model.expression_names.index(k)] = float(v)
        for k, v in _pairs(pose, "pose"):
            if k not in model.joint_names:
                raise UserError(f"--pose joint {k!r} is not one of {', '.join(model.joint_names)}.")
            vals = [float(x) for x in v.split(",")]
            if len(vals) != 3:
                raise UserError(f"--pose {k}={v} needs three comma-separated radians (rx,ry,rz).")
            theta[0, model.joint_names.index(k)] = torch.tensor(vals)
    except ValueError as exc:
        raise UserError(f"cannot parse a coefficient value ({exc}).") from None
    return beta, psi, theta


def export(model: HeadModel, out: Path, identity: list[str], expression: list[str], pose: list[str]) -> dict:
    """Write ``out`` (.obj or .glb) for the given coefficients; returns a small report."""
    from engine.export import write_glb, write_obj

    beta, psi, theta = coefficients(model, identity, expression, pose)
    suffix = out.suffix.lower()
    with torch.no_grad():
        if suffix == ".obj":
            verts = model(beta, psi, theta if model.n_joints else None).vertices[0].numpy()
            write_obj(out, verts, model.faces.numpy(), model.uv.numpy(), model.face_uv.numpy())
            return {"path": str(out), "n_vertices": int(len(verts))}
        if suffix == ".glb":
            # expressions become named morph targets with the requested weights (shape keys)
            verts = model(beta, None, theta if model.n_joints else None).vertices[0].numpy()
            targets = {n: model.expression_basis[i].numpy() for i, n in enumerate(model.expression_names)}
            weights = {n: float(psi[0, i]) for i, n in enumerate(model.expression_names)}
            res = write_glb(out, verts, model.faces.numpy(), model.uv.numpy(), model.face_uv.numpy(),
                            targets, morph_weights=weights, name=f"{model.name}_head")
            return {"path": str(out), "n_vertices": res["n_vertices"], "n_morph_targets": len(targets)}
    raise UserError(f"--out {out} must end in .obj or .glb.")


def identity_effect_mm(model: HeadModel, n: int) -> list[dict[str, float]]:
    """For identity modes ``0..n-1``: the RMS displacement (mm) over the ``face_skin`` region
    (all vertices when the model has none) of the neutral face moved by +1 prior std of the
    mode, as it is (``raw``) and after the similarity alignment the NoW-style scores use
    (``aligned``: what is left once scale, rotation and position are removed). How much a
    mode changes the face's shape, which is what a single photo can show."""
    import numpy as np

    from engine.eval.synthetic import umeyama

    mask = model.regions.get("face_skin")
    ids = np.ones(model.n_vertices, bool) if mask is None else mask.cpu().numpy().astype(bool)
    base = model.template.detach().cpu().double().numpy()[ids]

    def rms_mm(a: np.ndarray) -> float:
        return round(float(np.sqrt(((a - base) ** 2).sum(1).mean()) * 1000.0), 3)

    out = []
    for k in range(min(n, model.n_identity)):
        moved = base + model.identity_basis[k].detach().cpu().double().numpy()[ids] * float(model.identity_std[k])
        s_, R, t = umeyama(moved, base)
        out.append({"mode": k, "raw": rms_mm(moved), "aligned": rms_mm(moved @ (s_ * R).T + t)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.head", description="Head models: info and export.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("info", "export"):
        p = sub.add_parser(name)
        p.add_argument("--model", choices=MODEL_NAMES, default="open")
        p.add_argument("--path", default=None, help="model file or folder (ict: FaceXModel folder or npz; flame: pkl)")
        p.add_argument("--landmarks", default=None, help="flame: 68-point landmark embedding file")
        if name == "info":
            p.add_argument("--json", action="store_true", help="print JSON")
            p.add_argument("--identity-effect", type=int, default=0, metavar="N",
                           help="also the first N identity modes' effect on the face: RMS face-skin displacement "
                                "(mm) of +1 prior std, raw and after a similarity alignment")
        else:
            p.add_argument("--out", required=True, help="output .obj (+.mtl) or .glb")
            p.add_argument("--expression", action="append", default=[], metavar="NAME=W")
            p.add_argument("--identity", action="append", default=[], metavar="K=BETA")
            p.add_argument("--pose", action="append", default=[], metavar="JOINT=RX,RY,RZ")
    args = ap.parse_args(argv)
    with cli_errors():
        model = _load(args)
        if args.cmd == "info":
            s = model.summary()
            if args.identity_effect > 0:
                s["identity_face_mm"] = identity_effect_mm(model, args.identity_effect)
            if args.json:
                print(json.dumps(s, indent=1))
            else:
                for k, v in s.items():
                    print(f"{k}: {v}")
        else:
            rep = export(model, Path(args.out), args.identity, args.expression, args.pose)
            print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
