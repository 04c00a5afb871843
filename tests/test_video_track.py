"""Following one person: chosen on the first frame with a face (--face), kept by box overlap
when someone else is in view, frames without the person reported, re-acquired after."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import NoFaceError, UserError
from engine.generator import SyntheticConfig, render_sample
from engine.head import load_head_model
from engine.video.source import Frame
from engine.video.track import track_faces

pytest.importorskip("mediapipe")


@pytest.fixture(scope="module")
def two_people():
    """Frames 232 x 400: a large face on the left, a smaller one on the right, both drifting;
    frames 5 and 6 are empty (the camera looks away)."""
    head = load_head_model("open")
    big = render_sample(head, 4, SyntheticConfig(image_size=224)).image
    small = render_sample(head, 7, SyntheticConfig(image_size=150)).image
    frames = []
    for i in range(9):
        img = np.full((232, 400, 3), 90, np.uint8)
        if i not in (5, 6):
            dx = 3 * i
            img[4:228, dx:dx + 224] = big
            img[40:190, 240 - dx // 2:390 - dx // 2] = small
        frames.append(Frame(10 + i, i / 30.0, img))
    return frames


def test_follows_the_chosen_person_and_reports_missing_frames(two_people):
    with pytest.raises(UserError, match="shows 2 faces; choose the person with --face N"):
        track_faces(two_people, name="two.mp4")
    for face, side in ((0, "left"), (1, "right")):
        track = track_faces(two_people, face=face, name="two.mp4")
        assert track.first_frame_faces == 2 and track.chosen == face
        assert track.missing == [15, 16] and track.indices == list(range(10, 19))
        for k, f in enumerate(track.faces):
            if f is None:
                continue
            cx = f.landmarks68[:, 0].mean()
            assert (cx < 200) if side == "left" else (cx > 200), (face, k, cx)
        # the first frame is a detection; the next ones are tracked from it
        assert track.faces[0].redetected and not track.faces[3].redetected


def test_no_face_in_any_frame_is_a_user_error():
    blank = [Frame(i, i / 30.0, np.full((120, 160, 3), 128, np.uint8)) for i in range(3)]
    with pytest.raises(NoFaceError, match="no face found in any frame of grey.mp4"):
        track_faces(blank, name="grey.mp4")
