"""Operators: reconstruct (background job), import a folder, export, engine check, detail bakes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import importer, runner
from .preferences import addon_prefs, keep_engine, user_data_dir


def engine_choice(context) -> runner.EngineChoice:
    prefs = addon_prefs(context)
    if prefs is None:
        return runner.choose_python()
    return runner.choose_python(prefs.engine_mode, bpy.path.abspath(prefs.python_path) if prefs.python_path else "")


def active_head(context) -> bpy.types.Object | None:
    obj = context.active_object
    if obj is not None and obj.type == "MESH" and obj.get("facerecon_name") is not None:
        return obj
    return None


def _redraw(context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type in {"VIEW_3D", "PREFERENCES"}:
            area.tag_redraw()


class EngineJobOperator:
    """An operator that runs one engine job in a child process: ``execute`` waits for it
    (scripts, tests), ``invoke`` polls it from a timer with progress in the sidebar (Esc
    cancels). Subclasses (with ``bpy.types.Operator``) define a ``timeout`` property,
    ``job_label``, ``_make_job(context)`` (an :class:`runner.EngineJob` or None) and
    ``_import(context, job) -> (status, message)`` (bring the finished job's folder in)."""

    job_label = "Job"
    _job: runner.EngineJob | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return not context.window_manager.facerecon_job.running

    def _engine(self, context) -> tuple[str, runner.EngineChoice] | None:
        """(model path, engine interpreter) for the sidebar's head model; None (reported) when missing."""
        settings = context.scene.facerecon
        model_path = settings.model_path()
        if settings.model in ("ict", "flame") and not model_path:
            self.report({"ERROR"}, f"Choose the {settings.model.upper()} model location first.")
            return None
        choice = engine_choice(context)
        if not choice.ok:
            self.report({"ERROR"}, choice.reason)
            return None
        return model_path, choice

    def _finish(self, context, job: runner.EngineJob) -> set[str]:
        state = context.window_manager.facerecon_job
        state.running = False
        try:
            if job.state != runner.DONE:
                if job.state == runner.CANCELLED:
                    self.report({"WARNING"}, f"{self.job_label} cancelled.")
                else:
                    self.report({"ERROR"}, job.error or "The engine failed.")
                state.status = job.message
                return {"CANCELLED"}
            try:
                status, message = self._import(context, job)
            except Exception as exc:  # the import rolled itself back
                self.report({"ERROR"}, f"Import failed: {exc}")
                state.status = f"import failed: {exc}"
                return {"CANCELLED"}
            warnings = importer.result_warnings(job.out_dir)
            state.status = status + (" (see the warning)" if warnings else "")
            state.progress = 100.0
            if warnings:  # the engine doubts its own result: say so where the artist looks
                self.report({"WARNING"}, f"{message}, but: " + "; ".join(warnings))
            else:
                self.report({"INFO"}, message)
            return {"FINISHED"}
        finally:
            job.cleanup()
            _redraw(context)

    # -- synchronous path (scripts, tests) ----------------------------------------
    def execute(self, context):
        job = self._make_job(context)
        if job is None:
            return {"CANCELLED"}
        job.start()
        job.wait(timeout=self.timeout or None)
        return self._finish(context, job)

    # -- interactive path -------------------------------------------------------------
    def invoke(self, context, event):
        job = self._make_job(context)
        if job is None:
            return {"CANCELLED"}
        job.start()
        if job.state == runner.FAILED:
            return self._finish(context, job)
        self._job = job
        state = context.window_manager.facerecon_job
        state.running, state.progress, state.status = True, 0.0, "starting the engine"
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC":
            job.cancel()
            self._stop_timer(context)
            return self._finish(context, job)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job.poll()
        state = context.window_manager.facerecon_job
        state.progress = 100.0 * job.fraction
        state.status = f"{job.message} ({job.elapsed:.0f} s) - Esc cancels"
        _redraw(context)
        if job.state == runner.RUNNING:
            return {"PASS_THROUGH"}
        self._stop_timer(context)
        return self._finish(context, job)

    def cancel(self, context):  # Blender closes the window / file while running
        if self._job is not None:
            self._job.cancel()
        self._stop_timer(context)
        context.window_manager.facerecon_job.running = False

    def _stop_timer(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


class FACERECON_OT_reconstruct(EngineJobOperator, bpy.types.Operator):
    """Reconstruct a textured, animatable head from the photo (runs in the background; Esc cancels)"""

    bl_idname = "facerecon.reconstruct"
    bl_label = "Reconstruct from Photo"
    bl_options = {"REGISTER", "UNDO"}
    job_label = "Reconstruction"

    photo: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE"},
                          description="Overrides the sidebar's photo (for scripts)")
    timeout: bpy.props.FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                                     description="Seconds before a synchronous run gives up (0: no limit)")

    # -- shared -------------------------------------------------------------------
    def _make_job(self, context) -> runner.EngineJob | None:
        settings = context.scene.facerecon
        photo = bpy.path.abspath(self.photo or settings.photo)
        if not photo:
            self.report({"ERROR"}, "Pick a photo first.")
            return None
        if not os.path.isfile(photo):
            self.report({"ERROR"}, f"The photo '{photo}' does not exist.")
            return None
        engine = self._engine(context)
        if engine is None:
            return None
        model_path, choice = engine
        request = runner.ReconstructRequest(photo=photo, model=settings.model, model_path=model_path,
                                            method=settings.method, device=settings.device,
                                            face="all" if settings.all_faces else settings.face_index,
                                            more_photos=tuple(bpy.path.abspath(p) for p in [settings.more_photos] if p),
                                            fit_options=settings.fit_options(),
                                            texture_size=int(settings.texture_size))
        return runner.EngineJob(request, choice, data_dir=user_data_dir(), keep=keep_engine(context))

    def _import(self, context, job: runner.EngineJob) -> tuple[str, str]:
        heads = import_heads(context, job.request.head_folders(job.out_dir), keep=True)
        names = ", ".join(o.name for o in heads)
        shared = heads[0].get("facerecon_same_person_photos")
        of = f" (one identity from {shared} photos)" if shared else ""
        return (f"{names}: {len(heads[0].data.vertices)} vertices in {job.elapsed:.1f} s{of}",
                f"Reconstructed '{names}' in {job.elapsed:.1f} s{of}")


