"""Dense landmark embeddings beside a model's iBUG-68 one (MediaPipe-478 on the open model).

A detector's native points are fitted against an embedding derived *with that detector*
(:mod:`engine.head.build.mediapipe478`), which avoids the detour through iBUG-68 and a
second detector's convention. Only the points found stable in the derivation are listed;
each carries its spread over the derivation's renders (a noise estimate, in metres).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.head.model import HeadModel

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: (model name, detector convention) -> embedding file
EMBEDDINGS = {("open", "mediapipe-478"): ASSETS / "open_mediapipe478.json"}


@dataclass
class DenseEmbedding:
    """Surface points for a subset of a detector's native landmarks."""

    convention: str
    indices: torch.Tensor  # (N,) int64 indices into the detector's native points
    faces: torch.Tensor  # (N,) int64 triangle ids
    bary: torch.Tensor  # (N, 3) barycentrics
    spread_m: torch.Tensor  # (N,) RMS spread of the derivation's votes (metres)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def points(self, model: HeadModel, vertices: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) embedded points on ``vertices`` (B, V, 3) of ``model``'s topology."""
        tri = vertices[:, model.faces[self.faces]]  # (B, N, 3, 3)
        return (tri * self.bary[None, :, :, None]).sum(2)


_cache: dict[tuple[str, str, int], DenseEmbedding | None] = {}


def load_dense_embedding(model: HeadModel, convention: str) -> DenseEmbedding | None:
    """The model's embedding for ``convention``, or None (no file, or another topology)."""
    key = (model.name, convention, model.n_faces)
    if key in _cache:
        emb = _cache[key]
        return None if emb is None else _to(emb, model.template.device)
    path = EMBEDDINGS.get((model.name, convention))
    emb = None
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        from engine.head.build import open_head as build_open

        faces = model.faces.detach().cpu().numpy()
        same = data.get("topology_hash") == build_open.topology_hash(faces, model.n_vertices)
        if same and data["points"]:
            pts = data["points"]
            emb = DenseEmbedding(
                convention=convention,
                indices=torch.tensor([p["index"] for p in pts], dtype=torch.int64),
                faces=torch.tensor([p["face"] for p in pts], dtype=torch.int64),
                bary=torch.tensor(np.array([p["bary"] for p in pts]), dtype=torch.float32),
                spread_m=torch.tensor([p["spread_mm"] * 1e-3 for p in pts], dtype=torch.float32),
            )
    _cache[key] = emb
    return None if emb is None else _to(emb, model.template.device)


def _to(emb: DenseEmbedding, device: torch.device) -> DenseEmbedding:
    if emb.faces.device == device:
        return emb
    return DenseEmbedding(emb.convention, emb.indices.to(device), emb.faces.to(device), emb.bary.to(device),
                          emb.spread_m.to(device))
