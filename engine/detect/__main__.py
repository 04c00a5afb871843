"""``python -m engine.detect PHOTO [--backend NAME] [--out overlay.png] [--json]``

Prints one line per face (or JSON), optionally writes an overlay with boxes and
landmarks. Exit status: 0 faces found, 1 no face found, 2 bad input (``error: ...``).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from engine.errors import ImageError, cli_errors


def draw_overlay(rgb: np.ndarray, faces, numbers: bool = False) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, iBUG-68 points (green) and, when there are
    more, its native points (small, blue)."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    h, w = out.shape[:2]
    t = max(1, round(max(h, w) / 500))
    for k, f in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 64, 64), t)
        cv2.putText(out, f"{k}: {f.score:.2f}", (x0, max(y0 - 4 * t, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (255, 64, 64), t)
        if f.landmarks_native is not None and f.landmarks68 is not f.landmarks_native:
            for p in f.landmarks_native[:, :2]:
                cv2.circle(out, (int(p[0]), int(p[1])), max(1, t // 2), (64, 128, 255), -1)
        if f.landmarks68 is not None:
            for i, p in enumerate(f.landmarks68):
                c = (int(p[0]), int(p[1]))
                cv2.circle(out, c, t + 1, (0, 255, 0), -1)
                if numbers:
                    cv2.putText(out, str(i), (c[0] + 2, c[1] - 2), cv2.FONT_HERSHEY_SIMPLEX,
                                0.25 * t, (255, 255, 0), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    from engine.detect import detect_faces, list_backends, resolve_backend_name
    from engine.photo import load_image

    ap = argparse.ArgumentParser(prog="python -m engine.detect",
                                 description="Find faces and iBUG-68 landmarks in a photo.")
    ap.add_argument("photo", nargs="?", help="image file (JPEG, PNG, WebP, TIFF, BMP, GIF)")
    ap.add_argument("--backend", default="default",
                    help="mediapipe, dlib, face_alignment or default")
    ap.add_argument("--out", help="write an overlay image (boxes + landmarks) here")
    ap.add_argument("--json", action="store_true", help="print the faces as JSON")
    ap.add_argument("--native", action="store_true", help="include native landmarks in JSON")
    ap.add_argument("--numbers", action="store_true", help="number the landmarks in --out")
    ap.add_argument("--list-backends", action="store_true", help="list backends and exit")
    args = ap.parse_args(argv)

    with cli_errors():
        if args.list_backends:
            for name, reason in list_backends().items():
                print(f"{name}: {'available' if reason is None else reason}")
            return 0
        if not args.photo:
            ap.error("PHOTO is required")
        photo = load_image(args.photo)
        backend = resolve_backend_name(args.backend)
        faces = detect_faces(photo, backend)
        if args.out:
            from PIL import Image

            try:
                Image.fromarray(draw_overlay(photo.rgb, faces, args.numbers)).save(args.out)
            except (OSError, ValueError) as exc:
                raise ImageError(f"cannot write overlay {args.out}: {exc}") from None
        if args.json:
            print(json.dumps({"photo": photo.path, "size": list(photo.original_size),
                              "backend": backend,
                              "faces": [f.to_dict(native=args.native) for f in faces]},
                             indent=1))
        else:
            for k, f in enumerate(faces):
                x0, y0, x1, y1 = f.box
                print(f"face {k}: box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) "
                      f"score {f.score:.2f} landmarks "
                      f"{'ibug-68' if f.landmarks68 is not None else 'none'} ({f.backend})")
        if not faces:
            print(f"no face found in {photo.path}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
