"""The real example photos (engine/photo/examples.py): each loads as RGB uint8 from a package
we already install, shows one face the default detector finds, and an unknown name is a
UserError that names the available ones (the CLI writes nothing then)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UserError
from engine.photo.examples import EXAMPLE_PHOTOS, example_image


@pytest.mark.parametrize("name", EXAMPLE_PHOTOS)
def test_example_photo_loads_and_shows_a_face(name):
    rgb = example_image(name)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 256
    from engine.detect import detect_faces

    faces = [f for f in detect_faces(rgb) if f.landmarks68 is not None]
    assert len(faces) == 1
    lm = faces[0].landmarks68[:, :2]
    assert (lm >= 0).all() and (lm[:, 0] < rgb.shape[1]).all() and (lm[:, 1] < rgb.shape[0]).all()


def test_unknown_example_names_the_available_ones(tmp_path):
    with pytest.raises(UserError, match="available: astronaut, grace_hopper"):
        example_image("nobody")
    from engine.__main__ import main

    with pytest.raises(SystemExit) as exc:  # cli_errors: "error: ..." and exit status 2
        main(["reconstruct", "--example", "nobody", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert not any(tmp_path.iterdir())  # no examples/ folder, no output folder
