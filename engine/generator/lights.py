"""Lights: directional lights (key, fill, rim) plus a sky/ground ambient, with coloured
light, Blinn-Phong specular highlights, shadow maps and ambient occlusion.

* :func:`sample_lights` draws a :class:`LightRig` in the camera frame (OpenCV axes; the
  scene's "up" is the camera's −Y): a key light from anywhere in front and to the sides
  (azimuth ±110°, elevation −15…70°), an optional fill and rim light, colour temperatures
  3000–8000 K and now and then a strongly coloured light, and a hemispherical ambient
  (sky / ground colours). Intensities are irradiances relative to a nominal exposure where
  a white surface facing the key light renders at about 1.
* :func:`shadow_map` rasterises meshes from a light with :func:`engine.render.rasterize`
  through a :class:`engine.render.WeakPerspectiveCamera` (orthographic: the light is far)
  after turning the light's direction onto +Z; :meth:`ShadowMap.visibility` looks points
  up with percentage-closer filtering (soft edges) and a slope-scaled bias.
* :func:`ambient_occlusion`: per-vertex sky visibility of a mesh, from shadow maps in 32
  directions (cosine weighted; done once per head model).
* :func:`shade`: per-pixel linear radiance ``albedo · (ambient·AO + Σ E·c·wrap(n·l)·shadow) +
  specular``; wrap lighting on skin, reddened near the shadow's edge, imitates light
  scattering under the skin.
* :func:`sh_approximation`: the 9 SH coefficients (:mod:`engine.render.shading` basis, view
  frame) that best fit the rig's unshadowed diffuse shading in the image's encoded space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.generator.tones import blackbody_rgb
from engine.render import WeakPerspectiveCamera, rasterize, sh_basis

UP_CAMERA = np.array([0.0, -1.0, 0.0])  # the scene's up in the OpenCV camera frame
_SCATTER = torch.tensor([0.0, 0.35, 0.5])  # how much green / blue the skin absorbs near the terminator


@dataclass
class DirectionalLight:
    """A distant light: ``direction`` (unit, camera frame, from the scene towards the light),
    linear RGB ``colour`` of luminance 1, ``intensity`` (irradiance at normal incidence),
    whether it casts ``shadow`` and the shadow's ``softness`` (PCF radius, shadow texels)."""

    name: str
    direction: np.ndarray
    colour: np.ndarray
    intensity: float
    shadow: bool
    softness: float
    kelvin: float


@dataclass
class LightRig:
    """All lights of a sample (camera frame): directional ``lights``, hemispherical ambient
    (``sky`` radiance from above, ``ground`` from below, linear RGB), and ``specular``, a
    global scale of highlights."""

    lights: list[DirectionalLight] = field(default_factory=list)
    sky: np.ndarray = field(default_factory=lambda: np.full(3, 0.4))
    ground: np.ndarray = field(default_factory=lambda: np.full(3, 0.2))
    specular: float = 1.0

    def to_dict(self) -> dict:
        """JSON-friendly description."""
        return {"lights": [{"name": l.name, "direction_camera": l.direction.round(4).tolist(),
                            "colour": l.colour.round(4).tolist(), "intensity": round(float(l.intensity), 4),
                            "kelvin": round(float(l.kelvin)), "shadow": bool(l.shadow),
                            "softness": round(float(l.softness), 3)} for l in self.lights],
                "sky": self.sky.round(4).tolist(), "ground": self.ground.round(4).tolist(),
                "specular": round(float(self.specular), 3)}


def _direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Camera-frame unit vector towards a light at ``azimuth`` (0 = behind the camera,
    +90 = the image's right) and ``elevation`` (up)."""
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.sin(a) * np.cos(e), -np.sin(e), -np.cos(a) * np.cos(e)])


def _light_colour(rng: np.random.Generator, coloured_probability: float) -> tuple[np.ndarray, float]:
    kelvin = float(np.exp(rng.uniform(np.log(3000), np.log(8000))))
    c = blackbody_rgb(kelvin)
    if rng.uniform() < coloured_probability:
        import colorsys

        rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.4, 0.85), 1.0))
        c = rgb / max(float(rgb @ np.array([0.2126, 0.7152, 0.0722])), 1e-6)
    return c, kelvin


