"""Crops of image files from the decoded original, checked against Pillow doing the same thing the long way
(resize the whole image, then cut) and against the box rules of torchvision's RandomResizedCrop."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gir.train.transforms import center_box, center_crop, random_resized_crop

BILINEAR = Image.Resampling.BILINEAR


def coordinate_image(w: int, h: int) -> Image.Image:
    """RGB pixels that say where they are: red grows with x, green with y (both 0..255 across the image)."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).round().astype(np.uint8), "RGB")


def long_way_eval(im: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is floor(S/0.875), then the center S x S: torchvision's Resize + CenterCrop."""
    w, h = im.size
    short = int(size / 0.875)
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    left, top = int(round((rw - size) / 2)), int(round((rh - size) / 2))
    return np.asarray(im.resize((rw, rh), BILINEAR).crop((left, top, left + size, top + size))).transpose(2, 0, 1)


@pytest.mark.parametrize("w,h,size", [(120, 80, 32), (80, 120, 32), (64, 64, 56), (300, 200, 224)])
def test_center_crop_is_resize_then_center_cut(tmp_path, w, h, size):
    path = tmp_path / "a.png"
    coordinate_image(w, h).save(path)
    with Image.open(path) as im:
        got = center_crop(im, size, 3).astype(int)
    want = long_way_eval(Image.open(path), size).astype(int)
    assert got.shape == (3, size, size)
    assert np.abs(got - want).mean() < 1.0 and np.abs(got - want).max() <= 6


def test_center_box_of_imagenet_shapes():
    # 500x375 at 224: shorter side 256, the longer int(256 * 500 / 375) = 341, the center 224 of each
    left, top, right, bottom = center_box(500, 375, 224)
    scale = 375 / 256
    assert (left, top) == pytest.approx((58 * 500 / 341, 16 * scale))
    assert (right - left, bottom - top) == pytest.approx((224 * 500 / 341, 224 * scale))


def test_random_resized_crops_follow_the_box_rules(tmp_path):
    """The crop's corners are read back from the coordinate image: area fraction in [0.08, 1], aspect ratio in
    [3/4, 4/3] (up to the rounding of a few pixels), and the same generator state gives the same crop."""
    w, h, size = 400, 300, 32
    path = tmp_path / "a.png"
    coordinate_image(w, h).save(path)
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(200):
        with Image.open(path) as im:
            out = random_resized_crop(im, size, 3, (0.08, 1.0), (3 / 4, 4 / 3), rng).astype(float)
        x0, x1 = out[0, :, 0].mean() / 255 * (w - 1), out[0, :, -1].mean() / 255 * (w - 1)
        y0, y1 = out[1, 0, :].mean() / 255 * (h - 1), out[1, -1, :].mean() / 255 * (h - 1)
        cw, ch = (x1 - x0) * size / (size - 1), (y1 - y0) * size / (size - 1)  # centers of edge pixels -> width
        areas.append(cw * ch / (w * h))
        ratios.append(cw / ch)
    assert 0.07 < min(areas) < 0.15 and 0.85 < max(areas) < 1.02  # the whole range is drawn, nothing outside it
    assert 0.7 < min(ratios) < 0.8 and 1.25 < max(ratios) < 1.4
    with Image.open(path) as a, Image.open(path) as b:
        first = random_resized_crop(a, size, 3, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(5))
        again = random_resized_crop(b, size, 3, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)


def test_a_whole_image_crop_is_a_plain_resize(tmp_path):
    """scale = ratio = the image's own: the crop is the whole image, resized as Pillow resizes it."""
    path = tmp_path / "a.png"
    coordinate_image(90, 60).save(path)
    with Image.open(path) as im:
        got = random_resized_crop(im, 24, 1, (1.0, 1.0), (1.5, 1.5), np.random.default_rng(0))
    want = np.asarray(Image.open(path).convert("L").resize((24, 24), BILINEAR))
    np.testing.assert_array_equal(got[0], want)


def test_jpeg_decoded_at_reduced_scale_matches_a_full_decode(tmp_path):
    """A 1600x1200 JPEG cropped to 64 pixels is decoded at 1/8 scale; the crop stays within a few levels of the
    crop of the fully decoded image."""
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    smooth = np.asarray(coordinate_image(1600, 1200)).astype(float) + rng.normal(0, 2, (1200, 1600, 3))
    Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(path, quality=95)
    with Image.open(path) as im:
        fast = center_crop(im, 64, 3).astype(int)
    full = Image.open(path)
    full.load()
    want = np.asarray(full.resize((64, 64), BILINEAR, box=center_box(1600, 1200, 64))).transpose(2, 0, 1)
    assert np.abs(fast - want.astype(int)).mean() < 3
    with Image.open(path) as im:
        im.draft("RGB", (1600 * 64 // 1400 + 1, 1200 * 64 // 1050 + 1))
        assert im.size == (200, 150)  # Pillow does decode this file at 1/8 scale
