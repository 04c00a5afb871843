"""``python -m engine.detect PHOTO [--backend NAME] [--out overlay.png] [--numbered faces.png] [--json]``

Prints one line per face (or JSON), optionally writes an overlay with boxes and
landmarks, and/or a small preview with each face's box and its number (the ``--face N`` of
``engine reconstruct``; the Blender panel shows it). Exit status: 0 faces found, 1 no face found, 2 bad input (``error: ...``).
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


#: Colours of the numbered preview: box and label background, and the number on it.
NUMBER_BOX = (255, 220, 0)
NUMBER_TEXT = (0, 0, 0)


def face_number_layout(faces, shape: tuple[int, int], max_side: int = 512,
                       box_scale: float = 1.0) -> tuple[float, list[dict]]:
    """Scale of the preview and, per face, its box and label rectangle in preview pixels.

    ``shape`` is the photo array's (height, width); ``box_scale`` its pixels per original-image
    pixel (``Photo.scale``: face boxes are in original pixels).
    Labels sit above the box's top-left corner (inside the image), their height a 9th of the
    preview's longer side so that a thumbnail still shows them.
    """
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    ph, pw = max(1, round(h * scale)), max(1, round(w * scale))
    size = max(14, round(max(ph, pw) / 9))
    out = []
    for k, f in enumerate(faces):
        x0, y0, x1, y1 = (float(v) * box_scale * scale for v in f.box)
        x0, y0 = int(np.clip(round(x0), 0, pw - 1)), int(np.clip(round(y0), 0, ph - 1))
        x1, y1 = int(np.clip(round(x1), x0 + 1, pw)), int(np.clip(round(y1), y0 + 1, ph))
        text = str(k)
        lw = size * (len(text) + 1) * 3 // 5
        ly0 = y0 - size if y0 - size >= 0 else y0
        lx0 = min(x0, pw - lw)
        out.append({"index": k, "box": [x0, y0, x1, y1], "label": [lx0, ly0, lx0 + lw, ly0 + size], "text": text})
    return scale, out


def draw_face_numbers(rgb: np.ndarray, faces, max_side: int = 512,
                      box_scale: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """A preview (longer side at most ``max_side``) with each face's box and its number on a
    filled label, for choosing ``--face N`` by sight; returns it and the layout drawn."""
    import cv2

    scale, layout = face_number_layout(faces, rgb.shape[:2], max_side, box_scale)
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb.copy())
    t = max(2, round(max(size) / 250))
    for item in layout:
        x0, y0, x1, y1 = item["box"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), NUMBER_BOX, t)
    for item in layout:  # labels last: a neighbour's box never covers a number
        lx0, ly0, lx1, ly1 = item["label"]
        cv2.rectangle(out, (lx0, ly0), (lx1 - 1, ly1 - 1), NUMBER_BOX, -1)
        height = ly1 - ly0
        scale_txt = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, int(height * 0.7), t)
        (tw, th), _ = cv2.getTextSize(item["text"], cv2.FONT_HERSHEY_SIMPLEX, scale_txt, t)
        org = (lx0 + max(0, (lx1 - lx0 - tw) // 2), ly0 + (height + th) // 2)
        cv2.putText(out, item["text"], org, cv2.FONT_HERSHEY_SIMPLEX, scale_txt, NUMBER_TEXT, t, cv2.LINE_8)
    return out, layout


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
    ap.add_argument("--numbered", metavar="PNG",
                    help="write a small preview with each face's box and number (reconstruct's --face N)")
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
        numbered = None
        if args.numbered:
            from PIL import Image

            preview, numbered = draw_face_numbers(photo.rgb, faces, box_scale=photo.scale)
            try:
                Image.fromarray(preview).save(args.numbered, format="PNG")
            except (OSError, ValueError) as exc:
                raise ImageError(f"cannot write the numbered preview {args.numbered}: {exc}") from None
        if args.json:
            doc = {"photo": photo.path, "size": list(photo.original_size), "backend": backend,
                   "faces": [f.to_dict(native=args.native) for f in faces]}
            if numbered is not None:
                doc["numbered"] = {"path": args.numbered, "labels": numbered}
            print(json.dumps(doc, indent=1))
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
