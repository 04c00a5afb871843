"""ICT's UDIM tiles are packed into one [0, 1] atlas: no material overlaps another in UV."""

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.head.ict import pack_udim_atlas


def _owner_overlaps(uv, face_uv, label, res=128):
    """Fraction of covered atlas cells claimed by triangles of two different labels."""
    owner = -np.ones((res, res), int)
    clash = covered = 0
    for f in range(len(face_uv)):
        p = uv[face_uv[f]] * res
        x0, y0 = np.floor(p.min(0)).astype(int)
        x1, y1 = np.ceil(p.max(0)).astype(int)
        xs, ys = np.meshgrid(np.arange(max(x0, 0), min(x1, res)) + 0.5, np.arange(max(y0, 0), min(y1, res)) + 0.5)
        a, b, c = p
        d = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(d) < 1e-12 or xs.size == 0:
            continue
        w1 = ((xs - a[0]) * (c[1] - a[1]) - (ys - a[1]) * (c[0] - a[0])) / d
        w2 = ((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])) / d
        inside = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
        for x, y in zip(xs[inside].astype(int), ys[inside].astype(int)):
            if owner[y, x] < 0:
                owner[y, x] = label[f]
                covered += 1
            elif owner[y, x] != label[f]:
                clash += 1
    return clash / max(covered, 1)


def test_pack_udim_separates_tiles_and_keeps_triangles():
    # two materials: a quad split in tile 0 (face) and the same quad in tile 1 (back head)
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]], np.float32)
    uv = np.concatenate([uv, uv + [1.0, 0.0]])
    face_uv = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    mat = np.array([0, 0, 1, 1])
    new_uv, new_fuv = pack_udim_atlas(uv, face_uv, mat, ["M_Face", "M_BackHead"])
    assert new_uv.min() >= 0 and new_uv.max() <= 1
    assert _owner_overlaps(new_uv, new_fuv, mat, 64) == 0.0
    # orientation and shape of each triangle survive (scale + shift per material)
    def area(u, f):
        a = u[f]
        e1, e2 = a[:, 1] - a[:, 0], a[:, 2] - a[:, 0]
        return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert np.all(np.sign(area(new_uv, new_fuv)) == np.sign(area(uv, face_uv)))


def test_ict_uvs_are_one_atlas_without_face_overlaps():
    """The bake speckle came from UDIM tiles (u up to 7) and eye layers sharing the face's
    UV square: every texel must belong to one material, and the face skin must not share."""
    from engine.head import ict

    try:
        model = ict.load_ict()
    except ModelFileError as exc:  # the data set lives outside the repo
        pytest.skip(f"ICT Face Model Light not available ({exc})")
    uv, fuv = model.uv.numpy(), model.face_uv.numpy()
    assert uv.min() >= 0 and uv.max() <= 1
    skin = model.regions["face_skin"].numpy()
    on_skin = skin[model.faces.numpy()].all(1)
    label = np.where(on_skin, 0, 1)
    assert _owner_overlaps(uv, fuv, label, 96) < 0.01
