"""Hair styles: kind, colour and hairline (the scalp part shared by the painter and the hair
meshes of :mod:`engine.generator.hair`).

A hairline is a height above the eyebrows as a function of the angle around the head's
vertical axis (0° = the middle of the forehead, 90° = over the ears, 180° = the nape),
interpolated between knots; scalp points above it grow hair. Styles: ``bald``, ``buzz``
(painted only), ``short``, ``medium`` (a shell over the scalp of a few cm), ``long`` (shell
plus a curtain falling to the shoulders); ``fringe`` lowers the front of the shell over the
forehead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.generator.layout import HAIRLINE_PHI, smoothstep
from engine.generator.tones import SkinTone, sample_hair_colour

STYLES = ("bald", "buzz", "short", "medium", "long")


@dataclass
class HairStyle:
    """One person's scalp hair and eyebrows (colours sRGB)."""

    kind: str
    colour_name: str
    colour: np.ndarray  # (3,)
    brow_colour: np.ndarray  # (3,)
    hairline: np.ndarray  # (len(HAIRLINE_PHI),) heights above the brow line, metres
    thickness: float  # shell offset at the crown, metres
    fringe: float  # 0 = none; else how far the shell reaches down the forehead (metres above the brows)
    curtain_length: float  # metres below the brows (long hair), 0 = none
    curtain_angle: float  # half-angle (deg) around the back that the curtain covers
    density: float  # painted scalp coverage under the hair (0..1)
    streak_seed: int
    extra: dict = field(default_factory=dict)

    @property
    def has_shell(self) -> bool:
        return self.kind in ("short", "medium", "long")


def sample_hair_style(rng: np.random.Generator, skin: SkinTone, probabilities: dict[str, float]) -> HairStyle:
    """A hair style with probabilities per kind (``probabilities``: kind -> weight)."""
    kinds = [k for k in STYLES if probabilities.get(k, 0) > 0]
    w = np.array([probabilities[k] for k in kinds], float)
    kind = kinds[rng.choice(len(kinds), p=w / w.sum())] if kinds else "bald"
    name, colour = sample_hair_colour(rng, skin.tone)
    brow = np.clip(colour * rng.uniform(0.6, 1.0) if name not in ("grey", "white", "dyed")
                   else np.array([0.12, 0.09, 0.07]) * rng.uniform(0.6, 2.0), 0, 1)
    if name == "blonde":
        brow = colour * rng.uniform(0.45, 0.8)
    front = rng.uniform(0.038, 0.058)
    recede = rng.uniform(0.0, 0.045) if rng.uniform() < 0.2 else rng.uniform(0.0, 0.008)
    temple = rng.uniform(-0.006, 0.012) + recede
    line = np.array([front + 0.3 * recede, front + 0.6 * recede + 0.002, front + temple - 0.004, 0.004, -0.02,
                     0.01, 0.0, -0.045, -0.085, -0.095]) + rng.normal(0, 0.003, len(HAIRLINE_PHI)).clip(-0.008, 0.008)
    thickness = {"bald": 0.0, "buzz": 0.0, "short": rng.uniform(0.006, 0.016),
                 "medium": rng.uniform(0.014, 0.032), "long": rng.uniform(0.010, 0.028)}[kind]
    fringe = 0.0
    if kind in ("medium", "long") and rng.uniform() < 0.3:
        fringe = rng.uniform(0.008, 0.03)
    curtain = rng.uniform(0.14, 0.32) if kind == "long" else 0.0
    density = {"bald": 0.0, "buzz": rng.uniform(0.35, 0.8)}.get(kind, 0.95)
    return HairStyle(kind, name, colour, brow, line, thickness, fringe, curtain, float(rng.uniform(95, 130)),
                     density, int(rng.integers(1 << 31)))


def hairline_height(style: HairStyle, phi_deg: np.ndarray) -> np.ndarray:
    """Height of the hairline above the brows (metres) at angles ``phi_deg`` around the head."""
    return np.interp(np.abs(phi_deg), HAIRLINE_PHI, style.hairline).astype(np.float32)


def scalp_coverage(style: HairStyle, zones: dict[str, np.ndarray], skin_weight: np.ndarray,
                   softness: float = 0.004) -> np.ndarray:
    """(P,) in [0, 1]: how much of the scalp at these points grows hair (0 for bald)."""
    if style.kind == "bald":
        return np.zeros_like(skin_weight)
    h = hairline_height(style, zones["phi"])
    return smoothstep(0.0, softness, zones["height"] - h) * skin_weight
