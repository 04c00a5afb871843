"""CEST: sequential conditional estimators trained on clips through the shared decoder.

Four estimators, each conditioned on the previous ones' outputs (issue #13):

* ``f_v`` (viewpoint): a CNN backbone on the crop -> head rotation and translation of a
  perspective camera with a fixed canonical focal length (the translation's depth is the
  scale);
* ``f_s`` (shape): a CNN backbone on the crop re-aligned to a canonical view with ``f_v``'s
  pose (a similarity warp: the head's projected centre to the crop centre, its roll undone,
  its size normalised to the canonical depth) -> identity, expression and jaw;
* the photo unwrapped into UV space through that shape and viewpoint
  (:func:`engine.render.unwrap_photo`: the *illuminated texture* and its visibility mask),
  over the whole UV layout at ``uv_size`` or, with ``window_size``, over the face's UV
  window only (:func:`engine.render.uv.uv_window`; the whole-head layout spends ~15/16 of
  its texels elsewhere); its visibility by a z-buffer or, with ``unwrap_splat_cells``, by
  the cheaper vertex-splat test (:func:`engine.render.splat_visibility`);
* ``f_r`` (reflectance): a small U-Net (:class:`engine.encoders.UNet`) on the illuminated
  texture and its mask -> a UV reflectance map, placed into the whole layout's
  ``albedo_map (B, 3, U, U)`` when it covers the face window (:meth:`Cest.to_layout`);
* ``f_ℓ`` (light): a small CNN on the image, the illuminated texture, its mask and the
  reflectance (all at the unwrap's size) -> 9×3 SH coefficients.

Crops of another size than ``image_size`` are resized to it first; ``viewpoint_size``
lets f_v see a smaller copy. The committed network's settings and speed: docs/cest.md.

The pose fed to the warp and the unwrapped texture are detached: each estimator learns from
the losses through its own outputs, the conditioning inputs are inputs. With ``independent:
true`` (IEST, the ablation) the same networks see the image alone: ``f_s`` the unwarped crop,
``f_r`` the crop resized to ``U × U`` (mask channel 1), ``f_ℓ`` the crop (other channels 0).

Losses (loss library terms, weights from the config's ``losses``):
``photometric_l1`` (masked ℓ1 over the visible face skin), ``reflectance_symmetry`` (the
same with the UV reflectance mirrored, :func:`engine.texture.flip_uv_map`),
``clip_consistency`` (each frame rendered with the identity and reflectance of one random
other frame of its clip: O(T) renders per clip), ``landmark`` and the statistical priors.
Defaults λ1 = 1 (clip consistency), λ2 = 0.1 (symmetry) as in the paper; see docs/cest.md.

Inference: ``Cest.load(path)``; ``predict_photo`` returns FaceParams with the UV
``albedo_map`` (and its per-vertex samples as ``albedo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor
import torch.nn.functional as Fn

from engine.encoders import CodeLayout, ConvEncoder, UNet, build_backbone
from engine.errors import ConfigError
from engine.face import Decoded, FaceParams
from engine.head.model import VertexSubset
from engine.losses import landmark_weights_68
from engine.losses.terms import LossInputs, check_weights, weighted_sum
from engine.methods.base import LearnedMethod, flatten_groups
from engine.methods.semantic import SKIN_MEAN, TRUTH_FIELDS  # SKIN_MEAN: the reflectance of a zero U-Net output
from engine.render import (PerspectiveCamera, axis_angle_to_matrix, facing_camera, frontal_rotation,
                           splat_visibility, unwrap_photo, vertex_normals)
from engine.render.rasterize import texture as sample_texture
from engine.render.shading import SH_CONSTANTS
from engine.render.uv import uv_window, window_coordinates
from engine.train.method import StepResult

METHOD = {
    "name": "cest",
    "kind": "learned",
    "label": "CEST (sequential estimators, UV reflectance)",
    "description": "Viewpoint, shape, UV reflectance and light estimated in sequence, trained on clips.",
    "needs": "a checkpoint (--checkpoint; the open model has a committed network)",
    "entry": "Cest",
    "train_config": "train/configs/cest.yaml",
    "checkpoints": {"open": "assets/cest_open_default.pt"},
    "order": 40,
}


#: λ1 (clip consistency) = 1 and λ2 (reflectance symmetry) = 0.1 as in the paper; landmark
#: and prior weights as for MoFA's small configs.
DEFAULT_LOSSES = {"photometric_l1": 1.0, "clip_consistency": 1.0, "reflectance_symmetry": 0.1,
                  "landmark": 1.0, "identity_prior": 2.9e-5, "expression_prior": 2.32e-5,
                  "expression_range": 1.0, "jaw_prior": 1e-2}


def _resized(images: Tensor, side: int) -> Tensor:
    """``images (B, C, H, W)`` at ``side × side`` (antialiased bilinear); as they are when
    they already have that size."""
    if tuple(images.shape[-2:]) == (side, side):
        return images
    return Fn.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class CestConfig:
    """Architecture, decoder and loss options (``model:`` section of a training config)."""

    head_model: str = "open"
    head_model_path: str = ""
    image_size: int = 224
    backbone: str = "resnet18"  # f_v and f_s (engine.encoders.build_backbone)
    viewpoint_size: int = 0  # > 0: f_v sees the crop resized to this side (px); 0: image_size
    shape_size: int = 0  # > 0: the canonical view f_s sees has this side (px); 0: image_size
    # f_s reuses f_v's stem and first stage: the canonical-view warp moves their feature map
    # (stride 4) instead of the crop, and f_s runs its remaining stages on it (its own stem
    # and first stage are dropped): about 40 % of f_s's time
    shared_stem: bool = False
    width: float = 1.0
    norm: str = "batch"
    n_identity: int = 0  # 0 = all of the head model's identity modes
    n_expression: int = 0  # 0 = all expression units
    uv_size: int = 64  # the reflectance map over the whole UV layout (U × U texels)
    # > 0: the unwrap, f_r and f_ℓ work on the face's UV window (engine.render.uv_window of
    # ``region``) at window_size × window_size texels; the reflectance is then placed into the
    # whole-layout map (outside the window: the median of the window's texels). 0: they work on
    # the whole layout at uv_size (the face then gets ~1/4 of its side).
    window_size: int = 0
    unet_width: int = 16  # f_r: channels of the U-Net's first level
    unet_depth: int = 3
    light_width: int = 16  # f_ℓ: channels of its first convolution
    independent: bool = False  # IEST: every estimator from the image alone (the ablation)
    focal: float = 3.375  # focal length in units of the crop side
    depth_m: float = 0.9  # canonical camera distance (translation z at a zero code)
    xy_scale_m: float = 0.1  # metres per unit of the predicted x/y translation
    depth_scale_m: float = 0.3  # metres per unit of the predicted z translation
    region: str = "face_skin"  # the photometric terms' region
    visibility_size: int = 64  # z-buffer size of the visibility test (photometric weights, unwrap)
    # > 0: the unwrap's visibility by the vertex-splat depth test over that many cells a side
    # (engine.render.splat_visibility, ~1/6 of the z-buffer's time), 0: the z-buffer
    unwrap_splat_cells: int = 0
    unwrap_splat_tolerance: float = 0.02  # metres
    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    # leave face skin hidden by props (realistic items' occlusion_mask) out of the photometric terms
    mask_occlusions: bool = True
    # predict_photo: the camera's principal point at the photo's centre (as MoFA's networks)
    recentre: bool = False


@dataclass
class CestCode:
    """The estimators' outputs: ``rotation``/``translation (B, 3)`` (f_v), ``identity (B,
    K_id)`` in prior-std units, ``expression (B, K_exp)``, ``jaw (B, 3)`` (f_s), ``albedo_map
    (B, 3, U, U)`` over the whole layout (f_r), ``sh (B, 9, 3)`` (f_ℓ, before the ambient
    offset), and the illuminated ``texture (B, 3, T, T)`` with its ``texture_mask (B, 1, T,
    T)`` (``T`` = :attr:`Cest.texels`: the face window's or the whole layout's side)."""

    rotation: Tensor
    translation: Tensor
    identity: Tensor
    expression: Tensor
    jaw: Tensor
    albedo_map: Tensor | None = None
    sh: Tensor | None = None
    texture: Tensor | None = None
    texture_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.rotation.shape[0]

    def detach(self) -> "CestCode":
        return CestCode(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).detach()
                           for f in fields(self)})


class Cest(LearnedMethod):
    """CEST / IEST: f_v, f_s, f_r, f_ℓ over the shared decoder with a UV reflectance map."""

    name = "cest"
    config_class = CestConfig

    def __init__(self, cfg: CestConfig, head=None) -> None:
        super().__init__(cfg, head)
        head = self.head
        n_id = cfg.n_identity or head.n_identity
        n_exp = cfg.n_expression or head.n_expression
        if n_id > head.n_identity or n_exp > head.n_expression:
            raise ConfigError("model.n_identity/n_expression exceed the head model's")
        side, name = (cfg.window_size, "window_size") if cfg.window_size > 0 else (cfg.uv_size, "uv_size")
        if side % 2**cfg.unet_depth:
            raise ConfigError(f"model.{name} ({side}) must be divisible by 2^unet_depth "
                              f"({2**cfg.unet_depth})")
        if cfg.region not in head.regions:
            raise ConfigError(f"model.region {cfg.region!r} is not a region of the head model "
                              f"({', '.join(head.regions)})")
        self.losses = check_weights({**DEFAULT_LOSSES, **cfg.losses}, "model.losses")
        self.n_id, self.n_exp = n_id, n_exp
        self.jaw_index = head.joint_names.index("jaw") if "jaw" in head.joint_names else -1
        self.f_v = build_backbone(cfg.backbone, cfg.width, cfg.norm)
        self.f_v_head = torch.nn.Linear(self.f_v.out_features, 6)
        self.f_s = build_backbone(cfg.backbone, cfg.width, cfg.norm)
        if cfg.shared_stem:
            self.f_s.stem = torch.nn.Identity()
            for k in range(self.f_s.first_stage_blocks):
                self.f_s.layers[k] = torch.nn.Identity()
        self.f_s_head = torch.nn.Linear(self.f_s.out_features, n_id + n_exp + 3)
        for lin in (self.f_v_head, self.f_s_head):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        self.f_r = UNet(4, 3, cfg.unet_width, cfg.unet_depth)
        self.f_l = ConvEncoder(10, 27, cfg.light_width)
        self.register_buffer("region_mask", head.regions[cfg.region].clone())
        # the face's UV window (u0, v0, u1, v1), from the head model (not saved)
        self.window = (uv_window(head.uv, head.face_uv, head.faces, head.regions[cfg.region])
                       if cfg.window_size > 0 else None)
        self.register_buffer("lmk_weights", landmark_weights_68())
        with torch.no_grad():
            centre = head.landmarks(head.template[None])[0].mean(0).cpu()
        self.register_buffer("centre", centre)
        self.register_buffer("t0", torch.tensor([0.0, 0.0, cfg.depth_m]) - frontal_rotation() @ centre)

    # ------------------------------------------------------------------ pieces
    def camera(self, rotation: Tensor, translation: Tensor) -> PerspectiveCamera:
        """f_v's outputs -> the crop's perspective camera (principal point at its centre)."""
        S = self.cfg.image_size
        B = rotation.shape[0]
        f = self.cfg.focal * S
        K = rotation.new_tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]).expand(B, 3, 3)
        R = frontal_rotation(device=rotation.device) @ axis_angle_to_matrix(rotation)
        scale = translation.new_tensor([self.cfg.xy_scale_m, self.cfg.xy_scale_m, self.cfg.depth_scale_m])
        return PerspectiveCamera(K, R, self.t0 + translation * scale, (S, S))

    def canonical_view(self, images: Tensor, camera: PerspectiveCamera, size: int = 0) -> Tensor:
        """The crops warped (similarity) so the head's projected centre is at the crop centre,
        its roll undone and its size that of a head at the canonical depth; sampled at
        ``size × size`` (0: the input's own size). ``images`` may also be a feature map of
        the crop (any channels and resolution: the warp is in the crop's normalised frame)."""
        with torch.no_grad():
            S = self.cfg.image_size  # camera pixels -> the crop's normalised frame
            side = images.shape[-1]
            c = (camera.R @ self.centre.to(camera.R.dtype)) + camera.t  # (B, 3) camera frame
            px = (camera.K @ c[..., None])[..., 0]
            xy = px[:, :2] / px[:, 2:3]  # pixels
            zoom = self.cfg.depth_m / c[:, 2].clamp_min(1e-3)  # image scale relative to the canonical depth
            roll = torch.atan2(camera.R[:, 1, 0], camera.R[:, 0, 0])  # the model x axis in the image
            cos, sin = torch.cos(roll) / zoom, torch.sin(roll) / zoom
            theta = torch.stack([torch.stack([cos, -sin, 2 * xy[:, 0] / S - 1], -1),
                                 torch.stack([sin, cos, 2 * xy[:, 1] / S - 1], -1)], 1)
            out = list(images.shape[:2]) + [size or side, size or side]
            grid = Fn.affine_grid(theta.to(images.dtype), out, align_corners=False)
        return Fn.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @property
    def texels(self) -> int:
        """The side of the maps the unwrap, f_r and f_ℓ work on: the face window's
        ``window_size``, else the whole layout's ``uv_size``."""
        return self.cfg.window_size if self.window is not None else self.cfg.uv_size

    def uv_fragments(self):
        """The rasterised UV layout (over the face window when there is one) at
        :attr:`texels` (the shared decoder's cache: once per head, size and device, not saved)."""
        return self.decoder.uv_fragments(self.texels, self.window)

    def _window_geometry(self) -> tuple[VertexSubset, Tensor, Tensor]:
        """The head model at the face window's vertices only (those of the triangles its UV
        fragments sample), the mesh's triangles with those vertices' subset indices (the
        fragments look triangles up by their global id), and the triangles lying wholly in the
        subset (its normals). Once per device (not saved)."""
        cache = self.__dict__.setdefault("_window_geometry_cache", {})
        h = self.head
        key = str(h.template.device)
        if key not in cache:
            window_tris = torch.unique(self.uv_fragments().fg_tri.to(h.faces.device))
            verts = torch.unique(h.faces[window_tris].reshape(-1))
            local = torch.full((h.n_vertices,), -1, dtype=torch.int64, device=h.faces.device)
            local[verts] = torch.arange(verts.numel(), device=h.faces.device)
            faces = local[h.faces]
            cache[key] = (h.vertex_subset(verts), faces.clamp_min(0), faces[(faces >= 0).all(1)])
        return cache[key]

    def unwrap(self, images: Tensor, decoded: Decoded) -> tuple[Tensor, Tensor]:
        """The illuminated texture ``(B, 3, T, T)`` and its visibility mask ``(B, 1, T, T)``
        (``T`` = :attr:`texels`, over the face window when there is one). A face window with
        the vertex-splat test poses and projects only the window's vertices (their normals
        from the triangles among them, the splat's occluders among them too)."""
        with torch.no_grad():
            cfg, h = self.cfg, self.head
            if self.window is not None and cfg.unwrap_splat_cells > 0:
                subset, faces, subset_faces = self._window_geometry()
                p, camera = decoded.params, decoded.camera
                vertices = subset(p.identity, p.expression, p.pose if h.n_joints else None).vertices
                points = camera.to_camera(vertices)
                uv, depth = camera.project_camera(points)
                screen = torch.cat([uv, depth[..., None]], -1)
                front = facing_camera(camera, points, vertex_normals(vertices, subset_faces))
                vis = splat_visibility(screen, front, camera.image_size, cells=cfg.unwrap_splat_cells,
                                       tolerance=cfg.unwrap_splat_tolerance)
            else:
                faces, screen = h.faces, decoded.screen.detach()
                if cfg.unwrap_splat_cells > 0:
                    vis = decoded.visibility(splat_cells=cfg.unwrap_splat_cells, tolerance=cfg.unwrap_splat_tolerance)
                else:
                    vis = decoded.visibility(size=(cfg.visibility_size,) * 2)
            return unwrap_photo(images.float(), screen.float(), vis, faces, h.uv.float(), h.face_uv, self.texels,
                                uv_fragments=self.uv_fragments())

    def _placement(self, device: torch.device) -> tuple[int, int, int, int, Tensor]:
        """Where the face window lies in the whole ``uv_size`` layout: the box of texels
        ``rows r0:r1, columns c0:c1`` it covers (:func:`engine.render.uv.window_coordinates`,
        as :func:`engine.render.uv.window_to_full` places a window) and their window
        coordinates ``(r1 - r0, c1 - c0, 2)``. Computed once per device (not saved)."""
        cache = self.__dict__.setdefault("_placement_cache", {})
        if str(device) not in cache:
            inner, inside = window_coordinates(self.window, self.cfg.uv_size, device=device)
            inner, inside = inner[0], inside[0]
            rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            cache[str(device)] = (r0, r1, c0, c1, inner[r0:r1, c0:c1].contiguous())
        return cache[str(device)]

    def to_layout(self, window_map: Tensor) -> Tensor:
        """A face-window reflectance ``(B, 3, T, T)`` as the whole layout's ``(B, 3, U, U)``:
        resampled (bilinear) onto the layout's face-skin texels inside the window, elsewhere the
        median of its covered texels per channel (the rest of the head gets the face's skin
        colour, not pulled down by brows, eyes and lips; the outputs' texture bake paints what
        the photo saw over it). Beyond the face skin, where the photometric term never
        constrained it (the window's corners: often hair), the map fades into that median over
        one ring of triangles, so no square patch shows on the head's sides. Only the window's
        box of texels is sampled."""
        B, U = window_map.shape[0], self.cfg.uv_size
        covered = self.uv_fragments().mask.reshape(-1).nonzero()[:, 0]  # the window's texels on the layout
        fill = window_map.flatten(2).index_select(2, covered).median(-1).values[:, :, None, None]  # (B, 3, 1, 1)
        r0, r1, c0, c1, inner = self._placement(window_map.device)
        box = sample_texture(window_map, inner.to(window_map.dtype)[None].expand(B, -1, -1, -1)).permute(0, 3, 1, 2)
        weight = self._face_weight(window_map.device)[r0:r1, c0:c1].to(window_map.dtype)
        return Fn.pad((box - fill) * weight, (c0, U - c1, r0, U - r1)) + fill

    def _face_weight(self, device: torch.device) -> Tensor:
        """``(U, U)`` in [0, 1]: how much each texel of the whole layout is face skin (the
        region interpolated over the triangles: 1 inside, falling to 0 over the boundary ring,
        0 off the islands). Once per device (not saved)."""
        from engine.render.uv import interpolate_layout

        cache = self.__dict__.setdefault("_face_weight_cache", {})
        if str(device) not in cache:
            h = self.head
            fr = self.decoder.uv_fragments(self.cfg.uv_size)
            region = h.regions["face_skin"].to(torch.float32)[None, :, None]
            w = interpolate_layout(region, h.faces, fr)[0, ..., 0] * fr.mask[0].float()
            cache[str(device)] = w.clamp(0, 1).to(device)
        return cache[str(device)]

    # ------------------------------------------------------------------ encoder heads -> FaceParams
    def encode(self, images: Tensor) -> CestCode:
        """The four estimators in sequence on crops (B, 3, S, S) RGB in [0, 1]."""
        S, T = self.cfg.image_size, self.texels
        images = _resized(images.float(), S)  # e.g. a 224-px crop: the networks work at S
        view_in = _resized(images, self.cfg.viewpoint_size or S)
        if self.cfg.shared_stem:
            trunk = self.f_v.trunk(view_in)
            v = self.f_v_head(self.f_v.rest(trunk).float())
        else:
            v = self.f_v_head(self.f_v(view_in).float())
        rotation, translation = v[:, :3], v[:, 3:]
        camera = self.camera(rotation, translation)
        if self.cfg.shared_stem:  # f_s on f_v's first-stage features, moved to the canonical view
            s = self.f_s.rest(trunk if self.cfg.independent else self.canonical_view(trunk, camera))
        elif self.cfg.independent:
            s = self.f_s(_resized(images, self.cfg.shape_size or S))
        else:
            s = self.f_s(self.canonical_view(images, camera, self.cfg.shape_size))
        s = self.f_s_head(s.float())
        code = CestCode(rotation, translation, s[:, :self.n_id], s[:, self.n_id:self.n_id + self.n_exp],
                        s[:, self.n_id + self.n_exp:])
        small = _resized(images, T)
        if self.cfg.independent:
            texture, mask = small, torch.ones_like(small[:, :1])
        else:
            texture, mask = self.unwrap(images, self.decoder(self.decode(code, camera)))
        logit = torch.logit(images.new_tensor(SKIN_MEAN))[None, :, None, None]
        reflectance = torch.sigmoid(logit + self.f_r(torch.cat([texture, mask], 1)))
        if self.cfg.independent:
            light_in = torch.cat([small, torch.zeros_like(small), torch.zeros_like(small[:, :1]),
                                  torch.zeros_like(small)], 1)
        else:
            light_in = torch.cat([small, texture, mask, reflectance.detach()], 1)
        sh = self.f_l(light_in).view(-1, 9, 3)
        albedo_map = reflectance if self.window is None else self.to_layout(reflectance)
        code.albedo_map, code.sh, code.texture, code.texture_mask = albedo_map, sh, texture, mask
        return code

    def decode(self, code: CestCode, camera: PerspectiveCamera | None = None) -> FaceParams:
        """The code's FaceParams in the crop frame (float32): identity scaled by the prior
        std, jaw rotation, SH with an ambient offset (a zero code is lit), the UV reflectance.
        ``camera``: the code's camera when the caller already built it (:meth:`camera`)."""
        B, head = code.batch_size, self.head
        ident = code.identity.new_zeros(B, head.n_identity)
        ident[:, :self.n_id] = code.identity * head.identity_std[:self.n_id] * self.identity_orientation()[:self.n_id]
        expr = code.expression.new_zeros(B, head.n_expression)
        expr[:, :self.n_exp] = code.expression
        pose = ident.new_zeros(B, head.n_joints, 3)
        if self.jaw_index >= 0:
            pose[:, self.jaw_index] = code.jaw
        sh = ident.new_zeros(B, 9, 3)
        sh[:, 0] = 1.0 / SH_CONSTANTS[0]
        if code.sh is not None:
            sh = sh + code.sh
        if camera is None:
            camera = self.camera(code.rotation, code.translation)
        return FaceParams(identity=ident, expression=expr, pose=pose, camera=camera, sh=sh,
                          albedo_map=code.albedo_map)

    def visibility(self, decoded: Decoded) -> Tensor:
        """(B, V) bool: visible face-region vertices (z-buffer at ``visibility_size``)."""
        return decoded.visibility(size=(self.cfg.visibility_size,) * 2) & self.region_mask

    def adopt_weights(self, checkpoint) -> dict[str, Tensor] | None:
        """A semantic-code network's checkpoint (MoFA, DECA's coarse stage: ``encoder.backbone``,
        ``encoder.head``, ``encoder.head_depth``) as this network's starting weights: its
        backbone for both ``f_v`` and ``f_s`` (same architecture), its rotation and
        translation rows for ``f_v``'s head and its identity and expression rows for
        ``f_s``'s (the jaw starts at zero); every camera and code convention is the same
        (``focal``, ``depth_m``, the translation scales, prior-std identity units). The
        reflectance U-Net and the light estimator have no counterpart and start fresh.
        None for any other checkpoint."""
        state = checkpoint.get("model", {})
        export = checkpoint.get("export", {}).get(checkpoint.get("method"), {})
        if "encoder.head.weight" not in state or "encoder.head_depth.weight" not in state or not export:
            return None
        if (export.get("backbone"), float(export.get("width", 0))) != (self.cfg.backbone, float(self.cfg.width)):
            raise ConfigError(f"init_from: the {checkpoint.get('method')} network has a {export.get('backbone')} "
                              f"x{export.get('width')} backbone; model.backbone/width here are "
                              f"{self.cfg.backbone} x{self.cfg.width}")
        for key in ("focal", "depth_m", "xy_scale_m", "depth_scale_m"):
            if key in export and abs(float(export[key]) - float(getattr(self.cfg, key))) > 1e-9:
                raise ConfigError(f"init_from: the {checkpoint.get('method')} network's model.{key} is "
                                  f"{export[key]}, here {getattr(self.cfg, key)}: the cameras would differ")
        W, b = state["encoder.head.weight"].float(), state["encoder.head.bias"].float()
        Wz, bz = state["encoder.head_depth.weight"].float(), state["encoder.head_depth.bias"].float()
        # the encoder's code (engine.encoders.CodeLayout) less its depth row (MofaEncoder.head_depth):
        # identity, expression, 3 x reflectance, pose, rotation 3, translation 3 (z apart), SH 27
        n_refl = int(export.get("n_reflectance", 10))
        n_pose = W.shape[0] + 1 - CodeLayout(self.n_id, self.n_exp, n_refl).dim
        if n_pose < 0:
            raise ConfigError(f"init_from: the {checkpoint.get('method')} network's code does not have "
                              f"{self.n_id} identity and {self.n_exp} expression values")
        rot = sum(CodeLayout(self.n_id, self.n_exp, n_refl, n_pose).sizes[:4])
        out = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        for name in ("f_v", "f_s"):
            out.update({f"{name}.{k[len('encoder.backbone.'):]}": v for k, v in state.items()
                        if k.startswith("encoder.backbone.")})
        out["f_v_head.weight"] = torch.cat([W[rot:rot + 5], Wz])
        out["f_v_head.bias"] = torch.cat([b[rot:rot + 5], bz])
        k = self.n_id + self.n_exp
        jaw_w = W[k + 3 * n_refl:k + 3 * n_refl + 3] if n_pose >= 3 else W.new_zeros(3, W.shape[1])
        jaw_b = b[k + 3 * n_refl:k + 3 * n_refl + 3] if n_pose >= 3 else b.new_zeros(3)
        out["f_s_head.weight"] = torch.cat([W[:k], jaw_w])
        out["f_s_head.bias"] = torch.cat([b[:k], jaw_b])
        return out

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor]) -> StepResult:
        """One step on clips ``(B, T, 3, S, S)`` (or single crops, T = 1: no clip term)."""
        T = batch["image"].shape[1] if batch["image"].dim() == 5 else 1
        batch = flatten_groups(batch)
        images = batch["image"].float()
        with torch.autocast(images.device.type, enabled=False):
            code = self.encode(images)
            params = self.decode(code)
            dec = self.decoder(params)
            vis = self.visibility(dec)
            photo_w = vis.float()
            occlusion = batch.get("occlusion_mask") if self.cfg.mask_occlusions else None
            if occlusion is not None:
                photo_w = photo_w * (~dec.covered(occlusion)).float()
            landmarks = batch.get("landmarks")
            w = self.lmk_weights
            if batch.get("landmarks_valid") is not None:
                w = w * batch["landmarks_valid"].to(w.dtype)
            truth = self.complete_truth({k: batch[k].float() for k in TRUTH_FIELDS if k in batch})
            inputs = LossInputs(dec, observed=dec.sample(images), photo_weights=photo_w,
                                landmarks=None if landmarks is None else landmarks.float(), landmark_weights=w,
                                landmark_scale=float(self.cfg.image_size), group_size=T,
                                vertex_weights=self.region_mask.float(), albedo_weights=self.region_mask,
                                **{k: truth.get(k) for k in TRUTH_FIELDS})
            weights = {k: v for k, v in self.losses.items()
                       if (k != "landmark" or landmarks is not None) and (k != "clip_consistency" or T > 1)}
            total, terms = weighted_sum(weights, inputs)
        scalars = {k: v.mean().detach() for k, v in terms.items()}
        scalars["visible_fraction"] = vis.float().mean().detach()
        scalars["texture_coverage"] = code.texture_mask.mean().detach()
        return StepResult(total.mean(), scalars, {"code": code.detach(), "params": params.detach(),
                                                  "images": images})

    @torch.no_grad()
    def visuals(self, batch, result) -> dict[str, Tensor]:
        """The base class's input / render / overlay, plus the illuminated texture and the
        reflectance map (UV space, upsampled to the crop size)."""
        out = super().visuals(batch, result)
        code: CestCode = result.outputs["code"]
        n, S = out["input"].shape[0], self.cfg.image_size
        for key, value in (("texture", code.texture), ("reflectance", code.albedo_map)):
            out[key] = Fn.interpolate(value[:n].float(), size=(S, S), mode="nearest")
        return out
