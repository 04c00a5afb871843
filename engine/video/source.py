"""Frames of a clip: a video file (OpenCV) or a folder of images, sampled at a frame rate
between a start and an end time.

:func:`open_clip` checks the input up front (a missing file, an unreadable video, an empty
folder, a bad ``--start``/``--end`` raise :class:`ClipError`, one sentence each) and returns a
:class:`Clip`; iterating it yields :class:`Frame` s (``index`` in the source, ``time`` in
seconds from the source's start, RGB ``uint8``). Iterating twice reads the source twice
(the animation pipeline tracks in a first pass and estimates in a second, so it never holds
the whole video in memory).

Sampling: ``fps=None`` keeps every frame of a video at its own rate; ``fps=F`` below the
video's rate keeps the frame nearest to each tick ``k / F`` (a higher ``F`` than the video
has is refused: frames cannot be invented). An image folder has no rate of its own: its
images, in natural order (``frame2`` before ``frame10``), are frames at ``fps`` (default 30).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import UserError
from engine.video.formats import natural_key

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv"}
DEFAULT_FOLDER_FPS = 30.0

__all__ = ["Clip", "ClipError", "Frame", "VIDEO_SUFFIXES", "open_clip"]


class ClipError(UserError):
    """A video or image sequence cannot be read or sampled as asked."""


@dataclass
class Frame:
    """One sampled frame: ``index`` in the source (0-based), ``time`` in seconds from the
    source's first frame, ``rgb (H, W, 3)`` uint8."""

    index: int
    time: float
    rgb: np.ndarray


@dataclass
class Clip:
    """A readable clip and how it is sampled (see the module docstring)."""

    path: str
    kind: str  # "video" | "images"
    source_fps: float  # the video's own rate (the folder's rate for images)
    fps: float  # the sampled rate
    size: tuple[int, int]  # (W, H)
    indices: list[int]  # sampled source frame indices, increasing
    files: list[Path] | None = None  # image sequence only

    @property
    def n_frames(self) -> int:
        return len(self.indices)

    def time_of(self, index: int) -> float:
        return index / self.source_fps

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Frame]:
        return self._video_frames() if self.kind == "video" else self._image_frames()

    # ------------------------------------------------------------------ readers
    def _video_frames(self) -> Iterator[Frame]:
        import cv2

        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise ClipError(f"cannot open video {self.path} any more")
        try:
            wanted = iter(self.indices)
            target = next(wanted, None)
            i = 0
            while target is not None:
                if i < target:  # skipped frames are only grabbed (no colour conversion)
                    if not cap.grab():
                        return
                    i += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    return  # containers often announce a frame or two more than they hold
                yield Frame(i, self.time_of(i), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                i += 1
                target = next(wanted, None)
        finally:
            cap.release()

    def _image_frames(self) -> Iterator[Frame]:
        from engine.photo import load_image

        assert self.files is not None
        for i in self.indices:
            photo = load_image(self.files[i])
            W, H = photo.original_size
            if (W, H) != self.size:
                raise ClipError(f"{self.files[i]} is {W}x{H} px but the sequence's first image is "
                                f"{self.size[0]}x{self.size[1]}; all frames must have one size")
            yield Frame(i, self.time_of(i), photo.rgb)


def _sample(n_source: int, source_fps: float, fps: float | None, start: float | None, end: float | None,
            name: str) -> tuple[list[int], float]:
    """Source indices kept for ``[start, end)`` at ``fps`` and the resulting rate."""
    duration = n_source / source_fps
    t0 = 0.0 if start is None else float(start)
    t1 = duration if end is None else float(end)
    if not math.isfinite(t0) or t0 < 0:
        raise ClipError(f"--start must be a time in seconds >= 0, got {start}")
    if t0 >= duration:
        raise ClipError(f"--start {t0:g} s is past the end of {name} ({duration:.2f} s long)")
    if not math.isfinite(t1) or t1 <= t0:
        raise ClipError(f"--end ({t1:g} s) must come after --start ({t0:g} s)")
    rate = source_fps if fps is None else float(fps)
    if not math.isfinite(rate) or rate <= 0:
        raise ClipError(f"--fps must be a positive number, got {fps}")
    if rate > source_fps * 1.0001:
        raise ClipError(f"--fps {rate:g} is above the video's own rate ({source_fps:g} frames/s); "
                        "frames cannot be invented: use at most the video's rate")
    first = int(math.ceil(t0 * source_fps - 1e-6))
    last = min(n_source, int(math.ceil(min(t1, duration) * source_fps - 1e-6)))  # exclusive
    if rate >= source_fps * 0.9999:
        indices = list(range(first, last))
    else:
        ticks = np.arange(first / source_fps, last / source_fps, 1.0 / rate)
        indices = sorted({min(last - 1, int(round(t * source_fps))) for t in ticks})
        rate = float(rate)
    if not indices:
        raise ClipError(f"no frame of {name} lies between {t0:g} s and {t1:g} s")
    return indices, rate


def open_clip(path: str | os.PathLike[str], fps: float | None = None, start: float | None = None,
              end: float | None = None) -> Clip:
    """Open a video file or an image folder and decide which frames to sample (module doc)."""
    p = Path(os.fspath(path)).expanduser()
    name = str(path)
    if not p.exists():
        raise ClipError(f"{name} does not exist")
    if p.is_dir():
        from engine.data.folders import IMAGE_SUFFIXES
        from engine.photo import load_image

        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: natural_key(f.name))
        if not files:
            raise ClipError(f"the folder {name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        rate = DEFAULT_FOLDER_FPS if fps is None else float(fps)
        if not math.isfinite(rate) or rate <= 0:
            raise ClipError(f"--fps must be a positive number, got {fps}")
        indices, rate = _sample(len(files), rate, None, start, end, name)
        size = load_image(files[indices[0]]).original_size
        return Clip(name, "images", rate, rate, (int(size[0]), int(size[1])), indices, files)
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise ClipError(f"{name} is neither a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder of images")
    import cv2

    cap = cv2.VideoCapture(str(p))
    try:
        ok, bgr = cap.read() if cap.isOpened() else (False, None)
        if not ok or bgr is None:
            raise ClipError(f"{name} cannot be decoded as a video (OpenCV read no frame; is the file "
                            "complete and in a format OpenCV's FFmpeg supports?)")
        source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        H, W = bgr.shape[:2]
    finally:
        cap.release()
    if not math.isfinite(source_fps) or source_fps <= 0 or source_fps > 1000:
        source_fps = DEFAULT_FOLDER_FPS  # no usable rate in the container: assume 30
    if count <= 0:  # some containers do not say: count by grabbing
        cap = cv2.VideoCapture(str(p))
        count = 0
        while cap.grab():
            count += 1
        cap.release()
    indices, rate = _sample(count, source_fps, fps, start, end, name)
    return Clip(str(p), "video", source_fps, rate, (int(W), int(H)), indices)
