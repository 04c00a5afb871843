"""Camera and file degradations of a rendered linear image, in the order a camera applies
them: lens blur (defocus disc or motion streak), exposure and white balance, vignetting,
sensor noise (signal-dependent shot noise plus read noise, a little chroma noise), a tone
curve with a soft shoulder and the sRGB encoding, saturation / contrast of the picture
style, resolution loss, and JPEG compression.

:func:`sample_degradation` draws the parameters (ranges in ``RealisticConfig``), and
:func:`apply_degradation` turns linear radiance ``(H, W, 3)`` into a uint8 sRGB image.
Every step is deterministic for given parameters (OpenCV filters and its JPEG codec).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.generator.tones import linear_to_srgb


TONE_KNEE = 0.8  # the tone curve is the identity below this (unit white light shows the albedo), a soft shoulder above


@dataclass
class Degradation:
    """One image's degradation parameters (see the module docstring)."""

    exposure_ev: float
    wb_gains: tuple[float, float, float]
    optical_sigma_px: float  # always a little: lens + demosaicing
    defocus_px: float  # disc radius, 0 = none
    motion_px: float  # streak length, 0 = none
    motion_angle_deg: float
    shot_noise: float  # variance per unit signal
    read_noise: float  # std
    vignette: float  # darkening at the corners (0..1)
    saturation: float
    contrast: float
    downscale: float  # 1 = none, else the intermediate size factor
    jpeg_quality: int  # 0 = no JPEG
    noise_seed: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_degradation(rng: np.random.Generator, cfg, light_colour: np.ndarray) -> Degradation:
    """Parameters for one image; ``light_colour`` (linear RGB) is what the camera's white
    balance tries to neutralise (it corrects ``wb_correction`` of it, with a small error)."""
    est = np.asarray(light_colour, float) / max(float(np.mean(light_colour)), 1e-6)
    k = rng.uniform(*cfg.wb_correction)
    gains = est ** (-k) * np.exp(rng.normal(0, cfg.wb_error, 3))
    gains = gains / (gains @ np.array([0.2126, 0.7152, 0.0722]))
    blur = rng.uniform()
    defocus = rng.uniform(0.5, cfg.defocus_max_px) if blur < cfg.defocus_probability else 0.0
    motion = (rng.uniform(1.0, cfg.motion_max_px) if cfg.defocus_probability <= blur < cfg.defocus_probability + cfg.motion_probability
              else 0.0)
    iso = float(np.exp(rng.uniform(np.log(cfg.noise_level[0]), np.log(cfg.noise_level[1]))))
    jpeg = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.uniform() < cfg.jpeg_probability else 0
    down = float(rng.uniform(0.3, 0.8)) if rng.uniform() < cfg.downscale_probability else 1.0
    return Degradation(
        exposure_ev=float(np.clip(rng.normal(0, cfg.exposure_sd_ev), -2.5 * cfg.exposure_sd_ev, 2.5 * cfg.exposure_sd_ev)),
        wb_gains=tuple(float(g) for g in gains), optical_sigma_px=float(rng.uniform(0.3, 0.8)),
        defocus_px=float(defocus), motion_px=float(motion), motion_angle_deg=float(rng.uniform(0, 180)),
        shot_noise=iso * 0.0015, read_noise=iso * 0.002, vignette=float(rng.uniform(0, 0.45) * (rng.uniform() < 0.5)),
        saturation=float(np.exp(rng.normal(0, 0.12))), contrast=float(np.exp(rng.normal(0, 0.08))),
        downscale=down, jpeg_quality=jpeg, noise_seed=int(rng.integers(1 << 31)))


def _disc(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1).astype(np.float32)
    return k / k.sum()


def _streak(length: float, angle_deg: float) -> np.ndarray:
    r = int(np.ceil(length / 2)) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    a = np.radians(angle_deg)
    for s in np.linspace(-length / 2, length / 2, max(int(length * 3), 2)):
        x, y = r + s * np.cos(a), r + s * np.sin(a)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < k.shape[0] and 0 <= x0 + dx < k.shape[1]:
                    k[y0 + dy, x0 + dx] += wx * wy
    return k / k.sum()


def apply_degradation(linear: np.ndarray, d: Degradation) -> np.ndarray:
    """Linear radiance ``(H, W, 3)`` float32 -> uint8 sRGB image ``(H, W, 3)``."""
    import cv2
    import torch

    H, W = linear.shape[:2]
    img = np.ascontiguousarray(linear, np.float32)
    if d.defocus_px > 0:
        img = cv2.filter2D(img, -1, _disc(d.defocus_px), borderType=cv2.BORDER_REFLECT)
    if d.motion_px > 0:
        img = cv2.filter2D(img, -1, _streak(d.motion_px, d.motion_angle_deg), borderType=cv2.BORDER_REFLECT)
    img = cv2.GaussianBlur(img, (0, 0), d.optical_sigma_px)
    # per-pixel steps in torch, channels first (numpy broadcasts over a last axis of 3 slowly)
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    t = t * (2.0 ** d.exposure_ev * torch.tensor(d.wb_gains, dtype=torch.float32))[:, None, None]
    if d.vignette > 0:
        x2 = ((torch.arange(W, dtype=torch.float32) + 0.5 - W / 2) / (W / 2)) ** 2
        y2 = ((torch.arange(H, dtype=torch.float32) + 0.5 - H / 2) / (H / 2)) ** 2
        t = t * (1 - d.vignette * 0.5 * (y2[:, None] + x2[None]))[None]  # 1 - vignette at the corners
    rng = np.random.default_rng(d.noise_seed)
    luma_noise = torch.from_numpy(rng.standard_normal((1, H, W), dtype=np.float32))
    chroma_noise = torch.from_numpy(rng.standard_normal((3, H, W), dtype=np.float32))
    sigma = torch.sqrt(t.clamp_min(0) * d.shot_noise + d.read_noise ** 2)
    t = (t + sigma * (0.8 * luma_noise + 0.6 * chroma_noise)).clamp_min(0)
    over = (t - TONE_KNEE).clamp_min(0)
    t = linear_to_srgb(t - over + (1 - TONE_KNEE) * (1 - torch.exp(-over / (1 - TONE_KNEE))))
    grey = t.mean(0, keepdim=True)
    t = (0.5 + (grey + (t - grey) * d.saturation - 0.5) * d.contrast).clamp(0, 1)
    img = np.ascontiguousarray(t.permute(1, 2, 0).numpy())
    if d.downscale < 1:
        small = (max(int(W * d.downscale), 8), max(int(H * d.downscale), 8))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (W, H), interpolation=cv2.INTER_LINEAR)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if d.jpeg_quality:
        _, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out
