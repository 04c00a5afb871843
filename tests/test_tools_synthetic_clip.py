"""tools/make_synthetic_clip.py: a numbered folder of frames of one moving synthetic face."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_synthetic_clip  # noqa: E402


def test_writes_a_numbered_clip_of_a_moving_face(tmp_path):
    out = tmp_path / "clip"
    assert make_synthetic_clip.main([str(out), "--frames", "4", "--keys", "2", "--size", "64"]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    frames = [np.asarray(Image.open(f)) for f in files]
    assert all(f.shape == (64, 64, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 0.5  # the face moves between key poses


def test_refuses_a_clip_that_cannot_be_one(tmp_path):
    with pytest.raises(SystemExit) as exc:
        make_synthetic_clip.main([str(tmp_path / "clip"), "--frames", "1"])
    assert exc.value.code == 2 and not (tmp_path / "clip").exists()
