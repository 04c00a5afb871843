"""Detect iBUG-68 landmarks once for every image under a folder (any layout) and cache them.

    python train/prepare_images.py ROOT [--backend default] [--limit N]

Writes ``ROOT/landmarks68.npz`` (relative ``paths``, ``landmarks`` (N, 68, 2) in original
pixels, ``status`` ok | noface | corrupt); re-running only processes files that are new
since the last run. Uses ``engine.photo.load_image`` and ``engine.detect.detect_faces``
(largest face). Works for CelebA / VoxCeleb frame folders as they come; for clips keep
one folder per video (``data.kind: clips`` groups frames by folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.folders import INDEX_NAME, find_images  # noqa: E402
from engine.errors import UserError, cli_errors  # noqa: E402


def prepare(root: Path, backend: str = "default", limit: int | None = None, progress: bool = True) -> dict:
    from engine.detect import detect_faces
    from engine.photo import load_image

    index = root / INDEX_NAME
    done: dict[str, tuple[np.ndarray, str]] = {}
    if index.is_file():
        with np.load(index, allow_pickle=False) as z:
            for p, lm, s in zip(z["paths"], z["landmarks"], z["status"]):
                done[str(p)] = (lm, str(s))
    files = [p.relative_to(root).as_posix() for p in find_images(root)]
    todo = [f for f in files if f not in done][: limit]
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="landmarks", unit="img")
    for rel in it:
        lm = np.zeros((68, 2), np.float32)
        try:
            faces = detect_faces(load_image(root / rel), backend=backend)
        except UserError:
            done[rel] = (lm, "corrupt")
            continue
        if not faces or faces[0].landmarks68 is None:
            done[rel] = (lm, "noface")
            continue
        done[rel] = (np.asarray(faces[0].landmarks68, np.float32)[:, :2], "ok")
    keys = sorted(done)
    from engine.export.atomic import atomic_write

    arrays = dict(paths=np.array(keys), landmarks=np.stack([done[k][0] for k in keys]) if keys
                  else np.zeros((0, 68, 2), np.float32), status=np.array([done[k][1] for k in keys]))
    atomic_write(index, lambda fh: np.savez(fh, **arrays))
    counts = {s: sum(1 for k in keys if done[k][1] == s) for s in ("ok", "noface", "corrupt")}
    return {"index": str(index), "new": len(todo), **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--backend", default="default")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    with cli_errors():
        root = Path(a.root)
        if not root.is_dir():
            raise UserError(f"{root} is not a folder")
        print(prepare(root, a.backend, a.limit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
