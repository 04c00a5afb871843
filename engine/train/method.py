"""What a learned method must provide to be trained by :class:`engine.train.Trainer`.

A method is an ``nn.Module`` with ``training_step(batch) -> StepResult``; optional
``param_groups(lr)`` (extra keys ``lr_scale`` give per-group learning-rate factors, e.g.
MoFA's reduced rate for depth), ``visuals(batch, result)`` (image grids for TensorBoard)
and ``export_config()`` (what inference needs to rebuild the model). Methods are found by
name in :data:`METHODS` ("module:function" strings resolved lazily, so importing the
trainer never imports every method).
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


METHODS: dict[str, str | Callable[["TrainConfig"], MethodBundle]] = {
    "mofa": "engine.methods.mofa:build_for_training",
}


def register_method(name: str, factory: Callable[["TrainConfig"], MethodBundle]) -> None:
    """Make ``factory(cfg) -> MethodBundle`` available as ``method: name`` in configs."""
    METHODS[name] = factory


def build_method(cfg: "TrainConfig") -> MethodBundle:
    entry = METHODS.get(cfg.method)
    if entry is None and ":" in cfg.method:  # "package.module:factory" for out-of-tree methods
        entry = cfg.method
    if entry is None:
        raise ConfigError(f"unknown method '{cfg.method}'; known: {', '.join(sorted(METHODS))}")
    if isinstance(entry, str):
        module, func = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"method '{cfg.method}' could not be loaded: {exc}") from None
    return entry(cfg)
