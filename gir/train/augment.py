"""Data augmentation for training batches: random crop (padded or Inception-style resized) and horizontal flip.

Every function takes a batch [B, C, H, W] and a `np.random.Generator`; all randomness comes from that generator, so
the same generator state gives the same output. Labels are never seen, so they cannot change.
"""
from __future__ import annotations

import math

import attrs
import numpy as np
from attrs import validators as v

CROPS = ("pad", "resized", "none")
_ATTEMPTS = 10  # random-resized-crop tries per image before the center-crop fallback, as torchvision


def _non_negative(inst, attr, value) -> None:
    if not value >= 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value}")


def _interval(inst, attr, value) -> None:
    lo, hi = value
    if not 0 < lo <= hi:
        raise ValueError(f"{attr.name} must satisfy 0 < low <= high, got {value}")


@attrs.frozen
class Augment:
    """What to do to each training image: crop kind and flip."""

    crop: str = attrs.field(default="pad", validator=v.in_(CROPS))
    padding: int = attrs.field(default=4, validator=[v.instance_of(int), _non_negative])  # "pad" only
    flip: bool = True  # horizontal flip with probability 1/2
    scale: tuple[float, float] = attrs.field(default=(0.08, 1.0), converter=tuple, validator=_interval)  # "resized"
    ratio: tuple[float, float] = attrs.field(default=(3 / 4, 4 / 3), converter=tuple, validator=_interval)  # "resized"


@attrs.frozen
class Part:
    """Rows [start, stop) of a batch of `total`: one process's share of a global batch in a multi-process run."""

    start: int
    stop: int
    total: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def default_augment(image_size: int) -> Augment:
    """CIFAR-style padded crops (padding size/8) below 64 pixels, where a resized crop would throw away too much of
    a tiny image; Inception-style random-resized crops for ImageNet-sized inputs. Flip on in both."""
    if image_size < 64:
        return Augment(crop="pad", padding=max(1, image_size // 8), flip=True)
    return Augment(crop="resized", flip=True)


def augment_batch(images: np.ndarray, aug: Augment, rng: np.random.Generator, part: Part | None = None) -> np.ndarray:
    """A new batch with the same shape and dtype: each image cropped as `aug.crop` says, then mirrored with
    probability 1/2 if `aug.flip`. The input is never modified. With `part`, `images` are those rows of a larger
    batch and get exactly what they would get in it (the draws are made for the whole batch)."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {images.shape}")
    part = part or Part(0, len(images), len(images))
    if aug.crop == "pad":
        out = _pad_crop(images, aug.padding, rng, part)
    elif aug.crop == "resized":
        out = _resized_crop(images, aug.scale, aug.ratio, rng, part)
    else:
        out = images.copy()
    if aug.flip:
        flipped = (rng.random(part.total) < 0.5)[part.rows]
        out[flipped] = out[flipped][..., ::-1]
    return out


def _pad_crop(images: np.ndarray, padding: int, rng: np.random.Generator, part: Part) -> np.ndarray:
    """Zero-pad each side by `padding` (zero is black for uint8, the mean for normalized floats) and take an HxW
    window at per-image offsets drawn uniformly from [0, 2*padding]."""
    b, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # [B, C, 2p+1, 2p+1, H, W]
    top, left = rng.integers(0, 2 * padding + 1, size=(2, part.total))[:, part.rows]
    return windows[np.arange(b), :, top, left]  # advanced indices split by ':' -> [B, C, H, W], a copy


def _resized_crop(
    images: np.ndarray, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator, part: Part
) -> np.ndarray:
    """Inception-style crop (torchvision's RandomResizedCrop box choice), resized back to HxW with bilinear
    interpolation (half-pixel centers, edge-clamped, no antialiasing: the crop is never larger than the output)."""
    b, _, h, w = images.shape
    top, left, ch, cw = (a[part.rows] for a in crop_boxes(np.full(part.total, h), np.full(part.total, w), scale,
                                                           ratio, rng))
    y0, y1, wy = _bilinear_taps(top, ch, h)
    x0, x1, wx = _bilinear_taps(left, cw, w)
    wy, wx = wy[:, :, None, None], wx[:, None, :, None]
    bi = np.arange(b)[:, None, None]

    def gather(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return images[bi, :, ys[:, :, None], xs[:, None, :]].astype(np.float64)  # [B, H, W, C]

    upper = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    lower = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    out = (upper * (1 - wy) + lower * wy).transpose(0, 3, 1, 2)
    if np.issubdtype(images.dtype, np.integer):
        out = np.rint(out)
    return np.ascontiguousarray(out.astype(images.dtype))


def crop_boxes(h: np.ndarray, w: np.ndarray, scale: tuple[float, float], ratio: tuple[float, float],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision's RandomResizedCrop box for each of b images of heights h and widths w ([b] int arrays): up to
    10 tries of an area fraction in `scale` and a log-uniform aspect ratio in `ratio`, else the whole image trimmed
    to the nearest allowed ratio, centered. Returns (top, left, height, width), each [b]."""
    b = len(h)
    area = rng.uniform(scale[0], scale[1], size=(b, _ATTEMPTS)) * (h * w)[:, None]
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(b, _ATTEMPTS)))
    cw = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    ch = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (cw > 0) & (cw <= w[:, None]) & (ch > 0) & (ch <= h[:, None])
    first = fits.argmax(axis=1)
    rows = np.arange(b)
    found = fits.any(axis=1)
    fallback_h, fallback_w = _center_box(h, w, ratio)
    ch = np.where(found, ch[rows, first], fallback_h)
    cw = np.where(found, cw[rows, first], fallback_w)
    top = np.where(found, rng.integers(0, h - ch + 1), (h - ch) // 2)
    left = np.where(found, rng.integers(0, w - cw + 1), (w - cw) // 2)
    return top, left, ch, cw


def _center_box(h: np.ndarray, w: np.ndarray, ratio: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's fallback box (heights, widths): the whole image, trimmed to the nearest allowed aspect ratio."""
    too_narrow, too_wide = w / h < ratio[0], w / h > ratio[1]
    height = np.where(too_narrow, np.round(w / ratio[0]), h).astype(np.int64)
    width = np.where(too_wide, np.round(h * ratio[1]), w).astype(np.int64)
    return height, width


def _bilinear_taps(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For crops [start, start+length) per image stretched to `size` samples: the two source indices and the weight
    of the second, each [B, size]. Sample o reads source start + (o + 1/2) * length / size - 1/2, clamped to the
    crop."""
    start, length = start[:, None], length[:, None]
    src = start + (np.arange(size) + 0.5) * length / size - 0.5
    src = np.clip(src, start, start + length - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, start + length - 1)
    return i0, i1, src - i0
