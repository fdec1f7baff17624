"""Training-batch augmentation: flips are exact mirrors applied about half the time, padded crops are exact windows
of the zero-padded image, resized crops keep shape, dtype and value range, the input is never modified, and seeded
runs repeat exactly."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gir.train.augment import Augment, augment_batch, default_augment

DTYPES = [np.uint8, np.float32]


def _batch(rng: np.random.Generator, b: int, c: int, s: int, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(1, 256, size=(b, c, s, s), dtype=np.uint8)
    return rng.uniform(0.5, 2.0, size=(b, c, s, s)).astype(np.float32)


def _distinct(b: int, c: int, s: int) -> np.ndarray:
    """Positive, pairwise-distinct float pixels, so a window identifies its offset and an image differs from its mirror."""
    return np.random.default_rng(0).permutation(b * c * s * s).reshape(b, c, s, s).astype(np.float32) + 1


def _window_offsets(out: np.ndarray, image: np.ndarray, padding: int, flip: bool) -> list[tuple[int, int, bool]]:
    """Every (top, left, mirrored) for which `out` is exactly that window of the zero-padded `image`."""
    s = image.shape[-1]
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    found = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[:, top : top + s, left : left + s]
            for mirrored in (False, True) if flip else (False,):
                if np.array_equal(out, window[..., ::-1] if mirrored else window):
                    found.append((top, left, mirrored))
    return found


def test_flip_is_exact_and_applied_about_half_the_time():
    images = _distinct(4000, 2, 5)
    out = augment_batch(images, Augment(crop="none", flip=True), np.random.default_rng(1))
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[..., ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)  # every output is exactly the image or exactly its mirror, never both
    assert abs(mirrored.mean() - 0.5) < 0.04  # 5 binomial standard deviations


def test_no_crop_no_flip_is_an_identity_copy():
    images = _distinct(3, 3, 6)
    out = augment_batch(images, Augment(crop="none", flip=False), np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)
    assert not np.shares_memory(out, images)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 10),
    padding=st.integers(0, 5),
    channels=st.integers(1, 3),
    batch=st.integers(1, 5),
    flip=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_pad_crop_is_a_window_of_the_padded_image(size, padding, channels, batch, flip, dtype, seed):
    rng = np.random.default_rng(seed)
    images = _batch(rng, batch, channels, size, dtype)
    before = images.copy()
    out = augment_batch(images, Augment(crop="pad", padding=padding, flip=flip), rng)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(images, before)
    for o, image in zip(out, images):
        assert _window_offsets(o, image, padding, flip), "output is not a window of the zero-padded image"


def test_pad_crop_offsets_cover_the_whole_range():
    padding = 2
    images = _distinct(400, 1, 6)
    out = augment_batch(images, Augment(crop="pad", padding=padding, flip=False), np.random.default_rng(3))
    offsets = set()
    for o, image in zip(out, images):
        (found,) = _window_offsets(o, image, padding, flip=False)  # distinct nonzero pixels: a unique window
        offsets.add(found[:2])
    assert offsets == {(t, l) for t in range(2 * padding + 1) for l in range(2 * padding + 1)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [7, 32])
def test_resized_crop_keeps_shape_dtype_and_value_range(dtype, size):
    rng = np.random.default_rng(5)
    images = _batch(rng, 64, 3, size, dtype)
    before = images.copy()
    out = augment_batch(images, Augment(crop="resized"), rng)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(images, before)
    assert np.all(out.min(axis=(1, 2, 3)) >= images.min(axis=(1, 2, 3)))
    assert np.all(out.max(axis=(1, 2, 3)) <= images.max(axis=(1, 2, 3)))
    assert sum(not np.array_equal(o, i) for o, i in zip(out, images)) > 48  # crops really happen


def test_resized_crop_is_a_stretched_sub_window():
    size = 16
    ramp = np.broadcast_to(np.arange(size, dtype=np.float32), (200, 1, size, size))  # pixel value = column index
    out = augment_batch(ramp, Augment(crop="resized", flip=False), np.random.default_rng(2))
    assert np.all(np.diff(out, axis=-1) >= 0)  # a contiguous crop, stretched, not reordered or mirrored
    assert np.all(out == out[:, :, :1, :])  # rows of a column ramp stay identical
    assert out.min() >= 0 and out.max() <= size - 1
    widths = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert widths.min() < size / 2 < widths.max()  # both small and large crops are drawn


def test_resized_full_box_and_square_fallback_are_the_identity():
    images = _batch(np.random.default_rng(0), 8, 3, 12, np.float32)
    whole = Augment(crop="resized", flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(augment_batch(images, whole, np.random.default_rng(0)), images)
    too_big = Augment(crop="resized", flip=False, scale=(1.5, 1.5), ratio=(1.0, 1.0))  # 10 misses -> whole image
    np.testing.assert_array_equal(augment_batch(images, too_big, np.random.default_rng(0)), images)


def test_resized_fallback_is_torchvisions_center_box():
    size = 12
    rows = np.broadcast_to(np.arange(size, dtype=np.float32)[:, None], (5, 1, size, size))  # pixel value = row
    too_wide = Augment(crop="resized", flip=False, scale=(1.0, 1.0), ratio=(2.0, 2.0))  # never fits a square
    out = augment_batch(rows, too_wide, np.random.default_rng(0))
    # torchvision falls back to the full width and height round(12 / 2) = 6, centered: rows 3..8, stretched
    assert np.all(out == out[:1]) and np.all(out == out[..., :1])
    assert out.min() == 3 and out.max() == 8
    assert np.all(np.diff(out[0, 0, :, 0]) >= 0)


@pytest.mark.parametrize("aug", [Augment(crop="pad"), Augment(crop="resized"), Augment(crop="none")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_seeded_runs_are_reproducible(aug, dtype):
    images = _batch(np.random.default_rng(9), 16, 3, 16, dtype)
    first = augment_batch(images, aug, np.random.default_rng(42))
    again = augment_batch(images, aug, np.random.default_rng(42))
    other = augment_batch(images, aug, np.random.default_rng(43))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (4, Augment(crop="pad", padding=1)),
        (8, Augment(crop="pad", padding=1)),
        (32, Augment(crop="pad", padding=4)),
        (63, Augment(crop="pad", padding=7)),
        (64, Augment(crop="resized")),
        (224, Augment(crop="resized")),
    ],
)
def test_default_augment(size, expected):
    assert default_augment(size) == expected
    assert default_augment(size).flip


@pytest.mark.parametrize(
    "kwargs", [{"crop": "rotate"}, {"padding": -1}, {"scale": (0.0, 1.0)}, {"ratio": (2.0, 1.0)}]
)
def test_invalid_augment_is_rejected(kwargs):
    with pytest.raises((ValueError, TypeError)):
        Augment(**kwargs)


def test_batch_must_be_four_dimensional():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augment_batch(np.zeros((3, 8, 8), np.float32), Augment(), np.random.default_rng(0))