def import_heads(context, folders: list[Path], keep: bool = False) -> list:
    """Import result folders with the sidebar's options, new heads side by side at the 3D cursor
    as the faces stand in their photo (one folder: at the cursor); all selected, the first
    active. ``keep``: the folders are a job's temporary ones (a head with animated detail keeps
    a copy)."""
    settings = context.scene.facerecon
    heads = []
    for folder, spot in zip(folders, importer.side_by_side(folders, context.scene.cursor.location)):
        obj = importer.import_result(
            context, folder, replace=settings.result_mode == "REPLACE",
            apply_expression=settings.apply_expression, photo_lighting=settings.photo_lighting,
            bake_detail=settings.bake_detail, at=spot)
        if keep:
            keep_result_folder(obj, folder)
        heads.append(obj)
    for obj in heads:
        obj.select_set(True)
    if heads:
        context.view_layer.objects.active = heads[0]
    return heads


#: Where result folders of heads with animated detail are kept (inside the add-on's user folder).
KEPT_RESULTS = "results"


def keep_result_folder(obj, folder: Path) -> Path | None:
    """Copy a job's temporary output folder into the user folder's ``results/`` when the head
    has animated detail: *Bake Detail for This Pose* runs the engine on that folder later (the
    job's own folder is removed after the import). Returns the kept folder (None: nothing kept)."""
    if obj.get("facerecon_detail_units") is None:
        return None
    name = f"{bpy.path.clean_name(obj.name)}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    keep = Path(user_data_dir()) / KEPT_RESULTS / name
    n = 1
    while keep.exists():
        n += 1
        keep = keep.with_name(f"{name}-{n}")
    shutil.copytree(folder, keep)
    obj["facerecon_folder"] = str(keep)
    return keep


