"""The realistic face generator: photo-like faces with exact ground truth.

``render_realistic(head, seed, config) -> RealisticSample``. One seed gives one person
(identity, skin, hair, eyes, facial hair, make-up), pose, camera, props, lights,
background and degradations, each drawn from its own generator (``[seed, purpose]``) so
that switching one feature off in the config leaves the others unchanged. The image is
rendered by :mod:`engine.generator.scene` (our rasteriser, per-pixel shading with shadow
maps) on a background and degraded like a camera photo.

Ground truth (:class:`RealisticSample`): ``params`` is an :class:`engine.face.FaceParams`
(batch of one) in the image's frame — identity, expression, pose, the camera ``K, R, t``,
the painted albedo as a UV map (``albedo_map``, ``albedo_map_size`` texels) and per vertex
(``albedo``: that map sampled at the vertices' UVs), an SH approximation of the lighting
(``sh``; the true lights are ``sample.lights``), per-vertex ``visibility`` and the fine
detail (``displacement (1, 1, S, S)``, metres along the normal, ``detail_map_size`` texels:
pores, age lines and expression wrinkles of :mod:`engine.generator.wrinkles`, whose per-unit
maps are ``sample.wrinkles``); plus posed vertices, 2-D / 3-D landmarks and their
visibility, the face-skin mask, the occlusion mask (face skin hidden by hair, hats, glasses,
hands or the torso) and a segmentation.

The detail is shaded, not meshed (as in DECA): the image shows the coarse mesh with the
detail map's normals per pixel (:func:`engine.render.perturb_normals`), and the vertices
and landmarks are those of the coarse mesh (``FaceDecoder`` with ``params.displacement``
moves each vertex by the map at its UV, a fraction of a millimetre;
``params.replace(displacement=None)`` decodes the coarse mesh exactly).

Identity groups (:func:`render_realistic_views`): K photos of one person — same identity,
painted skin, hair and static detail; their own expression (often a strong wrinkle one:
``wrinkle_expression_probability``), head pose, camera, props, lights, background and
degradations.

Ranges are the fields of :class:`RealisticConfig` (each documented there); the defaults
follow issue #12: Fitzpatrick I–VI evenly, yaw ±90°, pitch ±40°, roll ±30°, focal length
24–135 mm (35 mm equivalent), faces 10–90 % of the frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.face import FaceDecoder, FaceParams
from engine.generator.albedo import HeadPaint, paint_head, smooth_noise
from engine.generator.background import background_blur_px, sample_background
from engine.generator.basic import SyntheticSample
from engine.generator.body import torso_prop
from engine.generator.camera import place_camera, sample_shot
from engine.generator.degrade import Degradation, apply_degradation, sample_degradation
from engine.generator.eyes import eye_frames
from engine.generator.hair import hair_props
from engine.generator.hairstyle import HairStyle, sample_hair_style
from engine.generator.layout import drawn_faces, head_layout
from engine.generator.lights import LightRig, ambient_occlusion, sample_lights, sh_approximation
from engine.generator.occluders import glasses_props, hand_prop, hat_props
from engine.generator.props import combine_props
from engine.generator.scene import HEAD_CHANNELS, HeadSurface, head_labels, points_visible, render_scene
from engine.generator.texels import model_cache, paint_size
from engine.generator.tones import SkinTone, sample_skin_tone, srgb_to_linear
from engine.generator.wrinkles import WrinkleBasis, person_detail, wrinkle_expression
from engine.head.model import HeadModel
from engine.render import PerspectiveCamera, sample_uv_map, vertex_normals

#: purposes of the per-seed random generators (``np.random.default_rng([seed, 12, index])``)
STREAMS = ("shape", "skin", "features", "makeup", "hair", "shot", "props", "lights", "background", "degrade",
           "detail")
#: streams drawn per view in identity groups (the others are the person's)
VIEW_STREAMS = ("shape", "shot", "props", "lights", "background", "degrade")


@dataclass
class RealisticConfig:
    """Ranges of the realistic generator. Angles in degrees, lengths in metres, pixel sizes
    at 224 px (scaled with ``image_size``); ``(lo, hi)`` pairs are sampled uniformly unless
    said otherwise; probabilities are per image."""

    image_size: int = 224  # output image side (square), pixels
    albedo_map_size: int = 256  # side of the stored ground-truth albedo map (the painted map, resampled)
    detail: bool = True  # fine geometric detail (pores, age lines, wrinkles) in the shading and params.displacement
    # side of the detail (displacement) map; None: the model's paint size (texels.paint_size: face texels of at
    # most 2 mm, which the wrinkles need; 512 for open, 256 for ICT)
    detail_map_size: int | None = None
    # ---- the person
    identity_clip: float = 3.0  # identity coefficients ~ N(0, std²), clipped at this many std
    expressions: tuple[int, int] = (0, 4)  # how many ARKit units are active (uniform count)
    expression_max: float = 0.9  # each active unit's weight ~ U(0, max) (within the model's range)
    jaw_probability: float = 0.3  # the jaw joint opens the mouth ...
    jaw_max_rad: float = 0.35  # ... by U(0, this)
    blink_probability: float = 0.08  # both eyes (nearly) closed
    # one wrinkle-carrying expression (wrinkles.WRINKLE_EXPRESSIONS) made strong; None: 0 for single
    # faces (render_realistic: the expressions as before), 0.5 for identity views (render_realistic_views)
    wrinkle_expression_probability: float | None = None
    gaze_deg: float = 15.0  # eye rotation (both eyes): yaw ~ U(±gaze), pitch ~ U(±gaze/1.5)
    skin_variation: float = 1.0  # scale of blotches / redness / melanin variation
    pore_strength: float = 1.0  # scale of the per-texel skin grain
    freckle_probability: float = 0.35  # scaled by (1 − tone)^1.5 · 2: mostly light skin
    moles: tuple[int, int] = (0, 4)  # number of moles (uniform count)
    facial_hair_probability: float = 0.35  # any facial hair; which kind by facial_hair_weights
    facial_hair_weights: dict[str, float] = field(default_factory=lambda: {
        "stubble": 0.35, "moustache": 0.08, "goatee": 0.14, "short_beard": 0.23, "full_beard": 0.2})
    makeup_probability: float = 0.25  # lipstick / eyeshadow / eyeliner / blush (each then 50-70 %)
    specular_scale: float = 1.0  # skin oiliness scale
    hair_weights: dict[str, float] = field(default_factory=lambda: {
        "bald": 0.06, "buzz": 0.12, "short": 0.32, "medium": 0.25, "long": 0.25})
    # ---- head pose and camera
    yaw_deg: float = 90.0  # head yaw limit (±)
    pitch_deg: float = 40.0  # head pitch limit (±)
    roll_deg: float = 30.0  # head roll limit (±)
    wide_pose_probability: float = 0.3  # uniform over the full limits; else normal with pose_sd_deg
    pose_sd_deg: tuple[float, float, float] = (12.0, 30.0, 8.0)  # (pitch, yaw, roll) sds of the normal draw
    neck_share: tuple[float, float] = (0.3, 0.8)  # part of the head's turn done by the neck (the torso turns the rest)
    focal_mm: tuple[float, float] = (24.0, 135.0)  # 35-mm-equivalent focal length, log-uniform
    face_fraction: tuple[float, float] = (0.1, 0.9)  # face width / image width, log-uniform
    min_distance_m: float = 0.25  # camera never nearer than this to the face centre
    # ---- props and occluders
    torso_probability: float = 1.0  # neck, shoulders and clothes under the head
    hat_probability: float = 0.08  # beanie or cap
    glasses_probability: float = 0.15  # frames ...
    sunglasses_fraction: float = 0.25  # ... of which this many with dark lenses
    hand_probability: float = 0.07  # a hand (and forearm) in front of the face
    # ---- lights
    ambient_fraction: tuple[float, float] = (0.15, 0.65)  # share of the sky/ground ambient in the light
    fill_probability: float = 0.6  # a second, weaker light from the other side
    rim_probability: float = 0.3  # a light from behind
    coloured_light_probability: float = 0.1  # a light of a saturated colour (else 3000-8000 K)
    shadow_probability: float = 0.9  # the key light casts shadows (the fill light 30 %)
    shadow_map_size: int = 128  # shadow-map texels per side
    # ---- background
    background_weights: dict[str, float] = field(default_factory=lambda: {
        "photo": 0.4, "room": 0.25, "noise": 0.12, "bokeh": 0.11, "studio": 0.12})
    background_brightness: tuple[float, float] = (0.3, 1.3)  # linear gain relative to the lit face
    # ---- camera and file degradations (pixel sizes at 224 px)
    exposure_sd_ev: float = 0.4  # exposure error ~ N(0, sd²) stops, clipped at ±2.5 sd
    wb_correction: tuple[float, float] = (0.7, 1.0)  # how much of the light's colour white balance removes
    wb_error: float = 0.04  # per-channel log-gain error of the white balance
    defocus_probability: float = 0.12  # the face out of focus (disc of radius U(0.5, max) px)
    defocus_max_px: float = 2.5
    motion_probability: float = 0.1  # motion blur (streak of U(1, max) px)
    motion_max_px: float = 7.0
    noise_level: tuple[float, float] = (0.15, 3.0)  # sensor noise (ISO-like factor, log-uniform)
    jpeg_probability: float = 0.6  # JPEG compression ...
    jpeg_quality: tuple[int, int] = (30, 95)  # ... with this quality
    downscale_probability: float = 0.15  # resolution loss (down to 30-80 % and back up)


@dataclass
class RealisticSample(SyntheticSample):
    """A realistic face and its ground truth (CPU tensors; see the module docstring).

    Beyond :class:`engine.generator.SyntheticSample` (``image``, ``params``, ``vertices``,
    ``landmarks2d``, ``face_mask``, ``seed``): ``landmarks3d (68, 3)`` posed, model frame;
    ``landmarks_visible (68,)``; ``occlusion_mask (S, S)`` face-skin pixels hidden by a prop;
    ``segmentation (S, S)`` uint8 (:data:`engine.generator.props.SEGMENT_LABELS`); ``lights``
    (the true light rig, camera frame); ``degradation``; ``attributes`` (skin tone,
    Fitzpatrick type, hair, eyes, facial hair, make-up, props, background, focal length, age
    and wrinkle depth...); ``wrinkles``: the person's detail model (per-unit maps; None with
    ``detail`` off), of which ``params.displacement`` is the composition.
    """

    landmarks3d: torch.Tensor | None = None
    landmarks_visible: torch.Tensor | None = None
    occlusion_mask: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    lights: LightRig | None = None
    degradation: Degradation | None = None
    attributes: dict = field(default_factory=dict)
    wrinkles: WrinkleBasis | None = None


def streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent random generator per purpose (:data:`STREAMS`) for face ``seed``."""
    return {name: np.random.default_rng([int(seed), 12, i]) for i, name in enumerate(STREAMS)}


