"""Face reconstruction engine: head models, differentiable rendering, photo intake,
fitting, learned encoders, training and export.

Units are metres throughout; see docs/conventions.md for axes and camera conventions.
"""

__version__ = "0.1.0"
