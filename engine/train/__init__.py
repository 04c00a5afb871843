"""Training engine shared by the learned methods (``python -m engine.train --config ...``).

See docs/training.md. Public pieces: :class:`Trainer`, :func:`load_config`,
:class:`TrainConfig`, :class:`StepResult`, :class:`MethodBundle`, :func:`register_method`.
"""

from engine.train.config import (ConfigError, DataConfig, OptimConfig, ParamGroupConfig, TrainConfig,
                                 load_config, validate_config)
from engine.train.method import MethodBundle, StepResult, build_method, register_method
from engine.train.trainer import Trainer, TrainingDiverged, export_checkpoint

__all__ = [
    "ConfigError",
    "DataConfig",
    "MethodBundle",
    "OptimConfig",
    "ParamGroupConfig",
    "StepResult",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "build_method",
    "export_checkpoint",
    "load_config",
    "register_method",
    "validate_config",
]
