"""The training loop shared by all learned methods.

Headless on CPU or CUDA; AMP (bf16 autocast, or fp16 with a GradScaler) and channels-last
on CUDA; DDP when launched by torchrun; seeded; resumable bit-for-bit from atomic
checkpoints (model, optimiser, scaler, scheduler, RNG states and the data position);
a NaN/inf guard that skips a step on every rank, logs it, and aborts after
``max_bad_steps`` consecutive bad steps; tqdm on rank 0; TensorBoard scalars and image
grids plus a ``metrics.jsonl`` log that scripts and tests can read.

Staged training: ``init_from`` starts a run from another run's weights (matching names and
shapes), ``freeze`` keeps parameter groups fixed (out of the optimiser, their modules in
eval mode), ``optim.groups`` gives parameter groups their own learning rate / weight decay.
Batches may carry a group dimension (``image (B, T, 3, S, S)``: K views of one identity or
T frames of one clip); throughput counts images, evaluation weights by items.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import types
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.errors import ModelFileError, TrainingDiverged, UserError  # noqa: F401 (re-exported)
from engine.train import state as st
from engine.train.config import ConfigError, TrainConfig, to_dict, validate_config
from engine.train.distributed import DistInfo, all_true, barrier, cleanup, init_distributed
from engine.train.method import MethodBundle, StepResult, build_method
from engine.train.sampler import ResumableSampler

FORMAT = st.TRAIN_FORMAT
EXPORT_FORMAT = st.EXPORT_FORMAT
SKIPPED_IMAGES_KEY = "skipped_images"  # per-item count of unreadable files a data set replaced
_FEW = 5  # how many key names reports and errors list


class _StepModule(nn.Module):
    """Routes DDP's forward to ``method.training_step`` so gradients sync as usual."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any) -> StepResult:
        return self.method.training_step(batch)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was requested but CUDA is not available")
    return dev


def _is_image_like(t: torch.Tensor) -> bool:
    """(..., C, H, W) floating tensors with C <= 4 and H, W >= 8: images, possibly grouped."""
    return (t.dim() >= 4 and t.is_floating_point() and t.shape[-3] <= 4
            and t.shape[-2] >= 8 and t.shape[-1] >= 8)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """Channels innermost per image; for (B, T, C, H, W) too, so that ``flatten(0, 1)``
    (or ``view(B*T, C, H, W)``) gives a channels-last (B*T, C, H, W) without a copy."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    lead = t.dim() - 3
    perm = list(range(lead)) + [lead + 1, lead + 2, lead]
    back = list(range(lead)) + [t.dim() - 1, lead, lead + 1]
    return t.permute(*perm).contiguous().permute(*back)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a (nested) batch to ``device``; with ``channels_last`` image tensors of any
    leading shape ((B, C, H, W) or grouped (B, T, C, H, W)) are stored channels-last."""
    if torch.is_tensor(batch):
        non_blocking = device.type == "cuda"
        t = batch.to(device, non_blocking=non_blocking)
        if channels_last and _is_image_like(t):
            t = _channels_last(t)
        return t
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if torch.is_tensor(batch):
        return batch if batch.dim() >= 1 else None
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def batch_counts(batch: Any) -> tuple[int, int]:
    """``(items, images)`` of a collated batch.

    Items are the leading dimension. Images count every picture: for a dict batch the
    ``image`` (or ``images``) entry of shape (B, ..., C, H, W) holds B x ... images, so a
    grouped batch (B, T, 3, S, S) counts B*T; without such an entry every item is one image.
    """
    first = _first_tensor(batch)
    items = int(first.shape[0]) if first is not None else 0
    images = items
    img = None
    if isinstance(batch, dict):
        img = batch.get("image", batch.get("images"))
    elif isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        img = batch[0]
    if torch.is_tensor(img) and img.dim() >= 4:
        images = int(math.prod(img.shape[:-3]))
    return items, images


