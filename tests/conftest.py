"""Session-wide test settings.

Blender-as-a-module (`bpy` 4.5) can hang at interpreter exit: its audio thread is joined
during shutdown and never returns. Tests that import bpy in this process would then hang
the whole run (and CI) after every test passed. Once pytest has printed its summary, a
session that loaded bpy leaves with ``os._exit`` and pytest's own exit status.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_exit_status: int | None = None


def pytest_sessionfinish(session, exitstatus) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)  # let other plugins finish their own clean-up first
def pytest_unconfigure(config) -> None:
    if "bpy" in sys.modules and _exit_status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)


@pytest.fixture(scope="session")
def load_tool():
    """``load_tool(NAME)``: tools/NAME.py imported as a module (the tools are scripts, not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the file runs
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict:
    """Real and face-free photos as files: scikit-image's astronaut (one face), a "group
    photo" of two astronauts of different sizes on a grey card (two faces: the left one is
    the larger, face 0) and a grey ramp (no face), shared by the CLI, reconstruct and Blender
    tests."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astronaut = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(astronaut)
    gradient = folder / "gradient.png"
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (256, 1))] * 3, -1)).save(gradient)
    portrait = data.astronaut()[0:300, 100:360]
    group_rgb = np.full((320, 640, 3), 200, np.uint8)
    group_rgb[0:300, 20:280] = portrait
    group_rgb[60:268, 400:580] = np.asarray(Image.fromarray(portrait).resize((180, 208)))
    group = folder / "group.png"
    Image.fromarray(group_rgb).save(group)
    return {"astronaut": astronaut, "gradient": gradient, "group": group}


@pytest.fixture(scope="session")
def astronaut_png(photos):
    return photos["astronaut"]


@pytest.fixture(scope="session")
def flame_pkl(tmp_path_factory) -> str:
    """A synthetic FLAME ``generic_model.pkl`` (tests/flame_fixture.py) with its 68 landmarks
    on the front of its sphere-like head, so photos can be reconstructed with it."""
    from flame_fixture import make_flame

    folder, _ = make_flame(tmp_path_factory.mktemp("flame"), face_landmarks=True)
    return str(folder / "generic_model.pkl")
