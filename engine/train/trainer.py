"""The training loop shared by all learned methods.

Headless on CPU or CUDA; AMP (bf16 autocast, or fp16 with a GradScaler) and channels-last
on CUDA; DDP when launched by torchrun; seeded; resumable bit-for-bit from atomic
checkpoints (model, optimiser, scaler, scheduler, RNG states and the data position);
a NaN/inf guard that skips a step on every rank, logs it, and aborts after
``max_bad_steps`` consecutive bad steps; tqdm on rank 0; TensorBoard scalars and image
grids plus a ``metrics.jsonl`` log that scripts and tests can read.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.train import state as st
from engine.train.config import ConfigError, TrainConfig, to_dict
from engine.train.distributed import DistInfo, all_true, barrier, cleanup, init_distributed
from engine.train.method import MethodBundle, StepResult, build_method
from engine.train.sampler import ResumableSampler

FORMAT = "engine.train/1"
EXPORT_FORMAT = "engine.method/1"


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps."""


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


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if torch.is_tensor(batch):
        non_blocking = device.type == "cuda"
        t = batch.to(device, non_blocking=non_blocking)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


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


def _optimizer(cfg: TrainConfig, method: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if hasattr(method, "param_groups"):
        groups = method.param_groups(o.lr)
    else:
        groups = [{"params": [p for p in method.parameters() if p.requires_grad]}]
    for g in groups:
        g["lr"] = o.lr * float(g.pop("lr_scale", 1.0))
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
        self.cfg = cfg
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
        self.optimizer = _optimizer(cfg, self.method)
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
        self.history: list[tuple[int, float]] = []
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._stop = False
        self._writer = None
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
            "world_size": self.dist.world_size,
            "rng": rngs,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``run_dir/checkpoints/ckpt_STEP.pt`` atomically (rank 0) and prune old ones."""
        data = self.state_dict()  # every rank joins the RNG gather
        path = None
        if self.is_main:
            path = st.atomic_save(data, st.checkpoint_path(self.ckpt_dir, self.step))
            st.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        barrier(self.dist)
        return path

    def load_state_dict(self, data: dict[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise ConfigError("the checkpoint is not a full training checkpoint (use an "
                              "engine.train checkpoint, not an exported model, to resume)")
        self.method.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        self.step, self.epoch = int(data["step"]), int(data["epoch"])
        self.batch_in_epoch = int(data["batch_in_epoch"])
        self.bad_streak, self.skipped = int(data["bad_streak"]), int(data["skipped"])
        rngs = data["rng"]
        if len(rngs) == self.dist.world_size:
            st.set_rng_state(rngs[self.dist.rank])
        else:  # a different world size cannot be resumed bit-for-bit; keep it reproducible
            st.seed_everything(self.cfg.seed + 7919 * self.step, self.dist.rank)

    def resume(self, path: str | Path | None = None) -> Path | None:
        """Resume from ``path``, or from the run folder's newest checkpoint when None."""
        p = Path(path) if path else st.latest_checkpoint(self.ckpt_dir)
        if p is None:
            return None
        self.load_state_dict(st.load_checkpoint_file(p, map_location=self.device))
        self._truncate_metrics()
        return p

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
        rng = st.rng_state()  # evaluation must not change the training stream
        with torch.no_grad(), self._autocast():
            for batch in loader:
                batch = to_device(batch, self.device, self.channels_last)
                res = self.method.training_step(batch)
                b = next(v.shape[0] for v in batch.values() if torch.is_tensor(v)) \
                    if isinstance(batch, dict) else bs
                vals = {"loss": res.loss, **res.scalars}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + float(v.float()) * b
                n += b
        st.set_rng_state(rng)
        self.method.train()
        return {f"val/{k}": v / max(n, 1) for k, v in sums.items()}

    def train(self) -> dict[str, Any]:
        """Run until ``max_steps``; returns a summary (final step, last losses, throughput)."""
        cfg = self.cfg
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
        progress = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
        bar = None
        if self.is_main and progress and self.step < cfg.max_steps:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=cfg.method, unit="step",
                       dynamic_ncols=True)
        old_handlers = self._install_signals()
        world_batch = cfg.batch_size * self.dist.world_size
        acc: dict[str, float] = {}
        acc_n = 0
        t_log = time.perf_counter()
        n_since = 0
        t_start, step_start = time.perf_counter(), self.step
        stream = self._batches()
        try:
            while self.step < cfg.max_steps and not self._stop:
                batch = next(stream)
                result, applied = self.train_step(batch)
                loss_value = float(result.loss.detach().float())
                self.history.append((self.step, loss_value))
                if not math.isfinite(loss_value) or self.bad_streak:
                    if self.is_main:
                        print(f"warning: non-finite loss or gradient at step {self.step}; "
                              f"step skipped ({self.skipped} so far)", file=sys.stderr)
                    if self.bad_streak >= cfg.max_bad_steps:
                        raise TrainingDiverged(f"{self.bad_streak} consecutive non-finite "
                                               f"steps at step {self.step}; aborting")
                else:
                    for k, v in {"loss": result.loss, **result.scalars}.items():
                        acc[k] = acc.get(k, 0.0) + float(v.detach().float())
                    acc_n += 1
                n_since += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    dt = time.perf_counter() - t_log
                    record: dict[str, Any] = {"step": self.step, "epoch": self.epoch,
                                              "loss_step": loss_value}
                    record.update({f"train/{k}": v / max(acc_n, 1) for k, v in acc.items()})
                    record["lr"] = self.optimizer.param_groups[0]["lr"]
                    record["images_per_s"] = n_since * world_batch / max(dt, 1e-9)
                    record["skipped_steps"] = self.skipped
                    self._log(record)
                    if bar is None and self.is_main and cfg.progress != "off":
                        print(f"step {self.step}/{cfg.max_steps} loss {record.get('train/loss', loss_value):.5g} "
                              f"{record['images_per_s']:.1f} img/s", flush=True)
                    acc, acc_n, n_since, t_log = {}, 0, 0, time.perf_counter()
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
        elapsed = time.perf_counter() - t_start
        steps = self.step - step_start
        return {
            "step": self.step,
            "stopped": self._stop,
            "skipped_steps": self.skipped,
            "history": list(self.history),
            "images_per_s": steps * world_batch / max(elapsed, 1e-9),
        }

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        cleanup(self.dist)


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