def name_matches(name: str, prefix: str) -> bool:
    """``prefix`` names ``name`` or one of its parents (whole dotted components)."""
    return name == prefix or name.startswith(prefix + ".")


def _few(names: list[str]) -> str:
    more = f" (+{len(names) - _FEW} more)" if len(names) > _FEW else ""
    return ", ".join(names[:_FEW]) + more


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen module: always eval (BatchNorm statistics and dropout stay off)."""
    return nn.Module.train(self, False)


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> tuple[list[str], list[str]]:
    """Set ``requires_grad=False`` on parameters under ``prefixes`` and pin the frozen
    modules to eval mode (their ``train`` is replaced, so later ``.train()`` calls on the
    model leave them in eval). Returns the frozen parameter and module names."""
    if not prefixes:
        return [], []
    params = dict(model.named_parameters())
    modules = {n: m for n, m in model.named_modules() if n}
    for prefix in prefixes:
        if not any(name_matches(n, prefix) for n in params) and \
                not any(name_matches(n, prefix) for n in modules):
            tops = sorted({n.split(".")[0] for n in params})
            raise ConfigError(f"freeze prefix '{prefix}' matches no parameter or module of the "
                              f"model (its top-level names: {_few(tops)})")
    frozen = [n for n in params if any(name_matches(n, pr) for pr in prefixes)]
    frozen_set = set(frozen)
    if not any(p.requires_grad for n, p in params.items() if n not in frozen_set):
        raise ConfigError(f"freeze {list(prefixes)} leaves no trainable parameter; freeze less")
    for n in frozen:
        params[n].requires_grad_(False)
    chosen = []
    for n, m in modules.items():
        own = [pn for pn, _ in m.named_parameters(prefix=n)]
        if any(name_matches(n, pr) for pr in prefixes) or (own and all(x in frozen_set for x in own)):
            chosen.append(n)
    pinned = sorted({n for n in modules for c in chosen if name_matches(n, c)})
    for n in pinned:
        modules[n].train = types.MethodType(_stay_in_eval, modules[n])
        nn.Module.train(modules[n], False)
    return frozen, pinned


def _resolve_init_source(path: str) -> Path:
    """A checkpoint file, or a run folder's newest ``checkpoints/ckpt_*.pt`` (else ``final.pt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = st.latest_checkpoint(p / "checkpoints") or st.latest_checkpoint(p)
        if found is None and (p / "final.pt").is_file():
            found = p / "final.pt"
        if found is None:
            raise ConfigError(f"init_from={p} is a folder without checkpoints/ckpt_*.pt or final.pt")
        return found
    if not p.exists():
        raise ConfigError(f"init_from={p} does not exist")
    return p


def load_matching_weights(model: nn.Module, weights: dict[str, torch.Tensor], strict: bool = False,
                          source: str = "init_from") -> dict[str, Any]:
    """Copy the tensors of ``weights`` whose name and shape match ``model.state_dict()``
    (cast to the model's dtype, e.g. float16 exports to float32) via the model's own
    ``load_state_dict``. Returns what was loaded, missing, unexpected and mismatched;
    with ``strict`` any of the last three is a ConfigError."""
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for k, v in weights.items():
        if k not in own:
            continue
        t = own[k]
        if tuple(v.shape) != tuple(t.shape):
            mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(t.shape)}")
        else:
            loaded[k] = v.detach().to(device=t.device, dtype=t.dtype)
    unexpected = [k for k in weights if k not in own]
    missing = [k for k in own if k not in weights]
    if strict and (missing or unexpected or mismatched):
        parts = [f"{label} {_few(names)}" for label, names in
                 (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched))
                 if names]
        raise ConfigError(f"{source} does not match the model with init_strict=true: {'; '.join(parts)}")
    if not loaded:
        raise ConfigError(f"{source} has no tensor matching this model by name and shape (its "
                          f"names: {_few(list(weights))}; the model's: {_few(list(own))})")
    model.load_state_dict({**own, **loaded})
    return {"source": source, "loaded": len(loaded), "total": len(own),
            "missing": len(missing), "unexpected": len(unexpected), "mismatched": len(mismatched),
            "missing_keys": missing[:_FEW], "unexpected_keys": unexpected[:_FEW],
            "mismatched_keys": mismatched[:_FEW]}


