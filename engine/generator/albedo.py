"""Procedural UV albedo of a whole head: skin of any tone with its detail, lips, eyebrows,
facial hair, make-up, scalp hair, eyes, mouth interior and teeth — plus per-vertex specular
material.

:func:`paint_head` paints the covered texels of the model's UV layout
(:mod:`engine.generator.texels`, zones from :mod:`engine.generator.layout`) and returns the
``S × S`` sRGB albedo map (islands padded) and per-vertex ``(specular strength,
shininess)``. Low-frequency variation (blotches, redness) is a sum of random plane waves over
the *vertices*, interpolated to texels, so it is continuous across UV seams; fine detail
(pores, freckles, stubble) is per-texel noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.head.model import HeadModel
from engine.generator.eyes import EyeLook, eye_albedo, eye_frames, sample_eye_look
from engine.generator.hairstyle import HairStyle, scalp_coverage
from engine.generator.layout import HeadLayout, head_layout, smoothstep
from engine.generator.texels import model_cache
from engine.generator.tones import SkinTone, lab_to_srgb, lip_colour

if TYPE_CHECKING:
    from engine.generator.realistic import RealisticConfig

FACIAL_HAIR = ("none", "stubble", "moustache", "goatee", "short_beard", "full_beard")
#: log-RGB directions of skin variation: overall lightness, redness (blood), brown (melanin)
_LUM = np.array([1.0, 1.0, 1.0], np.float32)
_RED = np.array([0.22, -0.16, -0.12], np.float32)
_BROWN = np.array([-0.05, -0.12, -0.28], np.float32)
LIPSTICKS = ((0.62, 0.08, 0.12), (0.78, 0.30, 0.40), (0.45, 0.07, 0.16), (0.70, 0.42, 0.38),
             (0.42, 0.20, 0.16), (0.85, 0.22, 0.25))


@dataclass
class HeadPaint:
    """A painted head: ``albedo (S, S, 3)`` sRGB map, per-vertex ``material (V, 2)``
    (specular strength, Blinn-Phong shininess), and what was drawn."""

    albedo: np.ndarray
    material: np.ndarray
    skin: SkinTone
    hair: HairStyle
    eye_look: EyeLook
    facial_hair: str
    makeup: dict[str, bool] = field(default_factory=dict)


def _waves(rng: np.random.Generator, X: np.ndarray, channels: int, n_waves: int, wavelength: tuple[float, float]) -> np.ndarray:
    """Smooth random fields ``(P, channels)`` of unit-ish std: sums of plane waves over 3-D points."""
    lam = np.exp(rng.uniform(np.log(wavelength[0]), np.log(wavelength[1]), (n_waves, channels)))
    k = rng.normal(0, 1, (3, n_waves, channels))
    k *= 2 * np.pi / lam / np.linalg.norm(k, axis=0)
    phase = X @ k.reshape(3, -1) + rng.uniform(0, 2 * np.pi, n_waves * channels)
    return (np.sin(phase).reshape(len(X), n_waves, channels).sum(1) * np.sqrt(2.0 / n_waves)).astype(np.float32)


#: wavelength bands (metres) of the smooth per-vertex noise banks
NOISE_BANDS = {"low": (0.025, 0.12), "mid": (0.006, 0.02)}
_BANK_FIELDS = 32


def smooth_noise(head: HeadModel, rng: np.random.Generator, band: str, channels: int) -> np.ndarray:
    """Per-vertex smooth random fields ``(V, channels)`` (unit std) in a wavelength band: random
    combinations of a fixed bank of plane-wave fields over the template (the bank is made
    once per model, so a draw costs one small matrix product)."""
    cache = model_cache(head)
    key = ("noise_bank", band)
    if key not in cache:
        X = head.template.cpu().numpy().astype(np.float64)
        cache[key] = _waves(np.random.default_rng(7), X, _BANK_FIELDS, 10, NOISE_BANDS[band])
    w = rng.standard_normal((_BANK_FIELDS, channels)).astype(np.float32) / np.sqrt(_BANK_FIELDS)
    return cache[key] @ w


def _mix(col: torch.Tensor, target, alpha: torch.Tensor) -> torch.Tensor:
    """``col (3, N)`` blended towards ``target`` (colour (3,) or (3, N)) by ``alpha (N,)``."""
    t = torch.as_tensor(np.asarray(target, np.float32)) if not isinstance(target, torch.Tensor) else target
    if t.dim() == 1:
        t = t[:, None]
    return torch.lerp(col, t.to(col.dtype).expand_as(col), alpha.to(col.dtype).clamp(0, 1)[None])


def _brows(zones: dict[str, torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
    """Eyebrow coverage: a band around the brow line, thick inside, thin at the tail."""
    t, off = zones["brow_along"], zones["brow_offset"]
    tc = t.clamp(0, 1)
    h0 = rng.uniform(0.006, 0.011)
    half = 0.5 * h0 * (1 - 0.55 * tc) + 0.0005
    centre = rng.uniform(-0.004, -0.001) + 0.002 * torch.sin(np.pi * tc) * rng.uniform(0, 1)
    band = smoothstep(0.0, 1.0, (half + 0.0012 - (off - centre).abs()) / 0.0018)
    ends = smoothstep(-0.12, 0.06, t) * (1 - smoothstep(0.9, 1.12, t))
    return band * ends * rng.uniform(0.55, 1.0)


def _facial_hair(kind: str, zones: dict, neck_reach: float):
    """Coverage of the beard zone for a facial-hair kind (before texture); ``neck_reach``:
    how far below the chin it grows (metres). Works on numpy arrays or torch tensors."""
    beard, lips = zones["beard"], 1 - zones["lips"]
    if kind == "none":
        return beard * 0
    if kind == "moustache":
        return zones["moustache"] * lips
    neck = 1 - smoothstep(neck_reach, neck_reach + 0.015, zones["neck_depth"])
    if kind == "goatee":
        mous = zones["moustache"]
        both = beard * (1 - smoothstep(0.75, 1.05, zones["chin_dist"]))
        return (np.maximum(mous, both) if isinstance(mous, np.ndarray) else torch.maximum(mous, both)) * lips * neck
    return beard * lips * neck


def _noise_tables(head: HeadModel, n: int) -> dict[str, torch.Tensor]:
    """Per-texel white noise (normal and uniform), ``2n`` long so any ``n``-window is valid."""
    cache = model_cache(head)
    key = ("noise_tables", n)
    if key not in cache:
        rng = np.random.default_rng(11)
        cache[key] = {"normal": torch.from_numpy(np.tile(rng.standard_normal(n, dtype=np.float32), 2)),
                      "uniform": torch.from_numpy(np.tile(rng.random(n, dtype=np.float32), 2))}
    return cache[key]


def _colour(c) -> torch.Tensor:
    return torch.as_tensor(np.asarray(c, np.float32))[:, None]


def _blend(col: torch.Tensor, ids: torch.Tensor, target, alpha: torch.Tensor) -> None:
    """In place: texels ``ids`` of ``col (3, N)`` blended towards ``target`` by ``alpha``."""
    col[:, ids] = _mix(col[:, ids], target, alpha)


def paint_head(head: HeadModel, rngs: dict[str, np.random.Generator], cfg: "RealisticConfig",
               skin: SkinTone, hair: HairStyle, layout: HeadLayout | None = None) -> HeadPaint:
    """Paint one person's head (deterministic given the generators ``rngs`` by purpose)."""
    L = layout or head_layout(head)
    geo, sup = L.texels, L.support
    tz = {k: torch.from_numpy(v) for k, v in L.texel_zones.items()}
    tr = {k: torch.from_numpy(v) for k, v in L.texel_regions.items()}
    rs, rf, rm = rngs["skin"], rngs["features"], rngs["makeup"]
    pos = torch.from_numpy(geo.position)

    tables = _noise_tables(head, geo.n)

    def noise(n: int, kind: str = "normal") -> torch.Tensor:
        """``n`` white-noise values: a window of a cached table at a random offset."""
        o = int(rs.integers(0, geo.n))
        return tables[kind][o:o + n]

    def zone(name: str, ids: torch.Tensor) -> torch.Tensor:
        return (tz[name] if name in tz else tr[name])[ids]

    lum, red, brown = (torch.from_numpy(v)[:, None] for v in (_LUM, _RED, _BROWN))
    # ---- skin: tone, smooth variation (vertex noise), grain
    low = torch.from_numpy(geo.interpolate(smooth_noise(head, rs, "low", 3))).T  # (3, N)
    mottled = torch.from_numpy(geo.interpolate(smooth_noise(head, rs, "mid", 1))[:, 0])
    var = cfg.skin_variation
    shade = (0.05 * var) * low[0] + (0.025 * var) * mottled + (0.03 * cfg.pore_strength) * noise(geo.n)
    log_c = torch.log(_colour(np.clip(skin.rgb, 1e-3, 1))) + lum * shade + red * ((0.07 * var) * low[1]) \
        + brown * ((0.05 * var) * low[2])
    col = torch.exp(log_c)
    # redness of cheeks and nose, darker under the eyes (multiplicative, on their texels)
    for name, amount, direction in (("cheek", rs.uniform(0.0, 0.3) * (1 - 0.6 * skin.tone), red),
                                    ("nose", rs.uniform(0.0, 0.25) * (1 - 0.6 * skin.tone), red),
                                    ("under_eye", -rs.uniform(0.05, 0.2) * (0.5 + skin.tone), lum)):
        ids = sup[name]
        col[:, ids] *= torch.exp(direction * (amount * tz[name][ids])[None])
    # freckles (mostly light skin) and moles
    if rf.uniform() < cfg.freckle_probability * (1 - skin.tone) ** 1.5 * 2:
        ids = torch.cat([sup["cheek"], sup["nose"]]).unique()
        dens = (tz["cheek"][ids] + tz["nose"][ids]) * rf.uniform(0.15, 0.6) * (1 + 0.5 * mottled[ids])
        spots = (noise(len(ids), "uniform") < dens * 0.35).float()
        col[:, ids] *= torch.exp(spots[None] * rf.uniform(0.25, 0.5) * (brown - 0.6 * lum))
    cand = sup["skin"]
    for _ in range(int(rf.integers(cfg.moles[0], cfg.moles[1] + 1)) if len(cand) else 0):
        c = pos[cand[int(rf.integers(len(cand)))]]
        r = rf.uniform(0.0008, 0.0022)
        near = torch.nonzero((pos[:, 0] - c[0]).abs() < r)[:, 0]
        d = (pos[near] - c).norm(dim=1)
        col[:, near] *= torch.exp(-rf.uniform(0.4, 1.0) * smoothstep(r, 0.0, d)[None] * (0.7 * lum - 0.3 * brown))
    # lips
    ids = sup["lips"]
    lines = 1 + 0.06 * torch.sin(pos[ids, 0] * (2 * np.pi / 0.0025))
    lip_tex = _colour(lip_colour(skin, rf)) * (lines * (1 + 0.08 * (1 - zone("upper_lip", ids))))[None]
    _blend(col, ids, lip_tex, zone("lips", ids) * rf.uniform(0.75, 1.0))
    # eyebrows (strand-like: sparse speckle inside the band)
    ids = sup["brows"]
    bz = {k: zone(k, ids) for k in ("brow_along", "brow_offset")}
    brows = _brows(bz, rf) * (0.55 + 0.45 * (noise(len(ids), "uniform") < 0.7).float())
    _blend(col, ids, hair.brow_colour, brows * zone("face_skin", ids))
    # facial hair
    kinds = cfg.facial_hair_weights
    w = np.array([kinds.get(k, 0.0) for k in FACIAL_HAIR], float)
    w[1:] *= cfg.facial_hair_probability / max(w[1:].sum(), 1e-9)
    w[0] = max(1 - cfg.facial_hair_probability, 0)
    facial = FACIAL_HAIR[int(rf.choice(len(FACIAL_HAIR), p=w / w.sum()))]
    neck_reach = rf.uniform(0.0, 0.03) if facial in ("short_beard", "full_beard") else 0.0
    if facial != "none":
        ids = sup["beard"]
        bz = {k: zone(k, ids) for k in ("beard", "lips", "moustache", "neck_depth", "chin_dist")}
        beard = _facial_hair(facial, bz, neck_reach) * zone("skin", ids)
        if facial == "stubble":
            dark = hair.colour * 0.6 + np.array([0.02, 0.03, 0.05])
            dots = (noise(len(ids), "uniform") < rf.uniform(0.4, 0.8)).float()
            _blend(col, ids, dark, beard * (0.6 + 0.4 * dots) * rf.uniform(0.15, 0.4))
        else:
            bcol = hair.colour if rf.uniform() < 0.85 else np.array([0.55, 0.54, 0.52])
            strands = _colour(bcol) * (1 + 0.15 * noise(len(ids)))[None]
            cover = beard * rf.uniform(0.7, 0.95) * (0.85 + 0.15 * (noise(len(ids), "uniform") < 0.8).float())
            _blend(col, ids, strands, cover)
    # make-up
    makeup: dict[str, bool] = {}
    if rm.uniform() < cfg.makeup_probability:
        if rm.uniform() < 0.7:
            stick = np.clip(np.asarray(LIPSTICKS[rm.integers(len(LIPSTICKS))]) * rm.uniform(0.8, 1.1), 0, 1)
            _blend(col, sup["lips"], stick, zone("lips", sup["lips"]) * rm.uniform(0.5, 0.9))
            makeup["lipstick"] = True
        if rm.uniform() < 0.6:
            ids = sup["eyeshadow"]
            shadow = lab_to_srgb(np.array([rm.uniform(25, 70), rm.uniform(-10, 25), rm.uniform(-25, 25)]))
            _blend(col, ids, shadow, zone("eyeshadow", ids) * rm.uniform(0.3, 0.7) * zone("skin", ids))
            makeup["eyeshadow"] = True
        if rm.uniform() < 0.6:
            ids = sup["lid"]
            width = rm.uniform(0.0008, 0.002)
            lid = zone("lid_offset", ids)
            liner = smoothstep(width + 0.0006, width, lid) * smoothstep(-0.0006, 0.0, lid)
            _blend(col, ids, (0.04, 0.035, 0.035), liner * zone("skin", ids) * 0.9)
            makeup["eyeliner"] = True
        if rm.uniform() < 0.5:
            _blend(col, sup["cheek"], (0.85, 0.42, 0.45), zone("cheek", sup["cheek"]) * rm.uniform(0.1, 0.3))
            makeup["blush"] = True
    # scalp hair (painted: roots under a hair shell, buzz cuts, the hairline)
    if hair.kind != "bald":
        ids = sup["scalp"]
        zn = {k: L.texel_zones[k][ids.numpy()] for k in ("phi", "height")}
        cover = torch.from_numpy(scalp_coverage(hair, zn, L.texel_regions["skin"][ids.numpy()])) * hair.density
        _blend(col, ids, _colour(hair.colour) * (1 + 0.3 * noise(len(ids)))[None], cover)
    # inner eyelids, eyes, mouth interior, teeth
    if "eye_sockets" in sup:
        ids = sup["eye_sockets"]
        _blend(col, ids, np.asarray(skin.rgb) * np.array([0.85, 0.55, 0.55]), zone("eye_sockets", ids) * (1 - zone("skin", ids)))
    if "eye_extras" in sup:  # eyelashes (ICT): dark, but seen through, not a solid line
        lash = 0.55 * np.asarray(hair.brow_colour) + 0.45 * np.asarray(skin.rgb) * 0.6
        _blend(col, sup["eye_extras"], lash, zone("eye_extras", sup["eye_extras"]))
    look = sample_eye_look(rf, skin, float(eye_frames(head).radii.mean()))
    if len(L.eye_texels):
        col[:, torch.from_numpy(L.eye_texels)] = torch.from_numpy(eye_albedo(L.eye_directions, look).T.astype(np.float32))
    for name, base, lo in (("mouth_interior", (0.55, 0.22, 0.22), 0.35), ("teeth", (0.86, 0.82, 0.72), 0.5)):
        if name not in sup:
            continue
        ids = sup[name]
        depth = torch.exp(-zone("mouth_depth", ids) / 0.025)[None]
        _blend(col, ids, _colour(base) * rf.uniform(0.8, 1.05) * (lo + (1 - lo) * depth), zone(name, ids))
    albedo = geo.to_image(col.clamp(0.0, 1.0).T.numpy())
    # ---- per-vertex material: specular strength and shininess
    vz, vr = L.vertex_zones, L.vertex_regions
    oil = rs.uniform(0.15, 0.5) * cfg.specular_scale
    ks = oil * (1 + 0.8 * np.clip(vz["forehead"] + vz["nose"], 0, 1)) * vr["skin"]
    coarse = facial not in ("none", "stubble")
    hair_v = np.clip(scalp_coverage(hair, vz, vr["skin"]) * hair.density + _facial_hair(facial, vz, neck_reach) * coarse, 0, 1)
    ks = ks * (1 - 0.8 * hair_v) + vz["lips"] * 0.35
    shin = 18 + 20 * vz["lips"] - 10 * hair_v
    ks = np.where(vr["eyes"] > 0.5, 1.5, ks)
    shin = np.where(vr["eyes"] > 0.5, 120.0, shin)  # wet cornea: a small, bright catchlight
    ks = np.where(vr["mouth_interior"] > 0.5, 0.35 + 0.3 * vr["teeth"], ks)
    shin = np.where(vr["mouth_interior"] > 0.5, 60.0, shin)
    material = np.stack([ks, shin], 1).astype(np.float32)
    return HeadPaint(albedo, material, skin, hair, look, facial, makeup)
