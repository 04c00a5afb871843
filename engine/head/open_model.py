"""Loader of the open (MakeHuman/MPFB2-based) head model from its built ``.npz``."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.head.model import HeadModel


def load_open(path: str | Path | None = None) -> HeadModel:
    """Load ``path``, or by default the built model (``engine/assets/open_head.npz``, or the
    folder named by ``$FACERECON_DATA_DIR``: ``build.open_head.default_path``), building it
    first when missing or stale."""
    from engine.head.build import open_head as build_open

    p = Path(path) if path is not None else build_open.default_path()
    if path is None and not (p.is_file() and build_open.is_current(p)):
        print(f"[engine.head] building the open head model into {p} (one-off, a few seconds)",
              file=sys.stderr)
        build_open.build(p, verbose=False)
    if not p.is_file():
        raise ModelFileError(f"open head model file {p} does not exist; build it with "
                             f"'python -m engine.head.build.open_head --out {p}'.")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"open head model file {p} is not a readable .npz ({exc}).") from None
    if "meta_json" not in arrays or "template" not in arrays:
        raise ModelFileError(f"{p} is not an open head model file (no meta_json/template arrays).")
    meta = json.loads(str(arrays.pop("meta_json")))
    regions = {k[len("region_"):]: arrays.pop(k) for k in list(arrays) if k.startswith("region_")}
    info = {
        "build_version": meta["build_version"],
        "content_sha256": meta["content_sha256"],
        "landmarks_source": meta["landmarks"],
        "path": str(p),
        "units": "metres",
        "frame": "+X subject's left, +Y up, +Z out of the face; origin between the eyeball centres",
    }
    return HeadModel("open", arrays, meta["expression_names"], meta["joint_names"], regions, info)
