"""Evaluation protocols. ``python -m engine.eval synthetic``: MoFA's ground-truth protocol;
``python -m engine.eval cycles-set build`` / ``cycles``: the ray-traced validation set and
every method on it (NoW-style geometry, landmarks, pose, skin tone, time)."""

from engine.eval.now import NowScore, now_error
from engine.eval.synthetic import EvalReport, evaluate_synthetic, umeyama

__all__ = ["EvalReport", "NowScore", "evaluate_synthetic", "now_error", "umeyama"]
