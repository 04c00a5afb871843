"""Wavefront OBJ + MTL writer (per-corner UVs, written atomically)."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from engine.export.atomic import atomic_write


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
              face_uv: np.ndarray | None = None, texture_path: str | Path | None = None,
              material_name: str = "head") -> Path:
    """Write ``path`` (.obj) and a sibling .mtl; vertices (V,3) metres, faces (F,3) 0-based.

    uv (T,2) with v up and face_uv (F,3) give per-corner texture coordinates. A texture, if
    given, is copied beside the OBJ (unless already there) and referenced as ``map_Kd``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64) + 1
    mtl = path.with_suffix(".mtl")
    # one %-format over a whole array is several times faster than a format call per line
    lines = [f"mtllib {mtl.name}", f"o {path.stem}"]
    lines.append(("v %.7g %.7g %.7g\n" * len(v) % tuple(v.ravel().tolist())).rstrip("\n"))
    has_uv = uv is not None and face_uv is not None
    if has_uv:
        uv_text, face_text = topology_text(faces, uv, face_uv)
        lines.append(uv_text)
        lines.append(f"usemtl {material_name}")
        lines.append(face_text)
    else:
        lines.append(f"usemtl {material_name}")
        lines.append(("f %d %d %d\n" * len(f) % tuple(f.ravel().tolist())).rstrip("\n"))
    mtl_lines = [f"newmtl {material_name}", "Ka 0 0 0", "Kd 0.8 0.8 0.8", "Ks 0 0 0", "d 1", "illum 1"]
    if texture_path is not None:
        tex = Path(texture_path)
        dest = path.parent / tex.name
        if tex.resolve() != dest.resolve():
            shutil.copyfile(tex, dest)
        mtl_lines.append(f"map_Kd {tex.name}")
    atomic_write(mtl, "\n".join(mtl_lines) + "\n")
    atomic_write(path, "\n".join(lines) + "\n")
    return path


_TOPOLOGY: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
_TOPOLOGY_LOCK = threading.Lock()


def topology_text(faces: np.ndarray, uv: np.ndarray, face_uv: np.ndarray) -> tuple[str, str]:
    """The ``vt`` lines and the ``f a/x b/y c/z`` lines of :func:`write_obj` for a mesh (faces
    (F, 3) and face_uv (F, 3) 0-based, uv (T, 2)). They depend on the head model only, so the
    last few are kept (keyed by a digest of the arrays): formatting them holds the GIL for
    milliseconds, which stalls other threads — call this ahead (in the background) to have
    them ready."""
    f, t, ft = np.asarray(faces, np.int64) + 1, np.asarray(uv, np.float64), np.asarray(face_uv, np.int64) + 1
    h = hashlib.blake2b(digest_size=16)
    for a in (f, t, ft):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    key = h.digest()
    with _TOPOLOGY_LOCK:
        if key in _TOPOLOGY:
            _TOPOLOGY.move_to_end(key)
            return _TOPOLOGY[key]
    uv_text = ("vt %.7g %.7g\n" * len(t) % tuple(t.ravel().tolist())).rstrip("\n")
    corners = np.stack([f, ft], -1).reshape(len(f), 6)  # a/x b/y c/z
    face_text = ("f %d/%d %d/%d %d/%d\n" * len(f) % tuple(corners.ravel().tolist())).rstrip("\n")
    with _TOPOLOGY_LOCK:
        _TOPOLOGY[key] = (uv_text, face_text)
        while len(_TOPOLOGY) > 4:
            _TOPOLOGY.popitem(last=False)
    return uv_text, face_text
