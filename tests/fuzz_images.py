"""Fuzzed image files and a worker that feeds them to the loader and the detector.

Used by tests/test_fuzz_images.py (not a test module itself). ``make_corpus(folder, n, seed)``
writes ``n`` files: valid JPEG/PNG/WebP/TIFF/GIF/BMP images in many modes, then mangled -
truncated, bit-flipped, byte runs overwritten, header sizes set to absurd values, chunks
duplicated, garbage appended - deterministically from ``seed``.

``python tests/fuzz_images.py FOLDER FIRST LAST`` loads files FIRST..LAST-1 of FOLDER in
order and, for every file that loads, runs face detection on it; once the detector's models
are loaded it prints ``{"ready": true, "maxrss_kb": ...}``, then one JSON line before
(``{"i": i, "start": true}``) and one after each file
(``{"i": i, "kind": ..., "message": ..., "maxrss_kb": ..., "seconds": ...}``), where kind is

* ``photo``: loaded, a valid Photo; ``faces`` says how many faces detection found;
* ``image_error`` / ``user_error``: an ImageError / other UserError (message: its text);
* ``bug``: any other exception (message: the traceback's last line).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP")
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "GIF": ".gif", "BMP": ".bmp"}
MODES = {
    "JPEG": ("RGB", "L", "CMYK"),
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("RGB", "RGBA", "L", "CMYK", "I;16", "F", "1", "P"),
    "GIF": ("P", "L"),
    "BMP": ("RGB", "L", "P", "1"),
}
MUTATIONS = ("intact", "truncate", "bitflip", "overwrite", "dimensions", "duplicate", "append", "zero_tail", "header_only")


def _base_image(rng: np.random.Generator, fmt: str) -> tuple[bytes, str]:
    """A small valid image file of ``fmt`` in a random mode (some animated / multi-page)."""
    from PIL import Image

    mode = MODES[fmt][int(rng.integers(len(MODES[fmt])))]
    w, h = int(rng.integers(24, 120)), int(rng.integers(24, 120))
    arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if rng.random() < 0.5:  # smooth content compresses differently from noise
        yy, xx = np.mgrid[0:h, 0:w]
        arr[..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
        arr[..., 1] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
    im = Image.fromarray(arr)  # RGBA
    if mode == "I;16":
        im = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(arr[..., 0].astype(np.float32) / 255.0)
    else:
        im = im.convert(mode)
    buf = io.BytesIO()
    kwargs: dict = {}
    if fmt == "JPEG":
        kwargs = {"quality": int(rng.integers(30, 95)), "progressive": bool(rng.random() < 0.3)}
        if rng.random() < 0.3:
            exif = Image.Exif()
            exif[0x0112] = int(rng.integers(1, 9))  # orientation
            kwargs["exif"] = exif.tobytes()
    elif fmt == "TIFF":
        kwargs = {"compression": ["raw", "tiff_lzw", "tiff_deflate", "packbits"][int(rng.integers(4))]}
    elif fmt == "WEBP":
        kwargs = {"lossless": bool(rng.random() < 0.5), "quality": 60}
    frames = int(rng.integers(2, 4)) if fmt in ("GIF", "TIFF", "WEBP", "PNG") and rng.random() < 0.2 else 1
    if frames > 1:
        others = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for _ in range(frames - 1)]
        im.save(buf, fmt, save_all=True, append_images=others, **kwargs)
    else:
        im.save(buf, fmt, **kwargs)
    return buf.getvalue(), mode


def _set_dimensions(data: bytearray, fmt: str, rng: np.random.Generator) -> None:
    """Overwrite the width/height fields of the header with absurd values."""
    choices = [0, 1, 65535, 65536, 2 ** 31 - 1, 2 ** 32 - 1, 100_000, 1_000_000, int(rng.integers(1, 40000))]
    w, h = (choices[int(rng.integers(len(choices)))] for _ in range(2))
    if fmt == "PNG" and len(data) >= 33:
        data[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # keep the CRC valid
    elif fmt == "GIF" and len(data) >= 10:
        data[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    elif fmt == "BMP" and len(data) >= 26:
        data[18:26] = struct.pack("<ii", (w & 0x7FFFFFFF) * (1 if rng.random() < 0.8 else -1), h & 0x7FFFFFFF)
    elif fmt == "JPEG":
        i = data.find(b"\xff\xc0")
        if i < 0:
            i = data.find(b"\xff\xc2")
        if i >= 0 and i + 9 <= len(data):
            data[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif fmt == "WEBP" and len(data) >= 30:
        data[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    elif fmt == "TIFF" and len(data) >= 8:
        # first IFD: tags 256 (width) / 257 (length)
        (ifd,) = struct.unpack("<I", bytes(data[4:8]))
        if ifd + 2 <= len(data):
            (n,) = struct.unpack("<H", bytes(data[ifd:ifd + 2]))
            for e in range(n):
                at = ifd + 2 + 12 * e
                if at + 12 > len(data):
                    break
                tag, typ = struct.unpack("<HH", bytes(data[at:at + 4]))
                if tag in (256, 257):
                    val = w if tag == 256 else h
                    data[at + 8:at + 12] = struct.pack("<I", val & 0xFFFFFFFF) if typ == 4 else \
                        struct.pack("<HH", val & 0xFFFF, 0)


def mangle(data: bytes, fmt: str, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of an image file's bytes."""
    b = bytearray(data)
    n = len(b)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(1, max(n - 1, 2)))])
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 24))):
            i = int(rng.integers(n))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == "overwrite":
        i = int(rng.integers(n))
        run = int(rng.integers(1, 64))
        b[i:i + run] = rng.integers(0, 256, min(run, n - i), dtype=np.uint8).tobytes()
    elif kind == "dimensions":
        _set_dimensions(b, fmt, rng)
    elif kind == "duplicate":
        i, j = sorted(int(x) for x in rng.integers(0, n, 2))
        b[j:j] = b[i:min(j, i + 4096)]
    elif kind == "append":
        b += rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    elif kind == "zero_tail":
        i = int(rng.integers(n // 4, n))
        b[i:] = bytes(n - i)
    elif kind == "header_only":
        return bytes(b[: min(n, int(rng.integers(8, 200)))])
    return bytes(b)


def make_corpus(folder: str | os.PathLike[str], n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` fuzzed files into ``folder`` (named ``NNNN-FORMAT-MODE-MUTATION.ext``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        fmt = FORMATS[i % len(FORMATS)]
        data, mode = _base_image(rng, fmt)
        kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))] if i >= len(FORMATS) else "intact"
        out = mangle(data, fmt, kind, rng) if kind != "intact" else data
        p = folder / f"{i:04d}-{fmt}-{mode.replace(';', '')}-{kind}{SUFFIX[fmt]}"
        p.write_bytes(out)
        paths.append(p)
    return paths


def _maxrss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _check_photo(photo) -> str | None:
    """Why a loaded Photo is not a valid one (None when it is)."""
    rgb = photo.rgb
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        return f"bad array {getattr(rgb, 'dtype', None)} {getattr(rgb, 'shape', None)}"
    if rgb.shape[0] < 1 or rgb.shape[1] < 1 or not rgb.flags.c_contiguous:
        return f"empty or non-contiguous array {rgb.shape}"
    if len(photo.original_size) != 2 or min(photo.original_size) < 1 or not (0 < photo.scale <= 1.0):
        return f"bad size {photo.original_size} scale {photo.scale}"
    return None


def run(folder: str, first: int, last: int) -> None:
    import traceback

    from engine.detect import detect_faces
    from engine.errors import ImageError, UserError
    from engine.photo import load_image

    files = sorted(Path(folder).iterdir())[first:last]
    detect_faces(np.zeros((64, 64, 3), np.uint8))  # load the detector's models before timing files
    print(json.dumps({"ready": True, "maxrss_kb": _maxrss_kb()}), flush=True)
    for i, path in enumerate(files, start=first):
        print(json.dumps({"i": i, "start": True}), flush=True)
        t = time.perf_counter()
        rec: dict = {"i": i, "file": path.name}
        try:
            photo = load_image(path)
            problem = _check_photo(photo)
            if problem:
                rec.update(kind="bug", message=f"invalid Photo: {problem}")
            else:
                try:
                    faces = detect_faces(photo)
                    rec.update(kind="photo", faces=len(faces))
                except ImageError as exc:  # e.g. too small for a face
                    rec.update(kind="photo", faces=0, detect_error=str(exc))
        except ImageError as exc:
            rec.update(kind="image_error", message=str(exc))
        except UserError as exc:
            rec.update(kind="user_error", message=str(exc))
        except BaseException as exc:  # noqa: BLE001 - what the fuzz test is looking for
            rec.update(kind="bug", message=traceback.format_exception_only(type(exc), exc)[-1].strip())
        rec.update(maxrss_kb=_maxrss_kb(), seconds=round(time.perf_counter() - t, 3))
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
