"""Command line: train, resume, export.

    python -m engine.train --config train/configs/mofa.yaml [key=value ...] [--resume auto|none|CKPT]
    torchrun --nproc_per_node=8 -m engine.train --config train/configs/mofa.yaml
    python -m engine.train export CKPT OUT [--half]
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.errors import cli_errors


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors():
        if argv and argv[0] == "export":
            ap = argparse.ArgumentParser(prog="python -m engine.train export",
                                         description="Write an inference-only checkpoint.")
            ap.add_argument("checkpoint")
            ap.add_argument("out")
            ap.add_argument("--half", action="store_true", help="store weights as float16")
            a = ap.parse_args(argv[1:])
            from engine.train.state import load_checkpoint_file
            from engine.train.trainer import export_checkpoint

            path = export_checkpoint(load_checkpoint_file(a.checkpoint), a.out, half=a.half)
            print(path)
            return 0
        ap = argparse.ArgumentParser(prog="python -m engine.train",
                                     description="Train a learned method headless.")
        ap.add_argument("--config", default=None, help="YAML file under train/configs/")
        ap.add_argument("--resume", default="auto",
                        help="auto (newest checkpoint in run_dir), none, or a checkpoint path")
        ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4")
        a = ap.parse_args(argv)
        from engine.train.config import load_config
        from engine.train.trainer import Trainer

        cfg = load_config(a.config, a.overrides)
        trainer = Trainer(cfg)
        try:
            resumed = None
            if a.resume != "none":
                resumed = trainer.resume(None if a.resume == "auto" else a.resume)
            if resumed is not None and trainer.is_main:
                print(f"resumed from {resumed} at step {trainer.step}", file=sys.stderr)
            summary = trainer.train()
            if trainer.is_main:
                summary.pop("history")
                print(json.dumps(summary))
        finally:
            trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