def view_streams(seed: int, view: int) -> dict[str, np.random.Generator]:
    """The per-view generators (:data:`VIEW_STREAMS`) of view ``view >= 1`` of identity group
    ``seed`` (view 0 uses :func:`streams`)."""
    return {name: np.random.default_rng([int(seed), 12, STREAMS.index(name), int(view)]) for name in VIEW_STREAMS}


def _draw_identity(head: HeadModel, rng: np.random.Generator, cfg: RealisticConfig) -> np.ndarray:
    """Identity coefficients (K_id,) (the first draws of the shape stream)."""
    return np.clip(rng.normal(0, 1, head.n_identity), -cfg.identity_clip, cfg.identity_clip) * head.identity_std.cpu().numpy()


def _draw_expression(head: HeadModel, rng: np.random.Generator, cfg: RealisticConfig,
                     wrinkle_probability: float = 0.0) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Expression (K_exp,), joint pose (J, 3) and the strong wrinkle expression (or None; drawn
    last, only when ``wrinkle_probability > 0``, so the other draws do not depend on it)."""
    names = head.expression_names
    expr = np.zeros(head.n_expression)
    has_jaw = "jaw" in head.joint_names
    allowed = [i for i, n in enumerate(names) if not (has_jaw and n == "jawOpen") and not n.startswith("eyeBlink")]
    n_active = int(rng.integers(cfg.expressions[0], cfg.expressions[1] + 1))
    lo_hi = head.expression_range.cpu().numpy()
    for i in rng.choice(allowed, size=min(n_active, len(allowed)), replace=False):
        lo = -cfg.expression_max if lo_hi[i, 0] < 0 else 0.0  # ARKit units are >= 0, FLAME's are signed
        expr[i] = np.clip(rng.uniform(lo, cfg.expression_max), lo_hi[i, 0], lo_hi[i, 1])
    if rng.uniform() < cfg.blink_probability:
        for n in ("eyeBlinkLeft", "eyeBlinkRight"):
            if n in names:
                expr[names.index(n)] = rng.uniform(0.7, 1.0)
    pose = np.zeros((head.n_joints, 3))
    if has_jaw and rng.uniform() < cfg.jaw_probability:
        pose[head.joint_names.index("jaw"), 0] = rng.uniform(0, cfg.jaw_max_rad)
    gaze = np.radians([rng.uniform(-cfg.gaze_deg, cfg.gaze_deg) / 1.5, rng.uniform(-cfg.gaze_deg, cfg.gaze_deg), 0])
    for j in ("eye_left", "eye_right"):
        if j in head.joint_names:
            pose[head.joint_names.index(j)] = gaze
    group = None
    if wrinkle_probability > 0 and rng.uniform() < wrinkle_probability:
        group = wrinkle_expression(head, rng, expr, pose, cfg.jaw_max_rad)
    return expr, pose, group


def head_ambient_occlusion(head: HeadModel) -> np.ndarray:
    """Per-vertex ambient occlusion of the template with the mouth a little open (cached)."""
    cache = model_cache(head)
    if "ao" not in cache:
        pose = torch.zeros(1, head.n_joints, 3)
        if "jaw" in head.joint_names:
            pose[0, head.joint_names.index("jaw"), 0] = 0.2
        with torch.no_grad():
            v = head(None, None, pose if head.n_joints else None).vertices[0]
            faces = head.faces[drawn_faces(head)]
            n = vertex_normals(v[None], faces)[0]
            ao = ambient_occlusion(v, faces, n).numpy()
            eyes = head.regions["eyes"].cpu().numpy()
            ao[eyes] = np.maximum(ao[eyes], 0.45)  # the eyeballs sit deep in the template; keep the sclera white
            cache["ao"] = ao
    return cache["ao"]


def _head_surface(head: HeadModel, paint: HeadPaint, displacement: torch.Tensor | None = None) -> HeadSurface:
    cache = model_cache(head)
    if "drawn" not in cache:
        keep = drawn_faces(head)
        cache["drawn"] = (head.faces[keep], head.face_uv[keep], head_labels(head.regions, head.faces[keep]))
    faces, face_uv, labels = cache["drawn"]
    L = head_layout(head)
    vr = L.vertex_regions
    eyes = eye_frames(head)
    attrs = np.concatenate([eyes.direction, paint.material, head_ambient_occlusion(head)[:, None],
                            vr["face_skin"][:, None], vr["skin"][:, None], vr["eyes"][:, None]], 1)
    assert attrs.shape[1] == len(HEAD_CHANNELS)
    tex = torch.from_numpy(paint.albedo)[None]
    return HeadSurface(faces, face_uv, tex, torch.from_numpy(attrs.astype(np.float32)), labels, paint.eye_look,
                       displacement)


def _props(head: HeadModel, verts: np.ndarray, normals: np.ndarray, lm3d: np.ndarray, towards_cam: np.ndarray,
           paint: HeadPaint, angles: np.ndarray, rng: np.random.Generator, cfg: RealisticConfig,
           occluder_rng: np.random.Generator | None = None) -> list:
    """Torso, hair and hat (drawn from ``rng``: the person's), glasses and hand (drawn from
    ``occluder_rng``, default ``rng`` in the same order)."""
    occluder_rng = rng if occluder_rng is None else occluder_rng
    L = head_layout(head)
    skin_v = L.vertex_regions["skin"] > 0.5
    faces = head.faces.cpu().numpy()
    out = []
    if rng.uniform() < cfg.torso_probability:
        neck = np.clip(np.degrees(angles) * rng.uniform(*cfg.neck_share), [-25, -60, -20], [25, 60, 20])
        low = np.flatnonzero(skin_v)[np.argsort(verts[skin_v, 1])[:12]]
        uv = FaceDecoder(head).vertex_uv[low].numpy()
        S = paint.albedo.shape[-1]
        texel = np.clip((uv[:, 0] * S).astype(int), 0, S - 1), np.clip(((1 - uv[:, 1]) * S).astype(int), 0, S - 1)
        neck_rgb = paint.albedo[:, texel[1], texel[0]].mean(1)
        out.append(torso_prop(verts, skin_v, float(lm3d[8, 1]), neck_rgb, rng, neck))
    lumps = smooth_noise(head, rng, "low", 1)[:, 0]
    hat = rng.uniform() < cfg.hat_probability
    out += hair_props(paint.hair, verts, normals, faces, L, lumps, rng)
    if hat:
        out += hat_props(verts, normals, faces, L, rng, over=paint.hair.thickness if paint.hair.has_shell else 0.0)
    r = occluder_rng
    if r.uniform() < cfg.glasses_probability:
        out += glasses_props(verts, L.vertex_regions["eyes"] > 0.5, lm3d, r, r.uniform() < cfg.sunglasses_fraction)
    if r.uniform() < cfg.hand_probability:
        out.append(hand_prop(verts, lm3d, towards_cam, paint.skin, r))
    return out


class _Clock:
    """CPU-time laps (seconds), summed per name."""

    def __init__(self) -> None:
        self.t = time.process_time()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


@dataclass
class _Person:
    """What stays the same in every photo of one person."""

    identity: np.ndarray
    skin: SkinTone
    hair: HairStyle
    paint: HeadPaint
    detail: WrinkleBasis | None


def _draw_person(head: HeadModel, rngs: dict[str, np.random.Generator], cfg: RealisticConfig, clock: _Clock) -> _Person:
    ident = _draw_identity(head, rngs["shape"], cfg)
    skin = sample_skin_tone(rngs["skin"])
    hair = sample_hair_style(rngs["hair"], skin, cfg.hair_weights)
    paint = paint_head(head, rngs, cfg, skin, hair)
    clock.lap("paint")
    detail = person_detail(head, rngs["detail"], cfg.detail_map_size or paint_size(head)) if cfg.detail else None
    clock.lap("detail")
    return _Person(ident, skin, hair, paint, detail)


def _render_view(head: HeadModel, seed: int, cfg: RealisticConfig, person: _Person, rngs: dict[str, np.random.Generator],
                 expr: np.ndarray, pose: np.ndarray, props_rng: np.random.Generator,
                 occluder_rng: np.random.Generator | None, lights: LightRig | None, clock: _Clock) -> RealisticSample:
    """One image of ``person`` with expression ``expr`` and joint pose ``pose``: the shot, props
    (person's part from ``props_rng``, glasses and hand from ``occluder_rng``), lights (or
    ``lights``), background and degradation from ``rngs``."""
    S = cfg.image_size
    px = S / 224.0
    paint, skin, hair = person.paint, person.skin, person.hair
    t_ident = torch.tensor(person.identity, dtype=torch.float32)[None]
    t_expr = torch.tensor(expr, dtype=torch.float32)[None]
    t_pose = torch.tensor(pose, dtype=torch.float32)[None]
    # ---- camera
    shot = sample_shot(rngs["shot"], cfg, S)
    out = head(t_ident, t_expr, t_pose if head.n_joints else None)
    lm = head.landmarks(out.vertices)[0]
    width = float((lm[0] - lm[16]).norm())
    K, R, t, distance = place_camera(shot, lm.mean(0), width, S, cfg.min_distance_m)
    camera = PerspectiveCamera(K[None], R[None], t[None], (S, S))
    params = FaceParams(identity=t_ident, expression=t_expr, pose=t_pose, camera=camera, sh=torch.zeros(1, 9, 3))
    dec = FaceDecoder(head)(params)
    dec.__dict__["_posed"] = out  # Decoded caches the posed head under this name: reuse it
    verts = dec.vertices[0]
    # ---- props, lights, image
    towards_cam = (-(R.T @ t) - lm.mean(0)).numpy()
    props = combine_props(_props(head, verts.numpy(), dec.normals[0].numpy(), dec.landmarks3d[0].numpy(), towards_cam,
                                 paint, shot.angles, props_rng, cfg, occluder_rng))
    rig = sample_lights(rngs["lights"], cfg.coloured_light_probability, cfg.fill_probability, cfg.rim_probability,
                        cfg.shadow_probability, cfg.ambient_fraction)
    rig = lights if lights is not None else rig
    clock.lap("pose_props")
    displacement = person.detail.compose(t_expr, t_pose) if person.detail is not None else None  # as the params say
    clock.lap("detail")
    scene = render_scene(dec, _head_surface(head, paint, displacement), props, rig, cfg.shadow_map_size)
    clock.lap("scene")
    rb = rngs["background"]
    bg_kind, bg = sample_background(rb, S, cfg.background_weights)
    sigma = background_blur_px(rb, shot.focal_mm, distance, S)
    if sigma > 0.3:
        import cv2

        bg = cv2.GaussianBlur(bg, (0, 0), sigma)
    mean_light = rig.sky + sum(l.colour * l.intensity for l in rig.lights) * 0.5
    tint = rb.uniform(*cfg.background_brightness) * (mean_light / max(mean_light.mean(), 1e-6)) ** 0.5
    bg_lin = srgb_to_linear(torch.from_numpy(np.ascontiguousarray(bg, np.float32))) * torch.tensor(tint, dtype=torch.float32)
    linear = torch.where(scene.coverage[..., None], scene.image, bg_lin).numpy()
    rd = rngs["degrade"]
    deg = sample_degradation(rd, cfg, mean_light)
    deg.defocus_px *= px
    deg.motion_px *= px
    deg.optical_sigma_px *= px
    image = apply_degradation(linear, deg)
    clock.lap("background_degrade")
    # ---- ground truth
    A = cfg.albedo_map_size
    tex = torch.from_numpy(paint.albedo)[None]
    stored = tex if A == tex.shape[-1] else torch.nn.functional.interpolate(tex, size=(A, A), mode="area")
    dec_gt = FaceDecoder(head)
    albedo_v = sample_uv_map(stored, dec_gt.vertex_uv)
    gain = 2.0 ** deg.exposure_ev * np.asarray(deg.wb_gains)
    lm_vis = points_visible(dec.landmarks3d[0], camera, scene.depth, scene.prop_depth)
    clock.lap("ground_truth")
    params = params.replace(sh=sh_approximation(rig, gain)[None], albedo=albedo_v, albedo_map=stored,
                            visibility=scene.visibility[None].float(), displacement=displacement,
                            timings=dict(clock.timings))
    attributes = {
        "skin_tone": skin.tone, "fitzpatrick": skin.fitzpatrick, "skin_rgb": skin.rgb.round(4).tolist(),
        "ita_deg": round(skin.ita_deg, 2), "hair": hair.kind, "hair_colour": hair.colour_name,
        "iris": paint.eye_look.iris_name, "facial_hair": paint.facial_hair, "makeup": sorted(paint.makeup),
        "props": props.names, "background": bg_kind, "background_blur_px": round(sigma, 3),
        "focal_mm": round(shot.focal_mm, 2), "face_fraction": round(shot.face_fraction, 4),
        "distance_m": round(distance, 4), "head_angles_deg": np.degrees(shot.angles).round(3).tolist(),
        "paint_size": paint_size(head)}
    if person.detail is not None:
        attributes.update(age=round(person.detail.age, 1), wrinkle_depth_mm=round(person.detail.depth_m * 1e3, 3))
    return RealisticSample(
        image=image, params=params.cpu(), vertices=verts.cpu(), landmarks2d=dec.landmarks2d[0].cpu(),
        face_mask=scene.face_mask.numpy(), seed=int(seed), landmarks3d=dec.landmarks3d[0].cpu(),
        landmarks_visible=lm_vis, occlusion_mask=scene.occlusion_mask.numpy(), segmentation=scene.segmentation.numpy(),
        lights=rig, degradation=deg, attributes=attributes, wrinkles=person.detail)


def _override(drawn: np.ndarray, given, what: str) -> np.ndarray:
    """``given`` (array-like of ``drawn``'s size) in ``drawn``'s shape, or ``drawn`` if None."""
    if given is None:
        return drawn
    arr = np.asarray(torch.as_tensor(given).detach().cpu().double())
    if arr.size != drawn.size:
        raise ValueError(f"{what} must have {drawn.size} values (shape {drawn.shape}), got shape {arr.shape}")
    return arr.reshape(drawn.shape)


@torch.no_grad()
def render_realistic(head: HeadModel, seed: int, config: RealisticConfig | None = None, *,
                     expression=None, pose=None, lights: LightRig | None = None) -> RealisticSample:
    """Render realistic face ``seed`` of ``head`` with its ground truth (deterministic).

    ``expression (K_exp,)``, ``pose (J, 3)`` and ``lights`` replace the drawn expression
    weights, joint pose (jaw, eyes) and light rig (figures, tests); everything else is drawn as
    without them."""
    cfg = config or RealisticConfig()
    rngs = streams(seed)
    clock = _Clock()
    person = _draw_person(head, rngs, cfg, clock)
    expr, q, group = _draw_expression(head, rngs["shape"], cfg, cfg.wrinkle_expression_probability or 0.0)
    expr, q = _override(expr, expression, "expression"), _override(q, pose, "pose")
    sample = _render_view(head, seed, cfg, person, rngs, expr, q, rngs["props"], None, lights, clock)
    if group is not None:
        sample.attributes["wrinkle_expression"] = group
    return sample


@torch.no_grad()
def render_realistic_views(head: HeadModel, seed: int, k: int, config: RealisticConfig | None = None
                           ) -> list[RealisticSample]:
    """``k`` photos of one person (identity group ``seed``): the same identity, painted skin,
    hair (style and shell), hat and static detail (pores, age lines); per view its own
    expression — with probability ``wrinkle_expression_probability`` (None: 0.5) one wrinkle
    expression made strong (:func:`engine.generator.wrinkles.wrinkle_expression`) — jaw and
    gaze, head pose, camera, glasses and hand, lights, background and degradations (drawn from
    :func:`view_streams`). View 0 is ``render_realistic(seed)`` when the config's
    ``wrinkle_expression_probability`` is the same for both."""
    if k < 1:
        raise ValueError(f"an identity group needs at least one view, got k={k}")
    cfg = config or RealisticConfig()
    p = 0.5 if cfg.wrinkle_expression_probability is None else cfg.wrinkle_expression_probability
    rngs = streams(seed)
    clock = _Clock()
    person = _draw_person(head, rngs, cfg, clock)
    views = []
    for v in range(k):
        if v == 0:
            vr, props_rng, occluders = rngs, rngs["props"], None
        else:
            vr, clock = view_streams(seed, v), _Clock()
            props_rng = np.random.default_rng([int(seed), 12, STREAMS.index("props")])  # the person's hair and hat again
            occluders = vr["props"]
        expr, q, group = _draw_expression(head, vr["shape"], cfg, p)
        sample = _render_view(head, seed, cfg, person, vr, expr, q, props_rng, occluders, None, clock)
        sample.attributes.update(view=v, wrinkle_expression=group)
        views.append(sample)
    return views
