"""Does a method tell a dim light from a dark skin? Skin-tone figures of Cycles reports against
the light that fell on each face (docs/evaluation.md, "The hybrid takes the network's light level").

    python tools/skin_vs_light.py --set data/cycles_val REPORT.json [REPORT.json ...]

Per report (``python -m engine.eval cycles --report``): the skin tone's Spearman / slope
(as the report has them), the median ratio of reconstructed to true skin luminance (1 = the
method's level matches the set's exposure) and the rank correlation of that ratio with the
face's light (the luminance-weighted irradiance of the set's lights plus the environment's
strength, from each sample's ``scene``): near 0, the method's error does not follow the light;
near 1, it reads a bright light as a light skin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LUMA = np.array([0.2126, 0.7152, 0.0722])


def face_light(scene: dict) -> float:
    """The light on a sample's face: its lights' irradiance × colour luma, plus the environment's strength."""
    lights = scene["lights"]
    return float(sum(lt["irradiance"] * float(np.dot(lt["colour"], LUMA)) for lt in lights["lights"])
                 + lights["environment"]["strength"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, dest="set_dir", help="the Cycles set the reports were made on")
    ap.add_argument("reports", nargs="+")
    a = ap.parse_args(argv)
    from scipy.stats import spearmanr

    from engine.errors import UserError, cli_errors
    from engine.eval.cycles import tone_agreement

    with cli_errors():
        set_dir = Path(a.set_dir)
        print("| report | faces | skin Spearman / slope | median reconstructed / true | rank corr. of that ratio with the light |")
        print("|---|---|---|---|---|")
        for path in map(Path, a.reports):
            if not path.is_file():
                raise UserError(f"no report {path}")
            faces = [f for f in json.loads(path.read_text())["faces"] if f.get("skin_pred") is not None]
            true = np.array([f["skin_true"] for f in faces])
            pred = np.array([f["skin_pred"] for f in faces])
            light = []
            for f in faces:
                sample = set_dir / f"{int(f['index']):05d}.npz"
                if not sample.is_file():
                    raise UserError(f"{sample} is missing: --set must be the set {path} was made on")
                with np.load(sample, allow_pickle=False) as z:
                    light.append(face_light(json.loads(str(z["scene"]))))
            rho, slope = tone_agreement(true, pred)
            ratio = pred / true
            print(f"| {path.parent.name}/{path.stem} | {len(faces)} | {rho:.3f} / {slope:.3f} | {np.median(ratio):.2f} | "
                  f"{spearmanr(ratio, light)[0]:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