class FACERECON_OT_import_result(bpy.types.Operator):
    """Import an 'engine reconstruct' output folder (e.g. computed on another machine)"""

    bl_idname = "facerecon.import_result"
    bl_label = "Import Result Folder"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        folder = Path(bpy.path.abspath(self.directory))
        folders = [folder]
        if (folder / "batch.json").is_file():  # a batch's folder: every face it holds
            folders = [i["folder"] for i in runner.batch_items(folder) or [] if i.get("folder")]
            if not folders:
                self.report({"ERROR"}, f"Import failed: the batch in {folder} holds no reconstructed face")
                return {"CANCELLED"}
        try:
            heads = import_heads(context, folders)
        except Exception as exc:
            self.report({"ERROR"}, f"Import failed: {exc}")
            return {"CANCELLED"}
        names = ", ".join(o.name for o in heads)
        warnings = importer.result_warnings(folder)
        if warnings:
            self.report({"WARNING"}, f"Imported '{names}', but: " + "; ".join(warnings))
        else:
            self.report({"INFO"}, f"Imported '{names}'")
        return {"FINISHED"}


#: The numbered preview *Find Faces* writes, inside the add-on's user folder.
FACES_PREVIEW = "faces_preview.png"


class FACERECON_OT_find_faces(bpy.types.Operator):
    """Find the faces in the photo and number them on the preview (the Face index to reconstruct)"""

    bl_idname = "facerecon.find_faces"
    bl_label = "Find Faces"

    timeout: bpy.props.FloatProperty(name="Timeout", default=120.0, min=1.0, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return bool(context.scene.facerecon.photo) and not context.window_manager.facerecon_job.running

    def execute(self, context):
        from . import ui

        settings = context.scene.facerecon
        photo = bpy.path.abspath(settings.photo)
        choice = engine_choice(context)
        preview = Path(user_data_dir()) / FACES_PREVIEW
        if preview.exists():
            preview.unlink()
        found = runner.find_faces(choice, photo, preview, data_dir=user_data_dir(), timeout=self.timeout,
                                  keep=keep_engine(context))
        if found.error:
            self.report({"ERROR"}, found.error)
            return {"CANCELLED"}
        image = ui.update_photo_preview(settings, found.preview) if found.preview else None
        if image is not None:
            image.pack()  # the preview belongs to the .blend, not to a file the next search replaces
        settings.faces_found = len(found.faces)
        if not found.faces:
            self.report({"WARNING"}, "No face found in the photo.")
            return {"FINISHED"}
        if settings.face_index >= len(found.faces):
            settings.face_index = 0
        self.report({"INFO"}, f"{len(found.faces)} face(s) found, numbered on the preview (0 = the largest).")
        return {"FINISHED"}


class FACERECON_OT_check_engine(bpy.types.Operator):
    """Check what the engine needs: PyTorch, the engine Python, the engine and the head model"""

    bl_idname = "facerecon.check_engine"
    bl_label = "Check Engine"

    def execute(self, context):
        settings = context.scene.facerecon if context.scene else None
        model = settings.model if settings else "open"
        model_path = settings.model_path() if settings else ""
        lines = runner.check_engine(engine_choice(context), model, model_path, data_dir=user_data_dir())
        state = context.window_manager.facerecon_job
        missing = [text for ok, text in lines if not ok]
        for ok, text in lines:
            self.report({"INFO"} if ok else {"WARNING"}, text)
        state.status = ("engine ready" if not missing else "missing: " + missing[0])
        if missing:
            self.report({"ERROR"}, "Engine not ready: " + "; ".join(missing))
            return {"CANCELLED"}
        self.report({"INFO"}, "Engine ready")
        return {"FINISHED"}


class FACERECON_OT_bake_detail(bpy.types.Operator):
    """Move the mesh and all shape keys by the detail map, and each expression unit's detail into its
    shape key (keeps shape keys exportable)"""

    bl_idname = "facerecon.bake_detail"
    bl_label = "Bake Detail into Mesh"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return obj is not None and obj.get("facerecon_displacement_image") and not obj.get("facerecon_detail_baked")

    def execute(self, context):
        obj = active_head(context)
        try:
            largest = importer.bake_detail(obj)
        except importer.ImportFailed as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        units = len(obj.get("facerecon_detail_units", {}))
        what = "the neutral detail map into the mesh and every shape key"
        if units:
            what += f", {units} expression unit map(s) into their shape keys"
            if obj.get("facerecon_detail_jaw") is not None:
                what += "; the jaw's detail map is not baked (no shape key)"
        if importer.detail_source(obj) == "BAKED":
            what += "; the map baked for one pose is not baked into the mesh"
        self.report({"INFO"}, f"Baked {what} of '{obj.name}' (largest offset {largest * 1000:.2f} mm)")
        return {"FINISHED"}


class FACERECON_OT_bake_detail_pose(EngineJobOperator, bpy.types.Operator):
    """Compute the detail map of the current expression and jaw with the detail network and show it
    (runs the engine in the background; Esc cancels)"""

    bl_idname = "facerecon.bake_detail_pose"
    bl_label = "Bake Detail for This Pose"
    bl_options = {"REGISTER", "UNDO"}
    job_label = "Detail bake"

    timeout: bpy.props.FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                                     description="Seconds before a synchronous run gives up (0: no limit)")

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return (super().poll(context) and obj is not None and obj.get("facerecon_detail_units") is not None
                and not obj.get("facerecon_detail_baked"))

    def _make_job(self, context) -> runner.EngineJob | None:
        obj = active_head(context)
        folder = obj.get("facerecon_folder")
        if not folder:
            self.report({"ERROR"}, f"'{obj.name}' does not know its result folder; import the folder again.")
            return None
        choice = engine_choice(context)
        if not choice.ok:
            self.report({"ERROR"}, choice.reason)
            return None
        self._target = obj.name
        request = runner.BakeDetailRequest(result_dir=str(folder), pose=importer.detail_pose(context, obj))
        return runner.EngineJob(request, choice, data_dir=user_data_dir())

    def _import(self, context, job: runner.EngineJob) -> tuple[str, str]:
        obj = bpy.data.objects.get(getattr(self, "_target", ""))
        if obj is None:
            raise importer.ImportFailed("the head was removed while its detail was baked")
        importer.use_baked_detail(obj, job.out_dir / runner.BakeDetailRequest.MAP_FILE)
        return (f"{obj.name}: detail baked for this pose in {job.elapsed:.1f} s",
                f"Baked the detail of '{obj.name}' for this pose ({job.elapsed:.1f} s); "
                "'Animated' goes back to the slider-driven detail")


