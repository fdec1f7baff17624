"""Crops of an image file taken from the decoded original, as torchvision's ImageNet recipe takes them: a random-
resized crop for training, the shorter side scaled to S/0.875 and the center SxS for evaluation.

JPEGs are decoded at 1/2, 1/4 or 1/8 scale (Pillow's `draft`) whenever the crop still covers S pixels at that scale,
which is most of the decoding time saved for ImageNet-sized photos.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from gir.train.augment import crop_boxes

EVAL_CROP_FRACTION = 0.875  # evaluation: resize the shorter side to S / 0.875, keep the center S x S


def to_chw(pixels: np.ndarray, channels: int) -> np.ndarray:
    """A Pillow L or RGB image's pixels as uint8 CHW with `channels` channels (L replicated to 3)."""
    a = np.asarray(pixels, np.uint8)
    return a.transpose(2, 0, 1) if a.ndim == 3 else np.broadcast_to(a, (channels, *a.shape))


def random_resized_crop(im: Image.Image, size: int, channels: int, scale: tuple[float, float],
                        ratio: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """uint8 [channels, size, size]: torchvision's RandomResizedCrop box on the original image, resized to SxS."""
    w, h = im.size
    top, left, ch, cw = (int(a[0]) for a in crop_boxes(np.array([h]), np.array([w]), scale, ratio, rng))
    return crop_resize(im, (left, top, left + cw, top + ch), size, channels)


def center_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) in original pixels that torchvision's Resize(S / 0.875) then
    CenterCrop(S) keeps."""
    short = math.floor(size / EVAL_CROP_FRACTION)
    rw, rh = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    top, left = round((rh - size) / 2), round((rw - size) / 2)
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def center_crop(im: Image.Image, size: int, channels: int) -> np.ndarray:
    """uint8 [channels, size, size]: the evaluation crop of the original image."""
    return crop_resize(im, center_box(*im.size, size), size, channels)


def crop_resize(im: Image.Image, box: tuple[float, float, float, float], size: int, channels: int) -> np.ndarray:
    """The `box` of a not yet decoded image, resized to SxS (bilinear, antialiased when shrinking), as uint8 CHW
    with `channels` channels. A JPEG is decoded at the smallest 1/2^k scale at which the box still spans S pixels."""
    mode = "RGB" if channels == 3 else "L"
    w, h = im.size
    left, top, right, bottom = box
    im.draft(mode, (math.ceil(w * size / (right - left)), math.ceil(h * size / (bottom - top))))
    sx, sy = im.size[0] / w, im.size[1] / h
    if im.mode != mode:
        im = im.convert(mode)
    out = im.resize((size, size), Image.Resampling.BILINEAR, box=(left * sx, top * sy, right * sx, bottom * sy))
    return to_chw(np.asarray(out), channels)
