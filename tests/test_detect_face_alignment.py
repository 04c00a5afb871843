"""face-alignment backend: weight discovery and the messages when they are absent.

The package itself is not installed in our venv (it pulls numba and an unpinned torch),
so only the loading path is tested: where weights are looked for and what we say.
"""

from __future__ import annotations

import sys
import types
import urllib.error

import pytest

from engine.detect.backends import face_alignment_backend as fab
from engine.errors import ModelFileError


def test_checkpoint_dir_follows_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert fab.checkpoint_dir() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fab.checkpoint_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_missing_weights_message_names_files_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    assert fab.missing_weights() == list(fab.WEIGHT_FILES)
    folder.mkdir(parents=True)
    (folder / "s3fd-619a316812.pth").write_bytes(b"x")
    assert fab.missing_weights() == ["2DFAN4-11f355bf06.pth.tar"]
    msg = fab.missing_weights_message(fab.missing_weights())
    assert "2DFAN4-11f355bf06.pth.tar" in msg and str(folder) in msg
    assert "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar" in msg


def _fake_package(monkeypatch, init):
    """A stand-in `face_alignment` module whose constructor runs ``init``."""
    mod = types.ModuleType("face_alignment")

    class LandmarksType:
        TWO_D = 1

    class FaceAlignment:
        def __init__(self, landmarks_type, network_size=4, device="cuda", flip_input=True,
                     face_detector="sfd", face_detector_kwargs=None, compile=True):
            init(locals())

    mod.LandmarksType, mod.FaceAlignment = LandmarksType, FaceAlignment
    mod.__spec__ = types.SimpleNamespace(name="face_alignment")
    monkeypatch.setitem(sys.modules, "face_alignment", mod)
    monkeypatch.setattr(fab.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "face_alignment" else None)


def test_absent_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(fab.ALLOW_DOWNLOAD_ENV, raising=False)
    _fake_package(monkeypatch, lambda kw: pytest.fail("must not try to download"))
    assert "s3fd-619a316812.pth" in fab.FaceAlignmentBackend.unavailable_reason()
    with pytest.raises(ModelFileError, match=r"s3fd-619a316812.pth, 2DFAN4-11f355bf06.pth.tar"):
        fab.FaceAlignmentBackend().detect(None)


def test_failed_download_becomes_model_file_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    _fake_package(monkeypatch, offline)
    with pytest.raises(ModelFileError, match="download failed"):
        fab.FaceAlignmentBackend(allow_download=True).detect(None)


def test_present_weights_are_passed_explicitly(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name in fab.WEIGHT_FILES:
        (folder / name).write_bytes(b"x")
    seen = {}
    _fake_package(monkeypatch, seen.update)
    assert fab.FaceAlignmentBackend.unavailable_reason() is None
    fab.FaceAlignmentBackend()._model()
    assert seen["device"] == "cpu" and seen["compile"] is False and seen["flip_input"] is False
    assert seen["face_detector_kwargs"] == {"path_to_detector": str(folder / "s3fd-619a316812.pth")}
