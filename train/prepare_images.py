"""Detect iBUG-68 landmarks once for every image and video frame under a folder and cache them.

    python train/prepare_images.py ROOT [--backend default] [--limit N] [--frame-step 5] [--max-frames 0]

Writes ``ROOT/landmarks68.npz`` (relative ``paths``, ``frames`` (−1 for an image, else the
frame number inside the video), ``landmarks`` (N, 68, 2) in original pixels, ``status`` ok |
noface | corrupt); re-running only processes files that are new since the last run. Uses
``engine.photo.load_image`` and ``engine.detect.detect_faces`` (largest face); videos (mp4,
avi, mov, mkv, webm, m4v) are decoded with OpenCV and every ``--frame-step``-th frame is
indexed (at most ``--max-frames`` per video, 0 = all).

Works for FFHQ / CelebA folders as they come (``data.kind: images``) and for VoxCeleb-style
folders (``<person>/<video>/<clip>.mp4``, or folders of extracted frames): ``data.kind: clips``
makes one clip source per video file (or per folder of frames).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.folders import INDEX_NAME, VIDEO_SUFFIXES, find_images, find_videos  # noqa: E402
from engine.errors import UserError, cli_errors  # noqa: E402


def _video_entries(path: Path, detect, frame_step: int, max_frames: int) -> list[tuple[int, np.ndarray, str]]:
    """(frame, landmarks, status) for every ``frame_step``-th frame of a video; one
    ``(−1, zeros, "corrupt")`` entry when it cannot be decoded at all."""
    import cv2

    lm0 = np.zeros((68, 2), np.float32)
    cap = cv2.VideoCapture(str(path))
    out: list[tuple[int, np.ndarray, str]] = []
    try:
        if not cap.isOpened():
            return [(-1, lm0, "corrupt")]
        f = 0
        while not max_frames or len(out) < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if f % frame_step == 0:
                faces = detect(np.ascontiguousarray(bgr[..., ::-1]))
                if faces and faces[0].landmarks68 is not None:
                    out.append((f, np.asarray(faces[0].landmarks68, np.float32)[:, :2], "ok"))
                else:
                    out.append((f, lm0, "noface"))
            f += 1
    finally:
        cap.release()
    return out or [(-1, lm0, "corrupt")]


def prepare(root: Path, backend: str = "default", limit: int | None = None, progress: bool = True,
            frame_step: int = 5, max_frames: int = 0) -> dict:
    from engine.detect import detect_faces
    from engine.photo import load_image

    if frame_step < 1 or max_frames < 0:
        raise UserError(f"--frame-step must be at least 1 and --max-frames at least 0, got {frame_step} and {max_frames}")
    index = root / INDEX_NAME
    done: dict[tuple[str, int], tuple[np.ndarray, str]] = {}
    if index.is_file():
        with np.load(index, allow_pickle=False) as z:
            frames = z["frames"] if "frames" in z.files else np.full(len(z["paths"]), -1)
            for p, f, lm, s in zip(z["paths"], frames, z["landmarks"], z["status"]):
                done[(str(p), int(f))] = (lm, str(s))
    seen = {p for p, _ in done}
    files = [p.relative_to(root).as_posix() for p in find_images(root) + find_videos(root)]
    todo = [f for f in sorted(files) if f not in seen][: limit]
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="landmarks", unit="file")

    def detect(rgb: np.ndarray):
        return detect_faces(rgb, backend=backend)

    lm0 = np.zeros((68, 2), np.float32)
    for rel in it:
        if Path(rel).suffix.lower() in VIDEO_SUFFIXES:
            for f, lm, status in _video_entries(root / rel, detect, frame_step, max_frames):
                done[(rel, f)] = (lm, status)
            continue
        try:
            faces = detect_faces(load_image(root / rel), backend=backend)
        except UserError:
            done[(rel, -1)] = (lm0, "corrupt")
            continue
        if not faces or faces[0].landmarks68 is None:
            done[(rel, -1)] = (lm0, "noface")
            continue
        done[(rel, -1)] = (np.asarray(faces[0].landmarks68, np.float32)[:, :2], "ok")
    keys = sorted(done)
    from engine.export.atomic import atomic_write

    arrays = dict(paths=np.array([k[0] for k in keys]), frames=np.array([k[1] for k in keys], np.int64),
                  landmarks=np.stack([done[k][0] for k in keys]) if keys else np.zeros((0, 68, 2), np.float32),
                  status=np.array([done[k][1] for k in keys]))
    atomic_write(index, lambda fh: np.savez(fh, **arrays))
    counts = {s: sum(1 for k in keys if done[k][1] == s) for s in ("ok", "noface", "corrupt")}
    return {"index": str(index), "new": len(todo), **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--backend", default="default")
    ap.add_argument("--limit", type=int, default=None, help="at most this many new files")
    ap.add_argument("--frame-step", type=int, default=5, help="index every N-th frame of a video")
    ap.add_argument("--max-frames", type=int, default=0, help="at most this many indexed frames per video (0 = all)")
    a = ap.parse_args(argv)
    with cli_errors():
        root = Path(a.root)
        if not root.is_dir():
            raise UserError(f"{root} is not a folder")
        print(prepare(root, a.backend, a.limit, frame_step=a.frame_step, max_frames=a.max_frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
