"""Data sources for `gir train`: a spec ("digits" or "KIND:PATH") becomes uint8 NCHW train/val splits at the net's
image size and channel count, with per-source normalization constants.

Record indices in error messages count from 0.
"""
from __future__ import annotations

import gzip
import math
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
from PIL import Image

SOURCES = ("digits", "imagefolder", "ref-bin", "mnist", "cifar10", "npz")
_USAGE = "digits, imagefolder:DIR, ref-bin:DIR, mnist:DIR, cifar10:DIR, npz:FILE"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR_RECORD = 1 + 3 * 32 * 32
_PROGRESS_MIN = 1000  # show a progress bar when loading more image files than this


class DataError(Exception):
    """A missing, empty, truncated or corrupt dataset, naming the file (and record)."""


@attrs.frozen(eq=False)
class Split:
    """One split: uint8 images [n, C, S, S] and int32 labels [n]."""

    images: np.ndarray
    labels: np.ndarray


@attrs.frozen(eq=False)
class Dataset:
    """Train and val splits of one source, its class count and per-channel normalization ([0,1] pixel units)."""

    source: str
    train: Split
    val: Split
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    mirror_safe: bool = True   # a horizontal flip keeps the label (not for digits: a flipped 2 is no 2)

    def normalize(self, images_u8: np.ndarray) -> np.ndarray:
        """float32 (x/255 - mean)/std per channel; channels are axis -3 ([n, C, S, S] or [C, S, S])."""
        if images_u8.ndim < 3 or images_u8.shape[-3] != len(self.mean):
            raise ValueError(f"normalize expects [..., {len(self.mean)}, H, W] images, got shape {images_u8.shape}")
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return ((images_u8.astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32)


def load_dataset(spec: str, image_size: int, channels: int, num_classes: int | None = None) -> Dataset:
    """Load `spec` ("digits" or "KIND:PATH") resized to image_size x image_size with `channels` (1 or 3) channels.

    With num_classes, every label must lie in [0, num_classes). `classes` is the source's own class count."""
    kind, sep, path = spec.partition(":")
    if kind not in SOURCES:
        raise DataError(f"unknown data source {spec!r}; expected one of: {_USAGE}")
    if kind == "digits" and sep:
        raise DataError(f"the digits source takes no path, got {spec!r}")
    if kind != "digits" and not path:
        raise DataError(f"data source {kind!r} needs a path: {kind}:PATH")
    if channels not in (1, 3):
        raise DataError(f"cannot convert data to {channels} channels (only 1 or 3)")
    if not (isinstance(image_size, int) and image_size > 0):
        raise DataError(f"image size must be a positive integer, got {image_size!r}")
    root = Path(path).expanduser()
    try:
        if kind == "digits":
            return _digits(spec, image_size, channels, num_classes)
        return _LOADERS[kind](spec, root, image_size, channels, num_classes)
    except OSError as e:  # anything the readers did not name themselves
        raise DataError(f"{e.filename or root}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _check_labels(labels: np.ndarray, bound: int | None, at: Callable[[int], str]) -> np.ndarray:
    """int32 labels after checking each is in [0, bound) (only >= 0 without a bound); `at(i)` names record i."""
    labels = np.asarray(labels)
    bad = labels < 0 if bound is None else (labels < 0) | (labels >= bound)
    if bad.any():
        i = int(np.argmax(bad))
        what = "negative" if bound is None else f"out of range [0, {bound})"
        raise DataError(f"label {int(labels[i])} {what} at {at(i)}")
    return labels.astype(np.int32)


def _nonempty(n: int, what: str) -> None:
    if n == 0:
        raise DataError(f"empty split: {what} has no images")


def _fit(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 [n, C, H, W] (C in 1, 3) -> uint8 [n, channels, size, size]: Pillow bilinear resize, gray<->RGB."""
    n, c, h, w = images.shape
    if c == channels and h == w == size:
        return np.array(images, dtype=np.uint8)  # a copy: detaches memory maps and views
    if c == 1 and channels == 3 and h == w == size:
        return np.repeat(np.asarray(images, np.uint8), 3, axis=1)
    out = np.empty((n, channels, size, size), np.uint8)
    for i in range(n):
        out[i] = _to_chw(_pil(images[i], channels, size), channels)
    return out


def _pil(chw: np.ndarray, channels: int, size: int) -> Image.Image:
    """One uint8 CHW image as a Pillow image in mode L (channels 1) or its own mode, resized to size x size."""
    if chw.shape[0] == 1:
        im = Image.fromarray(np.ascontiguousarray(chw[0]), "L")
    else:
        im = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")
        if channels == 1:
            im = im.convert("L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return im


def _to_chw(im: Image.Image, channels: int) -> np.ndarray:
    """A Pillow L or RGB image as uint8 CHW with `channels` channels (L replicated to 3)."""
    a = np.asarray(im, np.uint8)
    return a.transpose(2, 0, 1) if a.ndim == 3 else np.broadcast_to(a, (channels, *a.shape))


def _stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 [n, C, H, W] images in [0,1] units (float64 sums over ~32 MB chunks)."""
    c = images.shape[1]
    total, sq = np.zeros(c), np.zeros(c)
    step = max(1, 2**22 // max(1, images[0].size))
    for k in range(0, len(images), step):
        chunk = images[k:k + step].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        sq += (chunk * chunk).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    std[std == 0] = 1.0  # constant images: leave the scale alone
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def _gray(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """RGB normalization constants for `channels` channels: their mean for one channel."""
    return values if channels == len(values) else (float(np.mean(values)),) * channels


def _read_bytes(path: Path) -> bytes:
    """A file's bytes (gunzipped if it ends in .gz); any failure is a DataError naming the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _need_dir(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    return path


# ---------------------------------------------------------------------------------------------------------------
# digits


def _digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits split: within each class (in file order) every 5th image is val, the rest train."""
    val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val[idx[4::5]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def _digits(spec: str, size: int, channels: int, num_classes: int | None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (pixels 0..16 scaled to 0..255) with a fixed, stratified 80/20 split
    (no RNG: identical on every machine); mean/std are computed from the train split after resizing."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = _check_labels(d.target, num_classes, lambda i: f"record {i} of digits")
    tr, va = _digits_split(labels)
    train = Split(_fit(images[tr], size, channels), labels[tr])
    val = Split(_fit(images[va], size, channels), labels[va])
    mean, std = _stats(train.images)
    return Dataset(spec, train, val, 10, mean, std, DIGIT_CLASSES, mirror_safe=False)


# ---------------------------------------------------------------------------------------------------------------
# imagefolder


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in _need_dir(split_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        raise DataError(f"{split_dir}: permission denied") from None


def _image_files(class_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in class_dir.iterdir()
                      if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
    except PermissionError:
        raise DataError(f"{class_dir}: permission denied") from None


def _imagefolder(spec: str, root: Path, size: int, channels: int, num_classes: int | None) -> Dataset:
    """DIR/train/<class>/*.{jpg,jpeg,png} and DIR/val/<class>/...; classes are train/'s sorted folder names."""
    _need_dir(root)
    names = _class_dirs(root / "train")
    if not names:
        raise DataError(f"{root / 'train'}: no class folders")
    extra = sorted(set(_class_dirs(root / "val")) - set(names))
    if extra:
        raise DataError(f"{root / 'val'}: class folder(s) {', '.join(extra)} not in {root / 'train'}")
    splits: dict[str, tuple[list[Path], np.ndarray]] = {}
    for split in ("train", "val"):
        files, labels = [], []
        for k, name in enumerate(names):
            if (root / split / name).is_dir():
                found = _image_files(root / split / name)
                files += found
                labels += [k] * len(found)
        _nonempty(len(files), f"{root / split} ({', '.join(s[1:] for s in IMAGE_SUFFIXES)} files in class folders)")
        labels_arr = _check_labels(np.asarray(labels, np.int64), num_classes,
                                   lambda i, f=files: f"{f[i]} (class {f[i].parent.name!r})")
        splits[split] = (files, labels_arr)
    total = sum(len(f) for f, _ in splits.values())
    bar = None
    if total > _PROGRESS_MIN:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=f"loading {root}", unit="img", file=sys.stderr, leave=False)
    mode = "RGB" if channels == 3 else "L"
    out = {}
    try:
        for split, (files, labels) in splits.items():
            images = np.empty((len(files), channels, size, size), np.uint8)
            for i, f in enumerate(files):
                images[i] = _to_chw(_open_image(f, mode, size), channels)
                if bar is not None:
                    bar.update()
            out[split] = Split(images, labels)
    finally:
        if bar is not None:
            bar.close()
    return Dataset(spec, out["train"], out["val"], len(names), _gray(IMAGENET_MEAN, channels),
                   _gray(IMAGENET_STD, channels), tuple(names))


def _open_image(path: Path, mode: str, size: int) -> Image.Image:
    """One image file converted to `mode` and resized directly to size x size."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            return im if im.size == (size, size) else im.resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# ref-bin


def _ref_bin_file(path: Path, size: int, channels: int, num_classes: int | None) -> Split:
    """u32 little-endian count, then count records of 1 label byte + uint8 3xSxS pixels (S from the length)."""
    try:
        length = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if length < 4:
        raise DataError(f"{path}: file is {length} bytes, too short for the u32 record count")
    count = int(np.fromfile(path, "<u4", count=1)[0])
    _nonempty(count, str(path))
    body = length - 4
    pix, rest = divmod(body, count)
    s = math.isqrt((pix - 1) // 3) if pix > 1 else 0
    if rest or s < 1 or 3 * s * s + 1 != pix:
        # the smallest square size for which the file would be a prefix of `count` records
        s_min = max(1, math.isqrt(max(0, -(-body // count) - 1) // 3))
        while count * (1 + 3 * s_min * s_min) < body:
            s_min += 1
        record = 1 + 3 * s_min * s_min
        raise DataError(f"{path}: file length {length} does not match {count} records of 1 label byte + 3xSxS pixels "
                        f"for any S; read as S={s_min} ({record}-byte records) it is truncated in record "
                        f"{body // record} of {count}")
    records = np.memmap(path, np.uint8, "r", offset=4, shape=(count, pix))
    labels = _check_labels(records[:, 0], num_classes, lambda i: f"record {i} of {path}")
    images = records[:, 1:].reshape(count, 3, s, s)
    return Split(_fit(images, size, channels), labels)


def _ref_bin(spec: str, root: Path, size: int, channels: int, num_classes: int | None) -> Dataset:
    """The reference system's preprocessed binary: DIR/train.bin and DIR/val.bin; ImageNet mean/std."""
    _need_dir(root)
    train = _ref_bin_file(root / "train.bin", size, channels, num_classes)
    val = _ref_bin_file(root / "val.bin", size, channels, num_classes)
    classes = int(max(train.labels.max(), val.labels.max())) + 1
    return Dataset(spec, train, val, classes, _gray(IMAGENET_MEAN, channels), _gray(IMAGENET_STD, channels))


# ---------------------------------------------------------------------------------------------------------------
# mnist


def _idx_path(root: Path, name: str) -> Path:
    for p in (root / name, root / f"{name}.gz"):
        if p.exists():
            return p
    raise DataError(f"{root / name}: no such file (nor {name}.gz)")


def _idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `dims` dimensions, checking its magic number and length."""
    data = _read_bytes(path)
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{path}: file is {len(data)} bytes, too short for an IDX header")
    found, *shape = (int(x) for x in np.frombuffer(data, ">u4", count=1 + dims))
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found} (expected {magic})")
    record = int(np.prod(shape[1:], dtype=np.int64)) if dims > 1 else 1
    need = header + shape[0] * record
    if len(data) < need:
        raise DataError(f"{path}: truncated: header says {shape[0]} records, the file ends in record "
                        f"{(len(data) - header) // record}")
    if len(data) > need:
        raise DataError(f"{path}: file length {len(data)} exceeds the {need} bytes of {shape[0]} records")
    return np.frombuffer(data, np.uint8, count=shape[0] * record, offset=header).reshape(shape)


def _mnist_split(root: Path, prefix: str, size: int, channels: int, num_classes: int | None) -> Split:
    ipath, lpath = _idx_path(root, f"{prefix}-images-idx3-ubyte"), _idx_path(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = _idx(ipath, 2051, 3), _idx(lpath, 2049, 1)
    if len(images) != len(labels):
        raise DataError(f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels")
    _nonempty(len(images), str(ipath))
    labels = _check_labels(labels, num_classes, lambda i: f"record {i} of {lpath}")
    return Split(_fit(images[:, None], size, channels), labels)


def _mnist(spec: str, root: Path, size: int, channels: int, num_classes: int | None) -> Dataset:
    """MNIST IDX files (optionally .gz): train-* is train, t10k-* is val; mean 0.1307, std 0.3081."""
    _need_dir(root)
    train = _mnist_split(root, "train", size, channels, num_classes)
    val = _mnist_split(root, "t10k", size, channels, num_classes)
    return Dataset(spec, train, val, 10, MNIST_MEAN * channels, MNIST_STD * channels, DIGIT_CLASSES,
                   mirror_safe=False)


# ---------------------------------------------------------------------------------------------------------------
# cifar10


def _cifar_file(path: Path, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(_read_bytes(path), np.uint8)
    n, rest = divmod(len(data), CIFAR_RECORD)
    if rest:
        raise DataError(f"{path}: length {len(data)} is not a multiple of {CIFAR_RECORD}-byte records: "
                        f"record {n} is partial ({rest} bytes)")
    _nonempty(n, str(path))
    records = data.reshape(n, CIFAR_RECORD)
    labels = _check_labels(records[:, 0], num_classes if num_classes is not None else 10,
                           lambda i: f"record {i} of {path}")
    return records[:, 1:].reshape(n, 3, 32, 32), labels


def _cifar10(spec: str, root: Path, size: int, channels: int, num_classes: int | None) -> Dataset:
    """CIFAR-10 binary: data_batch_{1..5}.bin (those present) train, test_batch.bin val (also under
    DIR/cifar-10-batches-bin, the tarball's folder); CIFAR-10 mean/std."""
    _need_dir(root)
    if not any(root.glob("data_batch_*.bin")) and (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    batches = [root / f"data_batch_{k}.bin" for k in range(1, 6) if (root / f"data_batch_{k}.bin").exists()]
    if not batches:
        raise DataError(f"{root}: no data_batch_1.bin .. data_batch_5.bin")
    parts = [_cifar_file(p, num_classes) for p in batches]
    train_images = np.concatenate([im for im, _ in parts])
    train = Split(_fit(train_images, size, channels), np.concatenate([lb for _, lb in parts]))
    val_images, val_labels = _cifar_file(root / "test_batch.bin", num_classes)
    val = Split(_fit(val_images, size, channels), val_labels)
    return Dataset(spec, train, val, 10, _gray(CIFAR10_MEAN, channels), _gray(CIFAR10_STD, channels),
                   CIFAR10_CLASSES)


# ---------------------------------------------------------------------------------------------------------------
# npz


def _npz_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """uint8 NCHW from uint8 or [0,1]-float images in NCHW, NHWC (C in 1, 3) or NHW."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise DataError(f"{path}: {key} has shape {x.shape}; expected NCHW or NHWC with 1 or 3 channels")
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{path}: {key} has shape {x.shape}; expected NCHW, NHWC or NHW images")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: {key} must be uint8 or float in [0, 1], got {x.dtype}")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise DataError(f"{path}: {key} is float but not within [0, 1] (min {x.min()}, max {x.max()})")
    return np.round(x * 255.0).astype(np.uint8)


def _npz(spec: str, root: Path, size: int, channels: int, num_classes: int | None) -> Dataset:
    """x_train, y_train, x_val, y_val (and optional class_names) from one .npz; mean/std from train."""
    if root.is_dir():
        raise DataError(f"{root}: is a directory, expected an .npz file")
    if not root.exists():
        raise DataError(f"{root}: no such file")
    try:
        z = np.load(root, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{root}: not an .npz archive (a single .npy array?)")
        with z:
            keys = sorted(z.files)
            arrays = {}
            for key in ("x_train", "y_train", "x_val", "y_val"):
                if key not in z.files:
                    raise DataError(f"{root}: missing array {key!r} (has: {', '.join(keys) or 'none'})")
                arrays[key] = z[key]
            names = tuple(str(s) for s in z["class_names"].reshape(-1)) if "class_names" in z.files else ()
    except DataError:
        raise
    except (ValueError, zipfile.BadZipFile) as e:
        # np.load reads a non-zip file as a pickle and says so; it is simply not an .npz archive
        why = "not a zip archive" if "pickle" in str(e) or isinstance(e, zipfile.BadZipFile) else str(e)
        raise DataError(f"{root}: not a readable .npz file ({why})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{root}: not a readable .npz file: {e}") from None
    bound = num_classes if num_classes is not None else (len(names) or None)
    splits = []
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        images = _npz_images(x, root, f"x_{split}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{root}: y_{split} must be a 1-D integer array, got {y.dtype} {y.shape}")
        if len(y) != len(images):
            raise DataError(f"{root}: x_{split} has {len(images)} images but y_{split} has {len(y)} labels")
        _nonempty(len(images), f"{root} (x_{split})")
        labels = _check_labels(y, bound, lambda i, k=f"y_{split}": f"record {i} of {root} ({k})")
        splits.append(Split(_fit(images, size, channels), labels))
    train, val = splits
    classes = len(names) or int(max(train.labels.max(), val.labels.max())) + 1
    mean, std = _stats(train.images)
    return Dataset(spec, train, val, classes, mean, std, names)


_LOADERS = {"imagefolder": _imagefolder, "ref-bin": _ref_bin, "mnist": _mnist, "cifar10": _cifar10, "npz": _npz}
