"""Command line: train, resume, export.

    python -m engine.train --config train/configs/mofa.yaml [key=value ...] [--resume auto|none|CKPT]
    torchrun --nproc_per_node=8 -m engine.train --config train/configs/mofa.yaml
    python -m engine.train export CKPT OUT [--half]

A config file is as trusted as a script: ``method: package.module:factory`` imports that
module and runs the factory. Checkpoints are only ever read with
``torch.load(weights_only=True)`` (tensors and plain data; a file holding other objects is
refused without running anything).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import UserError, cli_errors

SECURITY_NOTE = (
    "Security: a config is as trusted as a script - 'method: package.module:factory' imports "
    "that module and runs its code. Checkpoints (--resume, init_from, export) are read with "
    "torch.load(weights_only=True): only tensors and plain data load, and a file holding "
    "anything else is refused without running it.")


def _export(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m engine.train export",
        description="Write an inference-only checkpoint (engine.method/1) from a training "
                    "checkpoint (engine.train/1) or another exported file.",
        epilog=SECURITY_NOTE)
    ap.add_argument("checkpoint", help="runs/NAME/checkpoints/ckpt_*.pt, runs/NAME/final.pt, ...")
    ap.add_argument("out", help="file to write (written atomically)")
    ap.add_argument("--half", action="store_true", help="store weights as float16")
    ap.add_argument("--identity-basis", metavar="HEAD.npz", default=None,
                    help="record the identity orientation of this head-model file (the build the network "
                         "learnt on) in a checkpoint written before networks recorded it "
                         "(engine.head.model.basis_signature)")
    a = ap.parse_args(argv)
    from engine.train.state import load_checkpoint_file
    from engine.train.trainer import export_checkpoint

    if Path(a.out).is_dir():
        raise UserError(f"{a.out} is a folder; give the exported file's name (e.g. {a.out}/model.pt)")
    data = load_checkpoint_file(a.checkpoint)  # weights_only, format and keys checked
    if a.identity_basis:
        import numpy as np
        import torch

        from engine.head.model import basis_signature

        try:
            with np.load(a.identity_basis, allow_pickle=False) as z:
                sig = basis_signature(z["identity_basis"])
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"--identity-basis {a.identity_basis}: not a head-model file with an identity_basis ({e})")
        data["model"] = {**data["model"], "identity_signature": torch.tensor(sig, dtype=torch.float32)}
    print(export_checkpoint(data, a.out, half=a.half))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors():
        if argv and argv[0] == "export":
            return _export(argv[1:])
        ap = argparse.ArgumentParser(prog="python -m engine.train",
                                     description="Train a learned method headless "
                                                 "(see docs/training.md).",
                                     epilog=SECURITY_NOTE)
        ap.add_argument("--config", default=None, help="YAML file under train/configs/")
        ap.add_argument("--resume", default="auto",
                        help="auto (newest checkpoint in run_dir), none, or a checkpoint path")
        ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4")
        a = ap.parse_args(argv)
        from engine.train.config import load_config
        from engine.train.trainer import Trainer

        cfg = load_config(a.config, a.overrides)  # validated: one error line per bad value
        if cfg.max_steps == 0:
            print("nothing to do: max_steps is 0", file=sys.stderr)
            return 0
        trainer = Trainer(cfg)
        finished = False
        try:
            resumed = None
            if a.resume != "none":
                resumed = trainer.resume(None if a.resume == "auto" else a.resume)
            if resumed is not None and trainer.is_main:
                print(f"resumed from {resumed} at step {trainer.step}", file=sys.stderr)
            summary = trainer.train()
            if trainer.is_main:
                summary.pop("history")
                if summary["skipped_images"]:
                    print(f"warning: {summary['skipped_images']} training image(s) could not be "
                          f"read and were replaced by other files", file=sys.stderr)
                print(json.dumps(summary))
            finished = True
        finally:
            trainer.close(finished)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
