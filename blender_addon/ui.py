"""Sidebar (N panel) tab "Face" in the 3D view: reconstruct, face sliders, export."""

from __future__ import annotations

import os

import bpy

from . import importer
from .operators import active_head, engine_choice
from .properties import method_fits

PREVIEW_IMAGE = "FaceRecon photo preview"


def update_photo_preview(settings, path: str | None = None) -> bpy.types.Image | None:
    """Load the picked photo (or ``path``: the photo with its faces numbered, from *Find
    Faces*) as the image datablock whose preview the panel shows."""
    old = bpy.data.images.get(PREVIEW_IMAGE)
    if old is not None:
        bpy.data.images.remove(old)
    if path is None:
        settings.faces_found = -1  # a new photo: its faces are not counted yet
        path = bpy.path.abspath(settings.photo) if settings.photo else ""
    if not path or not os.path.isfile(path):
        return None
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:
        return None  # the panel says the photo cannot be read
    image.name = PREVIEW_IMAGE
    image.preview_ensure()
    return image


class FACERECON_PT_reconstruct(bpy.types.Panel):
    bl_label = "Face Reconstruction"
    bl_idname = "FACERECON_PT_reconstruct"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.facerecon
        job = context.window_manager.facerecon_job

        layout.prop(settings, "photo")
        layout.prop(settings, "more_photos")
        image = bpy.data.images.get(PREVIEW_IMAGE)
        if image is not None and image.preview is not None:
            layout.template_icon(icon_value=image.preview.icon_id, scale=6.0)
        elif settings.photo:
            path = bpy.path.abspath(settings.photo)
            if not os.path.isfile(path):
                layout.label(text="Photo not found", icon="ERROR")

        col = layout.column(align=True)
        col.prop(settings, "model")
        if settings.model == "ict":
            col.prop(settings, "ict_path")
        elif settings.model == "flame":
            col.prop(settings, "flame_path")
        col.prop(settings, "method")
        col.prop(settings, "device")
        col.prop(settings, "texture_size")
        if method_fits(settings.method):
            col.prop(settings, "expressive_mouth")

        box = layout.box()
        box.label(text="Result")
        box.row().prop(settings, "result_mode", expand=True)
        box.prop(settings, "apply_expression")
        box.prop(settings, "photo_lighting")
        box.prop(settings, "bake_detail")
        row = box.row(align=True)
        index = row.row(align=True)
        index.enabled = not settings.all_faces
        index.prop(settings, "face_index")
        row.prop(settings, "all_faces", toggle=True)
        row.operator("facerecon.find_faces", text="Find Faces", icon="VIEWZOOM")
        if settings.faces_found == 0:
            box.label(text="No face found in the photo", icon="ERROR")
        elif settings.faces_found > 0:
            box.label(text=f"{settings.faces_found} face(s), numbered on the preview (0 = largest)", icon="INFO")
            if settings.face_index >= settings.faces_found and not settings.all_faces:
                box.label(text=f"Face {settings.face_index} does not exist", icon="ERROR")

        choice = engine_choice(context)
        if not choice.ok:
            warn = layout.box()
            warn.alert = True
            warn.label(text="Engine missing", icon="ERROR")
            for part in _wrap(choice.reason, 40):
                warn.label(text=part)

        if job.running:
            layout.progress(factor=job.progress / 100.0, type="BAR", text=f"{job.progress:.0f} %")
            layout.label(text=job.status or "running", icon="TIME")
            layout.label(text="Press Esc to cancel")
        else:
            row = layout.row()
            row.scale_y = 1.6
            row.enabled = choice.ok
            row.operator("facerecon.reconstruct", icon="USER")
            if job.status:
                layout.label(text=job.status, icon="INFO")
        row = layout.row(align=True)
        row.operator("facerecon.import_result", icon="IMPORT")
        row.operator("facerecon.check_engine", icon="VIEWZOOM")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


