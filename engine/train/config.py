"""Training configuration: dataclasses loaded from YAML with dotted ``key=value`` overrides.

A run is fully described by one :class:`TrainConfig`. The YAML file mirrors the dataclass
tree; ``model`` is a free mapping that the method parses into its own dataclass (so each
method owns its options). Overrides are parsed as YAML scalars, so ``optim.lr=3e-4``,
``amp=off`` and ``data.kind=synthetic`` all do what they say.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from engine.errors import ConfigError, UserError  # noqa: F401 (re-exported)


@dataclass
class ParamGroupConfig:
    """One ``optim.groups`` entry: parameters whose name starts with ``match`` (whole dotted
    components: ``encoder.head`` matches ``encoder.head.weight``, not ``encoder.head_depth``)
    train at ``lr_scale`` x the lr of the method's group they come from, with their own
    ``weight_decay`` when given."""

    match: str = ""
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (per-process batch, no LR scaling by world size)."""

    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9  # sgd only
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    schedule: str = "cosine"  # constant | cosine
    warmup_steps: int = 0
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of lr
    # extra learning-rate groups by parameter-name prefix (first match wins); they refine the
    # method's own param_groups(lr): lr_scale multiplies that group's lr_scale
    groups: list[ParamGroupConfig] = field(default_factory=list)


@dataclass
class DataSourceConfig:
    """One ``data.sources`` entry of ``data.kind: mixed``: a data set like ``data:`` itself
    (``kind``, ``root``, ``options``), drawn with probability ∝ ``weight``; image size, head
    model, clip length and seeds come from ``data:``."""

    kind: str = "synthetic"  # synthetic | images | pts | clips
    root: str = ""
    weight: float = 1.0
    n_samples: int = 0  # synthetic corpus size (0 = data.n_samples)
    options: dict[str, Any] = field(default_factory=dict)  # passed to the data set (augment: {...} too)


@dataclass
class DataConfig:
    """Which data set to train on; see ``engine.data.build_dataset``."""

    kind: str = "synthetic"  # synthetic | images | pts | clips | mixed
    root: str = ""  # folder for images/clips (prepared by train/prepare_images.py) or pts (images + .pts)
    image_size: int = 224
    n_samples: int = 100_000  # synthetic corpus size (generated on the fly, seeded per index)
    val_samples: int = 64  # held-out synthetic images (disjoint seeds) or a split of the folder
    seed: int = 1234  # corpus seed (independent of the training seed)
    clip_length: int = 1  # frames per item for clip data
    views_per_identity: int = 1  # synthetic: K independent photos of one person per item (K > 1)
    num_workers: int = 2
    head_model: str = "open"
    head_model_path: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # passed to the dataset; augment: {...} (engine.data.augment)
    sources: list[DataSourceConfig] = field(default_factory=list)  # data.kind=mixed: weighted sub-sources


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is per process (DDP multiplies it by the world size)."""

    method: str = "mofa"
    run_dir: str = "runs/mofa"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_steps: int = 1000
    batch_size: int = 32
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the encoder
    deterministic: bool = False  # torch.use_deterministic_algorithms
    log_every: int = 10
    image_every: int = 500
    eval_every: int = 0  # 0 = only at the end
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    max_bad_steps: int = 20  # abort after this many consecutive non-finite steps
    progress: str = "auto"  # auto (when stderr is a terminal) | on | off
    tensorboard: bool = True
    # staged training: start from another run's weights (training checkpoint, run folder or
    # exported file), or from several, loaded in order (a later one's tensors replace an
    # earlier one's of the same name: e.g. DECA's detail stage from one run, its coarse
    # encoder from another); ignored when this run resumes from its own checkpoint
    init_from: str | list[str] = ""
    init_strict: bool = False  # any missing / unexpected / shape-mismatched tensor is an error
    freeze: list[str] = field(default_factory=list)  # parameter/module name prefixes kept fixed
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)


_BOOL_WORDS = {"true": True, "false": False, "on": True, "off": False, "yes": True, "no": False}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type (ints to floats, lists to tuples...)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        return from_dict(tp, value, where + ".")
    if tp is Any or value is None:
        return value
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:  # Optional[X]
            return _coerce(value, args[0], where)
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise ConfigError(f"config key '{where}' must be true or false, got {value!r}")
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str:
        if isinstance(value, bool):  # `amp: off` in a YAML file
            return "on" if value else "off"
        return str(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{where}' must be of type {getattr(tp, '__name__', tp)}, "
                      f"got {value!r}")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a clear message."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form of a config (tuples become lists) for YAML/checkpoints."""
    def plain(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as YAML)."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
                value = raw.strip()  # YAML 1.1 reads on/off/yes/no as booleans
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}' has an unparsable value: {exc}") from None
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


