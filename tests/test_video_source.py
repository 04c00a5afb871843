"""Reading clips: video files through OpenCV and image folders, sampled at a frame rate
between a start and an end; bad inputs are one-sentence user errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.video.source import ClipError, open_clip


def _write_video(path, n: int = 30, fps: float = 30.0, size=(64, 48)):
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(n):  # the frame number is the grey level (decodable despite compression)
        w.write(np.full((size[1], size[0], 3), 8 * i, np.uint8))
    w.release()
    return path


def test_video_frames_times_and_sampling(tmp_path):
    path = _write_video(tmp_path / "clip.avi")
    clip = open_clip(path)
    assert (clip.kind, clip.size, clip.n_frames, clip.fps) == ("video", (64, 48), 30, 30.0)
    frames = list(clip)
    assert [f.index for f in frames] == list(range(30))
    assert frames[15].time == pytest.approx(0.5) and frames[15].rgb.shape == (48, 64, 3)
    assert abs(int(frames[15].rgb.mean()) - 8 * 15) <= 3  # the 16th frame, in RGB
    assert [f.index for f in open_clip(path, fps=10)] == list(range(0, 30, 3))
    part = open_clip(path, start=0.25, end=0.5)
    assert part.indices == list(range(8, 15))
    assert [f.index for f in part] == part.indices  # reading twice gives the same frames
    assert [f.index for f in part] == part.indices


def test_image_folder_in_natural_order(tmp_path):
    for i in (1, 2, 10):
        Image.fromarray(np.full((40, 50, 3), i, np.uint8)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = open_clip(tmp_path, fps=25)
    assert (clip.kind, clip.size, clip.fps, clip.n_frames) == ("images", (50, 40), 25.0, 3)
    assert [int(f.rgb[0, 0, 0]) for f in clip] == [1, 2, 10]
    assert [f.time for f in clip] == [0.0, 0.04, 0.08]
    assert open_clip(tmp_path).fps == 30.0
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "frame11.png")
    with pytest.raises(ClipError, match="all frames must have one size"):
        list(open_clip(tmp_path))


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(ClipError, match="does not exist"):
        open_clip(tmp_path / "nope.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(ClipError, match="cannot be decoded as a video"):
        open_clip(tmp_path / "broken.mp4")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(ClipError, match="neither a video"):
        open_clip(tmp_path / "doc.pdf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipError, match="holds no images"):
        open_clip(tmp_path / "empty")
    path = _write_video(tmp_path / "clip.avi", n=10)
    with pytest.raises(ClipError, match="past the end"):
        open_clip(path, start=5.0)
    with pytest.raises(ClipError, match="must come after --start"):
        open_clip(path, start=0.2, end=0.1)
    with pytest.raises(ClipError, match=">= 0"):
        open_clip(path, start=-1)
    with pytest.raises(ClipError, match="above the video's own rate"):
        open_clip(path, fps=60)
