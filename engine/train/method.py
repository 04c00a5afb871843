"""What a learned method must provide to be trained by :class:`engine.train.Trainer`.

A method is an ``nn.Module`` with ``training_step(batch) -> StepResult``; optional
``param_groups(lr)`` (extra keys ``lr_scale`` give per-group learning-rate factors, e.g.
MoFA's reduced rate for depth), ``visuals(batch, result)`` (image grids for TensorBoard)
and ``export_config()`` (what inference needs to rebuild the model). Learned methods
subclass :class:`engine.methods.base.LearnedMethod`, which provides all of these.

A config's ``method: NAME`` is looked up in the one method registry
(:mod:`engine.methods.registry`, the same list inference and the Blender panel use).
``method: package.module:factory`` names a factory ``factory(cfg) -> MethodBundle``
outside the engine: that imports and runs the module's code, so a training config is as
trusted as a script. :func:`register_method` adds a factory by name at run time (tests,
notebooks).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from engine.train.config import ConfigError

if TYPE_CHECKING:
    from engine.train.config import TrainConfig


@dataclass
class StepResult:
    """Scalar ``loss`` to minimise, per-term ``scalars`` for logging, ``outputs`` for visuals."""

    loss: torch.Tensor
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodBundle:
    """A method ready to train: the module and its train/validation data sets."""

    model: nn.Module
    train_set: Dataset
    val_set: Dataset | None = None
    collate_fn: Callable | None = None


_FACTORIES: dict[str, Callable[["TrainConfig"], MethodBundle]] = {}


def register_method(name: str, factory: Callable[["TrainConfig"], MethodBundle]) -> None:
    """Make ``factory(cfg) -> MethodBundle`` available as ``method: name`` in configs."""
    _FACTORIES[name] = factory


def build_method(cfg: "TrainConfig") -> MethodBundle:
    """The method of ``cfg.method`` with its data sets (see the module docstring)."""
    from engine.methods import registry

    factory = _FACTORIES.get(cfg.method)
    if factory is None and ":" in cfg.method:  # "package.module:factory" for out-of-tree methods
        module, func = cfg.method.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"method '{cfg.method}' could not be loaded: {exc}") from None
    if factory is None:
        try:
            spec = registry.get(cfg.method)
        except registry.MethodError:
            trainable = [s.name for s in registry.methods("learned")] + sorted(_FACTORIES)
            raise ConfigError(f"unknown method '{cfg.method}'; trainable methods: {', '.join(trainable)}") from None
        if not spec.trainable:
            raise ConfigError(f"method '{spec.name}' ({spec.kind}) has nothing to train; trainable methods: "
                              f"{', '.join(s.name for s in registry.methods('learned'))}")
        factory = registry.load_entry(spec).build_for_training
    return factory(cfg)
