"""One photo in, a complete head out: the API behind ``python -m engine reconstruct``.

``reconstruct(photo_path, out_dir, model="open", method="fit", face=None, progress=cb)``
loads the photo, detects faces (largest first), runs the chosen method — any predictor of
the method registry (:mod:`engine.methods`): the fit, a learned network or a hybrid — and
writes the output folder of docs/conventions.md from the resulting
:class:`engine.face.FaceParams` (:func:`engine.outputs.write_outputs`) atomically:
everything goes into a temporary sibling folder that is renamed to ``out_dir`` only when
all files are written, so a failure never leaves half an output behind.

:class:`Reconstructor` is the same work split for reuse: the model and method loaded once,
then ``detect`` a photo and ``reconstruct_face`` any of its faces (:mod:`engine.batch` runs
many photos and every face of a group photo this way).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine.errors import NoFaceError, UserError

ProgressFn = Callable[[str, float, str], None]


@dataclass
class ReconstructionResult:
    """What :func:`reconstruct` wrote and measured."""

    out_dir: Path
    params: dict[str, Any]  # the params.json dictionary
    n_faces: int
    face_index: int
    timings: dict[str, float] = field(default_factory=dict)
    estimate: Any = None  # engine.face.FaceParams in the photo's (possibly reduced) pixel frame


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` as a torch device, with a clear error when CUDA is not there."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU here "
                        "(this torch build is CPU-only or no driver is installed); use --device cpu")
    return torch.device(device)


def select_face(faces: list, face: int | None, name: str) -> tuple[int, Any]:
    """The chosen (index, detection); ``face=None`` means "the only face" and refuses to guess when
    there are several (a group photo would otherwise silently give the wrong person)."""
    if not faces:
        raise NoFaceError(f"no face found in {name}")
    if face is None:
        if len(faces) > 1:
            raise UserError(f"{name} shows {len(faces)} faces; choose one with --face N (0 = largest, "
                            f"{len(faces) - 1} = smallest) or take every one with --face all (see them numbered with "
                            f"python -m engine.detect {name} --out faces.png)")
        face = 0
    if face < 0 or face >= len(faces):
        raise UserError(f"{name} has {len(faces)} face(s); --face {face} is out of range "
                        f"(use 0 to {len(faces) - 1}, 0 = largest)")
    chosen = faces[face]
    if chosen.landmarks68 is None:
        raise NoFaceError(f"the face detector found a face in {name} but no landmarks for it")
    return face, chosen


@dataclass
class DetectedPhoto:
    """A photo read and its faces detected (largest first), with the seconds each took."""

    photo: Any  # engine.photo.Photo
    faces: list
    timings: dict[str, float] = field(default_factory=dict)


class Reconstructor:
    """A head model and a method loaded once, to reconstruct any number of photos and faces:
    :func:`reconstruct` uses one for one photo, :mod:`engine.batch` one for a whole batch.

    ``method`` is any registered method (``python -m engine methods``); ``checkpoint`` the
    network of a learned method or of a hybrid's ``init`` method (default: the committed
    network for ``model``); ``config`` an :class:`engine.fitting.FitConfig` for fit/hybrid;
    ``texture_size`` the side of ``albedo.png`` (:data:`engine.outputs.TEXTURE_SIZES`; the
    face gets ~55 % of it from ear to ear on the open head: 2048 for large photos).
    """

    def __init__(self, model: str = "open", device: str = "cpu", model_path: str | None = None,
                 method: str = "fit", backend: str = "default", config: Any = None,
                 checkpoint: str | os.PathLike[str] | None = None, init: str | None = None,
                 texture_size: int = 1024, progress: ProgressFn | None = None) -> None:
        from engine.head import load_head_model
        from engine.methods import build_predictor, get_method
        from engine.outputs import OutputOptions

        self.options = OutputOptions(texture_size=texture_size)  # a bad size is refused before any work
        self.spec = get_method(method)
        self.device = resolve_device(device)
        self.backend = backend
        self.config = config
        report = progress or (lambda stage, fraction, message: None)
        t = time.perf_counter()
        report("model", 0.0, f"loading head model {model!r} and method {self.spec.name}")
        self.head = load_head_model(model, model_path, device=self.device)
        self.predictor = build_predictor(self.spec.name, self.head, device=self.device, checkpoint=checkpoint,
                                         init=init, config=config)
        if self.device.type == "cpu":  # what the output folder needs of the model alone: made while the photo is analysed
            from engine.outputs import prepare_outputs

            prepare_outputs(self.head, self.options)
        self.model_seconds = time.perf_counter() - t

    def detect(self, photo_path: str | os.PathLike[str], progress: ProgressFn | None = None) -> DetectedPhoto:
        """Read a photo and detect its faces (largest first)."""
        from engine.detect import detect_faces
        from engine.photo import load_image

        report = progress or (lambda stage, fraction, message: None)
        t = time.perf_counter()
        report("load", 0.03, f"reading {photo_path}")
        photo = load_image(photo_path)
        timings = {"load": time.perf_counter() - t}
        t = time.perf_counter()
        report("detect", 0.05, "detecting faces")
        faces = detect_faces(photo, backend=self.backend)
        timings["detect"] = time.perf_counter() - t
        return DetectedPhoto(photo, faces, timings)

    def reconstruct_face(self, detected: DetectedPhoto, face: int | None, out_dir: str | os.PathLike[str],
                         progress: ProgressFn | None = None,
                         timings: dict[str, float] | None = None) -> ReconstructionResult:
        """Reconstruct one face of a detected photo into ``out_dir`` (written atomically).

        ``face=None``: the photo must show exactly one face. ``timings``: seconds spent before
        (model, load, detect) that this result's ``params.json`` reports with its own."""
        from engine.export.atomic import check_output_folder

        check_output_folder(out_dir)  # before the fit: a folder we may not replace is refused now
        return self.write_face(self.estimate_face(detected, face, progress, timings), out_dir, progress)

    def estimate_face(self, detected: DetectedPhoto, face: int | None, progress: ProgressFn | None = None,
                      timings: dict[str, float] | None = None) -> "FaceEstimate":
        """The method's estimate of one face of a detected photo (nothing written)."""
        from engine.methods import FaceObservation
        from engine.plausibility import LOST_CHECK_RESIDUAL_PX, learned_disagreement

        report = progress or (lambda stage, fraction, message: None)
        timings = dict(timings or {})
        photo, faces, spec = detected.photo, detected.faces, self.spec
        face, det = select_face(faces, face, photo.path)
        report("detect", 0.08, f"found {len(faces)} face(s); using face {face}"
               + (" (the largest)" if face == 0 else ""))

        observation = FaceObservation.from_detection(photo.rgb, det, photo.scale)
        estimate = self.predictor(observation, progress=lambda s, f, m: report(s, 0.1 + 0.75 * f, m))
        timings.update({f"fit_{k}": v for k, v in estimate.timings.items()})
        timings["fit"] = sum(estimate.timings.values())
        lost_apart = None
        if spec.kind == "fit" and estimate.losses.get("landmark_px", 0.0) > LOST_CHECK_RESIDUAL_PX:
            # a fit that could not follow its landmarks well: is the detector lost? (a learned
            # network's view of the face: 0.3 s, only on such faces)
            t = time.perf_counter()
            report("check", 0.86, "checking the landmarks against a learned network")
            lost_apart = learned_disagreement(self.head, observation, self.device)
            timings["check"] = time.perf_counter() - t
        return FaceEstimate(detected, face, det, observation, estimate, timings, lost_apart)

    def write_face(self, face: "FaceEstimate", out_dir: str | os.PathLike[str], progress: ProgressFn | None = None,
                   extra: dict[str, Any] | None = None) -> ReconstructionResult:
        """Write an estimate's output folder (atomically); ``extra``: more ``params.json`` entries."""
        from engine.export.atomic import atomic_output_folder
        from engine.outputs import write_outputs, write_params
        from engine.plausibility import check_fit, lost_detector_warning

        report = progress or (lambda stage, fraction, message: None)
        photo, faces, spec = face.detected.photo, face.detected.faces, self.spec
        estimate, det, lost_apart, timings = face.estimate, face.detection, face.lost_apart, dict(face.timings)
        spent_before = sum(v for k, v in timings.items() if not k.startswith("fit_"))
        t = time.perf_counter()
        report("write", 0.88, "writing meshes, textures and parameters")
        extra = dict(extra or {})
        if spec.kind == "hybrid":
            extra["init_method"] = self.predictor.init.name
        cfg = None
        if spec.kind != "learned":
            from engine.fitting import FitConfig, changed_fields

            cfg = self.config or FitConfig()
            extra["focal_guess"] = {"fov_deg": cfg.fov_deg, "min_distance_m": cfg.min_distance_m}
            if changed_fields(cfg):
                extra["fit_options"] = {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in changed_fields(cfg).items()}
        detail_fn = getattr(self.predictor, "detail_maps", None)
        detail = detail_fn(estimate) if detail_fn is not None else None
        network = getattr(self.predictor, "network", None)
        with atomic_output_folder(out_dir) as tmp:
            params = write_outputs(tmp, self.head, estimate, photo, method=spec.name, options=self.options,
                                   extra=extra, detail=detail, detail_checkpoint=getattr(network, "source_path", None))
            if estimate.losses.get("landmarks_lost"):  # a hybrid that did not follow a lost detector
                params["warnings"] = [lost_detector_warning(estimate.losses["landmark_disagreement"], followed=False)]
            else:
                params["warnings"] = check_fit(params["landmarks68_detected_px"], params["landmarks68_image_px"])
            if lost_apart is not None and lost_apart > cfg.hybrid_lost_landmarks:
                params["warnings"].append(lost_detector_warning(lost_apart, followed=True))
            timings["write"] = time.perf_counter() - t
            timings["total"] = spent_before + timings["write"]
            params["timings"] = {k: round(v, 4) for k, v in timings.items()}
            params["faces_found"] = len(faces)
            params["face_index"] = face.face
            params["detector"] = det.backend
            write_params(tmp / "params.json", params)
        final = Path(os.fspath(out_dir)).expanduser().absolute()
        report("done", 1.0, str(final))
        return ReconstructionResult(final, params, len(faces), face.face, timings, estimate)


