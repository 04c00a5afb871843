"""Image loading: formats, conversions, and a table of bad or odd files.

Every case either loads correctly or raises one ImageError naming the file and reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import ImageError, UserError
from engine.photo import MAX_PIXELS_ENV, Photo, load_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w×h pixels but carries (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def gradient(w: int = 96, h: int = 64) -> np.ndarray:
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 128.0)], axis=2).astype(np.uint8)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient(200, 150)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes() -> bytes:
    rng = np.random.default_rng(0)  # noise, so the compressed data is long
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_claiming(w: int, h: int) -> bytes:
    """A tiny JPEG whose frame header claims w×h pixels (decoders fill the rest with grey)."""
    buf = io.BytesIO()
    Image.fromarray(gradient(16, 16)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


# --- files that must fail: (id, writer(tmp_path) -> path, words the message must contain)
def _w(name: str, data: bytes):
    def write(tmp: Path) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p
    return write


def _dir(tmp: Path) -> Path:
    p = tmp / "photos.jpg"
    p.mkdir()
    return p


BAD_FILES = [
    ("missing", lambda tmp: tmp / "nope.jpg", ["no such file"]),
    ("directory", _dir, ["folder"]),
    ("empty", _w("empty.jpg", b""), ["empty"]),
    ("text-named-jpg", _w("notes.jpg", b"Meeting notes: bring the photos\n" * 5), ["text file"]),
    ("truncated-jpeg", _w("cut.jpg", jpeg_bytes()[:1500]), ["truncated"]),
    ("truncated-png", _w("cut.png", png_bytes()[:3000]), ["truncated"]),
    ("corrupt-jpeg-header", _w("bad.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
     ["JPEG", "header is corrupt"]),
    ("random-binary", _w("blob.png", bytes(np.random.default_rng(1).integers(0, 256, 4096,
                                                                             dtype=np.uint8))),
     ["not a recognised image format"]),
    ("svg", _w("face.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
               b'width="10" height="10"></svg>\n'), ["SVG", "not supported"]),
    ("pdf", _w("scan.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
     ["PDF", "not supported"]),
    ("heic", _w("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64),
     ["HEIC", "not supported"]),
    ("zero-size", _w("zero.png", png_header_only(0, 10)), ["zero size"]),
    ("decompression-bomb", _w("bomb.png", png_header_only(100_000, 100_000)),
     ["limit", MAX_PIXELS_ENV]),
    # under the pixel limit, but 97 MP from 600 bytes would take 1.3 GB to decode into grey
    ("tiny-file-claiming-97-MP", _w("small.jpg", jpeg_claiming(65000, 1500)), ["claims 65000x1500 px", "bytes"]),
    ("tiny-gif-claiming-100-MP", _w("small.gif", bytes(bytearray(b"GIF89a") + struct.pack("<HH", 10000, 9999)
                                                       + bytes([0x80, 0, 0]) + bytes(6) + b",\x00\x00\x00\x00"
                                                       + struct.pack("<HH", 10000, 9999) + b"\x00\x02\x02D\x01\x00;")),
     ["claims 10000x9999 px"]),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_gives_one_clear_error(tmp_path, case):
    _, write, words = case
    path = write(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert path.name in msg, msg
    assert "\n" not in msg
    for word in words:
        assert word.lower() in msg.lower(), msg


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read any file, so permission denied cannot happen")
def test_permission_denied(tmp_path):
    p = save(Image.fromarray(gradient()), tmp_path / "locked.png")
    p.chmod(0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            load_image(p)
    finally:
        p.chmod(0o644)


def test_pixel_limit_can_be_raised(tmp_path, monkeypatch):
    p = save(Image.fromarray(gradient(200, 100)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="limit"):
        load_image(p, max_pixels=10_000)
    assert load_image(p, max_pixels=20_000).rgb.shape == (100, 200, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    with pytest.raises(ImageError, match="limit"):
        load_image(p)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1e6")
    assert load_image(p).rgb.shape == (100, 200, 3)


# --- odd files that must load correctly
def test_grayscale_becomes_rgb(tmp_path):
    g = gradient()[:, :, 0]
    photo = load_image(save(Image.fromarray(g), tmp_path / "gray.png"))
    assert photo.rgb.shape == g.shape + (3,) and photo.rgb.dtype == np.uint8
    assert np.array_equal(photo.rgb[:, :, 0], g) and np.array_equal(photo.rgb[:, :, 2], g)


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255        # left half opaque red, right half fully transparent
    photo = load_image(save(Image.fromarray(rgba), tmp_path / "cutout.png"))
    assert tuple(photo.rgb[10, 5]) == (200, 0, 0)
    assert tuple(photo.rgb[10, 45]) == (255, 255, 255)


def test_la_and_palette_with_transparency(tmp_path):
    la = np.zeros((20, 20, 2), np.uint8)
    la[..., 0] = 50
    la[:10, :, 1] = 255
    photo = load_image(save(Image.fromarray(la), tmp_path / "la.png"))
    assert tuple(photo.rgb[2, 2]) == (50, 50, 50) and tuple(photo.rgb[15, 2]) == (255, 255, 255)

    pal = Image.fromarray(gradient(40, 30)).quantize(16)
    pal.info["transparency"] = 0
    photo = load_image(save(pal, tmp_path / "pal.png", transparency=0))
    assert photo.rgb.shape == (30, 40, 3)
    idx = np.asarray(pal)
    assert (photo.rgb[idx == 0] == 255).all()
    assert not (photo.rgb[idx != 0] == 255).all()


def test_palette_png_without_transparency(tmp_path):
    src = Image.fromarray(gradient(40, 30)).quantize(64)
    photo = load_image(save(src, tmp_path / "pal.png"))
    assert np.array_equal(photo.rgb, np.asarray(src.convert("RGB")))


def test_16bit_png_keeps_tones(tmp_path):
    g16 = np.zeros((10, 20), np.uint16)
    g16[:, 5:] = 32768
    g16[:, 10:] = 65535
    path = save(Image.fromarray(g16), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    photo = load_image(path)
    assert photo.rgb[0, 0, 0] == 0 and photo.rgb[0, 7, 0] == 128 and photo.rgb[0, 15, 1] == 255


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (220, 30, 30)
    rgb[:, 16:] = (30, 30, 220)
    path = save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "print.jpg", quality=95)
    photo = load_image(path)
    assert photo.info["mode"] == "CMYK"
    left, right = photo.rgb[16, 4].astype(int), photo.rgb[16, 28].astype(int)
    assert left[0] > 150 and left[2] < 100 and right[2] > 150 and right[0] < 100


def test_exif_orientation_applied(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)   # stored 60 wide, 40 tall
    img[:8, :8] = 255                       # white block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6                        # "rotate 90° clockwise to display"
    path = save(Image.fromarray(img), tmp_path / "phone.jpg", exif=exif, quality=95)
    photo = load_image(path)
    assert photo.rgb.shape == (60, 40, 3)
    assert photo.original_size == (40, 60)
    assert photo.rgb[:8, -8:].mean() > 200   # top-left went to the top-right
    assert photo.rgb[:8, :8].mean() < 50


@pytest.mark.parametrize("fmt,ext", [("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp"),
                                     ("PNG", "png"), ("JPEG", "jpg")])
def test_common_formats(tmp_path, fmt, ext):
    src = gradient(64, 48)
    kw = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    photo = load_image(save(Image.fromarray(src), tmp_path / f"img.{ext}", format=fmt, **kw))
    assert photo.rgb.shape == (48, 64, 3) and photo.info["format"] == fmt
    tol = 6 if fmt == "JPEG" else 0
    assert np.abs(photo.rgb.astype(int) - src).max() <= tol


def test_multipage_tiff_and_animated_gif_take_first_frame(tmp_path):
    a, b = np.full((16, 16, 3), 30, np.uint8), np.full((16, 16, 3), 220, np.uint8)
    for ext in ("gif", "tif"):
        p = tmp_path / f"anim.{ext}"
        Image.fromarray(a).save(p, save_all=True, append_images=[Image.fromarray(b)])
        photo = load_image(p)
        assert photo.info["frames"] == 2
        assert abs(int(photo.rgb.mean()) - 30) < 4


def test_non_utf8_filename(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.png"
    Image.fromarray(gradient()).save(os.fsdecode(raw))
    photo = load_image(raw)
    assert photo.rgb.shape == (64, 96, 3)
    photo2 = load_image(os.fsdecode(raw))
    assert "\\x" in photo2.path or "\\udc" in photo2.path  # printable, not a crash
    photo2.path.encode("utf-8")
    with pytest.raises(ImageError) as info:
        load_image(os.fsencode(str(tmp_path)) + b"/missing\xe9.jpg")
    str(info.value).encode("utf-8")


def test_one_pixel_image_loads(tmp_path):
    photo = load_image(save(Image.fromarray(np.zeros((1, 1, 3), np.uint8)), tmp_path / "dot.png"))
    assert photo.rgb.shape == (1, 1, 3) and photo.original_size == (1, 1)


def test_large_jpeg_reduced_while_decoding(tmp_path):
    src = np.repeat(np.repeat(gradient(300, 200), 8, 0), 8, 1)   # 2400 x 1600
    path = save(Image.fromarray(src), tmp_path / "large.jpg", quality=90)
    photo = load_image(path, max_side=500)
    assert max(photo.rgb.shape[:2]) <= 500
    assert photo.original_size == (2400, 1600)
    assert photo.scale == pytest.approx(photo.rgb.shape[1] / 2400)
    full = load_image(path)
    small, s = full.for_detection(600)
    assert small.shape == (400, 600, 3) and s == pytest.approx(0.25)
    assert full.for_detection(5000)[1] == 1.0


def test_from_array_checks_input():
    assert Photo.from_array(np.zeros((5, 6), np.uint8)).rgb.shape == (5, 6, 3)
    with pytest.raises(ImageError, match="uint8"):
        Photo.from_array(np.zeros((5, 6, 3), np.float32))
    with pytest.raises(UserError):
        Photo.from_array(np.zeros((0, 6, 3), np.uint8))
