"""The method registry: one list of reconstruction methods for inference *and* training.

Every method lives in one module of this package that declares itself with a literal
``METHOD = {...}`` dictionary at top level, e.g. (``engine/methods/mofa.py``)::

    METHOD = {
        "name": "mofa", "kind": "learned", "label": "MoFA (learned encoder)",
        "description": "...", "needs": "a checkpoint (committed default for the open model)",
        "entry": "Mofa", "train_config": "train/configs/mofa.yaml",
        "checkpoints": {"open": "assets/mofa_open_default.pt"}, "aliases": ["learned"], "order": 20,
    }

The registry reads those dictionaries with :mod:`ast` *without importing the modules*, so
listing the methods costs nothing, needs neither PyTorch nor the engine package, and the
Blender add-on (whose Python has no PyTorch) builds its menu from the same list by loading
this one file. ``python -m engine methods`` prints it; ``reconstruct --method``, the
evaluation CLI and ``python -m engine.train`` (``method: NAME``) all resolve names here.

Kinds: ``fit`` (analysis by synthesis), ``learned`` (a network: its ``entry`` class is a
:class:`engine.methods.base.LearnedMethod`), ``hybrid`` (a learned method's prediction
refined by the fit; works with every learned method). Out-of-tree methods call
:func:`register` with a :class:`MethodSpec` whose ``module`` names their own module.

This file must stay importable on its own (standard library only).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MethodSpec", "MethodError", "get", "methods", "names", "register", "default_checkpoint",
           "load_entry", "table"]

KINDS = ("fit", "learned", "hybrid")
PACKAGE_DIR = Path(__file__).resolve().parent
ENGINE_DIR = PACKAGE_DIR.parent


class MethodError(LookupError):
    """An unknown method name or a malformed method declaration (the engine turns it into
    a user-facing error)."""


@dataclass(frozen=True)
class MethodSpec:
    """What a method is and needs; ``entry`` names the class in ``module`` that implements it."""

    name: str
    kind: str
    label: str
    description: str
    module: str
    entry: str
    needs: str = ""
    train_config: str = ""  # repo-relative YAML of its (first) training stage
    checkpoints: Mapping[str, str] = field(default_factory=dict)  # head model -> engine-relative file
    aliases: tuple[str, ...] = ()
    order: int = 100

    @property
    def trainable(self) -> bool:
        return self.kind == "learned"


_FIELDS = {"name", "kind", "label", "description", "entry", "needs", "train_config", "checkpoints", "aliases",
           "order"}
_REGISTERED: dict[str, MethodSpec] = {}
_SCANNED: dict[str, MethodSpec] | None = None


def _spec_from_literal(data: Any, module: str, where: str) -> MethodSpec:
    if not isinstance(data, dict):
        raise MethodError(f"{where}: METHOD must be a dict literal")
    unknown = set(data) - _FIELDS
    missing = {"name", "kind", "label", "description", "entry"} - set(data)
    if unknown or missing:
        raise MethodError(f"{where}: METHOD has unknown keys {sorted(unknown)} / misses {sorted(missing)}")
    if data["kind"] not in KINDS:
        raise MethodError(f"{where}: kind must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    return MethodSpec(module=module, aliases=tuple(data.pop("aliases", ())),
                      checkpoints=dict(data.pop("checkpoints", {})), **data)


def _scan() -> dict[str, MethodSpec]:
    """Read the ``METHOD`` literal of every module in this package (no import)."""
    global _SCANNED
    if _SCANNED is None:
        found: dict[str, MethodSpec] = {}
        for path in sorted(PACKAGE_DIR.glob("*.py")):
            if path.name.startswith("_") or path.name == "registry.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in tree.body:
                if (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "METHOD"):
                    spec = _spec_from_literal(ast.literal_eval(node.value), f"engine.methods.{path.stem}",
                                              str(path))
                    if spec.name in found:
                        raise MethodError(f"method {spec.name!r} is declared twice ({path})")
                    found[spec.name] = spec
        _SCANNED = found
    return _SCANNED


def _all() -> dict[str, MethodSpec]:
    return {**_scan(), **_REGISTERED}


def register(spec: MethodSpec) -> None:
    """Add (or replace) a method at run time, e.g. one that lives outside this package."""
    if spec.kind not in KINDS:
        raise MethodError(f"kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
    _REGISTERED[spec.name] = spec


def methods(kind: str | None = None) -> list[MethodSpec]:
    """All methods (of one ``kind``), in menu order."""
    found = [s for s in _all().values() if kind is None or s.kind == kind]
    return sorted(found, key=lambda s: (s.order, s.name))


def names(include_aliases: bool = False) -> list[str]:
    out = [s.name for s in methods()]
    if include_aliases:
        out += [a for s in methods() for a in s.aliases]
    return out


def get(name: str) -> MethodSpec:
    """The method called ``name`` (or one of its aliases)."""
    table_ = _all()
    if name in table_:
        return table_[name]
    for spec in table_.values():
        if name in spec.aliases:
            return spec
    raise MethodError(f"unknown method {name!r}; choose one of {', '.join(names())} "
                      f"(python -m engine methods lists them)")


def default_checkpoint(spec: MethodSpec, head_model: str) -> Path | None:
    """The committed network of a learned method for ``head_model``, if there is one."""
    rel = spec.checkpoints.get(head_model)
    if not rel:
        return None
    path = ENGINE_DIR / rel
    return path if path.is_file() else None


def default_learned(head_model: str) -> MethodSpec | None:
    """The first learned method with a committed network for ``head_model`` (None: none)."""
    return next((s for s in methods("learned") if default_checkpoint(s, head_model)), None)


def load_entry(spec: MethodSpec) -> Any:
    """Import the method's module and return its ``entry`` class (this one does import)."""
    import importlib

    module = importlib.import_module(spec.module)
    try:
        return getattr(module, spec.entry)
    except AttributeError:
        raise MethodError(f"method {spec.name!r}: {spec.module} has no {spec.entry}") from None


def table() -> str:
    """The human-readable list printed by ``python -m engine methods``."""
    lines = []
    for s in methods():
        alias = f" (alias: {', '.join(s.aliases)})" if s.aliases else ""
        lines.append(f"{s.name:8s} {s.kind:8s} {s.label}{alias}")
        lines.append(f"{'':17s} {s.description}")
        if s.needs:
            lines.append(f"{'':17s} needs: {s.needs}")
        if s.checkpoints:
            ck = ", ".join(f"{m}: {'engine/' + p}" for m, p in sorted(s.checkpoints.items()))
            lines.append(f"{'':17s} default networks: {ck}")
        if s.train_config:
            lines.append(f"{'':17s} train: python -m engine.train --config {s.train_config}")
    return "\n".join(lines)