def sample_lights(rng: np.random.Generator, coloured_probability: float = 0.1, fill_probability: float = 0.6,
                  rim_probability: float = 0.3, shadow_probability: float = 0.9,
                  ambient_fraction: tuple[float, float] = (0.15, 0.65)) -> LightRig:
    """A random light rig (see the module docstring for the ranges)."""
    amb = rng.uniform(*ambient_fraction)
    key_col, key_k = _light_colour(rng, coloured_probability * 0.3)
    lights = [DirectionalLight("key", _direction(rng.uniform(-110, 110), rng.uniform(-15, 70)), key_col,
                               1.0 - amb, bool(rng.uniform() < shadow_probability), rng.uniform(0.6, 3.0), key_k)]
    if rng.uniform() < fill_probability:
        c, k = _light_colour(rng, coloured_probability)
        az = -np.sign(np.arcsin(lights[0].direction[0])) * rng.uniform(20, 100)
        lights.append(DirectionalLight("fill", _direction(az, rng.uniform(-20, 40)), c,
                                       (1.0 - amb) * rng.uniform(0.1, 0.5), bool(rng.uniform() < 0.3), 3.0, k))
    if rng.uniform() < rim_probability:
        c, k = _light_colour(rng, coloured_probability)
        az = rng.choice([-1, 1]) * rng.uniform(120, 170)
        lights.append(DirectionalLight("rim", _direction(az, rng.uniform(0, 50)), c,
                                       (1.0 - amb) * rng.uniform(0.3, 1.2), False, 2.0, k))
    sky_col, _ = _light_colour(rng, coloured_probability * 0.5)
    sky = sky_col * amb * rng.uniform(1.0, 1.4)
    ground = sky * rng.uniform(0.25, 0.8) * np.exp(rng.normal(0, 0.1, 3))
    return LightRig(lights, sky, ground, float(rng.uniform(0.6, 1.4)))


# ------------------------------------------------------------------ shadow maps
@dataclass
class ShadowMap:
    """Depth of the nearest surface seen from a distant light: ``depth (1, 1, S, S)``
    (``far`` where nothing is), the rotation ``R`` turning model-frame points so that the
    light shines from +Z, and the orthographic ``camera`` over the light's view."""

    R: torch.Tensor
    camera: WeakPerspectiveCamera
    depth: torch.Tensor
    texel_m: float
    far: float = 1e3

    def _screen(self, points: torch.Tensor) -> torch.Tensor:
        return self.camera.to_screen((points @ self.R.T)[None])[0]

    def visibility(self, points: torch.Tensor, cos_incidence: torch.Tensor, softness: float = 1.0) -> torch.Tensor:
        """Fraction ``(N,)`` in [0, 1] of the light reaching model-frame ``points (N, 3)``
        (percentage-closer filtering over 4 taps ``softness`` texels apart; the bias grows with
        the incidence angle)."""
        scr = self._screen(points)
        c = cos_incidence.clamp(0.05, 1.0)
        bias = self.texel_m * (1.0 + 1.5 * torch.sqrt(1 - c * c) / c).clamp(max=6.0) + 1e-3
        S = self.depth.shape[-1]
        flat = self.depth.reshape(-1)
        lit = torch.zeros(points.shape[0])
        h = 0.5 * softness
        for dx, dy in ((-h, -h), (h, -h), (-h, h), (h, h)):  # a 2 × 2 box of nearest-texel tests
            x = (scr[:, 0] + dx).floor().long().clamp(0, S - 1)
            y = (scr[:, 1] + dy).floor().long().clamp(0, S - 1)
            lit += (scr[:, 2] <= flat[y * S + x] + bias).float()
        return lit / 4.0


def _light_rotation(direction: torch.Tensor) -> torch.Tensor:
    """Rotation whose third row is ``direction`` (rows: an orthonormal frame)."""
    l = direction / direction.norm()
    ref = torch.tensor([0.0, 1.0, 0.0]) if abs(float(l[1])) < 0.9 else torch.tensor([1.0, 0.0, 0.0])
    e1 = torch.linalg.cross(ref, l)
    e1 = e1 / e1.norm()
    return torch.stack([e1, torch.linalg.cross(l, e1), l])


def shadow_map(meshes: list[tuple[torch.Tensor, torch.Tensor, bool]], direction: torch.Tensor, size: int = 128) -> ShadowMap:
    """Shadow map of ``meshes`` ((vertices (V, 3), faces (F, 3), cull back faces), model frame)
    lit from model-frame ``direction`` (towards the light)."""
    R = _light_rotation(direction)
    pts = [v @ R.T for v, _, _ in meshes]
    allp = torch.cat(pts)
    lo, hi = allp.min(0).values, allp.max(0).values
    extent = float((hi[:2] - lo[:2]).max()) * 1.04 + 1e-3
    mid = 0.5 * (lo + hi)
    scale = torch.tensor([2.0 / extent])
    cam = WeakPerspectiveCamera(scale, torch.stack([-scale[0] * mid[0], scale[0] * mid[1]])[None], (size, size),
                                depth_offset=float(hi[2]) + 1.0)
    far = 1e3
    depth = torch.full((size, size), far)
    for (v, f, cull), p in zip(meshes, pts):
        if cull:  # keep the faces turned to the light (less per-triangle work in the rasteriser)
            t = p[f]
            f = f[(t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]) > 0]
        if f.shape[0] == 0:
            continue
        fr = rasterize(cam.to_screen(p[None]), f, (size, size), perspective=False, cull_backfaces=cull)
        depth = torch.where(fr.mask[0], torch.minimum(depth, fr.depth[0]), depth)
    return ShadowMap(R, cam, depth[None, None], extent / size, far)


