"""MoFA (Tewari et al., ICCV 2017): a CNN encoder trained through a fixed analytic decoder.

encoder (:class:`engine.encoders.MofaEncoder`) -> semantic code -> decoder: head model
(identity in prior-std units, ARKit expression), perspective camera with a fixed canonical
focal length, per-vertex albedo from a reflectance basis, SH shading (9 × RGB, MoFA's
ambient offset), per-vertex photo sampling with visibility. Loss (paper's weights):

    w_photo · ℓ2,1 photometric over visible face-skin vertices
  + w_land  · landmark surrogate (optional; normalised by the crop size)
  + w_reg   · (‖α‖² + w_β ‖β‖² + w_δ ‖δ‖²)        (statistical regulariser)
  + w_range · out-of-range penalty on ARKit weights (ours: the weights live in [0, 1])

Reflectance: our head models have no albedo PCA, so reflectance is a mean skin colour
plus the K smoothest eigenvectors of the Laplacian of the template's nearest-neighbour graph (one RGB coefficient per
mode; mode 0 is the constant = global skin colour), each with a prior std (0.15 for the
global colour, 0.05 for the spatial modes). The basis is a buffer stored in checkpoints.

Inference: :func:`load_checkpoint` -> :class:`Mofa`; ``Mofa.predict(images)`` gives the
code and ``Mofa.decode(code)`` the mesh, camera and colours, for crops of ``image_size``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.encoders import CodeLayout, MofaEncoder, SemanticCode
from engine.errors import ModelFileError
from engine.losses import landmark_loss, landmark_weights_68, photometric_l21, range_penalty, tikhonov
from engine.render import (PerspectiveCamera, axis_angle_to_matrix, camera_to_view, sample_image,
                           shade_sh, vertex_normals, vertex_visibility)
from engine.train.method import MethodBundle, StepResult

FRONTAL_R = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
SKIN_MEAN = (0.62, 0.45, 0.38)  # engine.losses.SkinColourPrior's mean


@dataclass
class MofaConfig:
    """Architecture, decoder and loss options (``model:`` section of a training config)."""

    backbone: str = "resnet18"
    width: float = 1.0
    norm: str = "batch"
    head_model: str = "open"
    head_model_path: str = ""
    image_size: int = 224
    n_identity: int = 0  # 0 = all of the head model's identity modes
    n_expression: int = 0  # 0 = all expression units
    n_reflectance: int = 10
    refl_std_global: float = 0.15
    refl_std_local: float = 0.05
    focal: float = 3.375  # focal length in units of the crop side (a ~0.9 m portrait lens)
    depth_m: float = 0.9  # canonical camera distance (translation z at a zero code)
    xy_scale_m: float = 0.1  # metres per unit of the predicted x/y translation
    depth_scale_m: float = 0.3  # metres per unit of the predicted z translation
    depth_lr_scale: float = 0.1  # MoFA's reduced learning rate for depth
    region: str = "face_skin"
    visibility: str = "raster"  # raster (z-buffer at visibility_size) | normals (back-face only)
    visibility_size: int = 64
    w_photo: float = 1.92
    w_land: float = 0.0
    w_reg: float = 2.9e-5
    w_beta: float = 1.7e-3
    w_delta: float = 0.8
    w_range: float = 1.0


def laplacian_basis(template: Tensor, k: int, neighbours: int = 8) -> Tensor:
    """The ``k`` smoothest eigenvectors (V, k) of the graph Laplacian of the template's
    k-nearest-neighbour graph, RMS 1 per vertex, signs fixed (largest entry positive).

    A spatial graph rather than the mesh's edges: the head mesh has separate parts (eyes,
    tongue, mouth cavity) whose indicator vectors would otherwise be the smoothest modes.
    Mode 0 is the constant (the global skin colour).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh
    from scipy.spatial import cKDTree

    X = template.detach().cpu().double().numpy()
    V = X.shape[0]
    _, idx = cKDTree(X).query(X, k=neighbours + 1)
    rows = np.repeat(np.arange(V), neighbours)
    A = sp.coo_matrix((np.ones(V * neighbours), (rows, idx[:, 1:].ravel())), shape=(V, V))
    A = ((A + A.T) > 0).astype(np.float64)
    L = sp.diags(np.asarray(A.sum(1)).ravel()) - A
    v0 = np.ones(V) / np.sqrt(V)
    _, vecs = eigsh(L.tocsc(), k=k, sigma=-1e-3, which="LM", v0=v0)
    vecs = vecs * np.sqrt(V)
    signs = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
    return torch.tensor(vecs * signs, dtype=torch.float32)


