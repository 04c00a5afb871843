"""Binary glTF 2.0 (GLB) writer in pure numpy, with named morph targets.

glTF needs one UV per vertex, so vertices are split at UV seams: every distinct
(vertex, uv) corner pair becomes one glTF vertex; :func:`split_seams` returns the mapping.
Morph target names are written to ``mesh.extras.targetNames``, which Blender's importer
turns into shape-key names. glTF's frame (+Y up, +Z front, metres) equals our model frame.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from engine.render.shading import vertex_normals_np

from engine.export.atomic import atomic_write

_FLOAT, _UINT = 5126, 5125
_USHORT = 5123
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def split_seams(faces: np.ndarray, face_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (vertex, uv) corners -> (vertex_of_new (N,), uv_of_new (N,), new faces (F,3))."""
    f, t = np.asarray(faces, np.int64).ravel(), np.asarray(face_uv, np.int64).ravel()
    n_uv = int(t.max()) + 1 if len(t) else 1
    # one int64 key per pair, ordered like the pairs' rows (vertex first): a 1-D unique is
    # several times faster than np.unique(axis=0) and gives the same order and inverse
    uniq, inverse = np.unique(f * n_uv + t, return_inverse=True)
    return uniq // n_uv, uniq % n_uv, inverse.reshape(-1, 3)