def make_grid(images: torch.Tensor, nrow: int = 4, pad: int = 2) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> one (3, H', W') grid image (torchvision is not available)."""
    images = images.detach().float().clamp(0, 1).cpu()
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = -(-b // ncol)
    grid = images.new_ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(b):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def _lr_lambda(cfg: TrainConfig):
    o = cfg.optim

    def f(step: int) -> float:
        if o.warmup_steps > 0 and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        span = max(cfg.max_steps - o.warmup_steps, 1)
        p = min(max(step - o.warmup_steps, 0) / span, 1.0)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    if o.schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.schedule must be constant or cosine, got '{o.schedule}'")
    return f


def build_param_groups(cfg: TrainConfig, method: nn.Module) -> list[dict[str, Any]]:
    """Optimiser groups: the method's ``param_groups(lr)`` (or one group), refined by
    ``optim.groups``.

    Frozen parameters (``requires_grad=False``) are left out. Inside each of the method's
    groups, a parameter goes to the first ``optim.groups`` entry whose ``match`` prefix
    names it: it then trains at ``optim.lr x method lr_scale x entry lr_scale`` with the
    entry's ``weight_decay`` (else the method group's, else ``optim.weight_decay``); the
    others stay in the method's group. Every group gets a ``name`` for the logs.
    """
    o = cfg.optim
    names = {id(p): n for n, p in method.named_parameters()}
    if hasattr(method, "param_groups"):
        base = method.param_groups(o.lr)
    else:
        base = [{"params": list(method.parameters())}]
    rules = list(o.groups)
    used = [0] * len(rules)
    out: list[dict[str, Any]] = []
    for bi, group in enumerate(base):
        g = dict(group)
        params = [p for p in g.pop("params") if p.requires_grad]
        scale = float(g.pop("lr_scale", 1.0))
        base_name = str(g.pop("name", "default" if bi == 0 else f"group{bi}"))
        buckets: dict[int, list[nn.Parameter]] = {}
        for p in params:
            n = names.get(id(p), "")
            idx = next((i for i, r in enumerate(rules) if name_matches(n, r.match)), -1)
            buckets.setdefault(idx, []).append(p)
        for idx in [-1, *range(len(rules))]:
            ps = buckets.get(idx)
            if not ps:
                continue
            new = dict(g, params=ps)
            factor = scale
            new["name"] = base_name
            if idx >= 0:
                r = rules[idx]
                used[idx] += len(ps)
                factor *= float(r.lr_scale)
                if r.weight_decay is not None:
                    new["weight_decay"] = float(r.weight_decay)
                new["name"] = r.match if len(base) == 1 else f"{base_name}:{r.match}"
            new["lr"] = o.lr * factor
            new.setdefault("weight_decay", o.weight_decay)
            out.append(new)
    for i, r in enumerate(rules):
        if not used[i]:
            trainable = [n for n, p in method.named_parameters() if p.requires_grad]
            raise ConfigError(f"optim.groups[{i}].match '{r.match}' matches no trainable parameter "
                              f"(trainable names look like {_few(trainable)})")
    if not out:
        raise ConfigError("the method has no trainable parameter (check freeze)")
    return out


def _optimizer(cfg: TrainConfig, method: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = build_param_groups(cfg, method)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ConfigError(f"optim.name must be adam, adamw or sgd, got '{o.name}'")


class Trainer:
    """Build with a config (and optionally a ready :class:`MethodBundle`), then ``train()``."""

    def __init__(self, cfg: TrainConfig, bundle: MethodBundle | None = None) -> None:
        self.cfg = validate_config(cfg)
        device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(device.type)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.is_main = self.dist.is_main
        st.seed_everything(cfg.seed, self.dist.rank)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = not cfg.deterministic

        amp = cfg.amp
        if amp == "auto":
            amp = "bf16" if device.type == "cuda" else "off"
        if amp not in ("off", "bf16", "fp16"):
            raise ConfigError(f"amp must be auto, off, bf16 or fp16, got '{cfg.amp}'")
        if amp == "fp16" and device.type != "cuda":
            raise ConfigError("amp=fp16 needs CUDA; use amp=off or amp=bf16 on CPU")
        self.amp = amp
        self.channels_last = bool(cfg.channels_last and device.type == "cuda")

        bundle = bundle or build_method(cfg)
        self.method = bundle.model.to(device)
        if self.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.train_set, self.val_set, self.collate_fn = bundle.train_set, bundle.val_set, bundle.collate_fn
        self.frozen, self.frozen_modules = freeze_parameters(self.method, list(cfg.freeze))
        self.optimizer = _optimizer(cfg, self.method)
        # what the config asks of each group; re-applied after a resume (see load_state_dict)
        self._group_config = [{k: g[k] for k in ("lr", "weight_decay", "betas", "momentum", "name")
                               if k in g} for g in self.optimizer.param_groups]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        self.scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
        step_module: nn.Module = _StepModule(self.method)
        if cfg.compile:
            step_module = torch.compile(step_module)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            step_module = DDP(step_module, device_ids=ids)
        self.step_module = step_module

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.bad_streak = 0
        self.skipped = 0
        self.images_seen = 0  # images (B*T per step, all ranks) trained on since step 0
        self.skipped_images = 0  # unreadable files the data set replaced (all ranks)
        self._skipped_images_local = 0  # this rank's count since the last all-reduce
        self._warned_skipped_images = False
        self.resumed_from: Path | None = None
        self.init_report: dict[str, Any] | None = None
        self.history: list[tuple[int, float]] = []
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._stop = False
        self._writer = None
        if len(self.train_set) == 0:
            raise ConfigError(f"the training set is empty (data.kind={cfg.data.kind}, "
                              f"data.n_samples={cfg.data.n_samples})")
        self.sampler = ResumableSampler(len(self.train_set), seed=cfg.seed,
                                        rank=self.dist.rank, world_size=self.dist.world_size)
        if len(self.sampler.indices()) < cfg.batch_size:
            raise ConfigError(f"the training set has {len(self.train_set)} items, fewer than one "
                              f"batch of {cfg.batch_size} per process")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, gather_rng: bool = True) -> dict[str, Any]:
        """Full training state; with DDP ``gather_rng`` is a collective (all ranks call it)."""
        rng = st.rng_state()
        if self.dist.enabled and gather_rng:
            import torch.distributed as dist

            rngs: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        export = self.method.export_config() if hasattr(self.method, "export_config") else {}
        return {
            "format": FORMAT,
            "method": self.cfg.method,
            "config": to_dict(self.cfg),
            "export": export,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "bad_streak": self.bad_streak,
            "skipped": self.skipped,
            "images_seen": self.images_seen,
            "skipped_images": self.skipped_images,
            "world_size": self.dist.world_size,
            "rng": rngs,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``run_dir/checkpoints/ckpt_STEP.pt`` atomically (rank 0) and prune old ones."""
        self._sync_skipped_images()
        data = self.state_dict()  # every rank joins the RNG gather
        path = None
        if self.is_main:
            path = st.atomic_save(data, st.checkpoint_path(self.ckpt_dir, self.step))
            st.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        barrier(self.dist)
        return path

    def load_state_dict(self, data: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore a full training state (model, optimiser, schedule, data position, RNGs).

        Learning rates, weight decay and betas then follow the *current* config (the schedule
        position is kept), so a resumed run with the same config continues bit-for-bit and
        one resumed with e.g. a lower ``optim.lr`` uses it from the next step on."""
        if data.get("format") != FORMAT:
            raise ConfigError(f"{source} is not a full training checkpoint (use an "
                              "engine.train checkpoint, not an exported model, to resume)")
        try:
            self.method.load_state_dict(data["model"])
        except RuntimeError as exc:
            raise ModelFileError(f"{source} does not match this model "
                                 f"({st._short(exc, 160)})") from None
        try:
            self.optimizer.load_state_dict(data["optimizer"])
        except ValueError:
            raise ConfigError(f"{source} was written with other optimiser groups (freeze or "
                              f"optim.groups changed?); to start a new run from its weights use "
                              f"init_from={source} with a new run_dir") from None
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        self._apply_group_config()
        self.step, self.epoch = int(data["step"]), int(data["epoch"])
        self.batch_in_epoch = int(data["batch_in_epoch"])
        self.bad_streak, self.skipped = int(data["bad_streak"]), int(data["skipped"])
        self.images_seen = int(data.get("images_seen", 0))
        self.skipped_images = int(data.get("skipped_images", 0))
        self._skipped_images_local = 0
        rngs = data["rng"]
        if len(rngs) == self.dist.world_size:
            st.set_rng_state(rngs[self.dist.rank])
        else:  # a different world size cannot be resumed bit-for-bit; keep it reproducible
            st.seed_everything(self.cfg.seed + 7919 * self.step, self.dist.rank)

    def _apply_group_config(self) -> None:
        """Base learning rate, weight decay, betas/momentum of every group from the config,
        the current lr from the (restored) schedule position."""
        lam = self.scheduler.lr_lambdas[0]
        epoch = self.scheduler.last_epoch
        for g, want in zip(self.optimizer.param_groups, self._group_config):
            for k, v in want.items():
                if k != "lr":
                    g[k] = v
            g["initial_lr"] = want["lr"]
            g["lr"] = want["lr"] * lam(epoch)
        self.scheduler.base_lrs = [w["lr"] for w in self._group_config]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def resume(self, path: str | Path | None = None) -> Path | None:
        """Resume from ``path``, or from the run folder's newest checkpoint when None."""
        p = Path(path) if path else st.latest_checkpoint(self.ckpt_dir)
        if p is None:
            return None
        data = st.load_checkpoint_file(p, map_location=self.device, kinds=("train",))
        self.load_state_dict(data, source=str(p))
        self.resumed_from = p
        self._truncate_metrics()
        return p

    def init_from(self, path: str | Path, strict: bool | None = None) -> dict[str, Any]:
        """Load the weights (only) of another run: a training checkpoint, a run folder (its
        newest checkpoint, else ``final.pt``) or an exported file. Tensors matching by name
        and shape are loaded; optimiser state, step and RNGs are not. Returns the report,
        which is also printed and written to ``metrics.jsonl``."""
        src = _resolve_init_source(str(path))
        data = st.load_checkpoint_file(src, map_location="cpu")
        strict = self.cfg.init_strict if strict is None else strict
        weights = data["model"]
        upgrade = getattr(type(self.method), "upgrade_state", None)
        if upgrade is not None and data.get("method") == getattr(self.method, "name", None):
            weights = upgrade(dict(weights))  # tensors renamed since that checkpoint was written
        adopt = getattr(self.method, "adopt_weights", None)
        if adopt is not None:
            adopted = adopt({**data, "model": weights})  # another method's (or code layout's) weights, fitted to this one
            if adopted is not None:
                weights = adopted
        report = load_matching_weights(self.method, weights, strict, source=str(src))
        report["format"] = data["format"]
        report["method"] = data.get("method", "")
        report["source_step"] = int(data.get("step", 0))
        self.init_report = report
        if self.is_main:
            mism = report["mismatched_keys"]
            print(f"init_from {src} ({report['format']}, step {report['source_step']}): loaded "
                  f"{report['loaded']} of {report['total']} tensors; missing {report['missing']}"
                  f"{' (' + _few(report['missing_keys']) + ')' if report['missing'] else ''}, "
                  f"unexpected {report['unexpected']}"
                  f"{' (' + _few(report['unexpected_keys']) + ')' if report['unexpected'] else ''}, "
                  f"shape-mismatched {report['mismatched']}{' (' + _few(mism) + ')' if mism else ''}",
                  file=sys.stderr)
            self._log({"step": self.step, **{f"init/{k}": v for k, v in report.items()}})
        return report

    def export(self, path: str | Path) -> Path:
        """Inference-only file: weights + the config needed to rebuild the model."""
        return export_checkpoint(self.state_dict(gather_rng=False), path)

    # ------------------------------------------------------------------ logging
    @property
    def writer(self):
        if self._writer is None and self.is_main and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
                self.cfg.tensorboard = False
                return None
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1)
        return self._writer

    def _metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _truncate_metrics(self) -> None:
        """Drop log lines written after the checkpoint we resume from (they are redone)."""
        p = self._metrics_path()
        if not self.is_main or not p.exists():
            return
        keep = [line for line in p.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step]
        p.write_text("".join(line + "\n" for line in keep))

    def _sync_skipped_images(self) -> None:
        """Add every rank's unreadable-file count to the total (a collective under DDP)."""
        n = self._skipped_images_local
        if self.dist.enabled:
            import torch.distributed as dist

            t = torch.tensor([float(n)], device=self.device)
            dist.all_reduce(t)
            n = int(t.item())
        self.skipped_images += n
        self._skipped_images_local = 0
        if self.skipped_images and self.is_main and not self._warned_skipped_images:
            self._warned_skipped_images = True
            print(f"warning: {self.skipped_images} training image(s) could not be read (changed "
                  f"since the index was written?) and were replaced by other files; see "
                  f"data/skipped_images in {self._metrics_path()}", file=sys.stderr)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self._metrics_path(), "a") as fh:
            fh.write(json.dumps(record) + "\n")
        w = self.writer
        if w is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    w.add_scalar(k, v, record["step"])

    def _log_images(self, batch: Any, result: StepResult) -> None:
        w = self.writer
        if w is None or not hasattr(self.method, "visuals"):
            return
        with torch.no_grad():
            for name, img in self.method.visuals(batch, result).items():
                w.add_image(f"images/{name}", make_grid(img[:8]), self.step)
        w.flush()

    # ------------------------------------------------------------------ loop
    def _loader(self, dataset, sampler, shuffle_seed: int, batch_size: int) -> DataLoader:
        # A private generator: creating the iterator must not consume the global RNG, or a
        # run resumed mid-epoch would drift from the uninterrupted one.
        g = torch.Generator().manual_seed(shuffle_seed)
        nw = self.cfg.data.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=nw,
                          drop_last=True, collate_fn=self.collate_fn, generator=g,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=4 if nw > 0 else None)

    def _batches(self):
        """Endless batch stream that keeps (epoch, batch_in_epoch) for checkpoints."""
        bs = self.cfg.batch_size
        while True:
            self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * bs)
            loader = self._loader(self.train_set, self.sampler, self.cfg.seed + self.epoch, bs)
            for batch in loader:
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        old = []

        def handler(signum, frame):  # finish the step, checkpoint, exit cleanly
            self._stop = True

        for s in (signal.SIGTERM, signal.SIGUSR1):
            old.append((s, signal.signal(s, handler)))
        return old

    def train_step(self, batch: Any) -> tuple[StepResult, bool]:
        """One optimisation step; returns the result and whether the update was applied."""
        self.step_module.train()
        batch = to_device(batch, self.device, self.channels_last)
        with self._autocast():
            result = self.step_module(batch)
        loss = result.loss.float()
        ok = all_true(bool(torch.isfinite(loss).item()), self.dist, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        applied = False
        if ok:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
            result.scalars["grad_norm"] = gnorm.detach()
            if self.scaler.is_enabled():
                scale = self.scaler.get_scale()
                self.scaler.step(self.optimizer)  # skips by itself on inf/nan grads
                self.scaler.update()
                applied = self.scaler.get_scale() >= scale
                # fp16 overflow while the scale is still being found is normal: not "bad"
                ok = True
            else:
                ok = bool(torch.isfinite(gnorm).item())  # grads are all-reduced: same on all ranks
                if ok:
                    self.optimizer.step()
                    applied = True
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        if ok:
            self.bad_streak = 0
        else:
            self.bad_streak += 1
            self.skipped += 1
        self.step += 1
        self.batch_in_epoch += 1
        return result, applied

    def evaluate(self) -> dict[str, float]:
        """Mean of the method's scalars over the validation set (rank 0's view)."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        bs = min(self.cfg.batch_size, len(self.val_set))
        loader = DataLoader(self.val_set, batch_size=bs, shuffle=False, drop_last=False,
                            num_workers=0, collate_fn=self.collate_fn)
        self.method.eval()
        sums: dict[str, float] = {}
        n = 0
        skipped = 0
        rng = st.rng_state()  # evaluation must not change the training stream
        with torch.no_grad(), self._autocast():
            for batch in loader:
                b, _ = batch_counts(batch)  # items (a grouped item counts once), not images
                if isinstance(batch, dict) and torch.is_tensor(batch.get(SKIPPED_IMAGES_KEY)):
                    skipped += int(batch[SKIPPED_IMAGES_KEY].sum())
                batch = to_device(batch, self.device, self.channels_last)
                res = self.method.training_step(batch)
                vals = {"loss": res.loss, **res.scalars}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + float(v.float()) * b
                n += b
        st.set_rng_state(rng)
        self.method.train()
        out = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        if skipped:
            out["val/skipped_images"] = skipped
        return out

    def train(self) -> dict[str, Any]:
        """Run until ``max_steps``; returns a summary (final step, last losses, throughput)."""
        cfg = self.cfg
        if cfg.max_steps == 0:
            if self.is_main:
                print("nothing to do: max_steps is 0", file=sys.stderr)
            return {"step": self.step, "stopped": False, "skipped_steps": self.skipped,
                    "history": [], "images_per_s": 0.0, "images_seen": self.images_seen,
                    "skipped_images": self.skipped_images, "init_from": None}
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
        if cfg.init_from and self.resumed_from is None and self.step == 0 and self.init_report is None:
            sources = cfg.init_from if isinstance(cfg.init_from, list) else [cfg.init_from]
            for source in sources:  # in order: a later source's tensors replace an earlier one's
                self.init_from(source)  # a resumed run keeps its own weights
        progress = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
        bar = None
        if self.is_main and progress and self.step < cfg.max_steps:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=cfg.method, unit="step",
                       dynamic_ncols=True)
        old_handlers = self._install_signals()
        world = self.dist.world_size
        acc: dict[str, float] = {}
        acc_n = 0
        t_log = time.perf_counter()
        images_since = 0
        t_start, images_start = time.perf_counter(), self.images_seen
        stream = self._batches()
        try:
            while self.step < cfg.max_steps and not self._stop:
                batch = next(stream)
                _, n_images = batch_counts(batch)
                if isinstance(batch, dict) and torch.is_tensor(batch.get(SKIPPED_IMAGES_KEY)):
                    self._skipped_images_local += int(batch[SKIPPED_IMAGES_KEY].sum())
                result, applied = self.train_step(batch)
                self.images_seen += n_images * world
                images_since += n_images * world
                loss_value = float(result.loss.detach().float())
                self.history.append((self.step, loss_value))
                if not math.isfinite(loss_value) or self.bad_streak:
                    if self.is_main:
                        print(f"warning: non-finite loss or gradient at step {self.step}; "
                              f"step skipped ({self.skipped} so far)", file=sys.stderr)
                    if self.bad_streak >= cfg.max_bad_steps:
                        self._diverged()
                else:
                    for k, v in {"loss": result.loss, **result.scalars}.items():
                        acc[k] = acc.get(k, 0.0) + float(v.detach().float())
                    acc_n += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._sync_skipped_images()
                    dt = time.perf_counter() - t_log
                    record: dict[str, Any] = {"step": self.step, "epoch": self.epoch,
                                              "loss_step": loss_value}
                    record.update({f"train/{k}": v / max(acc_n, 1) for k, v in acc.items()})
                    groups = self.optimizer.param_groups
                    record["lr"] = groups[0]["lr"]
                    if len(groups) > 1:
                        record.update({f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(groups)})
                    record["images_per_s"] = images_since / max(dt, 1e-9)
                    record["images_seen"] = self.images_seen
                    record["skipped_steps"] = self.skipped
                    record["data/skipped_images"] = self.skipped_images
                    self._log(record)
                    if bar is None and self.is_main and cfg.progress != "off":
                        print(f"step {self.step}/{cfg.max_steps} loss {record.get('train/loss', loss_value):.5g} "
                              f"{record['images_per_s']:.1f} img/s", flush=True)
                    acc, acc_n, images_since, t_log = {}, 0, 0, time.perf_counter()
                if cfg.image_every > 0 and self.step % cfg.image_every == 0 and self.is_main:
                    self._log_images(batch, result)
                if cfg.eval_every > 0 and self.step % cfg.eval_every == 0 and self.is_main:
                    self._log({"step": self.step, **self.evaluate()})
                if cfg.ckpt_every > 0 and self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
            if self._stop:
                self.save_checkpoint()
            elif self.step >= cfg.max_steps:
                if st.latest_checkpoint(self.ckpt_dir) != st.checkpoint_path(self.ckpt_dir, self.step):
                    self.save_checkpoint()
                if self.is_main:
                    final = self.evaluate()
                    if final:
                        self._log({"step": self.step, **final})
                    self.export(self.run_dir / "final.pt")
        finally:
            if bar is not None:
                bar.close()
            for s, h in old_handlers:
                signal.signal(s, h)
            if self._writer is not None:
                self._writer.flush()
        self._sync_skipped_images()
        elapsed = time.perf_counter() - t_start
        return {
            "step": self.step,
            "stopped": self._stop,
            "skipped_steps": self.skipped,
            "history": list(self.history),
            "images_per_s": (self.images_seen - images_start) / max(elapsed, 1e-9),
            "images_seen": self.images_seen,
            "skipped_images": self.skipped_images,
            "init_from": self.init_report,
        }

    def _diverged(self) -> None:
        """Log the abort, then raise one clear TrainingDiverged (weights on disk are kept)."""
        self._sync_skipped_images()
        self._log({"step": self.step, "diverged": True, "skipped_steps": self.skipped})
        last_good = self.step - self.bad_streak  # the last step whose update was applied
        before = [p for p in st.list_checkpoints(self.ckpt_dir)
                  if int(st.CKPT_PATTERN.match(p.name).group(1)) <= last_good]
        then = (f"resume from before it (--resume {before[-1]})" if before
                else "restart the run")
        raise TrainingDiverged(
            f"training diverged: {self.bad_streak} consecutive non-finite steps (loss or gradient) "
            f"at step {self.step}; check the data for NaN/inf values, then {then} with a lower "
            f"optim.lr or optim.grad_clip > 0")

    def close(self, finished: bool = False) -> None:
        """Close the TensorBoard writer and the process group (``finished``: the run ended
        normally, so every rank waits for the others before the group goes)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        cleanup(self.dist, synchronize=finished)


def export_checkpoint(data: dict[str, Any], path: str | Path, half: bool = False) -> Path:
    """Write an inference-only file (weights, method name, export config) atomically.

    ``half`` stores floating tensors as float16 (they are restored to float32 on load)
    to keep committed default checkpoints small.
    """
    model = data["model"]
    if half:
        model = {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v)
                 for k, v in model.items()}
    out = {"format": EXPORT_FORMAT, "method": data["method"], "export": data.get("export", {}),
           "config": data.get("config", {}), "step": data.get("step", 0), "model": model}
    return st.atomic_save(out, path)


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
