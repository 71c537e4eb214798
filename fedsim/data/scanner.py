"""Scanner-like feature shift: each hospital's device renders the same anatomy differently.

A profile is (contrast, brightness, noise_std, blur_sigma). Profiles are drawn once per
hospital; ``apply_scanner`` runs on every local batch, so it is vectorised over the batch.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.blur import gaussian_blur
from fedsim.data.errors import DataError

IDENTITY_PROFILE = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
IDENTITY_PROFILE.setflags(write=False)

# Spread of each profile component at strength 1 (scaled linearly by strength).
_LOG_CONTRAST_STD = 0.25  # contrast = exp(N(0, 0.25 s)): ~[0.61, 1.63] for 95% at s=1
_BRIGHTNESS_STD = 0.08  # brightness = N(0, 0.08 s): ~[-0.16, 0.16] at s=1
_NOISE_SCALE = 0.04  # noise_std = |N(0, 0.04 s)|: ~[0, 0.08] at s=1
_BLUR_SCALE = 0.6  # blur_sigma = |N(0, 0.6 s)| pixels: ~[0, 1.2] at s=1


def draw_scanner_profiles(num_hospitals: int, strength: float, seed: int) -> np.ndarray:
    """(H, 4) float32 profiles; strength 0 gives identity (1, 0, 0, 0), larger spreads further.

    At strength s, 95% of hospitals fall within: contrast exp(+-0.49 s), brightness +-0.16 s,
    noise_std 0..0.08 s and blur_sigma 0..1.2 s pixels (half-normal for the last two).
    """
    if num_hospitals < 1:
        raise DataError(f"num_hospitals: expected >= 1, got {num_hospitals}")
    if not strength >= 0:
        raise DataError(f"strength: expected >= 0, got {strength}")
    normal = np.random.default_rng(seed).standard_normal((num_hospitals, 4))
    profiles = np.stack(
        [
            np.exp(_LOG_CONTRAST_STD * strength * normal[:, 0]),
            _BRIGHTNESS_STD * strength * normal[:, 1] + 0.0,
            np.abs(_NOISE_SCALE * strength * normal[:, 2]),
            np.abs(_BLUR_SCALE * strength * normal[:, 3]),
        ],
        axis=1,
    )
    return profiles.astype(np.float32)


def apply_scanner(images: np.ndarray, profile: np.ndarray, seed: int) -> np.ndarray:
    """Render float32 (N, C, H, W) images in [0, 1] through a scanner profile.

    Order: contrast around 0.5 and brightness offset, separable Gaussian blur, additive
    Gaussian noise from ``seed``, clip to [0, 1]. Steps whose parameter is neutral are
    skipped, so the identity profile returns the input values exactly.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.float32:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"images: expected a float32 array of shape (N, C, H, W), got {got}")
    profile = np.asarray(profile, dtype=np.float32)
    if profile.shape != (4,):
        raise DataError(
            f"profile: expected shape (4,) (contrast, brightness, noise_std, blur_sigma), got {profile.shape}"
        )
    contrast, brightness, noise_std, blur_sigma = (float(value) for value in profile)
    if contrast <= 0 or noise_std < 0 or blur_sigma < 0:
        raise DataError(f"profile: expected contrast > 0 and noise_std, blur_sigma >= 0, got {profile.tolist()}")
    out = images
    if contrast != 1 or brightness != 0:
        out = (out - np.float32(0.5)) * np.float32(contrast) + np.float32(0.5 + brightness)
    if blur_sigma > 0:
        out = gaussian_blur(out, blur_sigma)
    if noise_std > 0:
        out = out + np.float32(noise_std) * np.random.default_rng(seed).standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0, dtype=np.float32)
