"""Scene settings of the sidebar (saved with the .blend) and job state (not saved)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .preferences import DEVICES, MODELS
from .runner import load_method_registry


def method_items() -> list[tuple[str, str, str]]:
    """The Method menu: the engine's method registry (``python -m engine methods``), read
    from the engine this add-on runs; just the fit when no engine is bundled (the panel then
    says the engine is missing)."""
    registry = load_method_registry()
    if registry is None:
        return [("fit", "Fit (analysis by synthesis)", "Optimise the model against landmarks and photo colours")]
    return [(m.name, m.label, f"{m.description} Needs: {m.needs}." if m.needs else m.description)
            for m in registry.methods()]


METHODS = method_items()
#: the fit settings behind "Expressive mouth": the iBUG-68 mouth corners and inner lips, which
#: the dense landmark term hardly weighs, count fully again (docs/fitting.md, "The mouth corners
#: in the dense term": the astronaut's smile 0.67 / 0.69 -> 0.87 / 0.75, geometry on our own
#: faces 0.1 mm worse, so it is not the engine's default)
EXPRESSIVE_MOUTH_OPTIONS = ("ibug_uncovered_weight=3",)


def method_fits(name: str) -> bool:
    """Whether the method runs the fit (fit, hybrid), so fit settings apply to it."""
    registry = load_method_registry()
    if registry is None:
        return name == "fit"
    try:
        return registry.get(name).kind != "learned"
    except Exception:  # an unknown name: the engine reports it when the job runs
        return False
#: albedo.png sides the engine offers (engine.outputs.TEXTURE_SIZES; reconstruct --texture-size)
TEXTURE_SIZES = [
    ("512", "512", "512 × 512 texels: small files, for small or distant faces"),
    ("1024", "1024", "1024 × 1024 texels (the face gets about 560 from ear to ear)"),
    ("2048", "2048", "2048 × 2048 texels: for photos whose face is larger than ~600 pixels (a few "
                     "seconds more)"),
]

RESULT_MODES = [
    ("REPLACE", "Replace", "Replace the head made earlier from the same photo and face (another face of "
                           "the same photo gets its own head)"),
    ("ADD", "Add new", "Always add a new object"),
]


def _photo_changed(self, context):
    # Preview of the picked photo in the panel: an image datablock with a preview icon.
    from . import ui  # local import: ui imports this module
    ui.update_photo_preview(self)


class FACERECON_Settings(bpy.types.PropertyGroup):
    photo: StringProperty(name="Photo", subtype="FILE_PATH", description="Photo of a face (JPEG, PNG, ...)",
                          update=_photo_changed)
    more_photos: StringProperty(name="More photos", subtype="DIR_PATH",
                                description="A folder of more photos of the same person (one face each): the head "
                                            "gets one identity from all of them, which helps the likeness with the "
                                            "ICT model (empty: the photo alone)")
    model: EnumProperty(name="Head model", items=MODELS, default="open")
    ict_path: StringProperty(name="ICT folder", subtype="DIR_PATH",
                             description="Folder of the ICT FaceKit (with FaceXModel/ or its files)")
    flame_path: StringProperty(name="FLAME file", subtype="FILE_PATH",
                               description="FLAME model file (generic_model.pkl / flame2023.pkl)")
    method: EnumProperty(name="Method", items=METHODS, default="fit")
    device: EnumProperty(name="Device", items=DEVICES, default="cpu")
    texture_size: EnumProperty(name="Texture", items=TEXTURE_SIZES, default="1024",
                               description="Side of the baked skin texture (albedo.png) in texels")
    expressive_mouth: BoolProperty(name="Expressive mouth", default=False,
                                   description="Weigh the mouth corners fully in the fit: broad smiles come back "
                                               "larger, the head shape slightly less accurate (fit and hybrid)")
    face_index: IntProperty(name="Face", default=0, min=0,
                            description="Which face when the photo shows several (0: the largest; "
                                        "Find Faces numbers them on the preview)")
    all_faces: BoolProperty(name="All", default=False,
                            description="Reconstruct every face of the photo, one head each, standing side by "
                                        "side as the people do in the photo (the engine loads its model once)")
    faces_found: IntProperty(name="Faces found", default=-1, min=-1,
                             description="Faces Find Faces counted in the photo (-1: not looked yet)")
    result_mode: EnumProperty(name="Result", items=RESULT_MODES, default="REPLACE")
    apply_expression: BoolProperty(name="Fitted expression", default=True,
                                   description="Set the shape keys to the expression seen in the photo")
    photo_lighting: BoolProperty(name="Photo lighting", default=False,
                                 description="Make the scene's world approximate the photo's lighting, replacing "
                                             "the world it has (a scene without a world always gets it; one "
                                             "world per head, reused on re-import)")
    bake_detail: BoolProperty(name="Bake detail into mesh", default=False,
                              description="Move the mesh and all shape keys by the detail map (no modifier, "
                                          "so shape keys still export)")

    def fit_options(self) -> tuple[str, ...]:
        """The ``--fit-option`` settings the sidebar asks for (none for a learned method)."""
        return EXPRESSIVE_MOUTH_OPTIONS if self.expressive_mouth and method_fits(self.method) else ()

    def model_path(self) -> str:
        path = {"ict": self.ict_path, "flame": self.flame_path}.get(self.model, "")
        return bpy.path.abspath(path) if path else ""


class FACERECON_JobState(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", subtype="PERCENTAGE", min=0.0, max=100.0, default=0.0)
    status: StringProperty(default="")


classes = (FACERECON_Settings, FACERECON_JobState)


def register_properties():
    bpy.types.Scene.facerecon = PointerProperty(type=FACERECON_Settings)
    bpy.types.WindowManager.facerecon_job = PointerProperty(type=FACERECON_JobState)


def unregister_properties():
    del bpy.types.WindowManager.facerecon_job
    del bpy.types.Scene.facerecon