@dataclass
class FaceEstimate:
    """One face's estimate before its folder is written: the photo, which face, the
    detection, what the method saw and returned, and the seconds so far (``timings``: model,
    load, detect, fit and its stages; the stages' keys start with ``fit_``)."""

    detected: DetectedPhoto
    face: int
    detection: Any
    observation: Any  # engine.methods.FaceObservation
    estimate: Any  # engine.face.FaceParams
    timings: dict[str, float]
    lost_apart: float | None = None


def reconstruct(
    photo_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: str = "open",
    device: str = "cpu",
    face: int | None = None,
    progress: ProgressFn | None = None,
    model_path: str | None = None,
    method: str = "fit",
    backend: str = "default",
    config: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    init: str | None = None,
    texture_size: int = 1024,
    sessions: "SessionCache | None" = None,
) -> ReconstructionResult:
    """Reconstruct the ``face``-th largest face of a photo into ``out_dir`` (see module doc;
    the arguments are :class:`Reconstructor`'s). ``face=None`` (default): the photo must show
    exactly one face; with several, a :class:`UserError` asks for an index (0 = largest).
    ``sessions``: reuse a loaded model and method from this cache (``python -m engine serve``).
    """
    from engine.export.atomic import check_output_folder
    from engine.methods import get_method
    from engine.outputs import OutputOptions

    OutputOptions(texture_size=texture_size)  # a bad size, method, device or output folder is refused
    get_method(method)                        # before the model is loaded
    resolve_device(device)
    check_output_folder(out_dir)
    session, seconds = (sessions or SessionCache(0)).get(
        progress=progress, model=model, device=device, model_path=model_path, method=method, backend=backend,
        config=config, checkpoint=checkpoint, init=init, texture_size=texture_size)
    detected = session.detect(photo_path, progress)
    timings = {"model": seconds, **detected.timings}
    return session.reconstruct_face(detected, face, out_dir, progress, timings)


class SessionCache:
    """Loaded :class:`Reconstructor` sessions by their arguments, the ``size`` most recently
    used kept (0: none kept, every ``get`` loads). ``get`` returns (session, seconds spent
    loading it now: 0 when it came from the cache)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._sessions: dict[str, Reconstructor] = {}

    def get(self, progress: ProgressFn | None = None, **arguments: Any) -> tuple[Reconstructor, float]:
        key = repr(sorted((k, repr(v)) for k, v in arguments.items()))
        session = self._sessions.pop(key, None)
        seconds = 0.0
        if session is None:
            session = Reconstructor(progress=progress, **arguments)
            seconds = session.model_seconds
        if self.size > 0:
            self._sessions[key] = session  # most recent last
            while len(self._sessions) > self.size:
                del self._sessions[next(iter(self._sessions))]
        return session, seconds