class _Builder:
    """The binary chunk as a list of pieces (joined once when the file is written) with its
    buffer views and accessors."""

    def __init__(self) -> None:
        self.pieces: list[memoryview | bytes] = []
        self.length = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def align(self) -> None:
        """Pad the chunk to a multiple of 4 bytes (glTF's alignment)."""
        pad = -self.length % 4
        if pad:
            self.pieces.append(b"\0" * pad)
            self.length += pad

    def view(self, data: bytes | np.ndarray, target: int | None = None) -> int:
        """A buffer view of ``data`` (bytes, or a C-contiguous array: not copied until the join)."""
        self.align()
        piece = memoryview(data).cast("B")
        v = {"buffer": 0, "byteOffset": self.length, "byteLength": piece.nbytes}
        if target is not None:
            v["target"] = target
        self.pieces.append(piece)
        self.length += piece.nbytes
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, arr: np.ndarray, kind: str, target: int | None, minmax: bool = False,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """``minmax``: write the per-component min and max (``bounds``, when already known)."""
        comp = _UINT if arr.dtype == np.uint32 else (_USHORT if arr.dtype == np.uint16 else _FLOAT)
        acc = {"bufferView": self.view(np.ascontiguousarray(arr), target), "componentType": comp,
               "count": int(arr.shape[0]), "type": kind}
        if minmax:
            lo, hi = bounds if bounds is not None else (arr.min(0), arr.max(0))
            acc["min"] = [float(x) for x in lo]
            acc["max"] = [float(x) for x in hi]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def write_glb(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              face_uv: np.ndarray, morph_targets: Mapping[str, np.ndarray] | None = None,
              texture_png: bytes | Callable[[], bytes | None] | None = None, name: str = "head",
              morph_weights: Mapping[str, float] | None = None, skin: Mapping | None = None,
              animation: Mapping | None = None) -> dict[str, object]:
    """Write a GLB with positions, normals, UVs (v flipped for glTF) and morph targets.

    vertices (V,3) metres; faces (F,3); uv (T,2) OBJ convention; face_uv (F,3);
    morph_targets: name -> (V,3) position deltas on the original vertices; morph_weights:
    initial weight per target name (Blender shape-key values), default 0.
    skin (optional, :func:`_add_skin`): ``joint_names``, ``joint_parents`` (-1 = root),
    ``rest_joints`` (J,3) and ``weights`` (V,J) — joints become nodes, the mesh is skinned
    (four strongest influences per vertex) — and optionally ``rotations`` (J,4) quaternions
    x, y, z, w: each joint node's pose (local, as ``animation``'s), the rest pose without. animation (optional, needs ``skin`` for joint
    channels, :func:`_add_animation`): ``times`` (T,) seconds, ``morph_weights`` (T, n targets)
    and/or ``rotations`` {joint: (T,4) quaternions x, y, z, w}, ``name``; linear interpolation.
    Without skin and animation the file is what it always was. ``texture_png`` may be a function
    returning the PNG's bytes (or None): it is called once the mesh and its morph targets are
    packed, so a caller can start the file before its texture exists.
    Returns {"vertex_map": (N,) original vertex of each glTF vertex, "n_vertices": N}.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    vmap, umap, new_faces = split_seams(faces, face_uv)
    pos = verts[vmap].astype(np.float32)
    nrm = vertex_normals_np(verts, faces)[vmap].astype(np.float32)
    tex = np.asarray(uv, np.float32)[umap].copy()
    tex[:, 1] = 1.0 - tex[:, 1]
    b = _Builder()
    attributes = {
        "POSITION": b.accessor(pos, "VEC3", _ARRAY_BUFFER, minmax=True),
        "NORMAL": b.accessor(nrm, "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(tex, "VEC2", _ARRAY_BUFFER),
        "_MODEL_VERTEX": b.accessor(vmap.astype(np.float32), "SCALAR", _ARRAY_BUFFER),
    }
    indices = b.accessor(new_faces.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    names = list(morph_targets or {})
    for key in names:
        shape = np.shape(morph_targets[key])
        if shape != verts.shape:
            raise ValueError(f"morph target {key!r} has shape {shape}, expected {verts.shape}")
    targets = []
    if names:  # all targets split at the seams and bounded in one pass each
        stacked = np.stack([np.asarray(morph_targets[key], np.float32) for key in names])  # (K, V, 3)
        # gather whole vertices (12-byte items) at the seam split: one element per vertex, not three
        deltas = stacked.view("V12")[:, vmap].view(np.float32).reshape(len(names), len(vmap), 3)
        lows, highs = deltas.min(1), deltas.max(1)
        for k in range(len(names)):
            targets.append({"POSITION": b.accessor(deltas[k], "VEC3", _ARRAY_BUFFER, minmax=True,
                                                   bounds=(lows[k], highs[k]))})
    material = {"name": f"{name}_material", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 0.8},
                "doubleSided": False}
    doc: dict = {"asset": {"version": "2.0", "generator": "facerecon-engine engine.export.gltf"},
                 "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"name": name, "mesh": 0}]}
    prim = {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
    mesh: dict = {"name": name, "primitives": [prim]}
    if targets:
        prim["targets"] = targets
        mesh["weights"] = [float((morph_weights or {}).get(k, 0.0)) for k in names]
        mesh["extras"] = {"targetNames": names}
    if callable(texture_png):  # the mesh is packed: now wait for the texture
        texture_png = texture_png()
    if texture_png is not None:
        img_view = b.view(texture_png)
        doc["images"] = [{"bufferView": img_view, "mimeType": "image/png", "name": f"{name}_texture"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"source": 0, "sampler": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
    else:
        material["pbrMetallicRoughness"]["baseColorFactor"] = [0.8, 0.8, 0.8, 1.0]
    if skin is not None:
        _add_skin(doc, b, prim, skin, vmap)
    if animation is not None:
        _add_animation(doc, b, animation, names)
    doc.update(meshes=[mesh], materials=[material], accessors=b.accessors, bufferViews=b.views)
    b.align()
    doc["buffers"] = [{"byteLength": b.length}]
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + b.length
    data = b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(js), b"JSON"), js,
                     struct.pack("<I4s", b.length, b"BIN\x00"), *b.pieces])
    atomic_write(path, data)
    return {"vertex_map": vmap, "n_vertices": int(len(vmap))}


def _add_skin(doc: dict, b: _Builder, prim: dict, skin: Mapping, vmap: np.ndarray) -> None:
    """Joint nodes (translation = rest offset from the parent, no rotation at rest; a posed
    joint's ``rotations`` row as its node rotation), inverse bind matrices, and JOINTS_0 /
    WEIGHTS_0 (the four largest weights, renormalised)."""
    names = list(skin["joint_names"])
    parents = [int(p) for p in skin["joint_parents"]]
    rest = np.asarray(skin["rest_joints"], np.float64)
    w = np.asarray(skin["weights"], np.float64)[vmap]
    rotations = skin.get("rotations")
    if rotations is not None:
        rotations = np.asarray(rotations, np.float64)
        if rotations.shape != (len(names), 4):
            raise ValueError(f"skin rotations have shape {rotations.shape}, expected ({len(names)}, 4)")
    first = len(doc["nodes"])
    for j, joint in enumerate(names):
        offset = rest[j] - (rest[parents[j]] if parents[j] >= 0 else 0.0)
        node: dict = {"name": joint, "translation": [float(x) for x in offset]}
        if rotations is not None and not np.allclose(rotations[j], [0.0, 0.0, 0.0, 1.0]):
            q = rotations[j] / np.linalg.norm(rotations[j])
            node["rotation"] = [float(x) for x in q]
        children = [first + c for c, p in enumerate(parents) if p == j]
        if children:
            node["children"] = children
        doc["nodes"].append(node)
    roots = [first + j for j, p in enumerate(parents) if p < 0]
    doc["scenes"][0]["nodes"] += roots
    ibm = np.tile(np.eye(4, dtype=np.float32), (len(names), 1, 1))
    ibm[:, :3, 3] = -rest
    ibm = np.ascontiguousarray(ibm.transpose(0, 2, 1)).reshape(len(names), 16)  # column-major
    doc["nodes"][0]["skin"] = 0
    doc["skins"] = [{"inverseBindMatrices": b.accessor(ibm, "MAT4", None), "joints": list(range(first, first + len(names))),
                     "skeleton": roots[0]}]
    top = np.argsort(-w, axis=1)[:, :4]
    tw = np.take_along_axis(w, top, 1)
    tw = tw / np.maximum(tw.sum(1, keepdims=True), 1e-12)
    if top.shape[1] < 4:
        pad = 4 - top.shape[1]
        top = np.pad(top, ((0, 0), (0, pad)))
        tw = np.pad(tw, ((0, 0), (0, pad)))
    prim["attributes"]["JOINTS_0"] = b.accessor(top.astype(np.uint16), "VEC4", _ARRAY_BUFFER)
    prim["attributes"]["WEIGHTS_0"] = b.accessor(tw.astype(np.float32), "VEC4", _ARRAY_BUFFER)


def _add_animation(doc: dict, b: _Builder, animation: Mapping, target_names: list[str]) -> None:
    """One animation: morph weights of the mesh node and rotations of joint nodes."""
    times = np.asarray(animation["times"], np.float32).reshape(-1, 1)
    inp = b.accessor(times, "SCALAR", None, minmax=True)
    samplers, channels = [], []
    weights = animation.get("morph_weights")
    if weights is not None:
        wts = np.asarray(weights, np.float32)
        if wts.shape != (len(times), len(target_names)):
            raise ValueError(f"morph_weights has shape {wts.shape}, expected ({len(times)}, {len(target_names)})")
        samplers.append({"input": inp, "output": b.accessor(wts.reshape(-1, 1), "SCALAR", None),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": 0, "path": "weights"}})
    nodes = {n.get("name"): i for i, n in enumerate(doc["nodes"]) if i > 0}
    for joint, quats in (animation.get("rotations") or {}).items():
        if joint not in nodes:
            raise ValueError(f"animated joint {joint!r} is not in the skin")
        q = np.asarray(quats, np.float32)
        samplers.append({"input": inp, "output": b.accessor(q, "VEC4", None), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": nodes[joint], "path": "rotation"}})
    doc["animations"] = [{"name": str(animation.get("name", "animation")), "samplers": samplers,
                          "channels": channels}]


_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_DTYPES = {_FLOAT: np.float32, _UINT: np.uint32, _USHORT: np.uint16}


def read_accessor(doc: dict, blob: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` of a GLB read by :func:`read_glb` as a (count, components) array
    (the types this writer uses: float, uint32, uint16)."""
    a = doc["accessors"][index]
    view = doc["bufferViews"][a["bufferView"]]
    n = _COMPONENTS[a["type"]]
    return np.frombuffer(blob, _DTYPES[a["componentType"]], a["count"] * n,
                         view.get("byteOffset", 0) + a.get("byteOffset", 0)).reshape(a["count"], n)


def posed_positions(doc: dict, blob: bytes) -> np.ndarray:
    """The first mesh's vertices (N,3) as a glTF viewer shows the file at rest: the base
    positions plus the morph targets at the mesh's ``weights``, skinned (when the mesh node has
    a skin) by the joint nodes' own translations and rotations. Nodes with scale or matrices,
    which this writer never makes, are not supported."""
    from engine.video.formats import quaternion_to_rotvec, rotvec_to_matrix

    def rotation(q) -> np.ndarray:  # glTF's x, y, z, w
        return rotvec_to_matrix(quaternion_to_rotvec(np.roll(np.asarray(q, np.float64), 1)))

    mesh = doc["meshes"][0]
    prim = mesh["primitives"][0]
    pos = read_accessor(doc, blob, prim["attributes"]["POSITION"]).astype(np.float64)
    for w, target in zip(mesh.get("weights", []), prim.get("targets", [])):
        pos = pos + w * read_accessor(doc, blob, target["POSITION"])
    node = next(n for n in doc["nodes"] if n.get("mesh") == 0)
    if "skin" not in node:
        return pos
    nodes = doc["nodes"]
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}

    def world(i: int) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = rotation(nodes[i].get("rotation", [0.0, 0.0, 0.0, 1.0]))
        m[:3, 3] = nodes[i].get("translation", [0.0, 0.0, 0.0])
        return world(parent[i]) @ m if i in parent else m

    skin = doc["skins"][node["skin"]]
    ibm = read_accessor(doc, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    mats = np.stack([world(j) @ ibm[k] for k, j in enumerate(skin["joints"])])
    joints = read_accessor(doc, blob, prim["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = read_accessor(doc, blob, prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    h = np.concatenate([pos, np.ones((len(pos), 1))], 1)
    return sum(weights[:, k:k + 1] * np.einsum("vij,vj->vi", mats[joints[:, k]], h)[:, :3] for k in range(4))


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """Parse a GLB into (json document, binary chunk) — used by tests and tools."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or total != len(data):
        raise ValueError(f"{path} is not a GLB 2.0 file")
    jlen, _ = struct.unpack_from("<I4s", data, 12)
    doc = json.loads(data[20:20 + jlen])
    blen, _ = struct.unpack_from("<I4s", data, 20 + jlen)
    return doc, data[28 + jlen:28 + jlen + blen]
