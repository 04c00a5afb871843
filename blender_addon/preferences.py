"""Add-on preferences: which Python runs the engine, default device and model."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import runner

ENGINE_MODES = [
    ("AUTO", "Automatic", "Blender's Python when it has PyTorch, otherwise the external Python"),
    ("BLENDER", "Blender's Python", "Run the engine with Blender's own Python (needs PyTorch installed in it)"),
    ("EXTERNAL", "External Python", "Run the engine with the Python executable below"),
]
DEVICES = [("cpu", "CPU", "Run on the processor"), ("cuda", "CUDA GPU", "Run on an NVIDIA GPU (needs CUDA PyTorch)")]
MODELS = [
    ("open", "Open head", "CC0 head model built from MakeHuman/MPFB2 data, ARKit expressions"),
    ("ict", "ICT FaceKit", "ICT Face Model (choose its folder), ARKit expressions"),
    ("flame", "FLAME", "FLAME 2020/2023 model file (licensed separately)"),
]


def user_data_dir(create: bool = True) -> str:
    """The add-on's own writable folder for every file it (or its engine) writes: Blender's
    per-extension user folder (``extension_path_user``, kept across updates, unlike the
    extension's folder, which is replaced on update and may be read-only); for a legacy
    add-on install (or the checkout registered by hand) ``<user datafiles>/facerecon``."""
    try:
        return bpy.utils.extension_path_user(__package__, create=create)
    except (AttributeError, ValueError, KeyError):  # not installed as an extension
        return bpy.utils.user_resource("DATAFILES", path="facerecon", create=create)


def addon_prefs(context: bpy.types.Context | None = None) -> "FACERECON_AddonPreferences | None":
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def keep_engine(context: bpy.types.Context | None = None) -> bool:
    """The preference *Keep the engine running* (on when the preferences cannot be read)."""
    return bool(getattr(addon_prefs(context), "keep_engine", True))


class FACERECON_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_mode: EnumProperty(name="Engine", items=ENGINE_MODES, default="AUTO")
    python_path: StringProperty(
        name="Python executable", subtype="FILE_PATH",
        description="Python with PyTorch and the engine's requirements (e.g. the project's .venv/bin/python); "
                    "empty: a .venv next to the add-on's checkout is used when there is one",
    )
    keep_engine: BoolProperty(
        name="Keep the engine running", default=True,
        description="Reconstructions after the first skip starting Python, PyTorch and the model (about three "
                    "times faster); the engine's memory is freed after 10 idle minutes or when Blender quits")
    default_device: EnumProperty(name="Default device", items=DEVICES, default="cpu")
    default_model: EnumProperty(name="Default head model", items=MODELS, default="open")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_mode")
        row = layout.row()
        row.active = self.engine_mode != "BLENDER"
        row.prop(self, "python_path")
        choice = runner.choose_python(self.engine_mode, self.python_path)
        layout.label(text=("Engine: " if choice.ok else "Missing: ") + choice.reason,
                     icon="CHECKMARK" if choice.ok else "ERROR")
        layout.prop(self, "keep_engine")
        layout.prop(self, "default_device")
        layout.prop(self, "default_model")
        layout.operator("facerecon.check_engine", icon="VIEWZOOM")