@dataclass
class Decoded:
    """Decoder output: model-frame vertices, camera, per-vertex albedo/shading/colour."""

    vertices: Tensor  # (B, V, 3)
    camera: PerspectiveCamera
    albedo: Tensor  # (B, V, 3)
    shading: Tensor  # (B, V, 3)
    colour: Tensor  # (B, V, 3)
    landmarks2d: Tensor  # (B, 68, 2) crop pixels
    normals: Tensor  # (B, V, 3) model frame


class Mofa(nn.Module):
    """Encoder + fixed analytic decoder + MoFA's unsupervised loss."""

    def __init__(self, cfg: MofaConfig, head=None) -> None:
        super().__init__()
        if head is None:
            from engine.head import load_head_model

            head = load_head_model(cfg.head_model, cfg.head_model_path or None)
        self.cfg = cfg
        self.head = head
        for p in self.head.parameters():
            p.requires_grad_(False)
        n_id = cfg.n_identity or head.n_identity
        n_exp = cfg.n_expression or head.n_expression
        if n_id > head.n_identity or n_exp > head.n_expression:
            raise ValueError("n_identity/n_expression exceed the head model's")
        self.layout = CodeLayout(n_id, n_exp, cfg.n_reflectance)
        self.encoder = MofaEncoder(self.layout, cfg.backbone, cfg.width, cfg.norm)
        basis = laplacian_basis(head.template, cfg.n_reflectance)  # (V, K)
        std = torch.full((cfg.n_reflectance,), cfg.refl_std_local)
        std[0] = cfg.refl_std_global
        self.register_buffer("refl_basis", (basis * std).T.contiguous())  # (K, V)
        self.register_buffer("refl_mean", torch.tensor(SKIN_MEAN))
        mask = head.regions[cfg.region].clone()
        self.register_buffer("region_mask", mask)
        with torch.no_grad():
            centre = head.landmarks(head.template[None])[0].mean(0)
        t0 = torch.tensor([0.0, 0.0, cfg.depth_m]) - FRONTAL_R @ centre.cpu()
        self.register_buffer("t0", t0)
        self.register_buffer("frontal", FRONTAL_R.clone())
        self.register_buffer("lmk_weights", landmark_weights_68())

    # The head model is rebuilt from its own file, not stored in checkpoints (saves ~6 MB).
    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        for k in [k for k in sd if k.startswith("head.")]:
            del sd[k]
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        res = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in res.missing_keys if not k.startswith("head.")]
        if strict and (missing or res.unexpected_keys):
            raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {res.unexpected_keys[:5]}")
        return res

    # ------------------------------------------------------------------ training API
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        depth = set(map(id, self.encoder.depth_parameters()))
        rest = [p for p in self.encoder.parameters() if id(p) not in depth]
        return [{"params": rest},
                {"params": self.encoder.depth_parameters(), "lr_scale": self.cfg.depth_lr_scale}]

    def export_config(self) -> dict[str, Any]:
        return {"mofa": dataclasses.asdict(self.cfg)}

    # ------------------------------------------------------------------ model
    def predict(self, images: Tensor) -> SemanticCode:
        """Semantic code for crops (B, 3, S, S) RGB in [0, 1]."""
        return self.encoder(images)

    def intrinsics(self, batch: int, device, dtype=torch.float32) -> Tensor:
        S = self.cfg.image_size
        f = self.cfg.focal * S
        K = torch.tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
        return K.expand(batch, 3, 3)

    def camera(self, code: SemanticCode) -> PerspectiveCamera:
        B = code.batch_size
        R = self.frontal @ axis_angle_to_matrix(code.rotation.float())
        scale = code.translation.new_tensor([self.cfg.xy_scale_m, self.cfg.xy_scale_m, self.cfg.depth_scale_m])
        t = self.t0 + code.translation.float() * scale
        S = self.cfg.image_size
        return PerspectiveCamera(self.intrinsics(B, R.device), R, t, (S, S))

    def albedo(self, code: SemanticCode) -> Tensor:
        return self.refl_mean + torch.einsum("bkc,kv->bvc", code.reflectance.float(), self.refl_basis)

    def decode(self, code: SemanticCode) -> Decoded:
        """Mesh, camera and shaded per-vertex colours of a code (always in float32)."""
        code = code.to(torch.float32)
        n_id, n_exp = self.layout.n_identity, self.layout.n_expression
        ident = code.identity.new_zeros(code.batch_size, self.head.n_identity)
        ident[:, :n_id] = code.identity * self.head.identity_std[:n_id]
        expr = code.expression.new_zeros(code.batch_size, self.head.n_expression)
        expr[:, :n_exp] = code.expression
        verts = self.head(ident, expr, None).vertices
        cam = self.camera(code)
        normals = vertex_normals(verts, self.head.faces)
        shading = shade_sh(camera_to_view(cam.rotate_normals(normals)), code.sh, ambient=1.0)
        albedo = self.albedo(code)
        uv, _ = cam.project(self.head.landmarks(verts))
        return Decoded(verts, cam, albedo, shading, albedo * shading, uv, normals)

    def visible(self, dec: Decoded) -> Tensor:
        """(B, V) bool: vertices the photometric term may use (region ∧ visibility)."""
        if self.cfg.visibility == "normals":
            pts = dec.camera.to_camera(dec.vertices)
            n = dec.camera.rotate_normals(dec.normals)
            vis = (n * dec.camera.view_directions(pts)).sum(-1) > 0
        else:  # z-buffer at a reduced resolution: occlusion needs no full-size raster
            r = self.cfg.visibility_size / self.cfg.image_size
            cam = dec.camera
            K = cam.K.clone()
            K[:, :2] *= r
            small = PerspectiveCamera(K, cam.R, cam.t, (self.cfg.visibility_size,) * 2)
            vis = vertex_visibility(dec.vertices.detach(), self.head.faces, small,
                                    tolerance=5e-3, normals=dec.normals.detach())
        return vis & self.region_mask

    def losses(self, images: Tensor, code: SemanticCode, landmarks: Tensor | None = None,
               landmark_valid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor], Decoded]:
        """Per-batch loss (scalar), its terms, and the decoded faces."""
        cfg = self.cfg
        dec = self.decode(code)
        uv, _ = dec.camera.project(dec.vertices)
        observed = sample_image(images.float(), uv)
        vis = self.visible(dec)
        photo = photometric_l21(dec.colour, observed, vis).mean()
        c = code.to(torch.float32)
        reg = (tikhonov(c.identity) + cfg.w_beta * tikhonov(c.reflectance.flatten(1))
               + cfg.w_delta * tikhonov(c.expression)).mean()
        rng = range_penalty(c.expression, self.head.expression_range[: self.layout.n_expression]).mean()
        loss = cfg.w_photo * photo + cfg.w_reg * reg + cfg.w_range * rng
        terms = {"photo": photo.detach(), "reg": reg.detach(), "range": rng.detach(),
                 "visible_fraction": vis.float().mean().detach()}
        if landmarks is not None:
            S = float(cfg.image_size)
            w = self.lmk_weights
            if landmark_valid is not None:
                w = w * landmark_valid.to(w.dtype)
            land = landmark_loss(dec.landmarks2d / S, landmarks.float() / S, w).mean()
            terms["landmark"] = land.detach()
            terms["landmark_px"] = ((dec.landmarks2d - landmarks).norm(dim=-1).mean()).detach()
            if cfg.w_land > 0:
                loss = loss + cfg.w_land * land
        return loss, terms, dec

    def training_step(self, batch: dict[str, Tensor]) -> StepResult:
        images = batch["image"]
        code = self.encoder(images)
        with torch.autocast(images.device.type, enabled=False):
            loss, terms, dec = self.losses(images, code, batch.get("landmarks"),
                                           batch.get("landmarks_valid"))
        return StepResult(loss, terms, {"code": code.detach(), "decoded": dec, "images": images})

    @torch.no_grad()
    def visuals(self, batch: Any, result: StepResult) -> dict[str, Tensor]:
        """input / render / overlay (B, 3, S, S) for TensorBoard (first 8 items)."""
        from engine.render import interpolate, rasterize

        dec: Decoded = result.outputs["decoded"]
        images = result.outputs["images"][:8].float()
        n = images.shape[0]
        screen = dec.camera.to_screen(dec.vertices)[:n]
        S = self.cfg.image_size
        frags = rasterize(screen.float(), self.head.faces, (S, S), perspective=True, cull_backfaces=True)
        rgb = interpolate(dec.colour[:n].float(), self.head.faces, frags).clamp(0, 1)
        render = rgb.permute(0, 3, 1, 2)
        cover = (frags.tri_id >= 0)[:, None].float()
        overlay = images * (1 - 0.6 * cover) + render * 0.6 * cover
        return {"input": images, "render": render * cover, "overlay": overlay}


