"""Mesh export: Wavefront OBJ (+MTL) and binary glTF (GLB) with morph targets."""

from engine.export.gltf import write_glb
from engine.export.obj import write_obj

__all__ = ["write_obj", "write_glb"]
