"""Data sources: small real files of every format, built from the digits data, read back through load_dataset;
pixels checked exactly (lossless, same size) or against Pillow's own resize/convert; errors name file and record."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from gir.train.augment import Augment
from gir.train.data import (
    ArrayImages,
    ArrayPart,
    CIFAR10_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SOURCES,
    DataError,
    Dataset,
    Split,
    _digits_split,
    load_dataset,
)

BILINEAR = Image.Resampling.BILINEAR
N_TRAIN, N_VAL = 40, 20


@pytest.fixture(scope="module")
def digits():
    """60 digits as uint8 [n, 8, 8] (0..255) and their labels: the first 40 train, the next 20 val."""
    d = load_digits()
    images = np.round(d.images[:N_TRAIN + N_VAL] * (255 / 16)).astype(np.uint8)
    return images, d.target[:N_TRAIN + N_VAL].astype(np.int32)


def rgb(gray: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, 3, size, size] RGB images from gray digits: nearest upscale, three different channels."""
    big = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.NEAREST)) for g in gray])
    return np.stack([big, 255 - big, big // 2 + 17], axis=1)


def pil_fit(chw: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Pillow's own answer for one uint8 CHW image: convert to L if asked, bilinear resize, replicate gray to 3."""
    im = Image.fromarray(chw[0]) if chw.shape[0] == 1 else Image.fromarray(chw.transpose(1, 2, 0), "RGB")
    if channels == 1 and chw.shape[0] == 3:
        im = im.convert("L")
    if im.size != (size, size):
        im = im.resize((size, size), BILINEAR)
    a = np.asarray(im)
    return a.transpose(2, 0, 1) if a.ndim == 3 else np.repeat(a[None], channels, axis=0)


def pixels(ds: Dataset, split: Split) -> np.ndarray:
    """Every image of a split, as a batch of all its records."""
    return ds.batch(split, np.arange(len(split)))


def check_split(ds: Dataset, split: Split, images: np.ndarray, labels: np.ndarray, size: int, channels: int) -> None:
    got = pixels(ds, split)
    assert got.dtype == np.uint8 and got.shape == (len(labels), channels, size, size)
    assert split.labels.dtype == np.int32 and split.labels.shape == (len(labels),)
    np.testing.assert_array_equal(split.labels, labels)
    want = np.stack([pil_fit(im, size, channels) for im in images])
    np.testing.assert_array_equal(got, want)


def stats(images: np.ndarray):
    x = images.astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---------------------------------------------------------------------------------------------------------------
# writers for each format


def write_idx(path, array: np.ndarray, magic: int, gz: bool = False) -> None:
    data = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist(root, images, labels, gz=False) -> None:
    root.mkdir(exist_ok=True)
    for prefix, sl in (("train", slice(0, N_TRAIN)), ("t10k", slice(N_TRAIN, None))):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images[sl], 2051, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels[sl].astype(np.uint8), 2049, gz)


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    return records.tobytes()


def write_cifar(root, images, labels) -> None:
    root.mkdir(exist_ok=True)
    (root / "data_batch_1.bin").write_bytes(cifar_bytes(images[:25], labels[:25]))
    (root / "data_batch_2.bin").write_bytes(cifar_bytes(images[25:N_TRAIN], labels[25:N_TRAIN]))
    (root / "test_batch.bin").write_bytes(cifar_bytes(images[N_TRAIN:], labels[N_TRAIN:]))


def ref_bin_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    return struct.pack("<I", len(images)) + cifar_bytes(images, labels)


def write_ref_bin(root, train, val) -> None:
    root.mkdir(exist_ok=True)
    (root / "train.bin").write_bytes(ref_bin_bytes(*train))
    (root / "val.bin").write_bytes(ref_bin_bytes(*val))


def write_imagefolder(root, images, labels, val_ext=".jpg") -> list:
    """train/ as PNG, val/ as JPEG (one file .JPEG), files named by index so the order within a class is known."""
    paths = []
    for i, (im, lb) in enumerate(zip(images, labels)):
        split, ext = ("train", ".png") if i < N_TRAIN else ("val", ".JPEG" if i == N_TRAIN else val_ext)
        folder = root / split / f"class_{lb}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i:03d}{ext}")
        options = {} if ext == ".png" else {"quality": 95, "subsampling": 0}  # no chroma subsampling: close pixels
        Image.fromarray(im.transpose(1, 2, 0), "RGB").save(paths[-1], **options)
    return paths


def folder_order(labels: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Indices in imagefolder order: by class folder name, then file name."""
    idx = np.arange(start, stop)
    return idx[np.lexsort((idx, [f"class_{lb}" for lb in labels[start:stop]]))]


# ---------------------------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_fixed_disjoint_stratified():
    d = load_digits()
    tr, va = _digits_split(d.target)
    assert len(tr) + len(va) == len(d.target) and not set(tr) & set(va)
    assert len(va) / len(d.target) == pytest.approx(0.2, abs=0.01)
    for c in range(10):
        assert np.sum(d.target[va] == c) / np.sum(d.target == c) == pytest.approx(0.2, abs=0.01)
    a, b = load_dataset("digits", 8, 1), load_dataset("digits", 8, 1)
    for s in ("train", "val"):
        np.testing.assert_array_equal(pixels(a, getattr(a, s)), pixels(b, getattr(b, s)))
        np.testing.assert_array_equal(getattr(a, s).labels, getattr(b, s).labels)
    scaled = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    check_split(a, a.train, scaled[tr], d.target[tr], 8, 1)
    check_split(a, a.val, scaled[va], d.target[va], 8, 1)
    assert pixels(a, a.train).max() == 255
    assert a.classes == 10 and a.class_names == tuple("0123456789") and a.source == "digits"


def test_digits_resized_replicated_and_normalization_from_train():
    d = load_digits()
    _, va = _digits_split(d.target)
    scaled = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    ds = load_dataset("digits", 20, 3)
    check_split(ds, ds.val, scaled[va], d.target[va], 20, 3)
    train = pixels(ds, ds.train)
    assert (train[:, 0] == train[:, 2]).all()
    mean, std = stats(train)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(ds.std, std, rtol=1e-9)
    x = ds.normalize(train)
    assert x.dtype == np.float32 and x.shape == train.shape
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_normalize_formula():
    img = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 10
    split = Split(ArrayImages((ArrayPart(2, (3, 2, 2), array=img),), "memory"), np.zeros(2, np.int32))
    ds = Dataset("x", split, split, 1, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0), size=2, channels=3)
    want = (img / 255 - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([0.5, 0.25, 2.0])[:, None, None]
    np.testing.assert_allclose(ds.normalize(img), want, rtol=1e-6, atol=1e-6)  # float32 rounding near zero
    np.testing.assert_allclose(ds.normalize(img[0]), want[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="3"):
        ds.normalize(img[:, :1])


# ---------------------------------------------------------------------------------------------------------------
# mnist


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, digits, gz):
    images, labels = digits
    write_mnist(tmp_path / "m", images, labels, gz)
    ds = load_dataset(f"mnist:{tmp_path / 'm'}", 8, 1)
    check_split(ds, ds.train, images[:N_TRAIN, None], labels[:N_TRAIN], 8, 1)
    check_split(ds, ds.val, images[N_TRAIN:, None], labels[N_TRAIN:], 8, 1)
    assert ds.mean == (0.1307,) and ds.std == (0.3081,) and ds.classes == 10
    ds = load_dataset(f"mnist:{tmp_path / 'm'}", 12, 3)
    check_split(ds, ds.train, images[:N_TRAIN, None], labels[:N_TRAIN], 12, 3)
    assert ds.mean == (0.1307,) * 3 and ds.std == (0.3081,) * 3


def test_mnist_errors(tmp_path, digits):
    images, labels = digits
    root = tmp_path / "m"
    write_mnist(root, images, labels)
    path = root / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(struct.pack(">I", 2049) + good[4:])
    with pytest.raises(DataError, match=rf"{path}: bad IDX magic number 2049 \(expected 2051\)"):
        load_dataset(f"mnist:{root}", 8, 1)
    path.write_bytes(good[:16 + 64 * 10 + 5])
    with pytest.raises(DataError, match=rf"{path}: truncated: header says 40 records, the file ends in record 10"):
        load_dataset(f"mnist:{root}", 8, 1)
    write_idx(path, images[:30], 2051)
    with pytest.raises(DataError, match="has 30 images but .*train-labels-idx1-ubyte has 40 labels"):
        load_dataset(f"mnist:{root}", 8, 1)
    path.write_bytes(good)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: no such file \(nor t10k-labels-idx1-ubyte.gz\)"):
        load_dataset(f"mnist:{root}", 8, 1)
    write_idx(root / "t10k-labels-idx1-ubyte", labels[N_TRAIN:].astype(np.uint8), 2049)
    bad = labels.astype(np.uint8).copy()
    bad[37] = 12
    write_idx(root / "train-labels-idx1-ubyte", bad[:N_TRAIN], 2049)
    lpath = root / "train-labels-idx1-ubyte"
    with pytest.raises(DataError, match=rf"label 12 out of range \[0, 10\) at record 37 of {lpath}$"):
        load_dataset(f"mnist:{root}", 8, 1, num_classes=10)
    write_mnist(root / "corrupt", images, labels, gz=True)
    (root / "corrupt" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: corrupt gzip data"):
        load_dataset(f"mnist:{root / 'corrupt'}", 8, 1)
    gz = root / "corrupt" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-12])  # a truncated gzip stream
    (root / "corrupt" / "train-images-idx3-ubyte.gz").unlink()
    write_idx(root / "corrupt" / "train-images-idx3-ubyte", images[:N_TRAIN], 2051)  # the plain file is read too
    with pytest.raises(DataError, match=f"{gz}: corrupt gzip data"):
        load_dataset(f"mnist:{root / 'corrupt'}", 8, 1)


# ---------------------------------------------------------------------------------------------------------------
# cifar10


def test_cifar10(tmp_path, digits):
    gray, labels = digits
    images = rgb(gray, 32)
    write_cifar(tmp_path / "c", images, labels)
    ds = load_dataset(f"cifar10:{tmp_path / 'c'}", 32, 3, num_classes=10)
    check_split(ds, ds.train, images[:N_TRAIN], labels[:N_TRAIN], 32, 3)
    check_split(ds, ds.val, images[N_TRAIN:], labels[N_TRAIN:], 32, 3)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    assert ds.class_names == CIFAR10_CLASSES and ds.classes == 10
    gray_ds = load_dataset(f"cifar10:{tmp_path / 'c'}", 24, 1)  # RGB -> Pillow L, then bilinear resize
    check_split(gray_ds, gray_ds.val, images[N_TRAIN:], labels[N_TRAIN:], 24, 1)
    assert gray_ds.mean == (pytest.approx(np.mean([0.4914, 0.4822, 0.4465])),)


def test_cifar10_errors(tmp_path, digits):
    gray, labels = digits
    root = tmp_path / "c"
    write_cifar(root, rgb(gray, 32), labels)
    test = root / "test_batch.bin"
    good = test.read_bytes()
    test.write_bytes(good[:3073 * 19 + 100])
    with pytest.raises(DataError, match=rf"{test}: length 58487 is not a multiple of 3073-byte records: "
                                        r"record 19 is partial \(100 bytes\)"):
        load_dataset(f"cifar10:{root}", 32, 3)
    test.write_bytes(b"")
    with pytest.raises(DataError, match=f"empty split: {test} has no images"):
        load_dataset(f"cifar10:{root}", 32, 3)
    test.unlink()
    test.mkdir()
    with pytest.raises(DataError, match=f"{test}: is a directory, expected a file"):
        load_dataset(f"cifar10:{root}", 32, 3)
    test.rmdir()
    with pytest.raises(DataError, match=f"{test}: no such file"):
        load_dataset(f"cifar10:{root}", 32, 3)
    for k in (1, 2):
        (root / f"data_batch_{k}.bin").unlink()
    with pytest.raises(DataError, match="no data_batch_1.bin"):
        load_dataset(f"cifar10:{root}", 32, 3)


# ---------------------------------------------------------------------------------------------------------------
# ref-bin


def test_ref_bin(tmp_path, digits):
    gray, labels = digits
    train, val = rgb(gray[:N_TRAIN], 16), rgb(gray[N_TRAIN:], 12)  # sizes differ per file, as in the reference
    write_ref_bin(tmp_path / "r", (train, labels[:N_TRAIN]), (val, labels[N_TRAIN:]))
    ds = load_dataset(f"ref-bin:{tmp_path / 'r'}", 16, 3)
    check_split(ds, ds.train, train, labels[:N_TRAIN], 16, 3)  # exact
    check_split(ds, ds.val, val, labels[N_TRAIN:], 16, 3)  # upscaled 12 -> 16 as Pillow does it
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    assert ds.classes == labels.max() + 1 and ds.class_names == ()
    small = load_dataset(f"ref-bin:{tmp_path / 'r'}", 10, 1)
    check_split(small, small.train, train, labels[:N_TRAIN], 10, 1)
    assert small.mean == (pytest.approx(np.mean(IMAGENET_MEAN)),)
    assert small.std == (pytest.approx(np.mean(IMAGENET_STD)),)


def test_ref_bin_errors(tmp_path, digits):
    gray, labels = digits
    root = tmp_path / "r"
    images = rgb(gray, 16)
    write_ref_bin(root, (images[:N_TRAIN], labels[:N_TRAIN]), (images[N_TRAIN:], labels[N_TRAIN:]))
    path = root / "train.bin"
    good = path.read_bytes()
    path.write_bytes(good[:4 + 769 * 37 + 300])
    with pytest.raises(DataError, match=rf"{path}: file length \d+ does not match 40 records of 1 label byte \+ "
                                        r"3xSxS pixels .*S=16 .*truncated in record 37 of 40"):
        load_dataset(f"ref-bin:{root}", 16, 3)
    path.write_bytes(struct.pack("<I", 40) + bytes(40 * 11))  # 10 pixel bytes per record: not 3xSxS
    with pytest.raises(DataError, match="does not match 40 records of 1 label byte"):
        load_dataset(f"ref-bin:{root}", 16, 3)
    path.write_bytes(b"\x01\x00")
    with pytest.raises(DataError, match=f"{path}: file is 2 bytes, too short for the u32 record count"):
        load_dataset(f"ref-bin:{root}", 16, 3)
    path.write_bytes(struct.pack("<I", 0))
    with pytest.raises(DataError, match=f"empty split: {path} has no images"):
        load_dataset(f"ref-bin:{root}", 16, 3)
    bad = labels.copy()
    bad[37] = 12
    path.write_bytes(ref_bin_bytes(images[:N_TRAIN], bad[:N_TRAIN]))
    with pytest.raises(DataError, match=rf"^label 12 out of range \[0, 10\) at record 37 of {path}$"):
        load_dataset(f"ref-bin:{root}", 16, 3, num_classes=10)
    assert load_dataset(f"ref-bin:{root}", 16, 3).classes == 13  # without a bound the count follows the labels
    (root / "val.bin").unlink()
    with pytest.raises(DataError, match=f"{root / 'val.bin'}: no such file"):
        load_dataset(f"ref-bin:{root}", 16, 3)


# ---------------------------------------------------------------------------------------------------------------
# imagefolder


def eval_crop(chw: np.ndarray, size: int, channels: int) -> np.ndarray:
    """torchvision's evaluation transform done the long way with Pillow: resize the shorter side to
    floor(S / 0.875), then cut the center S x S."""
    im = Image.fromarray(chw.transpose(1, 2, 0), "RGB").convert("RGB" if channels == 3 else "L")
    w, h = im.size
    short = int(size / 0.875)
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    left, top = int(round((rw - size) / 2)), int(round((rh - size) / 2))
    a = np.asarray(im.resize((rw, rh), BILINEAR).crop((left, top, left + size, top + size)))
    return a.transpose(2, 0, 1) if a.ndim == 3 else np.repeat(a[None], channels, axis=0)


def test_imagefolder_png_and_jpeg(tmp_path, digits):
    gray, labels = digits
    images = rgb(gray, 16)
    write_imagefolder(tmp_path / "f", images, labels)
    ds = load_dataset(f"imagefolder:{tmp_path / 'f'}", 16, 3, num_classes=10)
    assert ds.class_names == tuple(f"class_{c}" for c in range(10)) and ds.classes == 10
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    order = folder_order(labels, 0, N_TRAIN)
    np.testing.assert_array_equal(ds.train.labels, labels[order])
    for size, channels in ((16, 3), (11, 1), (24, 3)):
        sized = load_dataset(f"imagefolder:{tmp_path / 'f'}", size, channels)
        got = pixels(sized, sized.train).astype(int)  # PNG: lossless, so only the resampling differs
        want = np.stack([eval_crop(im, size, channels) for im in images[order]]).astype(int)
        assert got.shape == want.shape == (N_TRAIN, channels, size, size)
        assert np.abs(got - want).mean() < 2.5, (size, np.abs(got - want).mean())
    vorder = folder_order(labels, N_TRAIN, N_TRAIN + N_VAL)
    np.testing.assert_array_equal(ds.val.labels, labels[vorder])
    val = pixels(ds, ds.val)
    err = np.abs(val.astype(int) - np.stack([eval_crop(im, 16, 3) for im in images[vorder]])).mean()
    assert val.shape == (N_VAL, 3, 16, 16) and err < 8, err  # JPEG: approximately
    assert load_dataset(f"imagefolder:{tmp_path / 'f'}", 11, 1).mean == (pytest.approx(np.mean(IMAGENET_MEAN)),)


def test_imagefolder_reads_names_only_until_a_batch_needs_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    img = Image.fromarray(np.full((4, 4), 200, np.uint8))
    for split, n in (("train", 1000), ("val", 1)):
        folder = tmp_path / "many" / split / "a"
        folder.mkdir(parents=True)
        for i in range(n):
            img.save(folder / f"{i}.png")
    (tmp_path / "many" / "train" / "a" / "7.png").write_bytes(b"broken")  # found only when a batch reads it
    ds = load_dataset("imagefolder:~/many", 4, 3)
    assert ds.classes == 1 and ds.val.labels.tolist() == [0] and len(ds.train) == 1000
    batch = ds.batch(ds.train, np.array([0, 999, 5]))
    assert batch.shape == (3, 3, 4, 4) and (batch == 200).all()
    with pytest.raises(DataError, match=f"^{tmp_path}/many/train/a/7.png: cannot read image"):
        ds.batch(ds.train, np.arange(1000))


def test_imagefolder_errors(tmp_path, digits):
    gray, labels = digits
    root = tmp_path / "f"
    paths = write_imagefolder(root, rgb(gray, 16), labels)
    spec = f"imagefolder:{root}"
    paths[3].write_bytes(b"this is not a png")
    ds = load_dataset(spec, 16, 3)
    at = int(np.flatnonzero(folder_order(labels, 0, N_TRAIN) == 3)[0])
    with pytest.raises(DataError, match=f"{paths[3]}: cannot read image"):
        ds.batch(ds.train, np.array([at]), Augment(crop="resized"), np.random.default_rng(0))
    with pytest.raises(DataError, match=f"{paths[3]}: cannot read image"):
        ds.batch(ds.train, np.array([at]))
    jpeg = paths[N_TRAIN + 1]
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # a truncated JPEG
    at = int(np.flatnonzero(folder_order(labels, N_TRAIN, N_TRAIN + N_VAL) == N_TRAIN + 1)[0])
    with pytest.raises(DataError, match=f"{jpeg}: cannot read image"):
        ds.batch(ds.val, np.array([at]))
    paths[3].unlink()
    jpeg.unlink()
    with pytest.raises(DataError, match=rf"^label 5 out of range \[0, 5\) at {root}/train/class_5/\d+.png \(class 'class_5'\)$"):
        load_dataset(spec, 16, 3, num_classes=5)
    (root / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match=f"{root / 'val'}: class folder\\(s\\) zebra not in {root / 'train'}"):
        load_dataset(spec, 16, 3)
    (root / "val" / "zebra").rmdir()
    for p in paths[N_TRAIN:]:
        p.unlink(missing_ok=True)
    with pytest.raises(DataError, match=f"empty split: {root / 'val'}"):
        load_dataset(spec, 16, 3)
    for p in (root / "val").iterdir():
        p.rmdir()
    (root / "val").rmdir()
    with pytest.raises(DataError, match=f"{root / 'val'}: no such directory"):
        load_dataset(spec, 16, 3)


# ---------------------------------------------------------------------------------------------------------------
# npz


def test_npz(tmp_path, digits):
    gray, labels = digits
    images = rgb(gray, 16)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images[:N_TRAIN].transpose(0, 2, 3, 1), y_train=labels[:N_TRAIN].astype(np.int64),
             x_val=images[N_TRAIN:].astype(np.float32) / 255, y_val=labels[N_TRAIN:],
             class_names=np.array([f"d{c}" for c in range(10)]))
    ds = load_dataset(f"npz:{path}", 16, 3, num_classes=10)
    check_split(ds, ds.train, images[:N_TRAIN], labels[:N_TRAIN], 16, 3)  # NHWC uint8
    check_split(ds, ds.val, images[N_TRAIN:], labels[N_TRAIN:], 16, 3)  # NCHW float in [0, 1]
    assert ds.class_names == tuple(f"d{c}" for c in range(10)) and ds.classes == 10
    mean, std = stats(pixels(ds, ds.train))
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(ds.std, std, rtol=1e-9)
    assert len(set(ds.mean)) == 3
    gray_path = tmp_path / "g.npz"
    np.savez_compressed(gray_path, x_train=gray[:N_TRAIN], y_train=labels[:N_TRAIN], x_val=gray[N_TRAIN:, None],
                        y_val=labels[N_TRAIN:])
    g = load_dataset(f"npz:{gray_path}", 8, 3)  # NHW and N1HW gray, replicated to 3 channels
    check_split(g, g.train, gray[:N_TRAIN, None], labels[:N_TRAIN], 8, 3)
    assert g.classes == labels.max() + 1 and g.class_names == ()


def test_npz_errors(tmp_path, digits):
    gray, labels = digits
    path = tmp_path / "d.npz"
    np.savez(path, x_train=gray[:N_TRAIN], y_train=labels[:N_TRAIN], x_val=gray[N_TRAIN:])
    with pytest.raises(DataError, match=rf"{path}: missing array 'y_val' \(has: x_train, x_val, y_train\)"):
        load_dataset(f"npz:{path}", 8, 1)
    bad = labels.copy()
    bad[37] = -1
    np.savez(path, x_train=gray[:N_TRAIN], y_train=bad[:N_TRAIN], x_val=gray[N_TRAIN:], y_val=labels[N_TRAIN:])
    with pytest.raises(DataError, match=rf"^label -1 negative at record 37 of {path} \(y_train\)"):
        load_dataset(f"npz:{path}", 8, 1)
    np.savez(path, x_train=gray[:N_TRAIN], y_train=labels[:N_TRAIN], x_val=gray[:0], y_val=labels[:0])
    with pytest.raises(DataError, match=rf"empty split: {path} \(x_val\)"):
        load_dataset(f"npz:{path}", 8, 1)
    np.savez(path, x_train=gray[:N_TRAIN] * 2.0, y_train=labels[:N_TRAIN], x_val=gray[N_TRAIN:],
             y_val=labels[N_TRAIN:])
    with pytest.raises(DataError, match=r"x_train is float but not within \[0, 1\]"):
        load_dataset(f"npz:{path}", 8, 1)
    path.write_bytes(b"PK\x03\x04 corrupt zip")
    with pytest.raises(DataError, match=f"{path}: not a readable .npz file"):
        load_dataset(f"npz:{path}", 8, 1)
    np.save(tmp_path / "a.npy", gray)
    with pytest.raises(DataError, match="a.npy: not an .npz archive"):
        load_dataset(f"npz:{tmp_path / 'a.npy'}", 8, 1)
    with pytest.raises(DataError, match=f"{tmp_path / 'none.npz'}: no such file"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}", 8, 1)


# ---------------------------------------------------------------------------------------------------------------
# specs and missing paths


@pytest.mark.parametrize("kind", [k for k in SOURCES if k not in ("digits", "npz")])
def test_missing_directory(tmp_path, kind):
    with pytest.raises(DataError, match=f"^{tmp_path / 'nope'}: no such directory$"):
        load_dataset(f"{kind}:{tmp_path / 'nope'}", 8, 3)


def test_bad_specs(tmp_path):
    with pytest.raises(DataError, match="unknown data source 'tfrecord:x'; expected one of: digits, imagefolder:DIR"):
        load_dataset("tfrecord:x", 8, 3)
    with pytest.raises(DataError, match="'mnist' needs a path: mnist:PATH"):
        load_dataset("mnist", 8, 3)
    with pytest.raises(DataError, match="digits source takes no path"):
        load_dataset("digits:x", 8, 3)
    with pytest.raises(DataError, match="cannot convert data to 2 channels"):
        load_dataset("digits", 8, 2)
    with pytest.raises(DataError, match=r"^label 5 out of range \[0, 5\) at record 5 of digits$"):
        load_dataset("digits", 8, 1, num_classes=5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path, digits):
    gray, labels = digits
    write_mnist(tmp_path / "m", gray, labels)
    path = tmp_path / "m" / "train-images-idx3-ubyte"
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=f"{path}: cannot read"):
            load_dataset(f"mnist:{tmp_path / 'm'}", 8, 1)
    finally:
        path.chmod(0o644)


# ---------------------------------------------------------------------------------------------------------------
# every array format is mapped, not read into memory


def test_array_files_are_memory_mapped(tmp_path, digits, monkeypatch):
    """ref-bin, MNIST (plain and .gz, unpacked once into the data cache), CIFAR and npz (stored and deflated): each
    split's images are parts over files, and reading a batch gives the file's pixels."""
    gray, labels = digits
    images = rgb(gray, 32)
    monkeypatch.setenv("GIR_DATA_CACHE_DIR", str(tmp_path / "cache"))
    write_ref_bin(tmp_path / "r", (images[:N_TRAIN], labels[:N_TRAIN]), (images[N_TRAIN:], labels[N_TRAIN:]))
    write_mnist(tmp_path / "m", gray, labels, False)
    write_mnist(tmp_path / "mz", gray, labels, True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data_batch_1.bin").write_bytes(cifar_bytes(images[:25], labels[:25]))
    (tmp_path / "c" / "data_batch_2.bin").write_bytes(cifar_bytes(images[25:N_TRAIN], labels[25:N_TRAIN]))
    (tmp_path / "c" / "test_batch.bin").write_bytes(cifar_bytes(images[N_TRAIN:], labels[N_TRAIN:]))
    arrays = {"x_train": images[:N_TRAIN], "y_train": labels[:N_TRAIN], "x_val": images[N_TRAIN:],
              "y_val": labels[N_TRAIN:]}
    np.savez(tmp_path / "s.npz", **arrays)
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    for spec, want in ((f"ref-bin:{tmp_path / 'r'}", images), (f"mnist:{tmp_path / 'm'}", gray[:, None]),
                       (f"mnist:{tmp_path / 'mz'}", gray[:, None]), (f"cifar10:{tmp_path / 'c'}", images),
                       (f"npz:{tmp_path / 's.npz'}", images), (f"npz:{tmp_path / 'z.npz'}", images)):
        c, s = want.shape[1], want.shape[2]
        ds = load_dataset(spec, s, c)
        for split in (ds.train, ds.val):
            assert all(p.array is None and os.path.exists(p.path) for p in split.images.parts), spec
        idx = np.array([N_TRAIN - 1, 0, 30])
        np.testing.assert_array_equal(ds.batch(ds.train, idx), want[idx], err_msg=spec)
    assert len(list((tmp_path / "cache").iterdir())) == 6  # four .gz files and two deflated members, once each
    load_dataset(f"mnist:{tmp_path / 'mz'}", 8, 1)
    assert len(list((tmp_path / "cache").iterdir())) == 6


def test_a_damaged_unpacked_copy_is_unpacked_again(tmp_path, digits, monkeypatch, capsys):
    """The data cache is read back too: a copy whose size is not the archive's record of it is redone."""
    gray, labels = digits
    monkeypatch.setenv("GIR_DATA_CACHE_DIR", str(tmp_path / "cache"))
    write_mnist(tmp_path / "mz", gray, labels, True)
    load_dataset(f"mnist:{tmp_path / 'mz'}", 8, 1)
    copies = sorted((tmp_path / "cache").iterdir(), key=lambda p: p.stat().st_size)
    big = copies[-1]   # the train images
    big.write_bytes(big.read_bytes()[:50])
    capsys.readouterr()
    ds = load_dataset(f"mnist:{tmp_path / 'mz'}", 8, 1)
    err = capsys.readouterr().err
    assert err.startswith(f"gir: warning: data cache file {big} (unpacked {tmp_path}/mz/") and err.count("\n") == 1
    assert "is 50 bytes, not 2,576; unpacking it again" in err
    np.testing.assert_array_equal(pixels(ds, ds.train), gray[:N_TRAIN, None])


def test_normalization_is_measured_at_most_stats_size_wide():
    """Mean and std are measured on images at the net's size up to STATS_SIZE, and at STATS_SIZE above it (a
    larger upscale of the same images only rounds differently): 96 pixels gives the numbers of 64."""
    from gir.train.data import STATS_SIZE

    at, above, below = (load_dataset("digits", s, 1) for s in (STATS_SIZE, 96, 20))
    assert above.mean == at.mean and above.std == at.std
    x = pixels(below, below.train).astype(np.float64) / 255   # below the cap: measured at the size itself
    np.testing.assert_allclose(below.mean, x.mean(axis=(0, 2, 3)), rtol=1e-9)
    assert below.mean != at.mean
