"""tools/eye_colour_error.py: the true eye colours of a sample and the colour difference."""

from __future__ import annotations

import numpy as np


def test_true_eye_colours_read_the_iris_and_sclera_by_angle(load_tool):
    tool = load_tool("eye_colour_error")
    rng = np.random.default_rng(0)
    pts, eyes = [], []
    for cx in (0.032, -0.032):  # two eyeballs, 12 mm, looking along +Z
        d = rng.normal(size=(4000, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        pts.append(np.array([cx, 0.0, 0.0]) + 0.012 * d)
    X = np.concatenate(pts + [rng.normal(0, 0.05, (500, 3)) + [0, -0.1, 0]])  # and some skin
    eyes = np.zeros(len(X), bool)
    eyes[:8000] = True
    d = X[:8000] - np.where(X[:8000, :1] > 0, [[0.032, 0, 0]], [[-0.032, 0, 0]])
    theta = np.degrees(np.arccos(d[:, 2] / np.linalg.norm(d, axis=1)))
    albedo = np.full((len(X), 3), 0.6)
    albedo[:8000] = [0.86, 0.83, 0.80]
    albedo[:8000][theta < 32] = [0.2, 0.4, 0.6]
    albedo[:8000][theta < 13] = 0.02
    iris, sclera = tool.true_eye_colours({"vertices_model": X, "albedo": albedo}, eyes)
    assert np.allclose(iris, [0.2, 0.4, 0.6]) and np.allclose(sclera, [0.86, 0.83, 0.80])
    assert tool.delta_e(iris, iris) == 0.0 and 95 < tool.delta_e(np.zeros(3), np.ones(3)) < 105
