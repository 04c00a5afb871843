"""What every method shares: the predictor interface and the learned-method base class.

* :class:`FaceObservation`: one face of a photo as a predictor sees it (the photo, its
  iBUG-68 landmarks and the detector's own points).
* :class:`Predictor`: ``predictor(face, progress) -> FaceParams`` in the photo's frame —
  the fit, every learned method and every hybrid are predictors, so ``reconstruct``, the
  evaluation and video code treat them alike.
* :class:`LearnedMethod`: a network over the shared decoder. A method subclass supplies a
  config dataclass, its encoder heads (``encode``), the mapping of their outputs to
  :class:`~engine.face.FaceParams` (``decode``, in the crop's frame) and its loss list
  (weights from YAML, terms from :mod:`engine.losses.terms`); the base class gives it
  training (``build_for_training``), checkpoints (``load``) and inference on photos
  (``predict_photo``) for free (DECA's encode()/decode() split).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from engine.errors import ModelFileError, UserError
from engine.face import Decoded, FaceDecoder, FaceParams
from engine.render.camera import PerspectiveCamera

ProgressFn = Callable[[str, float, str], None]

__all__ = ["FaceObservation", "Predictor", "LearnedMethod", "LearnedPredictor", "flatten_groups", "recentre_camera"]


@dataclass
class FaceObservation:
    """One face of a photo: ``image (H, W, 3)`` uint8 RGB, ``landmarks68 (68, 2)`` in its
    pixels, and the detector's own points ``native (N, 2+)`` named by ``convention``
    (e.g. ``"mediapipe-478"``) when it has them."""

    image: np.ndarray
    landmarks68: np.ndarray
    native: np.ndarray | None = None
    convention: str | None = None

    @classmethod
    def from_detection(cls, image: np.ndarray, detection: Any, scale: float = 1.0) -> "FaceObservation":
        """From an :class:`engine.detect.FaceDetection` found on a copy of ``image`` reduced
        by ``scale`` (landmarks are scaled back into ``image``'s pixels)."""
        native = getattr(detection, "landmarks_native", None)
        return cls(image=image, landmarks68=np.asarray(detection.landmarks68, np.float64)[:, :2] * scale,
                   native=None if native is None else np.asarray(native, np.float64) * scale,
                   convention=getattr(detection, "convention", None))


class Predictor(Protocol):
    """``predictor(face, progress=None) -> FaceParams`` (batch of one, the photo's frame)."""

    name: str
    head: Any

    def __call__(self, face: FaceObservation, progress: ProgressFn | None = None) -> FaceParams: ...


def flatten_groups(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Fold a leading group dimension (K images of one identity, T frames of a clip) into
    the batch: every tensor whose first two dimensions match ``image``'s ``(B, T)`` becomes
    ``(B·T, ...)``; per-item tensors are repeated T times. Plain batches pass unchanged."""
    images = batch["image"]
    if images.dim() != 5:
        return dict(batch)
    B, T = images.shape[:2]
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() >= 2 and tuple(v.shape[:2]) == (B, T):
            out[k] = v.reshape(B * T, *v.shape[2:])
        elif torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == B:
            out[k] = v.repeat_interleave(T, 0)
        else:
            out[k] = v
    return out


def recentre_camera(camera: PerspectiveCamera, centre: tuple[float, float]) -> PerspectiveCamera:
    """The camera with its principal point moved to ``centre`` (pixels) and turned about its
    centre so that its old optical axis passes through its old principal point: the face the
    network placed on the crop's axis stays where it was, and the rotation becomes the head's
    rotation relative to the photo's optical axis (the inverse of the view alignment of the
    supervised terms, :func:`engine.losses.terms.view_aligned_rotation`). Exact for the
    principal ray, a small homography elsewhere (the off-axis angle is a few degrees)."""
    from engine.losses.terms import view_aligned_rotation

    K_new = camera.K.clone()
    K_new[:, 0, 2], K_new[:, 1, 2] = float(centre[0]), float(centre[1])
    Q = view_aligned_rotation(K_new, camera.K).transpose(-1, -2)  # old axis -> the ray through the old pp
    return PerspectiveCamera(K_new, Q @ camera.R, (Q @ camera.t[..., None])[..., 0], camera.image_size)


class LearnedMethod(nn.Module):
    """Base class of learned methods (see the module docstring).

    Subclasses set ``name`` (as in their ``METHOD`` declaration) and ``config_class`` (a
    dataclass with at least ``head_model``, ``head_model_path`` and ``image_size``) and
    implement :meth:`encode`, :meth:`decode` and :meth:`training_step`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, cfg: Any, head: Any = None) -> None:
        super().__init__()
        if head is None:
            from engine.head import load_head_model

            head = load_head_model(cfg.head_model, cfg.head_model_path or None)
        self.cfg = cfg
        self.head = head
        for p in self.head.parameters():
            p.requires_grad_(False)
        # the orientation of the identity modes the network's codes refer to (saved with it;
        # see engine.head.model.basis_signature): a head model built elsewhere may have some
        # modes negated, and identity_orientation() turns the codes onto its basis
        self.register_buffer("identity_signature", head.identity_signature())
        self.register_buffer("head_signature", head.identity_signature(), persistent=False)

    # ------------------------------------------------------------------ what a method implements
    def encode(self, images: Tensor) -> Any:
        """Crops ``(B, 3, S, S)`` RGB in [0, 1] -> the method's code (its encoder heads)."""
        raise NotImplementedError

    def decode(self, code: Any) -> FaceParams:
        """A code -> :class:`FaceParams` in the crop's frame (``S × S`` pixels)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ provided
    def identity_orientation(self) -> Tensor:
        """``(K_id,)`` ±1: the sign turning the network's identity codes (in the basis it
        learnt on) into coefficients of this head model's basis."""
        same = (self.identity_signature * self.head_signature) >= 0
        return torch.where(same, 1.0, -1.0).to(self.head_signature.dtype)

    @property
    def image_size(self) -> int:
        return int(self.cfg.image_size)

    @property
    def decoder(self) -> FaceDecoder:
        """The shared decoder over this method's head model and its ``reflectance`` model
        (a submodule named ``reflectance``, when the method has one). Built on demand (cheap)
        so it is not a second registered copy of the head in the state dict."""
        return FaceDecoder(self.head, getattr(self, "reflectance", None))

    def predict(self, images: Tensor) -> FaceParams:
        """Crops -> FaceParams in the crop's frame."""
        return self.decode(self.encode(images))

    def visibility(self, decoded: Decoded) -> Tensor:
        """``(B, V)`` bool: vertices seen in the crop (a depth test at the crop size)."""
        return decoded.visibility()

    @torch.no_grad()
    def predict_photo(self, rgb: np.ndarray, landmarks68: np.ndarray, crop_scale: float = 1.25) -> FaceParams:
        """One face of a photo -> FaceParams in the photo's pixel frame (CPU, batch of one).

        Crops with :func:`engine.photo.align_crop` around the landmarks, keeping the head's
        roll as the network was trained to see it, except for faces turned by more than 45°
        (on their side, upside down), which are cropped upright. The crop's camera is mapped
        back to the photo (:meth:`engine.photo.Crop.camera_to_image`: scale and shift into
        ``K``, the crop's in-plane turn into ``R, t``), and the SH light turns with it.
        """
        from engine.photo import align_crop
        from engine.photo.crop import face_frame
        from engine.render.shading import rotate_sh_about_view_axis

        S = self.image_size
        dev = self.head.template.device
        roll = face_frame(np.asarray(landmarks68))[2]  # eye line: ±pi upside down
        crop = align_crop(rgb, landmarks68, size=S, scale=crop_scale,
                          rotation=roll if abs(roll) > np.radians(45) else None)
        img = torch.from_numpy(crop.image).permute(2, 0, 1).float().div(255.0)[None].to(dev)
        params = self.decode(self.encode(img))
        decoded = self.decoder(params)
        albedo = decoded.albedo
        vis = self.visibility(decoded)[0].float()
        cam = params.camera
        if not isinstance(cam, PerspectiveCamera):
            raise UserError(f"method {self.name!r} predicts a {type(cam).__name__}; only perspective "
                            "cameras map back to photos")
        K_np, R_roll_np = crop.camera_to_image(cam.K[0].double().cpu().numpy())
        K = torch.tensor(K_np, dtype=torch.float32)
        R_roll = torch.tensor(R_roll_np, dtype=torch.float32)
        view_turn = R_roll_np * np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])  # D R D, D = diag(1,-1,-1)
        sh = rotate_sh_about_view_axis(params.sh.float().cpu(), float(np.arctan2(view_turn[1, 0], view_turn[0, 0])))
        H, W = rgb.shape[:2]
        camera = PerspectiveCamera(K[None], R_roll @ cam.R.float().cpu(), (R_roll @ cam.t.float().cpu()[0])[None],
                                   (H, W))
        if getattr(self.cfg, "recentre", False):
            # the principal point at the photo's centre (the network's camera turned about its
            # centre to keep the face where it was): the rotation becomes the head's rotation
            # relative to the photo's optical axis
            camera = recentre_camera(camera, (W / 2.0, H / 2.0))
        return FaceParams(
            identity=params.identity.float().cpu(), expression=params.expression.float().cpu(),
            pose=params.pose.float().cpu(), camera=camera, sh=sh,
            albedo=None if albedo is None else albedo.clamp(0, 1).float().cpu(),
            albedo_map=None if params.albedo_map is None else params.albedo_map.clamp(0, 1).float().cpu(),
            displacement=None if params.displacement is None else params.displacement.float().cpu(),
            displacement_window=None if params.displacement_window is None else params.displacement_window.float().cpu(),
            detail_code=None if params.detail_code is None else params.detail_code.float().cpu(),
            visibility=vis[None].cpu(), landmarks=torch.as_tensor(np.asarray(landmarks68)[:, :2]).float()[None])

    # The head model is rebuilt from its own file, not stored in checkpoints (saves MBs).
    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        for k in [k for k in sd if k.startswith("head.")]:
            del sd[k]
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        res = super().load_state_dict(state_dict, strict=False, assign=assign)
        # a state from before networks recorded their identity orientation keeps the local build's
        missing = [k for k in res.missing_keys if not k.startswith("head.") and k != "identity_signature"]
        if strict and (missing or res.unexpected_keys):
            raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {res.unexpected_keys[:5]}")
        return res

    @classmethod
    def upgrade_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        """Rename tensors of checkpoints written by older versions of the method (default: none)."""
        return state

    def adopt_weights(self, checkpoint: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """Another method's checkpoint (``init_from``) as tensors named for this network, for
        the parts that mean the same (e.g. a MoFA encoder's backbone and pose rows as CEST's
        viewpoint estimator); None when this method cannot use that method's weights
        (default: tensors are then matched by name only)."""
        return None

    @torch.no_grad()
    def complete_truth(self, truth: dict[str, Tensor]) -> dict[str, Tensor]:
        """``truth`` with ``gt_vertices`` computed from the gt codes, batched, when a vertex
        term needs them and the items left them out (``data.options.vertices: false``)."""
        losses = getattr(self, "losses", {})
        needed = any(losses.get(k) for k in ("vertices", "shape"))
        if not needed or "gt_vertices" in truth or "gt_identity" not in truth or "gt_expression" not in truth:
            return truth
        pose = truth.get("gt_pose") if self.head.n_joints else None
        out = self.head(truth["gt_identity"].float(), truth["gt_expression"].float(),
                        None if pose is None else pose.float())
        return {**truth, "gt_vertices": out.vertices}

    def export_config(self) -> dict[str, Any]:
        """What inference needs to rebuild the network (stored in checkpoints)."""
        return {self.name: dataclasses.asdict(self.cfg)}

    @classmethod
    def config_from_dict(cls, data: Mapping[str, Any]) -> Any:
        """The config dataclass from a mapping (a YAML ``model:`` section or a checkpoint)."""
        from engine.train.config import from_dict

        return from_dict(cls.config_class, dict(data), "model.")

    @classmethod
    def build_for_training(cls, train_cfg: Any):
        """Trainer factory: the network (config from ``model:``, head model and image size
        from ``data:``) and its train/validation data sets."""
        from engine.data import build_dataset
        from engine.train.method import MethodBundle

        mcfg = cls.config_from_dict({**train_cfg.model, "image_size": train_cfg.data.image_size,
                                     "head_model": train_cfg.data.head_model,
                                     "head_model_path": train_cfg.data.head_model_path})
        model = cls(mcfg)
        # the data sets render on the CPU (in loader workers) with their own copy of the head
        # model: the method's head moves to the training device (a CUDA head made the
        # generator mix devices) and its dtype with the method
        data_head = copy.deepcopy(model.head).cpu()
        return MethodBundle(model, build_dataset(train_cfg.data, "train", head=data_head),
                            build_dataset(train_cfg.data, "val", head=data_head))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "LearnedMethod":
        """A ready-to-run network (eval mode) from a training or exported checkpoint."""
        from engine.train.state import load_checkpoint_file

        data = load_checkpoint_file(path)
        export = data.get("export", {})
        if data.get("method") != cls.name or cls.name not in export:
            found = data.get("method")
            raise ModelFileError(f"checkpoint {path} is not a {cls.name} checkpoint"
                                 + (f" (it is a {found!r} checkpoint)" if isinstance(found, str) else ""))
        model = cls(cls.config_from_dict(export[cls.name]))
        state = cls.upgrade_state({k: (v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v)
                                   for k, v in data["model"].items()})
        if "identity_signature" not in state:  # written before networks recorded it: the local build's
            state["identity_signature"] = model.identity_signature.clone()
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
        if any(k not in got or got[k] != shape for k, shape in expected.items()):
            from engine.checkpoints import describe_state_mismatch

            trained = export[cls.name].get("head_model", "?")
            raise ModelFileError(f"checkpoint {path} does not fit this {cls.name} network: "
                                 + describe_state_mismatch(expected, got, f"head model {trained!r}"))
        model.load_state_dict(state)
        model.source_path = str(Path(path).expanduser().absolute())  # where it came from (outputs record it)
        # channels-last convolution weights (same values): ~25 % faster on one CPU thread;
        # the encoders put their inputs in the same format (engine.encoders.resnet.in_weight_format)
        return model.to(device).to(memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def visuals(self, batch: Any, result: Any) -> dict[str, Tensor]:
        """input / render / overlay ``(n, 3, S, S)`` for TensorBoard (first 8 items)."""
        params: FaceParams = result.outputs["params"]
        images = result.outputs["images"][:8].float()
        n = images.shape[0]
        out = self.decoder(params.select(slice(0, n)).detach().to(dtype=torch.float32)).render(antialias=False)
        render = out.image.clamp(0, 1)
        cover = out.fragments.mask[:, None].float()
        overlay = images * (1 - 0.6 * cover) + render * 0.6 * cover
        return {"input": images, "render": render * cover, "overlay": overlay}


class LearnedPredictor:
    """A trained network as a :class:`Predictor`."""

    def __init__(self, network: LearnedMethod, crop_scale: float = 1.25) -> None:
        self.network = network
        self.head = network.head
        self.name = network.name
        self.crop_scale = crop_scale

    def __call__(self, face: FaceObservation, progress: ProgressFn | None = None) -> FaceParams:
        import time

        t0 = time.perf_counter()
        if progress:
            progress("network", 0.1, f"running the {self.name} network")
        out = self.network.predict_photo(face.image, face.landmarks68, self.crop_scale)
        out.timings = {"network": time.perf_counter() - t0}
        return out

    def detail_maps(self, params: FaceParams) -> Any:
        """The network's animated detail maps for an estimate (:meth:`engine.methods.deca.Deca.detail_maps`),
        or None when the network has no detail stage."""
        fn = getattr(self.network, "detail_maps", None)
        return fn(params) if fn is not None else None
