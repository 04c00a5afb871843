"""Evaluation protocols. ``python -m engine.eval synthetic``: MoFA's ground-truth protocol."""

from engine.eval.synthetic import EvalReport, evaluate_synthetic, umeyama

__all__ = ["EvalReport", "evaluate_synthetic", "umeyama"]
