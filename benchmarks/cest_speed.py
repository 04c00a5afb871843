"""Milliseconds of CEST's network per face on one CPU thread, in all and by part (not a test;
prints figures).

    python benchmarks/cest_speed.py [--checkpoint CKPT ...] [--size 224] [--repeats 40] [--rounds 5]

For each checkpoint (default: the committed ``engine/assets/cest_open_default.pt``) the
total is ``decode(encode(x))`` on a ``--size``-px crop (the same call as ``engine.eval
cycles``' network timing), and the parts are the network's own pieces run on inputs of the
shapes they see: the resize of the crop to the network's input size, f_v, the
canonical-view warp, f_s, the code to FaceParams, the unwrap (posing the mesh, or only the
face window's vertices, its visibility and the UV lookup), the reflectance U-Net f_r, the
light estimator f_ℓ and the placing of a face-window reflectance into the whole layout.
Each figure is the median CPU time of ``--repeats`` calls; the rounds run the checkpoints
in turn and the smallest round median is printed beside the median of the rounds (this
machine is shared: other work slows some rounds, nothing makes one faster). MoFA's network
is timed the same way alongside (``--mofa``, default on), as a yardstick of the machine's
speed at that moment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as Fn

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return statistics.median(times) * 1000.0


def parts(net, size: int) -> dict[str, callable]:
    """name -> a no-argument call timing that part of ``net`` (a loaded Cest)."""
    cfg = net.cfg
    S, T = cfg.image_size, net.texels
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=g)
    crop = Fn.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
    Sv = net.cfg.viewpoint_size or S
    view = Fn.interpolate(crop, size=(Sv, Sv), mode="bilinear", align_corners=False, antialias=True)
    code = net.encode(x)
    camera = net.camera(code.rotation, code.translation)

    out = {
        "total": lambda: net.decode(net.encode(x)),
        f"resize {size} -> {S}": lambda: Fn.interpolate(x, size=(S, S), mode="bilinear", align_corners=False,
                                                        antialias=True),
        f"f_v ({Sv} px)": lambda: net.f_v_head(net.f_v(view)),
    }
    if cfg.shared_stem:
        trunk = net.f_v.trunk(view)
        out["canonical warp (f_v's first-stage features)"] = lambda: net.canonical_view(trunk, camera)
        out["f_s (its last three stages)"] = lambda: net.f_s_head(net.f_s.rest(trunk))
    else:
        Ss = cfg.shape_size or S
        out["canonical warp"] = lambda: net.canonical_view(crop, camera, cfg.shape_size)
        shape_in = net.canonical_view(crop, camera, cfg.shape_size)
        out[f"f_s ({Ss} px)"] = lambda: net.f_s_head(net.f_s(shape_in))
    out.update({
        "code -> FaceParams (decode)": lambda: net.decode(code),
        "unwrap (decode, pose, visibility, UV lookup)": lambda: net.unwrap(crop, net.decoder(net.decode(code))),
        f"f_r U-Net ({T} texels)": lambda: net.f_r(torch.cat([code.texture, code.texture_mask], 1)),
        "f_l light": lambda: net.f_l(torch.rand(1, 10, T, T, generator=g)),
    })
    if net.window is not None:
        out["window -> whole layout"] = lambda: net.to_layout(code.albedo_map[:, :, :T, :T])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="*", default=[str(ROOT / "engine/assets/cest_open_default.pt")])
    ap.add_argument("--size", type=int, default=224, help="crop side fed to the network (px)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="", help="also write the figures here")
    ap.add_argument("--no-mofa", dest="mofa", action="store_false",
                    help="leave out the committed MoFA network's total (the machine's yardstick)")
    args = ap.parse_args(argv)

    from engine.methods.cest import Cest
    from engine.methods.mofa import Mofa

    torch.set_num_threads(1)
    nets = {ck: Cest.load(ck) for ck in args.checkpoint}
    with torch.inference_mode():
        calls = {ck: parts(net, args.size) for ck, net in nets.items()}
        if args.mofa:
            mofa = Mofa.load(ROOT / "engine/assets/mofa_open_default.pt")
            x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
            calls["MoFA (engine/assets/mofa_open_default.pt)"] = {"total": lambda: mofa.decode(mofa.encode(x))}
        rounds: dict[str, dict[str, list[float]]] = {ck: {k: [] for k in c} for ck, c in calls.items()}
        for _ in range(args.rounds):
            for ck, c in calls.items():
                for name, fn in c.items():
                    rounds[ck][name].append(_median_ms(fn, args.repeats))
    result = {}
    for ck in calls:
        net = nets.get(ck)
        if net is None:
            header = f"ResNet-10 x0.5 on the {args.size}-px crop"
        else:
            cfg = net.cfg
            shared = " (f_s on f_v's first stage)" if cfg.shared_stem else ""
            where = "face window" if net.window is not None else "whole layout"
            vis = (f"splat {cfg.unwrap_splat_cells} cells" if cfg.unwrap_splat_cells
                   else f"z-buffer {cfg.visibility_size} px")
            header = (f"input {cfg.image_size} px, {cfg.backbone} x{cfg.width}{shared}, maps {net.texels} texels "
                      f"({where}), unwrap visibility {vis}; fed {args.size}-px crops")
        print(f"\n{ck}: {header}, 1 thread, CPU ms (best round / median of {args.rounds} rounds)")
        for name, values in rounds[ck].items():
            print(f"  {name:46s} {min(values):7.2f} {statistics.median(values):7.2f}")
        result[ck] = {name: {"best_ms": min(v), "median_ms": statistics.median(v)} for name, v in rounds[ck].items()}
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "repeats": args.repeats, "rounds": args.rounds,
                                               "networks": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