class FACERECON_UL_shape_keys(bpy.types.UIList):
    """The head's shape keys, each with a slider that can be dragged: a key the face
    controls add to shows its manual value (``importer.key_value_path``)."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        obj = active_data
        row = layout.row(align=True)
        row.label(text=item.name, icon="SHAPEKEY_DATA")
        if index == 0:
            return
        owner, path = importer.key_value_path(obj, item.name)
        row.prop(owner, path, text="", emboss=False)
        if path != "value":
            row.label(text="", icon="DRIVER")  # the face controls add to this key

    def filter_items(self, context, data, propname):
        items = getattr(data, propname)
        flags = [self.bitflag_filter_item] * len(items)
        if self.filter_name:
            pattern = self.filter_name.lower()
            flags = [self.bitflag_filter_item if pattern in kb.name.lower() else 0 for kb in items]
        return flags, []


class FACERECON_PT_sliders(bpy.types.Panel):
    bl_label = "Face Sliders"
    bl_idname = "FACERECON_PT_sliders"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    @classmethod
    def poll(cls, context):
        return active_head(context) is not None

    def draw(self, context):
        layout = self.layout
        obj = active_head(context)
        controls = [p for p in importer.CONTROLS if p in obj]
        if controls:
            col = layout.column(align=True)
            for prop in controls:
                col.prop(obj, f'["{prop}"]', text=prop.replace("_", " ").capitalize(), slider=True)
        rig = importer.pose_rig_of(obj)
        if rig is not None:
            col = layout.column(align=True)
            col.label(text="Head and eyes (bones)")
            for prop in rig.get("facerecon_pose_controls", []):
                if prop in rig:
                    col.prop(rig, f'["{prop}"]', text=prop.replace("_", " ").capitalize(), slider=True)
            row = col.row(align=True)
            row.operator("facerecon.reset_pose", text="Photo Pose", icon="IMAGE_DATA").to_photo = True
            row.operator("facerecon.reset_pose", text="Neutral Pose", icon="ARMATURE_DATA").to_photo = False
        layout.operator("facerecon.photo_camera", icon="CAMERA_DATA")
        keys = obj.data.shape_keys
        if keys is not None:
            layout.label(text=f"Expressions ({len(keys.key_blocks) - 1})")
            layout.template_list("FACERECON_UL_shape_keys", "facerecon", keys, "key_blocks", obj,
                                 "active_shape_key_index", rows=6)
            active = obj.active_shape_key
            if active is not None and obj.active_shape_key_index > 0:
                owner, path = importer.key_value_path(obj, active.name)
                layout.prop(owner, path, text=active.name, slider=True)
        row = layout.row(align=True)
        row.operator("facerecon.reset_expression", icon="LOOP_BACK")
        row.operator("facerecon.remove_controls", icon="UNLINKED")
        if obj.get("facerecon_displacement_image"):
            _draw_detail(layout, context, obj)


def _draw_detail(layout, context, obj) -> None:
    """The head's detail: the animated maps (units, jaw), the bake for this pose with its
    progress, the source (animated mix or baked pose) and the bake into the mesh."""
    box = layout.box()
    units = obj.get("facerecon_detail_units")
    if obj.get("facerecon_detail_baked"):
        box.label(text="Detail baked into the mesh", icon="CHECKMARK")
        return
    if units is not None:
        jaw = " + jaw" if obj.get("facerecon_detail_jaw") is not None else ""
        box.label(text=f"Animated detail: {len(units)} unit(s){jaw}", icon="DRIVER")
        job = context.window_manager.facerecon_job
        if job.running:
            box.progress(factor=job.progress / 100.0, type="BAR", text=job.status or "running")
            box.label(text="Press Esc to cancel")
        else:
            row = box.row()
            row.enabled = engine_choice(context).ok
            row.operator("facerecon.bake_detail_pose", icon="RENDER_STILL")
        source = importer.detail_source(obj)
        row = box.row(align=True)
        row.operator("facerecon.detail_source", text="Animated", icon="DRIVER",
                     depress=source == "ANIMATED").baked = False
        sub = row.row(align=True)
        mat = importer.skin_material(obj)
        sub.enabled = mat is not None and mat.node_tree.nodes.get(importer.DETAIL_BAKED) is not None
        sub.operator("facerecon.detail_source", text="Baked Pose", icon="IMAGE_DATA",
                     depress=source == "BAKED").baked = True
    box.operator("facerecon.bake_detail", icon="MOD_DISPLACE")


class FACERECON_PT_export(bpy.types.Panel):
    bl_label = "Export"
    bl_idname = "FACERECON_PT_export"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        return active_head(context) is not None

    def draw(self, context):
        row = self.layout.row(align=True)
        row.operator("facerecon.export", text="GLB").format = "GLB"
        row.operator("facerecon.export", text="FBX").format = "FBX"


classes = (FACERECON_UL_shape_keys, FACERECON_PT_reconstruct, FACERECON_PT_sliders, FACERECON_PT_export)
