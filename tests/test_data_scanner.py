"""Scanner shift: identity is exact, seeded, clipped, and strength widens the spread."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.data import IDENTITY_PROFILE, DataError, apply_scanner, draw_scanner_profiles

IMAGES = np.random.default_rng(0).random((16, 3, 20, 20), dtype=np.float32)


def test_strength_zero_gives_identity_profiles_that_change_nothing() -> None:
    profiles = draw_scanner_profiles(5, strength=0.0, seed=3)
    assert profiles.shape == (5, 4) and profiles.dtype == np.float32
    assert np.array_equal(profiles, np.tile(IDENTITY_PROFILE, (5, 1)))
    out = apply_scanner(IMAGES, profiles[0], seed=0)
    assert out.dtype == np.float32 and np.array_equal(out, IMAGES)


def test_profiles_seeded_and_spread_grows_with_strength() -> None:
    assert np.array_equal(draw_scanner_profiles(4, 1.0, 9), draw_scanner_profiles(4, 1.0, 9))
    assert not np.array_equal(draw_scanner_profiles(4, 1.0, 9), draw_scanner_profiles(4, 1.0, 10))
    weak, strong = draw_scanner_profiles(300, 0.5, 0), draw_scanner_profiles(300, 2.0, 0)
    assert np.all(strong.std(axis=0) > 2 * weak.std(axis=0))
    assert np.all(strong[:, [0, 2, 3]] >= 0)


def test_apply_is_seeded_and_noise_depends_on_seed() -> None:
    profile = np.array([1.2, 0.05, 0.05, 0.8], dtype=np.float32)
    first, again, other = (apply_scanner(IMAGES, profile, seed) for seed in (1, 1, 2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_output_is_clipped_to_unit_range() -> None:
    out = apply_scanner(IMAGES, np.array([3.0, 0.4, 0.2, 0.0], dtype=np.float32), seed=0)
    assert out.min() == 0.0 and out.max() == 1.0


def test_contrast_pivots_on_mid_grey_and_brightness_shifts() -> None:
    grey = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    assert np.allclose(apply_scanner(grey, np.array([1.7, 0.0, 0.0, 0.0]), 0), 0.5)
    assert np.allclose(apply_scanner(grey, np.array([1.0, 0.1, 0.0, 0.0]), 0), 0.6)


def test_blur_smooths_but_keeps_flat_images_and_mean() -> None:
    blurred = apply_scanner(IMAGES, np.array([1.0, 0.0, 0.0, 1.5], dtype=np.float32), seed=0)
    assert blurred.std() < 0.5 * IMAGES.std()
    assert abs(blurred.mean() - IMAGES.mean()) < 0.01
    flat = np.full((1, 1, 9, 9), 0.3, dtype=np.float32)
    assert np.allclose(apply_scanner(flat, np.array([1.0, 0.0, 0.0, 2.0]), 0), 0.3)


def test_noise_has_requested_std() -> None:
    grey = np.full((8, 1, 32, 32), 0.5, dtype=np.float32)
    out = apply_scanner(grey, np.array([1.0, 0.0, 0.05, 0.0]), seed=0)
    assert abs(out.std() - 0.05) < 0.003


def test_bad_input() -> None:
    with pytest.raises(DataError, match="images"):
        apply_scanner(IMAGES.astype(np.float64), IDENTITY_PROFILE, 0)
    with pytest.raises(DataError, match="profile"):
        apply_scanner(IMAGES, np.ones(3), 0)
    with pytest.raises(DataError, match="strength"):
        draw_scanner_profiles(3, -1.0, 0)