def build_for_training(cfg) -> MethodBundle:
    """Trainer factory: ``method: mofa`` (see engine/train/method.py)."""
    from engine.data import build_dataset
    from engine.train.config import from_dict

    mcfg = from_dict(MofaConfig, {**cfg.model, "image_size": cfg.data.image_size,
                                  "head_model": cfg.data.head_model,
                                  "head_model_path": cfg.data.head_model_path}, "model.")
    model = Mofa(mcfg)
    train_set = build_dataset(cfg.data, "train", head=model.head)
    val_set = build_dataset(cfg.data, "val", head=model.head)
    return MethodBundle(model, train_set, val_set)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Mofa:
    """A ready-to-run :class:`Mofa` (eval mode) from a training or exported checkpoint."""
    from engine.train.state import load_checkpoint_file
    from engine.train.config import from_dict

    data = load_checkpoint_file(path)
    if data.get("method") != "mofa" or "mofa" not in data.get("export", {}):
        raise ModelFileError(f"checkpoint {path} is not a MoFA checkpoint")
    cfg = from_dict(MofaConfig, data["export"]["mofa"])
    model = Mofa(cfg)
    state = {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v)
             for k, v in data["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not match its head model ({exc})") from None
    return model.to(device).eval()


@torch.no_grad()
def predict_photo(model: Mofa, rgb: np.ndarray, landmarks68: np.ndarray, crop_scale: float = 1.25):
    """One face of a photo -> an ``engine.fitting`` ``FitResult`` in the photo's pixel frame.

    Crops with ``engine.photo.align_crop`` (no roll removal, so the crop is a scale +
    shift of the photo), runs the encoder once and maps the crop camera back:
    ``K_photo = inv(A) @ K_crop`` with ``A`` the crop's 3×3 similarity; ``R, t`` unchanged.
    Used by ``--method learned`` and as the initialisation of ``--method hybrid``.
    """
    from engine.fitting.fitter import FitResult
    from engine.photo import align_crop
    from engine.render.shading import SH_CONSTANTS

    S = model.cfg.image_size
    dev = model.refl_mean.device
    crop = align_crop(rgb, landmarks68, size=S, scale=crop_scale)
    img = torch.from_numpy(crop.image).permute(2, 0, 1).float().div(255.0)[None].to(dev)
    code = model.predict(img)
    dec = model.decode(code)
    A = np.vstack([crop.matrix, [0.0, 0.0, 1.0]])
    K = torch.tensor(np.linalg.inv(A), dtype=torch.float32) @ dec.camera.K[0].cpu()
    sh = code.sh[0].float().cpu().clone()
    sh[0] += 1.0 / SH_CONSTANTS[0]  # MoFA's ambient offset -> raw coefficients
    ident = torch.zeros(model.head.n_identity)
    ident[: model.layout.n_identity] = code.identity[0].cpu() * model.head.identity_std[: model.layout.n_identity].cpu()
    expr = torch.zeros(model.head.n_expression)
    expr[: model.layout.n_expression] = code.expression[0].cpu()
    vis = model.visible(dec)[0].float().cpu()
    H, W = rgb.shape[:2]
    return FitResult(identity=ident, expression=expr, pose=torch.zeros(model.head.n_joints, 3),
                     R=dec.camera.R[0].cpu(), t=dec.camera.t[0].cpu(), K=K, image_size=(W, H), sh=sh,
                     albedo=dec.albedo[0].clamp(0, 1).cpu(), vertices=dec.vertices[0].cpu(),
                     visibility=vis, landmarks_target=torch.as_tensor(np.asarray(landmarks68)[:, :2]).float())
