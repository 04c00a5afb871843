"""Colours of people: skin tones (Fitzpatrick I–VI), hair, iris and lip colours, and the
sRGB transfer curve.

Painted colours (albedo maps, clothes, hair) are *display* colours: sRGB-encoded values in
[0, 1], the space the engine's image model ``colour = albedo × shading`` works in. Shading
is computed in linear light (:func:`srgb_to_linear` of the albedo) and the image is encoded
back with :func:`linear_to_srgb`, so a surface under unit white light shows its albedo.

Skin tone is one number ``tone`` in [0, 1] drawn uniformly (every Fitzpatrick type equally
often, not a spread around one mean): ``type = 1 + floor(6·tone)``; the CIELAB colour is
interpolated between six anchors whose lightness falls evenly from L* 75 (type I) to L* 25
(type VI) — individual typology angles (ITA°) from ≈ +60° (very light) to ≈ −65° (dark).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: CIELAB (D65) anchor colours of skin at the centre of Fitzpatrick types I..VI.
FITZPATRICK_LAB = np.array([
    [75.0, 8.0, 13.5],   # I   very light (ITA ≈ +61°)
    [65.0, 10.5, 16.5],  # II  light
    [55.0, 12.0, 19.5],  # III intermediate
    [45.0, 12.5, 20.0],  # IV  tan / olive
    [35.0, 12.0, 17.5],  # V   brown
    [25.0, 9.5, 12.0],   # VI  dark (ITA ≈ −64°)
])

_XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                         [-0.9692660, 1.8760108, 0.0415560],
                         [0.0556434, -0.2040259, 1.0572252]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _srgb_to_linear_exact(c):
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb_exact(c):
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _as_torch(c):
    """(tensor, converter back): large float32 numpy arrays go through torch (much faster
    element-wise work on one thread), zero-copy; other numpy arrays: (None, None)."""
    import torch

    if isinstance(c, np.ndarray):
        if c.dtype == np.float32 and c.size > 4096:
            return torch.from_numpy(np.ascontiguousarray(c)), lambda t: t.numpy()
        return None, None
    return c, lambda t: t


def srgb_to_linear(c):
    """sRGB-encoded values in [0, 1] -> linear light (numpy arrays or torch tensors)."""
    t, back = _as_torch(c)
    if t is None:
        return _srgb_to_linear_exact(c)
    import torch

    return back(torch.where(t <= 0.04045, t / 12.92, ((t.clamp_min(0) + 0.055) / 1.055) ** 2.4))


def linear_to_srgb(c):
    """Linear light -> sRGB-encoded values (clamped to [0, 1]); numpy or torch."""
    t, back = _as_torch(c)
    if t is None:
        return _linear_to_srgb_exact(c)
    import torch

    t = t.clamp(0.0, 1.0)
    return back(torch.where(t <= 0.0031308, t * 12.92, 1.055 * t.clamp_min(1e-8) ** (1 / 2.4) - 0.055))


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) ``(..., 3)`` -> sRGB-encoded ``(..., 3)`` in [0, 1]."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE_D65
    return linear_to_srgb(xyz @ _XYZ_TO_SRGB.T)


def luminance(srgb: np.ndarray) -> np.ndarray:
    """Relative luminance Y (linear, Rec. 709 weights) of sRGB-encoded colours ``(..., 3)``."""
    return srgb_to_linear(np.asarray(srgb, np.float64)) @ np.array([0.2126, 0.7152, 0.0722])


@dataclass
class SkinTone:
    """One person's skin colour: ``tone`` in [0, 1] (0 = lightest), its Fitzpatrick type
    1..6, the CIELAB colour and the sRGB albedo of their face skin, and the ITA angle."""

    tone: float
    fitzpatrick: int
    lab: np.ndarray  # (3,)
    rgb: np.ndarray  # (3,) sRGB-encoded albedo

    @property
    def ita_deg(self) -> float:
        """Individual typology angle ``atan((L* − 50) / b*)`` in degrees."""
        return float(np.degrees(np.arctan2(self.lab[0] - 50.0, self.lab[2])))


def skin_lab(tone: float) -> np.ndarray:
    """CIELAB colour at ``tone`` in [0, 1] (piecewise linear through :data:`FITZPATRICK_LAB`)."""
    x = float(np.clip(tone, 0.0, 1.0)) * 6.0 - 0.5  # anchors sit at the centres of the 6 bins
    i = int(np.clip(np.floor(x), 0, 4))
    w = float(np.clip(x - i, -0.5, 1.5))  # extrapolate half a bin beyond the outer anchors
    return FITZPATRICK_LAB[i] * (1 - w) + FITZPATRICK_LAB[i + 1] * w


def sample_skin_tone(rng: np.random.Generator) -> SkinTone:
    """A skin tone drawn uniformly over Fitzpatrick I–VI, with a personal undertone:
    redness ``a*`` ± 2.5 and yellowness ``b*`` ± 3 around the anchor curve."""
    tone = float(rng.uniform(0.0, 1.0))
    lab = skin_lab(tone) + np.array([0.0, rng.normal(0, 1.2), rng.normal(0, 1.5)]).clip(-3, 3)
    return SkinTone(tone, 1 + min(int(tone * 6), 5), lab, lab_to_srgb(lab))


# ------------------------------------------------------------------------- hair
#: Natural hair colours (sRGB albedo) and how common each is for light (tone 0) and dark
#: (tone 1) skin; the weights are interpolated by tone.
HAIR_COLOURS = {
    "black": ((0.045, 0.038, 0.034), 0.10, 0.55),
    "dark_brown": ((0.11, 0.075, 0.055), 0.28, 0.30),
    "brown": ((0.24, 0.16, 0.10), 0.24, 0.08),
    "light_brown": ((0.40, 0.29, 0.19), 0.12, 0.02),
    "blonde": ((0.68, 0.55, 0.36), 0.12, 0.01),
    "red": ((0.45, 0.20, 0.09), 0.06, 0.005),
    "grey": ((0.55, 0.54, 0.52), 0.06, 0.03),
    "white": ((0.80, 0.79, 0.76), 0.02, 0.005),
}
#: Dyed colours, drawn with probability ``dyed_probability`` instead of a natural one.
DYED_COLOURS = ((0.55, 0.10, 0.35), (0.12, 0.20, 0.55), (0.60, 0.15, 0.12), (0.35, 0.15, 0.55),
                (0.10, 0.45, 0.40), (0.85, 0.70, 0.55))


def _pick_by_tone(rng: np.random.Generator, table: dict, tone: float, jitter: float) -> tuple[str, np.ndarray]:
    """A colour of ``table`` (name -> (sRGB, weight at tone 0, weight at tone 1)), weights
    interpolated by ``tone``; lightness ±20 % and per-channel ``jitter``."""
    names = list(table)
    w = np.array([table[n][1] * (1 - tone) + table[n][2] * tone for n in names])
    name = names[rng.choice(len(names), p=w / w.sum())]
    return name, np.asarray(table[name][0]) * rng.uniform(0.8, 1.2) * (1 + rng.normal(0, jitter, 3))


def sample_hair_colour(rng: np.random.Generator, tone: float, dyed_probability: float = 0.05) -> tuple[str, np.ndarray]:
    """(name, sRGB albedo (3,)) of a person's hair; lightness and hue jittered slightly."""
    if rng.uniform() < dyed_probability:
        c = np.asarray(DYED_COLOURS[rng.integers(len(DYED_COLOURS))])
        return "dyed", np.clip(c * rng.uniform(0.8, 1.15), 0, 1)
    name, c = _pick_by_tone(rng, HAIR_COLOURS, tone, 0.04)
    return name, np.clip(c, 0.01, 0.95)


