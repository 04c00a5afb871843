"""Reconstruction methods: the fit, learned networks (MoFA, ...) and hybrids, one registry.

* :mod:`engine.methods.registry` — the list (``python -m engine methods``), read without
  importing the methods; every CLI, the trainer and the Blender panel use it.
* :func:`build_predictor` — a method by name as a :class:`~engine.methods.base.Predictor`
  (``predictor(face) -> FaceParams``) for a head model.
* :mod:`engine.methods.base` — the predictor interface and the learned-method base class.

Adding a method: one module here with a ``METHOD = {...}`` declaration and its class, plus
one training YAML (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.methods import registry
from engine.methods.base import FaceObservation, LearnedMethod, LearnedPredictor, Predictor
from engine.methods.registry import MethodSpec

__all__ = ["FaceObservation", "LearnedMethod", "LearnedPredictor", "MethodSpec", "Predictor", "build_predictor",
           "get_method", "learned_network", "registry"]


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (or alias); a :class:`UserError` naming the choices otherwise."""
    try:
        return registry.get(name)
    except registry.MethodError as exc:
        raise UserError(str(exc)) from None


def learned_network(name: str, head_model: str, checkpoint: str | Path | None = None,
                    device: Any = "cpu") -> LearnedMethod:
    """The network of learned method ``name`` from ``checkpoint`` (default: the method's
    committed network for ``head_model``), in eval mode on ``device``."""
    from engine.errors import ModelFileError

    spec = get_method(name)
    if spec.kind != "learned":
        raise UserError(f"method {spec.name!r} is not a learned method; learned methods: "
                        f"{', '.join(s.name for s in registry.methods('learned'))}")
    if not checkpoint:
        checkpoint = registry.default_checkpoint(spec, head_model)
        if checkpoint is None:
            raise UserError(f"method {spec.name} needs --checkpoint CKPT (a {spec.name} training or exported "
                            f"checkpoint); there is no default network for head model {head_model!r}")
    cls = registry.load_entry(spec)
    try:
        return cls.load(checkpoint, device)
    except (ModelFileError, UserError):
        raise
    except Exception as exc:  # noqa: BLE001 - a readable file of another kind: say so in one line
        raise ModelFileError(f"checkpoint {checkpoint} cannot be used for method {spec.name} "
                             f"({type(exc).__name__}: {str(exc)[:160]})") from None


def build_predictor(name: str, head: Any, *, device: Any = "cpu", checkpoint: str | Path | None = None,
                    init: str | None = None, config: Any = None) -> Predictor:
    """Method ``name`` as a predictor for ``head`` (a loaded :class:`engine.head.HeadModel`).

    ``checkpoint`` is the network of a learned method (or of a hybrid's ``init`` method);
    ``init`` picks a hybrid's learned method (default: the first learned method with a
    network for this head model); ``config`` is the :class:`engine.fitting.FitConfig` of
    fits and hybrids.
    """
    spec = get_method(name)
    if spec.kind == "fit":
        if checkpoint:
            raise UserError(f"--checkpoint is for learned and hybrid methods; method {spec.name!r} uses none")
        if init:
            raise UserError(f"--init is for the hybrid method; method {spec.name!r} uses none")
        return registry.load_entry(spec)(head, config)
    if spec.kind == "learned":
        if init:
            raise UserError(f"--init is for the hybrid method; method {spec.name!r} uses none")
        network = learned_network(spec.name, head.name, checkpoint, device)
        _check_same_head(network, head)
        return LearnedPredictor(network)
    # hybrid
    if init is None:
        learned = registry.methods("learned")
        found = None if checkpoint else registry.default_learned(head.name)  # a given network: the first method's
        init = found.name if found else (learned[0].name if learned else None)
        if init is None:
            raise UserError("the hybrid method needs a learned method, and none is registered")
    start = build_predictor(init, head, device=device, checkpoint=checkpoint)
    if not isinstance(start, LearnedPredictor):
        raise UserError(f"--init {init} is not a learned method")
    return registry.load_entry(spec)(start, head, config)


def _check_same_head(network: LearnedMethod, head: Any) -> None:
    if network.head.name != head.name or network.head.n_vertices != head.n_vertices:
        raise UserError(f"the checkpoint was trained for head model {network.head.name!r}, "
                        f"not {head.name!r}; pass --model {network.head.name}")
