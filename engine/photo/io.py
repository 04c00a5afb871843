"""Load a photo as full-resolution RGB uint8, whatever people actually have.

Every failure caused by the file itself (missing, empty, truncated, not an image, an
unsupported format, too many pixels) raises :class:`engine.errors.ImageError` with one
sentence that names the file and the reason; nothing else escapes for a user mistake.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from engine.errors import ImageError

PathLike = Union[str, "os.PathLike[str]", bytes]

#: Default pixel limit (100 MP = 300 MB as RGB); raise it with ``max_pixels=`` or the
#: ``FACERECON_MAX_IMAGE_PIXELS`` environment variable.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "FACERECON_MAX_IMAGE_PIXELS"
#: An image of more than SMALL_IMAGE_PIXELS must not claim more pixels per byte of file than
#: this: real photos stay far below (camera JPEGs ~3 px/byte, a blank 24 MP JPEG ~80, a
#: mostly white scan as PNG ~70), while a few hundred bytes claiming 100 MP (which JPEG and
#: GIF decoders fill with grey: 1.3 GB of memory for nothing) are far above.
MAX_PIXELS_PER_BYTE = 1000
SMALL_IMAGE_PIXELS = 4_000_000

# Pillow's bomb guard and truncated-image flag are process globals; we set our own values
# while decoding and restore the caller's afterwards.
_PIL_LOCK = threading.Lock()

# Magic numbers of formats people try that Pillow cannot read (so we can name them).
_KNOWN_UNSUPPORTED: list[tuple[bytes, int, str]] = [
    (b"%PDF", 0, "PDF documents"),
    (b"<svg", 0, "SVG vector images"),
    (b"ftypheic", 4, "HEIC photos"),
    (b"ftypheix", 4, "HEIC photos"),
    (b"ftypmif1", 4, "HEIF photos"),
    (b"ftypmsf1", 4, "HEIF photos"),
    (b"ftypavif", 4, "AVIF images"),
    (b"ftypcrx ", 4, "Canon CR3 raw files"),
    (b"II*\x00\x10\x00\x00\x00CR", 0, "Canon CR2 raw files"),
    (b"8BPS", 0, "Photoshop PSD files"),
    (b"PK\x03\x04", 0, "ZIP archives"),
]
_EXT_NAMES = {
    ".svg": "SVG vector images", ".pdf": "PDF documents", ".heic": "HEIC photos",
    ".heif": "HEIF photos", ".avif": "AVIF images", ".cr2": "raw camera files",
    ".cr3": "raw camera files", ".nef": "raw camera files", ".arw": "raw camera files",
    ".dng": "raw camera files", ".raw": "raw camera files", ".psd": "Photoshop PSD files",
}


def display_name(path: PathLike) -> str:
    """A printable form of a path, even when its bytes are not valid UTF-8."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Photo:
    """A decoded photo.

    ``rgb`` is (H, W, 3) uint8 after EXIF orientation. ``original_size`` is the
    (width, height) of the oriented image in the file; ``scale`` is ``rgb`` pixels per
    original pixel (1.0 unless ``load_image(max_side=...)`` reduced it on load).
    """

    rgb: np.ndarray
    path: str
    original_size: tuple[int, int]
    scale: float = 1.0
    info: dict = field(default_factory=dict, compare=False)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @classmethod
    def from_array(cls, rgb: np.ndarray, name: str = "<array>") -> "Photo":
        """Wrap an in-memory image (H,W), (H,W,3) or (H,W,4) uint8 (alpha composited on white)."""
        arr = np.asarray(rgb)
        if arr.dtype != np.uint8:
            raise ImageError(f"{name}: image array must be uint8, got {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = _composite_on_white(arr)
        elif not (arr.ndim == 3 and arr.shape[2] == 3):
            raise ImageError(f"{name}: image array must be (H, W, 3), got shape {arr.shape}")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ImageError(f"{name}: image has zero size {arr.shape[1]}x{arr.shape[0]}")
        arr = np.ascontiguousarray(arr)
        return cls(rgb=arr, path=name, original_size=(arr.shape[1], arr.shape[0]))

    def for_detection(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """A copy no larger than ``max_side`` for detectors, and its scale (small px per rgb px).

        Detectors gain nothing from 24 MP; the full-resolution ``rgb`` stays for texture.
        A point ``p_small`` maps back by ``p_small / scale`` (pixel edges at integers).
        """
        return downscale(self.rgb, max_side)


def downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Area-average ``rgb`` so that its longer side is at most ``max_side``."""
    import cv2

    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return rgb, 1.0
    scale = max_side / longest
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # Use the exact per-axis ratio of the rounded size (they differ by < 1 px).
    return small, new_w / w


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Transparent pixels become white: cut-outs usually have no background at all, and a
    white one keeps dark hair and skin separate from it (black would merge with them)."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _max_pixels_default() -> int:
    env = os.environ.get(MAX_PIXELS_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ImageError(f"{MAX_PIXELS_ENV}={env!r} is not a number of pixels") from None
    return DEFAULT_MAX_PIXELS


def _sniff_unsupported(head: bytes, suffix: str) -> str | None:
    for magic, offset, what in _KNOWN_UNSUPPORTED:
        if head[offset:offset + len(magic)] == magic:
            return what
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") and b"<svg" in head:
        return "SVG vector images"
    return _EXT_NAMES.get(suffix)


_SUPPORTED_MAGIC = [
    (b"\xff\xd8\xff", 0, "JPEG"), (b"\x89PNG\r\n\x1a\n", 0, "PNG"), (b"GIF8", 0, "GIF"),
    (b"BM", 0, "BMP"), (b"WEBP", 8, "WebP"), (b"II*\x00", 0, "TIFF"), (b"MM\x00*", 0, "TIFF"),
]


def _header_problem(head: bytes) -> str | None:
    """Why a file with a supported format's signature still failed to open."""
    for magic, offset, fmt in _SUPPORTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if fmt == "PNG" and head[12:16] == b"IHDR":
                w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                if w == 0 or h == 0:
                    return f"the image has zero size ({w}x{h} px)"
            return f"it looks like a {fmt} file but its header is corrupt"
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to (H, W, 3) uint8, keeping 16-bit tones by rescaling."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in im.info
    ) or (mode in ("L", "RGB") and "transparency" in im.info):
        return _composite_on_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            hi = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            # 16-bit data stored in I or I;16: full range is 0..65535.
            hi = 65535.0 if (mode.startswith("I;16") or (arr.size and arr.max() > 255)) else 255.0
        gray = np.clip(np.nan_to_num(arr) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            try:
                import io as _io

                from PIL import ImageCms

                src = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
                dst = ImageCms.createProfile("sRGB")
                return np.asarray(ImageCms.profileToProfile(im, src, dst, outputMode="RGB"))
            except Exception:  # noqa: BLE001 - a broken profile falls back to the plain formula
                pass
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_image(
    path: PathLike,
    max_pixels: int | None = None,
    max_side: int | None = None,
) -> Photo:
    """Read a photo file into a :class:`Photo` (RGB uint8, EXIF orientation applied).

    ``max_pixels`` (default 100 MP, or ``$FACERECON_MAX_IMAGE_PIXELS``) guards against
    decompression bombs: larger images are refused before decoding. ``max_side`` reduces
    the image while decoding (JPEG ``draft`` decodes at 1/2, 1/4 or 1/8 directly), for
    callers that never need full resolution; ``Photo.scale`` records the reduction.

    Alpha is composited on white; grayscale, palette, 16-bit and CMYK become 8-bit RGB;
    animated images and multi-page TIFFs give their first frame.
    """
    name = display_name(path)
    fs_path = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
    limit = _max_pixels_default() if max_pixels is None else int(max_pixels)

    try:
        st = os.stat(fs_path)
    except FileNotFoundError:
        raise ImageError(f"cannot read image {name}: no such file") from None
    except PermissionError:
        raise ImageError(f"cannot read image {name}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"cannot read image {name}: it is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"cannot read image {name}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"cannot read image {name}: the file is empty (0 bytes)")

    try:
        fh = open(fs_path, "rb")
    except PermissionError:
        raise ImageError(f"cannot read image {name}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {name}: {exc.strerror or exc}") from None

    with fh:
        head = fh.read(64)
        fh.seek(0)
        suffix = Path(fs_path).suffix.lower()
        with _PIL_LOCK:
            saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            # Our own limit below replaces Pillow's (which would warn or refuse at 89 MP).
            Image.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                # Pillow warns about broken metadata (Python warnings) and libtiff reports
                # decoding errors on stderr from C; either would add lines to a CLI's one-line
                # error. The file's problems are reported by the ImageError instead.
                with warnings.catch_warnings(), _quiet_stderr():
                    warnings.simplefilter("ignore")
                    return _decode(fh, head, suffix, name, limit, max_side, st.st_size)
            finally:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(fh, head: bytes, suffix: str, name: str, limit: int, max_side: int | None,
            file_size: int) -> Photo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(fh)
    except UnidentifiedImageError:
        what = _sniff_unsupported(head, suffix)
        if what:
            raise ImageError(
                f"cannot read image {name}: {what} are not supported; "
                "convert it to JPEG or PNG first") from None
        problem = _header_problem(head)
        if problem:
            raise ImageError(f"cannot read image {name}: {problem}") from None
        if _looks_like_text(head):
            raise ImageError(
                f"cannot read image {name}: it is a text file, not an image") from None
        raise ImageError(
            f"cannot read image {name}: not a recognised image format or the header is corrupt"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError) as exc:
        raise ImageError(f"cannot read image {name}: corrupt image header ({_short(exc)})") from None

    with im:
        w, h = im.size
        fmt = im.format or "unknown"
        if w <= 0 or h <= 0:
            raise ImageError(f"cannot read image {name}: the image has zero size ({w}x{h} px)")
        if w * h > limit:
            raise ImageError(
                f"cannot read image {name}: {w}x{h} px ({w * h / 1e6:.0f} MP) is more than the "
                f"{limit / 1e6:.0f} MP limit (a possible decompression bomb); pass max_pixels= "
                f"or set {MAX_PIXELS_ENV} to allow it")
        if w * h > SMALL_IMAGE_PIXELS and w * h > MAX_PIXELS_PER_BYTE * file_size:
            raise ImageError(
                f"cannot read image {name}: it claims {w}x{h} px but holds only {file_size} bytes "
                "(truncated, or a decompression bomb)")
        n_frames = _frame_count(im)
        swap = _swaps_axes(im)
        mode = im.mode
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if max_side is not None and fmt == "JPEG" and max(w, h) > max_side:
                    # Decode straight at a reduced size: a 200 MP JPEG never exists in full.
                    im.draft("RGB" if im.mode != "CMYK" else im.mode, (max_side, max_side))
                im.load()
                oriented = _exif_transpose(im)
                rgb = _to_rgb_array(oriented)
        except MemoryError:
            raise ImageError(f"cannot read image {name}: not enough memory to decode "
                             f"{w}x{h} px; pass max_side= to reduce it while loading") from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            msg = str(exc)
            if "truncated" in msg or isinstance(exc, EOFError) or "broken data stream" in msg:
                raise ImageError(f"cannot read image {name}: the {fmt} data is truncated "
                                 "(the file is incomplete)") from None
            raise ImageError(f"cannot read image {name}: corrupt {fmt} data ({_short(exc)})") from None

    # Oriented size of the file's full-resolution image.
    ow, oh = (h, w) if swap else (w, h)
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb, _ = downscale(rgb, max_side)
    scale = rgb.shape[1] / ow
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return Photo(rgb=rgb, path=name, original_size=(ow, oh), scale=scale,
                 info={"format": fmt, "mode": mode, "frames": n_frames})


def _quiet_stderr():
    """File-descriptor-level silence for native decoders (see engine.detect._quiet)."""
    from engine.detect._quiet import quiet_native_stderr

    return quiet_native_stderr()


def _frame_count(im: Image.Image) -> int:
    """Frames/pages of an image; 1 when counting fails (a corrupt later frame of a TIFF or
    GIF must not stop us reading the first), and the image is left on its first frame."""
    try:
        return max(1, int(getattr(im, "n_frames", 1) or 1))
    except Exception:  # noqa: BLE001 - Pillow raises SyntaxError, TypeError, OSError, ... here
        try:
            im.seek(0)
        except Exception:  # noqa: BLE001
            pass
        return 1


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF means "no rotation"
        return 1


def _swaps_axes(im: Image.Image) -> bool:
    return _orientation(im) in (5, 6, 7, 8)


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001
        return im
    return out if out is not None else im
