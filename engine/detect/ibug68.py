"""MediaPipe face-mesh -> iBUG-68 mapping (derived by tools/derive_mediapipe_ibug68.py).

Each iBUG point is a fixed convex combination of 1-3 mesh vertices, so the mapping
commutes with any similarity/affine transform of the image and works on (N, 2) or (N, 3).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError

MAPPING_PATH = Path(__file__).resolve().parent.parent / "assets" / "mediapipe_to_ibug68.json"


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[np.ndarray, dict]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        n = int(data["num_source_points"])
        w = np.zeros((68, n), dtype=np.float64)
        for entry in data["points"]:
            w[int(entry["ibug"]), entry["vertices"]] = entry["weights"]
    except FileNotFoundError:
        raise ModelFileError(f"landmark mapping {p} is missing; regenerate it with "
                             "'python tools/derive_mediapipe_ibug68.py'") from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelFileError(f"landmark mapping {p} is corrupt ({exc})") from None
    if not np.allclose(w.sum(1), 1.0, atol=1e-6):
        raise ModelFileError(f"landmark mapping {p} is corrupt (weights do not sum to 1)")
    return w, data


def mapping_matrix(path: str | Path = MAPPING_PATH) -> np.ndarray:
    """(68, N) weights: ``ibug = W @ mesh_points``."""
    return _load(str(path))[0]


def mapping_info(path: str | Path = MAPPING_PATH) -> dict:
    """The mapping file's metadata (procedure, residuals per point)."""
    return _load(str(path))[1]


def mediapipe_to_ibug68(points: np.ndarray, path: str | Path = MAPPING_PATH) -> np.ndarray:
    """Map MediaPipe mesh points (478 or 468, D) to (68, D) iBUG-68 points."""
    w = mapping_matrix(path)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0] < w.shape[1]:
        used = np.nonzero(w.any(0))[0]
        if used.max() >= pts.shape[0]:
            raise ValueError(f"mapping needs {w.shape[1]} mesh points, got {pts.shape[0]}")
        w = w[:, : pts.shape[0]]
    return w @ pts[: w.shape[1]]
