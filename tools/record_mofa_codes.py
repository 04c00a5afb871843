"""Record the committed MoFA network's codes on four generator faces (tests/data/mofa_default_codes.json).

    python tools/record_mofa_codes.py [--note TEXT]

tests/test_mofa_default_checkpoint.py then checks that the network still predicts them, so a
refactor of the encoder, the generator or the head model that changes what the network sees
or says fails there. Rerun only when the network or the head model build changes on purpose,
and say why in ``--note`` (stored in the file's description).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "mofa_default_codes.json"
SEEDS, SIZE = [777, 778, 779, 780], 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--note", default="", help="why the codes were recorded again")
    a = ap.parse_args()
    from engine.generator import SyntheticConfig, render_sample
    from engine.methods.mofa import Mofa

    torch.set_num_threads(1)
    net = Mofa.load(ROOT / "engine" / "assets" / "mofa_open_default.pt")
    crops = [render_sample(net.head, s, SyntheticConfig(image_size=SIZE)).image for s in SEEDS]
    x = torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in crops])
    with torch.no_grad():
        code = net.encode(x).as_dict()
    out = {"description": (f"MoFA codes of engine/assets/mofa_open_default.pt on engine.generator faces "
                           f"{SEEDS[0]}-{SEEDS[-1]} at {SIZE} px (open head model build "
                           f"{net.head.info.get('build_version')}, sha256 {str(net.head.info.get('content_sha256'))[:12]}), "
                           f"recorded by tools/record_mofa_codes.py. {a.note}").strip(),
           "seeds": SEEDS, "image_size": SIZE,
           "codes": {k: v.reshape(len(SEEDS), -1).tolist() for k, v in code.items()}}
    OUT.write_text(json.dumps(out) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