def ambient_occlusion(vertices: torch.Tensor, faces: torch.Tensor, normals: torch.Tensor, n_directions: int = 32,
                      size: int = 128) -> torch.Tensor:
    """Per-vertex ambient occlusion ``(V,)`` in [0, 1] (1 = open sky) of one mesh: cosine-
    weighted visibility over ``n_directions`` directions of a Fibonacci sphere."""
    k = torch.arange(n_directions, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n_directions
    r = torch.sqrt(1 - z * z)
    phi = k * np.pi * (3 - np.sqrt(5))
    dirs = torch.stack([r * torch.cos(phi), z, r * torch.sin(phi)], 1).float()
    num = torch.zeros(vertices.shape[0])
    den = torch.zeros(vertices.shape[0])
    for d in dirs:
        sm = shadow_map([(vertices, faces, True)], d, size)
        w = (normals @ d).clamp_min(0)
        num += w * sm.visibility(vertices, normals @ d, softness=0.5)
        den += w
    return (num / den.clamp_min(1e-6)).clamp(0, 1)


# ------------------------------------------------------------------ shading
def ambient(normals: torch.Tensor, rig: LightRig, up: torch.Tensor) -> torch.Tensor:
    """Hemispherical ambient irradiance ``(N, 3)``: sky from ``up``, ground from below."""
    t = (0.5 + 0.5 * (normals @ up)).clamp(0, 1)[:, None]
    sky, ground = (torch.tensor(x, dtype=torch.float32) for x in (rig.sky, rig.ground))
    return ground * (1 - t) + sky * t


def shade(albedo: torch.Tensor, normals: torch.Tensor, view: torch.Tensor, specular: torch.Tensor,
          shininess: torch.Tensor, ao: torch.Tensor, wrap: torch.Tensor, rig: LightRig, light_dirs: torch.Tensor,
          shadows: list[torch.Tensor | None], up: torch.Tensor) -> torch.Tensor:
    """Linear radiance ``(N, 3)`` of surface points: linear ``albedo (N, 3)``, unit ``normals``
    and ``view`` directions (towards the eye) ``(N, 3)`` in one frame with ``light_dirs (L, 3)``
    and ``up``; per-point ``specular`` strength, ``shininess``, ambient occlusion ``ao`` and
    ``wrap`` (0 = Lambert, 0.3 = soft, skin-like); ``shadows``: per light ``(N,)`` or None."""
    irr = ambient(normals, rig, up) * ao[:, None]
    spec = torch.zeros_like(albedo)
    for light, d, sh in zip(rig.lights, light_dirs, shadows):
        col = torch.tensor(light.colour * light.intensity, dtype=torch.float32)
        ndl = normals @ d
        diff = ((ndl[:, None] + wrap[:, None]) / (1 + wrap[:, None])).clamp_min(0)
        vis = sh[:, None] if sh is not None else 1.0
        # light scattered under the skin comes out reddish near the shadow's edge
        edge = (wrap / 0.3).clamp(0, 1)[:, None] * (1 - (ndl[:, None] * 2.5).abs().clamp(max=1)) * 0.5
        tint = 1 - edge * _SCATTER
        irr = irr + col * diff * vis * tint
        h = view + d
        h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-9)
        nh = (normals * h).sum(1).clamp(0, 1)
        fres = 0.25 + 0.75 * (1 - (view * h).sum(1).clamp(0, 1)) ** 5
        lobe = specular * fres * (shininess + 2) / 8 * nh ** shininess * (ndl > 0).float()
        spec = spec + col * (lobe * rig.specular)[:, None] * vis
    return albedo * irr + spec


def sh_approximation(rig: LightRig, gain: np.ndarray, gamma: float = 2.2, n: int = 512) -> torch.Tensor:
    """Raw SH ``(9, 3)`` (view frame, :func:`engine.render.sh_basis`) fitting the rig's
    unshadowed diffuse shading as the image encodes it: ``(gain · E(n))^(1/gamma)``, so that
    ``albedo_map × SH`` approximates the rendered skin."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    r = np.sqrt(1 - z * z)
    phi = k * np.pi * (3 - np.sqrt(5))
    nv = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)  # view frame: +Y up, +Z to the camera
    flip = np.array([1.0, -1.0, -1.0])  # camera <-> view frame
    up_v = UP_CAMERA * flip
    t = np.clip(0.5 + 0.5 * nv @ up_v, 0, 1)[:, None]
    E = rig.ground * (1 - t) + rig.sky * t
    for light in rig.lights:
        E = E + light.colour * light.intensity * np.clip(nv @ (light.direction * flip), 0, None)[:, None]
    target = (np.clip(E * gain, 0, None)) ** (1 / gamma)
    B = sh_basis(torch.from_numpy(nv)).numpy()
    coef = np.linalg.lstsq(B, target, rcond=None)[0]
    return torch.tensor(coef, dtype=torch.float32)