class FACERECON_OT_detail_source(bpy.types.Operator):
    """Take the head's detail from the slider-driven mix, or from the map baked for one pose"""

    bl_idname = "facerecon.detail_source"
    bl_label = "Detail Source"
    bl_options = {"REGISTER", "UNDO"}

    baked: BoolProperty(name="Baked pose", default=False,
                        description="The map baked for one pose (else the animated mix of the sliders)")

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return obj is not None and importer.detail_source(obj) is not None

    def execute(self, context):
        obj = active_head(context)
        try:
            importer.set_detail_source(obj, self.baked)
        except importer.ImportFailed as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class FACERECON_OT_reset_expression(bpy.types.Operator):
    """Set every expression slider and face control to zero (neutral face)"""

    bl_idname = "facerecon.reset_expression"
    bl_label = "Neutral Expression"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return active_head(context) is not None

    def execute(self, context):
        importer.reset_expression(active_head(context))
        return {"FINISHED"}


class FACERECON_OT_reset_pose(bpy.types.Operator):
    """Put the head's bones back to the photo's fitted pose, or to the neutral rest pose"""

    bl_idname = "facerecon.reset_pose"
    bl_label = "Reset Pose"
    bl_options = {"REGISTER", "UNDO"}

    to_photo: BoolProperty(name="Photo Pose", description="Photo's fitted pose (else all rotations zero)",
                           default=True)

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return obj is not None and importer.pose_rig_of(obj) is not None

    def execute(self, context):
        importer.reset_pose(importer.pose_rig_of(active_head(context)), self.to_photo)
        return {"FINISHED"}


