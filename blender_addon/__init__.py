"""Face Reconstruction: a textured, animatable head from one photo, in Blender's sidebar.

Runs from the repository checkout (``blender_addon`` next to ``engine``) and as the
installed extension built by ``tools/build_extension.py`` (engine bundled inside).
The extension's metadata is ``blender_manifest.toml`` at the repository root.
The Blender modules are imported in ``register`` so that ``blender_addon.runner`` (no
``bpy``) can be used from plain Python too.
"""

from __future__ import annotations

_classes: tuple = ()


def register() -> None:
    global _classes
    import bpy

    from . import animation, operators, preferences, properties, ui

    _classes = (
        preferences.FACERECON_AddonPreferences,
        *properties.classes,
        *operators.classes,
        *ui.classes,
        *animation.classes,
    )
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register_properties()
    animation.register_properties()


def unregister() -> None:
    import bpy

    from . import animation, properties, runner

    runner.stop_worker()  # a kept engine must not outlive the add-on that started it (update, disable)
    animation.unregister_properties()
    properties.unregister_properties()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
