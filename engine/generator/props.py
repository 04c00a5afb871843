"""Props: the meshes the generator adds to a head (torso, hair, hats, glasses, hands), each
with its own small texture, specular material and segmentation label, and the one combined
props mesh they are rasterised as (textures packed side by side in an atlas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.generator.primitives import Mesh

#: Segmentation labels of the generator's images (``RealisticSample.segmentation``).
SEGMENT_LABELS = {"background": 0, "face_skin": 1, "head_skin": 2, "eyes": 3, "mouth": 4, "hair": 5,
                  "torso": 6, "hat": 7, "glasses": 8, "hand": 9}
ATLAS_CELL = 64
PROP_AO = 0.85  # ambient occlusion of props without their own


@dataclass
class Prop:
    """A prop in the head's model frame (metres): mesh with UVs, sRGB ``texture (3, h, w)``,
    ``specular`` strength and ``shininess``, its segmentation ``label`` (every prop hides
    the face where it is in front of it) and optional per-vertex ambient occlusion ``ao (V,)``
    (default :data:`PROP_AO`)."""

    name: str
    mesh: Mesh
    texture: np.ndarray
    specular: float
    shininess: float
    label: str
    ao: np.ndarray | None = None


@dataclass
class PropsMesh:
    """All props of a sample as one mesh: ``vertices (V, 3)``, ``faces (F, 3)``, ``uv (V, 2)``
    into ``texture (3, H, W)`` (an atlas), per-vertex ``material (V, 3)`` (specular strength,
    shininess, ambient occlusion), per-face ``label
    (F,)`` (values of :data:`SEGMENT_LABELS`) and the names of the props."""

    vertices: torch.Tensor
    faces: torch.Tensor
    uv: torch.Tensor
    texture: torch.Tensor
    material: torch.Tensor
    label: torch.Tensor
    names: list[str]

    @property
    def empty(self) -> bool:
        return self.faces.shape[0] == 0


def combine_props(props: list[Prop]) -> PropsMesh:
    """Pack the props' textures into one atlas row (cells of :data:`ATLAS_CELL` texels,
    UVs inset by half a texel) and concatenate their meshes."""
    import cv2

    n = max(len(props), 1)
    C = ATLAS_CELL
    atlas = np.zeros((3, C, C * n), np.float32)
    verts, faces, uvs, mats, labels = [], [], [], [], []
    off = 0
    for i, p in enumerate(props):
        tex = p.texture.transpose(1, 2, 0)
        if tex.shape[:2] != (C, C):
            tex = cv2.resize(tex, (C, C), interpolation=cv2.INTER_AREA)
        atlas[:, :, i * C:(i + 1) * C] = tex.transpose(2, 0, 1).reshape(3, C, C)
        uv = np.clip(p.mesh.uv, 0, 1) * ((C - 1) / C) + 0.5 / C
        uvs.append(np.stack([(uv[:, 0] + i) / n, uv[:, 1]], 1))
        verts.append(p.mesh.vertices)
        faces.append(p.mesh.faces + off)
        ao = np.full(len(p.mesh.vertices), PROP_AO) if p.ao is None else p.ao
        mats.append(np.concatenate([np.tile([[p.specular, p.shininess]], (len(ao), 1)), ao[:, None]], 1))
        labels.append(np.full(len(p.mesh.faces), SEGMENT_LABELS[p.label]))
        off += len(p.mesh.vertices)
    if not props:
        return PropsMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, 2),
                         torch.from_numpy(atlas), torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), [])
    f32 = lambda x: torch.from_numpy(np.concatenate(x).astype(np.float32))  # noqa: E731
    return PropsMesh(f32(verts), torch.from_numpy(np.concatenate(faces).astype(np.int64)), f32(uvs),
                     torch.from_numpy(atlas), f32(mats), torch.from_numpy(np.concatenate(labels).astype(np.int64)),
                     [p.name for p in props])


def fabric_texture(rng: np.random.Generator, size: int = ATLAS_CELL) -> np.ndarray:
    """A clothing texture ``(3, size, size)``: solid, stripes, checks or knit noise in one or
    two colours."""
    from engine.generator.tones import lab_to_srgb

    def colour() -> np.ndarray:
        if rng.uniform() < 0.35:  # greys, black, white, navy
            L = rng.uniform(10, 90)
            return lab_to_srgb(np.array([L, rng.normal(0, 2), rng.normal(-3, 5)]))
        return lab_to_srgb(np.array([rng.uniform(20, 80), rng.uniform(-40, 50), rng.uniform(-45, 50)]))

    a, b = colour(), colour()
    yy, xx = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(0, 4)
    if kind == 0:
        w = np.zeros((size, size))
    elif kind == 1:
        f = rng.integers(3, 12)
        w = (np.sin(2 * np.pi * f * (yy if rng.uniform() < 0.6 else xx)) > rng.uniform(-0.5, 0.5)).astype(float)
    elif kind == 2:
        f = rng.integers(3, 9)
        w = ((np.sin(2 * np.pi * f * yy) > 0) ^ (np.sin(2 * np.pi * f * xx) > 0)).astype(float) * rng.uniform(0.3, 1)
    else:
        w = rng.uniform(0, 1, (size, size)) * rng.uniform(0.2, 0.6)
    tex = a[:, None, None] * (1 - w[None]) + b[:, None, None] * w[None]
    tex *= 1 + rng.normal(0, 0.04, (1, size, size))  # weave
    return np.clip(tex, 0, 1).astype(np.float32)