# ------------------------------------------------------------------------- eyes
#: Iris colours (sRGB albedo of the stroma) and their weights for light / dark skin.
IRIS_COLOURS = {
    "dark_brown": ((0.10, 0.055, 0.03), 0.25, 0.85),
    "brown": ((0.28, 0.15, 0.07), 0.25, 0.12),
    "hazel": ((0.36, 0.27, 0.12), 0.12, 0.02),
    "green": ((0.26, 0.33, 0.18), 0.10, 0.005),
    "blue": ((0.30, 0.42, 0.58), 0.20, 0.004),
    "grey": ((0.42, 0.46, 0.50), 0.08, 0.001),
}


def sample_iris_colour(rng: np.random.Generator, tone: float) -> tuple[str, np.ndarray]:
    """(name, sRGB albedo (3,)) of a person's irises."""
    name, c = _pick_by_tone(rng, IRIS_COLOURS, tone, 0.05)
    return name, np.clip(c, 0.01, 0.9)


def lip_colour(skin: SkinTone, rng: np.random.Generator) -> np.ndarray:
    """Natural lip colour (sRGB): redder and darker than the skin, browner on dark skin."""
    L, a, b = skin.lab
    lab = np.array([L - rng.uniform(6, 14) - 4 * skin.tone, a + rng.uniform(8, 16) * (1 - 0.4 * skin.tone),
                    b - rng.uniform(2, 7)])
    return lab_to_srgb(lab)


def blackbody_rgb(kelvin: float) -> np.ndarray:
    """Linear RGB of a light of colour temperature ``kelvin`` (1000–40000 K), normalised to
    luminance 1 (Tanner Helland's fit of the Planckian locus, converted to linear)."""
    t = float(np.clip(kelvin, 1000.0, 40000.0)) / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    bl = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    rgb = srgb_to_linear(np.clip(np.array([r, g, bl]) / 255.0, 0, 1))
    return rgb / max(float(rgb @ np.array([0.2126, 0.7152, 0.0722])), 1e-6)
