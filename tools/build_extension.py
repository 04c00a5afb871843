"""Build the Blender extension zip: add-on code + bundled engine + manifest.

    python tools/build_extension.py [--out dist] [--validate-only]

The manifest lives at the repository root; the add-on package (``blender_addon/``) must
be the zip's root package, so the files are staged into a temporary folder
(manifest, add-on modules, ``engine/``) and built with Blender's own extension builder
(``blender_ext.py`` from the installed ``bpy`` module, or ``blender --command extension``).
Model weights, caches, tests and training data are excluded by the manifest's
``[build] paths_exclude_pattern``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "blender_manifest.toml"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.npz", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Networks we trained ourselves and commit (the methods' default checkpoints, engine/methods/registry.py): small,
# and needed for the add-on's "learned"/"hybrid" methods. Other weights stay out.
def _shipped_weights() -> set[Path]:
    """Every learned method's committed default networks, from the method registry (read
    standalone: it needs neither PyTorch nor the engine package)."""
    sys.path.insert(0, str(REPO))
    try:
        from blender_addon.runner import load_method_registry
    finally:
        sys.path.remove(str(REPO))
    registry = load_method_registry(REPO)
    return {(REPO / "engine" / rel).resolve() for m in registry.methods("learned") for rel in m.checkpoints.values()}


SHIPPED_WEIGHTS = _shipped_weights()


def _IGNORE(folder: str, names: list[str]) -> set[str]:
    return {n for n in _SKIP(folder, names) if Path(folder, n).resolve() not in SHIPPED_WEIGHTS}


def blender_ext_command() -> list[str]:
    """Command prefix that runs Blender's extension CLI (build / validate)."""
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.origin:
        root = Path(spec.origin).parent
        for script in sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")):
            return [sys.executable, str(script)]
    blender = shutil.which("blender")
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    raise SystemExit("error: neither the bpy module nor a 'blender' executable is available to build the extension")


def manifest() -> dict:
    with open(MANIFEST, "rb") as fh:
        return tomllib.load(fh)


def stage(dest: Path) -> Path:
    """Lay out the extension's source folder in ``dest`` and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MANIFEST, dest / MANIFEST.name)
    for item in sorted((REPO / "blender_addon").iterdir()):
        if item.name in {"__pycache__", "engine"}:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=_IGNORE)
        else:
            shutil.copy2(item, dest / item.name)
    shutil.copytree(REPO / "engine", dest / "engine", ignore=_IGNORE)
    return dest


def run_cli(args: list[str]) -> None:
    proc = subprocess.run(blender_ext_command() + args, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"error: 'extension {args[0]}' failed with status {proc.returncode}")


def build(out_dir: Path) -> Path:
    """Validate and build; returns the zip path (``<id>-<version>.zip``)."""
    info = manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{info['id']}-{info['version']}.zip"
    with tempfile.TemporaryDirectory(prefix="facerecon_ext_") as tmp:
        source = stage(Path(tmp) / info["id"])
        run_cli(["validate", str(source)])
        run_cli(["build", "--source-dir", str(source), "--output-filepath", str(zip_path)])
    run_cli(["validate", str(zip_path)])
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    zip_path = build(args.out)
    print(f"built {zip_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