class FACERECON_OT_photo_camera(bpy.types.Operator):
    """See the head as the photo did: a camera where the photographer stood, the photo behind
    the head; it becomes the scene's camera and the render size the photo's"""

    bl_idname = "facerecon.photo_camera"
    bl_label = "Photo Camera"
    bl_options = {"REGISTER", "UNDO"}

    arrange: BoolProperty(name="Arrange the group", default=True,
                          description="Move the heads of the photo's other faces to where the camera sees them "
                                      "as the photo does (a group photo)")
    in_renders: BoolProperty(name="Photo in renders", default=False,
                             description="Render the head on the photo: the head's photo lighting becomes the "
                                         "scene's world, with the photo behind the head for the camera, and the "
                                         "view transform Standard (the photo's own colours)")

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return obj is not None and obj.get("facerecon_K") is not None

    def execute(self, context):
        from .photo_camera import PhotoCameraError, add_photo_camera

        try:
            made = add_photo_camera(context, active_head(context), arrange=self.arrange, in_renders=self.in_renders)
        except PhotoCameraError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"} if made.photo is not None else {"WARNING"},
                    "; ".join([f"{made.camera.name}: the head as the photo shows it", *made.notes]))
        return {"FINISHED"}


class FACERECON_OT_remove_controls(bpy.types.Operator):
    """Remove the jaw/eye control drivers so every shape key is a free slider"""

    bl_idname = "facerecon.remove_controls"
    bl_label = "Free All Sliders"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = active_head(context)
        return obj is not None and obj.get("facerecon_driven_keys")

    def execute(self, context):
        importer.remove_face_controls(active_head(context))
        return {"FINISHED"}


EXPORT_FORMATS = [("GLB", "glTF Binary (.glb)", "Godot, Unity (glTFast), Unreal, three.js"),
                  ("FBX", "FBX (.fbx)", "Unity, Unreal")]


def export_head(context, obj: bpy.types.Object, filepath: str, fmt: str) -> None:
    """Export the head (and its rig) with shape keys kept as morph targets / blend shapes."""
    selected = [o for o in context.view_layer.objects if o.select_get()]
    active = context.view_layer.objects.active
    targets = [obj] + ([obj.parent] if obj.parent is not None else [])
    try:
        for o in context.view_layer.objects:
            o.select_set(o in targets)
        context.view_layer.objects.active = obj
        if fmt == "GLB":
            # No modifiers applied (they would drop the shape keys); keys export as morph targets.
            result = bpy.ops.export_scene.gltf(
                filepath=filepath, export_format="GLB", use_selection=True, export_apply=False,
                export_morph=True, export_morph_normal=True, export_texcoords=True, export_normals=True,
                export_materials="EXPORT", export_yup=True, export_animations=False)
        else:
            result = bpy.ops.export_scene.fbx(
                filepath=filepath, use_selection=True, object_types={"MESH", "ARMATURE"},
                use_mesh_modifiers=False, mesh_smooth_type="FACE", add_leaf_bones=False, bake_anim=False,
                path_mode="COPY", embed_textures=True, apply_scale_options="FBX_SCALE_UNITS")
        if "FINISHED" not in result:
            raise RuntimeError(f"the {fmt} exporter did not finish")
    finally:
        for o in context.view_layer.objects:
            o.select_set(o in selected)
        context.view_layer.objects.active = active


class FACERECON_OT_export(bpy.types.Operator):
    """Export the active head for a game engine with its shape keys"""

    bl_idname = "facerecon.export"
    bl_label = "Export Head"

    format: EnumProperty(name="Format", items=EXPORT_FORMATS, default="GLB")
    filepath: StringProperty(name="File", subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.glb;*.fbx", options={"HIDDEN"})
    check_existing: BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return active_head(context) is not None

    def invoke(self, context, event):
        obj = active_head(context)
        base = bpy.path.abspath("//") or str(Path.home())
        self.filepath = str(Path(base) / f"{bpy.path.clean_name(obj.name)}.{self.format.lower()}")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = active_head(context)
        ext = "." + self.format.lower()
        filepath = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ext)
        try:
            export_head(context, obj, filepath, self.format)
        except Exception as exc:
            self.report({"ERROR"}, f"Export failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {filepath}")
        return {"FINISHED"}


classes = (
    FACERECON_OT_reconstruct,
    FACERECON_OT_import_result,
    FACERECON_OT_check_engine,
    FACERECON_OT_find_faces,
    FACERECON_OT_bake_detail,
    FACERECON_OT_bake_detail_pose,
    FACERECON_OT_detail_source,
    FACERECON_OT_reset_expression,
    FACERECON_OT_reset_pose,
    FACERECON_OT_photo_camera,
    FACERECON_OT_remove_controls,
    FACERECON_OT_export,
)
