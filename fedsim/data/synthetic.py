"""Download-free, medical-looking classification data.

The simulator needs a dataset that exists on every machine, costs nothing to make, and is hard
enough that federated effects (skew, drift, stragglers) show up in accuracy. Images are smooth
tissue-like texture inside a soft organ outline, with a class-specific lesion whose size,
contrast and position (scattered around a class-typical site) vary, plus per-image
brightness/contrast jitter and sensor noise. Low-contrast lesions
and texture blobs that resemble nodules keep the best reachable accuracy well below 100%.

Class 0 is "normal" (no lesion, sometimes a faint benign spot). Classes 1, 2, 3, 4 are a round
nodule, an elongated streak, a ring and a cluster of small spots; classes beyond 4 reuse those
shapes as dark instead of bright lesions, then larger, so any number of classes >= 2 works.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.arrays import ImageDataset, ImageSet
from fedsim.data.blur import gaussian_blur
from fedsim.data.errors import DataError

_SHAPES = ("nodule", "streak", "ring", "spots")
_SPOTS = 4
# Reference geometry is in pixels at 28x28 and scales with image_size.
_REF_SIZE = 28.0
_TEXTURE_STD = 0.09
_CONTRAST_RANGE = (0.1, 0.5)
_BENIGN_PROBABILITY = 0.5
# RGB tints: pinkish skin and blue-white lesions (like the dermoscopic blue-white veil).
_SKIN_TINT = np.array([0.95, 0.72, 0.66], dtype=np.float32)
_LESION_TINT = np.array([0.55, 0.85, 1.0], dtype=np.float32)


def make_synthetic(
    num_classes: int = 4,
    train_samples: int = 4000,
    test_samples: int = 1000,
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
) -> ImageDataset:
    """Balanced synthetic dataset; train and test come from one distribution, separate streams."""
    if num_classes < 2:
        raise DataError(f"num_classes: expected >= 2, got {num_classes}")
    if train_samples < 1 or test_samples < 1:
        raise DataError(f"train_samples/test_samples: expected >= 1, got {train_samples}/{test_samples}")
    if image_size < 8:
        raise DataError(f"image_size: expected >= 8, got {image_size}")
    if channels not in (1, 3):
        raise DataError(f"channels: expected 1 or 3, got {channels}")
    train_rng, test_rng = np.random.default_rng(seed).spawn(2)
    return ImageDataset(
        name="synthetic",
        classes=tuple(["normal", *(_class_name(c) for c in range(1, num_classes))]),
        train=_draw(train_samples, num_classes, image_size, channels, train_rng),
        val=None,
        test=_draw(test_samples, num_classes, image_size, channels, test_rng),
    )


def _class_name(label: int) -> str:
    shape, dark, scale = _lesion_kind(label)
    return f"{'dark' if dark else 'bright'} {shape}" + (f" x{scale:g}" if scale != 1 else "")


def _lesion_kind(label: int) -> tuple[str, bool, float]:
    """(shape, dark polarity, size scale) of a lesion class >= 1."""
    variant = (label - 1) // len(_SHAPES)
    return _SHAPES[(label - 1) % len(_SHAPES)], variant % 2 == 1, round(1.3 ** (variant // 2), 2)


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels, as equal per class as n allows, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _draw(n: int, num_classes: int, size: int, channels: int, rng: np.random.Generator) -> ImageSet:
    labels = balanced_labels(n, num_classes, rng)
    return ImageSet(images=draw_images(labels, num_classes, size, channels, rng), labels=labels)


def draw_images(labels: np.ndarray, num_classes: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images (n, channels, size, size) of the given classes, all randomness from `rng`."""
    n = len(labels)
    scale = size / _REF_SIZE
    tissue = _organ(n, size, scale, rng) + _texture(n, size, scale, rng)
    lesion = _lesions(labels, num_classes, size, scale, rng)
    lesion *= rng.uniform(*_CONTRAST_RANGE, size=(n, 1, 1)).astype(np.float32)
    if channels == 1:
        image = (tissue + lesion)[:, None]
    else:
        skin = _SKIN_TINT + rng.normal(0, 0.05, size=(n, 3)).astype(np.float32)
        stain = _LESION_TINT + rng.normal(0, 0.08, size=(n, 3)).astype(np.float32)
        image = skin[:, :, None, None] * tissue[:, None] + stain[:, :, None, None] * lesion[:, None]
    gain = rng.uniform(0.75, 1.25, size=(n, 1, 1, 1)).astype(np.float32)
    offset = rng.normal(0, 0.06, size=(n, 1, 1, 1)).astype(np.float32)
    noise_std = rng.uniform(0.02, 0.06, size=(n, 1, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= noise_std
    image *= gain
    image += noise + (0.5 - 0.5 * gain + offset)
    np.clip(image, 0.0, 1.0, out=image)
    return np.round(image * 255).astype(np.uint8)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(size, dtype=np.float32)
    return axis[None, :, None], axis[None, None, :]


def _organ(n: int, size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Soft-edged ellipse of brighter tissue on a darker surround, jittered per image."""
    yy, xx = _grid(size)
    centre = size / 2 + rng.normal(0, 1.0 * scale, size=(2, n, 1, 1)).astype(np.float32)
    radii = size * rng.uniform(0.36, 0.46, size=(2, n, 1, 1)).astype(np.float32)
    r = np.sqrt(((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2)
    inside = 1.0 / (1.0 + np.exp((r - 1.0) * 8.0))
    level = rng.uniform(0.38, 0.5, size=(n, 1, 1)).astype(np.float32)
    return (0.18 + level * inside).astype(np.float32)


def _texture(n: int, size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Low-pass filtered noise at a coarse and a fine scale, normalised per image."""
    texture = np.zeros((n, size, size), dtype=np.float32)
    for correlation, weight in ((3.0 * scale, 0.65), (1.0 * scale, 0.45)):
        field = gaussian_blur(rng.standard_normal((n, size, size), dtype=np.float32), correlation)
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
        texture += weight * field
    return _TEXTURE_STD * texture


def _lesions(labels: np.ndarray, num_classes: int, size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-peak lesion maps (dark lesions negative); class 0 gets faint benign spots."""
    n = len(labels)
    yy, xx = _grid(size)
    lesion = np.zeros((n, size, size), dtype=np.float32)
    centre = size * (_site(labels, num_classes) + rng.normal(0, 0.1, size=(2, n)))
    centre = np.clip(centre, 0.25 * size, 0.75 * size).astype(np.float32)[:, :, None, None]
    dy, dx = yy - centre[0], xx - centre[1]
    size_jitter = rng.uniform(0.8, 1.25, size=(n, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, np.pi, size=(n, 1, 1)).astype(np.float32)
    spot_offsets = rng.normal(0, 2.8 * scale, size=(n, _SPOTS, 2, 1, 1)).astype(np.float32)
    benign = rng.random(n) < _BENIGN_PROBABILITY
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if label == 0:
            rows = rows[benign[rows]]
            lesion[rows] = 0.3 * _blob(dy[rows], dx[rows], 1.2 * scale * size_jitter[rows])
            continue
        shape, dark, kind_scale = _lesion_kind(int(label))
        unit = scale * kind_scale * size_jitter[rows]
        if shape == "nodule":
            mask = _blob(dy[rows], dx[rows], 2.5 * unit)
        elif shape == "streak":
            cos, sin = np.cos(angle[rows]), np.sin(angle[rows])
            along, across = cos * dx[rows] + sin * dy[rows], cos * dy[rows] - sin * dx[rows]
            mask = np.exp(-0.5 * ((along / (4.5 * unit)) ** 2 + (across / (0.9 * unit)) ** 2))
        elif shape == "ring":
            radius = np.sqrt(dy[rows] ** 2 + dx[rows] ** 2)
            mask = np.exp(-0.5 * ((radius - 3.5 * unit) / (0.8 * unit)) ** 2)
        else:
            offsets = spot_offsets[rows]
            spots = _blob(dy[rows, None] - offsets[:, :, 0], dx[rows, None] - offsets[:, :, 1], 0.8 * unit[:, None])
            mask = np.minimum(spots.sum(axis=1), 1.0)
        lesion[rows] = -mask if dark else mask
    return lesion


def _site(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Preferred lesion site per class (2, n) as a fraction of the image, like disease-typical regions."""
    turn = 2 * np.pi * labels / (num_classes - 1)
    return 0.5 + 0.12 * np.stack([np.sin(turn), np.cos(turn)]) * (labels > 0)


def _blob(dy: np.ndarray, dx: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (dy**2 + dx**2) / sigma**2).astype(np.float32)
