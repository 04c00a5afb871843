"""``python -m engine.detect``: faces, overlay, JSON, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.detect import list_backends
from engine.detect.__main__ import main

skimage_data = pytest.importorskip("skimage.data")
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(list_backends()["mediapipe"] is not None
                                and list_backends()["dlib"] is not None,
                                reason="no offline detection backend installed")


def test_json_and_overlay(astronaut_png, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    assert main([str(astronaut_png), "--json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size"] == [512, 512] and len(data["faces"]) == 1
    face = data["faces"][0]
    assert len(face["landmarks68"]) == 68 and len(face["box"]) == 4
    overlay = np.asarray(Image.open(out))
    assert overlay.shape == (512, 512, 3)
    diff = np.any(overlay != skimage_data.astronaut(), axis=2)
    ys, xs = np.nonzero(diff)
    x0, y0, x1, y1 = face["box"]   # drawing happens on and around the face only
    assert diff.sum() > 200
    assert xs.min() >= x0 - 10 and xs.max() <= x1 + 10 and ys.max() <= y1 + 10


def test_numbered_preview_of_a_group_photo(photos, tmp_path, capsys):
    """--numbered: a small preview with one box and one number label per face, in the order
    of reconstruct's --face (largest first), the labels listed in the JSON."""
    from scipy import ndimage

    from engine.detect.__main__ import NUMBER_BOX

    out = tmp_path / "faces.png"
    assert main([str(photos["group"]), "--json", "--numbered", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    faces, labels = data["faces"], data["numbered"]["labels"]
    assert len(faces) == 2 and [lb["index"] for lb in labels] == [0, 1] and [lb["text"] for lb in labels] == ["0", "1"]
    assert faces[0]["box"][2] - faces[0]["box"][0] > faces[1]["box"][2] - faces[1]["box"][0]
    preview = np.asarray(Image.open(out).convert("RGB"))
    assert max(preview.shape[:2]) <= 512
    marks = np.all(preview == NUMBER_BOX, axis=-1)
    _, n = ndimage.label(ndimage.binary_fill_holes(marks))
    assert n == 2
    for lb, face in zip(labels, faces):
        x0, y0, x1, y1 = lb["box"]
        scale = preview.shape[1] / data["size"][0]
        assert abs(x0 - face["box"][0] * scale) <= 1 and abs(x1 - face["box"][2] * scale) <= 1
        lx0, ly0, lx1, ly1 = lb["label"]
        assert (np.all(preview[ly0:ly1, lx0:lx1] < 60, axis=-1)).mean() > 0.03  # the number's ink


def test_no_face_exit_1(tmp_path, capsys):
    p = tmp_path / "sky.png"
    x = np.linspace(0, 255, 256).astype(np.uint8)
    Image.fromarray(np.stack([np.tile(x, (200, 1))] * 3, axis=2)).save(p)
    assert main([str(p)]) == 1
    assert f"no face found in {p}" in capsys.readouterr().err


def test_bad_file_exit_2_one_line(tmp_path, capsys):
    p = tmp_path / "holiday.jpg"
    p.write_text("not really a photo")
    with pytest.raises(SystemExit) as info:
        main([str(p)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read image") and "holiday.jpg" in err
    assert err.count("\n") == 1


def test_unknown_backend_exit_2(astronaut_png, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(astronaut_png), "--backend", "opencv"])
    assert info.value.code == 2
    assert "unknown detection backend 'opencv'" in capsys.readouterr().err


def test_subprocess_has_no_traceback(tmp_path):
    """The real entry point, for a user mistake: one line, exit 2, quiet native logs."""
    r = subprocess.run([sys.executable, "-m", "engine.detect", str(tmp_path / "missing.png")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: cannot read image {tmp_path / 'missing.png'}: no such file"


def test_list_backends(capsys):
    assert main(["--list-backends"]) == 0
    out = capsys.readouterr().out
    assert "mediapipe:" in out and "dlib:" in out and "face_alignment:" in out