AMP_MODES = ("auto", "off", "bf16", "fp16")
PROGRESS_MODES = ("auto", "on", "off")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def _check_int(value: Any, key: str, low: int, meaning: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = f" ({meaning})" if meaning else ""
        raise ConfigError(f"config key '{key}' must be an integer >= {low}{extra}, got {value!r}")


def _check_float(value: Any, key: str, low: float, high: float | None = None,
                 low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        if high is not None:
            rng = f"in [{low:g}, {high:g}]"
        else:
            rng = f"{'>' if low_open else '>='} {low:g}"
        raise ConfigError(f"config key '{key}' must be a finite number {rng}, got {value!r}")


def _check_choice(value: Any, key: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}, got {value!r}")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Reject out-of-range values with one sentence naming the key and the allowed range."""
    if cfg.freeze is None:  # `freeze:` left empty in a YAML file
        cfg.freeze = []
    if cfg.optim.groups is None:
        cfg.optim.groups = []
    if cfg.init_from is None:
        cfg.init_from = ""
    if isinstance(cfg.init_from, (list, tuple)):
        if not cfg.init_from or not all(isinstance(p, str) and p for p in cfg.init_from):
            raise ConfigError(f"init_from must be a path or a non-empty list of paths, got {cfg.init_from!r}")
        cfg.init_from = list(cfg.init_from)
    elif not isinstance(cfg.init_from, str):
        raise ConfigError(f"init_from must be a path or a list of paths, got {cfg.init_from!r}")
    _check_int(cfg.batch_size, "batch_size", 1, "items per process and step")
    _check_int(cfg.max_steps, "max_steps", 0, "0 = nothing to train")
    _check_int(cfg.log_every, "log_every", 1)
    _check_int(cfg.image_every, "image_every", 0, "0 = never")
    _check_int(cfg.eval_every, "eval_every", 0, "0 = only at the end")
    _check_int(cfg.ckpt_every, "ckpt_every", 0, "0 = only at the end")
    _check_int(cfg.keep_checkpoints, "keep_checkpoints", 0, "0 = keep all")
    _check_int(cfg.max_bad_steps, "max_bad_steps", 1)
    _check_int(cfg.seed, "seed", 0)
    _check_choice(cfg.amp, "amp", AMP_MODES)
    _check_choice(cfg.progress, "progress", PROGRESS_MODES)
    if cfg.device != "auto":
        try:
            import torch

            dev = torch.device(cfg.device)
        except (RuntimeError, ValueError, TypeError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    o = cfg.optim
    _check_choice(o.name, "optim.name", OPTIMIZERS)
    _check_choice(o.schedule, "optim.schedule", SCHEDULES)
    _check_float(o.lr, "optim.lr", 0.0, low_open=True)
    _check_float(o.weight_decay, "optim.weight_decay", 0.0)
    _check_float(o.momentum, "optim.momentum", 0.0)
    _check_float(o.grad_clip, "optim.grad_clip", 0.0)
    _check_int(o.warmup_steps, "optim.warmup_steps", 0)
    _check_float(o.min_lr_ratio, "optim.min_lr_ratio", 0.0, 1.0)
    if len(o.betas) != 2:
        raise ConfigError(f"config key 'optim.betas' must be two numbers in [0, 1), got {list(o.betas)}")
    for i, b in enumerate(o.betas):
        _check_float(b, f"optim.betas[{i}]", 0.0, 1.0)
        if b >= 1.0:
            raise ConfigError(f"config key 'optim.betas[{i}]' must be a finite number in [0, 1), got {b!r}")
    for i, g in enumerate(o.groups):
        if not isinstance(g.match, str) or not g.match.strip():
            raise ConfigError(f"config key 'optim.groups[{i}].match' must be a parameter name prefix "
                              f"(e.g. encoder.head), got {g.match!r}")
        _check_float(g.lr_scale, f"optim.groups[{i}].lr_scale", 0.0, low_open=True)
        if g.weight_decay is not None:
            _check_float(g.weight_decay, f"optim.groups[{i}].weight_decay", 0.0)
    for i, prefix in enumerate(cfg.freeze):
        if not isinstance(prefix, str) or not prefix.strip():
            raise ConfigError(f"config key 'freeze[{i}]' must be a parameter or module name prefix, "
                              f"got {prefix!r}")
    d = cfg.data
    _check_int(d.num_workers, "data.num_workers", 0)
    _check_int(d.image_size, "data.image_size", 16, "pixels")
    _check_int(d.n_samples, "data.n_samples", 0)
    _check_int(d.val_samples, "data.val_samples", 0)
    _check_int(d.clip_length, "data.clip_length", 1)
    _check_int(d.views_per_identity, "data.views_per_identity", 1)
    if d.views_per_identity > 1 and (d.clip_length > 1 or d.kind != "synthetic"):
        raise ConfigError("config key 'data.views_per_identity' > 1 needs data.kind=synthetic and "
                          "data.clip_length=1 (an item is either a clip or a set of views of one person)")
    _validate_sources(d)
    return cfg


SOURCE_KINDS = ("synthetic", "images", "pts", "clips")


def _validate_sources(d: DataConfig) -> None:
    """``data.sources`` (only with data.kind=mixed) and every ``options.augment``."""
    if d.sources is None:
        d.sources = []
    if d.options is None:
        d.options = {}
    if d.kind != "mixed" and d.sources:
        raise ConfigError(f"config key 'data.sources' needs data.kind=mixed (data.kind is {d.kind!r})")
    if d.kind != "mixed" and "augment" not in d.options:
        return  # nothing to check: the data stack (torch) is not imported for a plain config
    from engine.data.augment import parse_augment

    parse_augment(d.options.get("augment"), "data.options.augment")
    if d.kind != "mixed":
        return
    if not d.sources:
        raise ConfigError("data.kind=mixed needs data.sources: a list of {kind, root, weight, options}")
    for i, s in enumerate(d.sources):
        where = f"data.sources[{i}]"
        _check_choice(s.kind, f"{where}.kind", SOURCE_KINDS)
        _check_float(s.weight, f"{where}.weight", 0.0, low_open=True)
        _check_int(s.n_samples, f"{where}.n_samples", 0, "0 = data.n_samples")
        if s.kind != "synthetic" and not s.root:
            raise ConfigError(f"config key '{where}.root' must name the folder of the {s.kind} source")
        if s.options is None:
            s.options = {}
        parse_augment(s.options.get("augment"), f"{where}.options.augment")
        if d.clip_length > 1 and s.kind in ("images", "pts"):
            raise ConfigError(f"config key '{where}.kind' is {s.kind}, single photos, but data.clip_length="
                              f"{d.clip_length} asks for clips: mix clips with clips (synthetic or clips)")
        if d.clip_length == 1 and s.kind == "clips":
            raise ConfigError(f"config key '{where}.kind' is clips: set data.clip_length > 1 (frames per item) "
                              f"and mix it with clips only")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    data = apply_overrides(data, overrides)
    return validate_config(from_dict(TrainConfig, data))
