"""Video in, an animated head out: ``python -m engine animate VIDEO --out DIR`` (docs/video.md).

One concept per module: :mod:`~engine.video.source` (video files and image folders),
:mod:`~engine.video.track` (one person through the clip), :mod:`~engine.video.identity`
(one identity from key frames), :mod:`~engine.video.animate` (the pipeline),
:mod:`~engine.video.smooth` (One Euro filter), :mod:`~engine.video.arkit` (ARKit weights,
head and eye rotations), :mod:`~engine.video.formats` (animation.json, Live Link Face CSV),
:mod:`~engine.video.writer` (the output folder), :mod:`~engine.video.synthetic` (clips with
ground truth), :mod:`~engine.video.evaluate` (their scores), :mod:`~engine.video.cli`.

Importing the package imports nothing heavy; import the modules you need.
"""
