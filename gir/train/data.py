"""Data sources for `gir train`: a spec ("digits" or "KIND:PATH") becomes train/val splits that read their images
on demand, from memory-mapped files or from image files, so memory and start-up time do not grow with the dataset.
`Dataset.batch` turns record indices into uint8 NCHW images at the net's size and channel count.

Record indices in error messages count from 0.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from gir.messages import warn
from gir.train.augment import Augment, Part, augment_batch, crop_boxes
from gir.train.transforms import center_crop, random_resized_crop, to_chw

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
STATS_IMAGES = 10_000  # mean/std are measured on at most this many evenly spaced train images,
STATS_SIZE = 64        # resized to at most this size (a bigger upscale changes them by rounding only)
_CHUNK_BYTES = 1 << 25  # whole-array checks read memory maps in chunks of about this size


class DataError(Exception):
    """A missing, empty, truncated or corrupt dataset, naming the file (and record)."""


def data_cache_dir() -> Path:
    """Where compressed arrays (.gz IDX files, deflated .npz members) are unpacked once so they can be mapped:
    $GIR_DATA_CACHE_DIR, else ~/.cache/gir/data."""
    return Path(os.environ.get("GIR_DATA_CACHE_DIR") or Path.home() / ".cache" / "gir" / "data")


# ---------------------------------------------------------------------------------------------------------------
# where images live: array parts (mapped files or small in-memory arrays) and image files


@attrs.frozen(eq=False)
class ArrayPart:
    """`count` images of `shape` (`dtype`, laid out as `layout`: NCHW, NHWC or NHW) stored either in memory (`array`)
    or in the file `path`, record r starting at offset + r * stride + skip. A mapped part pickles as its path, so a
    data worker maps the file itself instead of receiving a copy."""

    count: int
    shape: tuple[int, ...]
    layout: str = "NCHW"
    dtype: str = "uint8"
    array: np.ndarray | None = None
    path: str | None = None
    offset: int = 0
    stride: int = 0
    skip: int = 0

    def read(self, idx: np.ndarray) -> np.ndarray:
        """The images of records `idx`, as stored ([k, *shape] of `dtype`)."""
        if self.array is not None:
            return self.array[idx]
        records = np.memmap(self.path, np.uint8, "r", offset=self.offset, shape=(self.count, self.stride))
        nbytes = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        raw = records[idx, self.skip:self.skip + nbytes]
        return np.ascontiguousarray(raw).view(self.dtype).reshape(len(idx), *self.shape)


@attrs.frozen(eq=False)
class ArrayImages:
    """A split's images as one or more array parts (CIFAR's five batch files are five parts)."""

    parts: tuple[ArrayPart, ...]
    where: str  # the file or files, for error messages

    def __len__(self) -> int:
        return sum(p.count for p in self.parts)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """uint8 [k, C, H, W] images of records `idx` (float images in [0, 1] scaled to 0..255)."""
        idx = np.asarray(idx, np.int64)
        starts = np.cumsum([0] + [p.count for p in self.parts])
        which = np.searchsorted(starts, idx, side="right") - 1
        out = None
        for k, part in enumerate(self.parts):
            mine = np.flatnonzero(which == k)
            if len(mine) == 0:
                continue
            images = _nchw_u8(part.read(idx[mine] - starts[k]), part.layout)
            if out is None:
                out = np.empty((len(idx), *images.shape[1:]), np.uint8)
            out[mine] = images
        return out


def _nchw_u8(x: np.ndarray, layout: str) -> np.ndarray:
    """Stored images as uint8 NCHW (floats in [0, 1], checked when the dataset was opened, scaled to 0..255)."""
    if layout == "NHW":
        x = x[:, None]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    if x.dtype != np.uint8:
        x = np.round(x * 255.0).astype(np.uint8)
    return np.ascontiguousarray(x)


@attrs.frozen(eq=False)
class FileImages:
    """A split's images as files under `root` (paths relative to it, as compact bytes: ImageNet's 1.28M names
    are ~30 MB, sent once to each data worker)."""

    root: str
    names: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        return Path(self.root) / os.fsdecode(self.names[i])


@attrs.frozen(eq=False)
class Split:
    """One split: images read on demand and int32 labels [n]."""

    images: ArrayImages | FileImages
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@attrs.frozen(eq=False)
class Dataset:
    """Train and val splits of one source at the net's image size and channel count, its class count and
    per-channel normalization ([0,1] pixel units)."""

    source: str
    train: Split
    val: Split
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int
    class_names: tuple[str, ...] = ()
    mirror_safe: bool = True   # a horizontal flip keeps the label (not for digits: a flipped 2 is no 2)

    def batch(self, split: Split, idx: np.ndarray, augment: Augment | None = None,
              rng: np.random.Generator | None = None, part: Part | None = None) -> np.ndarray:
        """uint8 [k, C, S, S] images of records `idx` (with `part`, of its rows only, exactly as made in the whole
        batch: other rows' random draws are made, from image headers, but not their pixels). Arrays are resized
        whole to SxS, then augmented; image files are cropped from the decoded original (a random-resized crop for
        `augment.crop == "resized"`, else the shorter side scaled to S/0.875 and the center SxS), then
        padded-crop/flipped as `augment` says."""
        rows = slice(None) if part is None else part.rows
        if isinstance(split.images, ArrayImages):
            images = _fit(split.images.take(idx[rows]), self.size, self.channels)
        elif augment is not None and augment.crop == "resized":
            images = self._resized_crops(split.images, idx, augment, rng, rows)
            augment = attrs.evolve(augment, crop="none")   # the crop is done; the flip is left
        else:
            images = np.stack([_decode(split.images.path(i), lambda im: center_crop(im, self.size, self.channels))
                               for i in idx[rows]])
        return images if augment is None else augment_batch(images, augment, rng, part)

    def _resized_crops(self, files: FileImages, idx: np.ndarray, augment: Augment, rng: np.random.Generator,
                       rows: slice) -> np.ndarray:
        """Random-resized crops of files `idx[rows]`, drawn in order over all of `idx` (one box per image)."""
        scale, ratio = augment.scale, augment.ratio
        mine = range(len(idx))[rows]
        crop = lambda im: random_resized_crop(im, self.size, self.channels, scale, ratio, rng)
        draw = lambda im: crop_boxes(np.array([im.size[1]]), np.array([im.size[0]]), scale, ratio, rng)
        made = [_decode(files.path(i), crop if j in mine else draw) for j, i in enumerate(idx)]
        return np.stack(made[rows])

    def normalize(self, images_u8: np.ndarray) -> np.ndarray:
        """float32 (x/255 - mean)/std per channel, as one multiply and one add; channels are axis -3
        ([n, C, S, S] or [C, S, S])."""
        if images_u8.ndim < 3 or images_u8.shape[-3] != len(self.mean):
            raise ValueError(f"normalize expects [..., {len(self.mean)}, H, W] images, got shape {images_u8.shape}")
        mean = np.asarray(self.mean, np.float64).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float64).reshape(-1, 1, 1)
        out = images_u8.astype(np.float32)
        out *= (1.0 / (255.0 * std)).astype(np.float32)
        out += (-mean / std).astype(np.float32)
        return out


def split_spec(spec: str, sources: tuple[str, ...], builtin: str, usage: str, what: str, placeholder: str
               ) -> tuple[str, str]:
    """(kind, path) of a `--data` spec: the built-in source's bare name, or KIND:PATH for another of `sources`."""
    kind, sep, path = spec.partition(":")
    if kind not in sources:
        raise DataError(f"unknown {what} source {spec!r}; expected one of: {usage}")
    if kind == builtin and sep:
        raise DataError(f"the {builtin} source takes no path, got {spec!r}")
    if kind != builtin and not path:
        raise DataError(f"data source {kind!r} needs a path: {kind}:{placeholder}")
    return kind, path


def load_dataset(spec: str, image_size: int, channels: int, num_classes: int | None = None) -> Dataset:
    """Open `spec` ("digits" or "KIND:PATH") for image_size x image_size images with `channels` (1 or 3) channels.

    Labels are read and checked now (with num_classes, each must lie in [0, num_classes)); images when a batch
    needs them. `classes` is the source's own class count."""
    kind, path = split_spec(spec, SOURCES, "digits", _USAGE, "data", "PATH")
    if channels not in (1, 3):
        raise DataError(f"cannot convert data to {channels} channels (only 1 or 3)")
    if not (isinstance(image_size, int) and image_size > 0):
        raise DataError(f"image size must be a positive integer, got {image_size!r}")
    root = Path(path).expanduser()
    geometry = {"size": image_size, "channels": channels}
    try:
        if kind == "digits":
            return _digits(spec, geometry, num_classes)
        return _LOADERS[kind](spec, root, geometry, num_classes)
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
        return images
    if c == 1 and channels == 3 and h == w == size:
        return np.repeat(images, 3, axis=1)
    out = np.empty((n, channels, size, size), np.uint8)
    for i in range(n):
        out[i] = to_chw(np.asarray(_pil(images[i], channels, size)), channels)
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


def _decode(path: Path, crop: Callable[[Image.Image], Any]) -> Any:
    """`crop` applied to the image file at `path` (opened, not yet decoded); a bad file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return crop(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None


def _stats(split: Split, size: int, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0,1] units of up to STATS_IMAGES evenly spaced images of an array split at the
    net's geometry, at most STATS_SIZE pixels wide (float64 sums, read in chunks: bounded time and memory for any
    dataset and image size)."""
    n, size = len(split), min(size, STATS_SIZE)
    idx = np.unique(np.linspace(0, n - 1, min(n, STATS_IMAGES)).round().astype(np.int64))
    total, sq = np.zeros(channels), np.zeros(channels)
    step = max(1, _CHUNK_BYTES // (8 * channels * size * size))
    for k in range(0, len(idx), step):
        chunk = _fit(split.images.take(idx[k:k + step]), size, channels).astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        sq += (chunk * chunk).sum(axis=(0, 2, 3))
    count = len(idx) * size * size
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    std[std == 0] = 1.0  # constant images: leave the scale alone
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def _gray(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """RGB normalization constants for `channels` channels: their mean for one channel."""
    return values if channels == len(values) else (float(np.mean(values)),) * channels


def _size(path: Path) -> int:
    """A file's length; a missing path or a folder is a DataError naming it."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None


def _unpacked(path: Path, member: str = "") -> Path:
    """A mappable copy of a gzip file (or of a deflated member of a zip archive), unpacked once into the data cache
    under a name keyed by the file's path, size and modification time, written atomically."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{member}".encode()).hexdigest()[:32]
    cache = data_cache_dir()
    target = cache / f"{key}.raw"
    if target.exists():
        size, want = target.stat().st_size, _unpacked_size(path, member)
        if size == want or (not member and size % 2**32 == want):  # gzip records the size modulo 2**32
            return target
        warn(f"data cache file {target} (unpacked {path}) is {size:,} bytes, not {want:,}; unpacking it again")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
    except OSError as e:
        raise DataError(f"cannot unpack {path} into the data cache {cache}: {e.strerror or e} "
                        f"(set GIR_DATA_CACHE_DIR to a writable folder)") from None
    try:
        with os.fdopen(fd, "wb") as out:
            if member:
                with zipfile.ZipFile(path) as z, z.open(member) as src:
                    shutil.copyfileobj(src, out, _CHUNK_BYTES)
            else:
                with gzip.open(path, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK_BYTES)
        os.replace(tmp, target)
    except (gzip.BadGzipFile, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: corrupt {'zip' if member else 'gzip'} data: {e}") from None
    except OSError as e:
        raise DataError(f"cannot unpack {path} into the data cache {cache}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _unpacked_size(path: Path, member: str) -> int:
    """The size a gzip file (its trailer holds it, modulo 2**32) or a zip member unpacks to."""
    try:
        if member:
            with zipfile.ZipFile(path) as z:
                return z.getinfo(member).file_size
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    except (OSError, KeyError, zipfile.BadZipFile, struct.error) as e:
        raise DataError(f"{path}: corrupt {'zip' if member else 'gzip'} data: {e}") from None


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


def _in_memory(images: np.ndarray, where: str) -> ArrayImages:
    return ArrayImages((ArrayPart(len(images), images.shape[1:], array=images),), where)


def _digits(spec: str, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (pixels 0..16 scaled to 0..255) with a fixed, stratified 80/20 split
    (no RNG: identical on every machine); mean/std are computed from the train split after resizing."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = _check_labels(d.target, num_classes, lambda i: f"record {i} of digits")
    tr, va = _digits_split(labels)
    train = Split(_in_memory(images[tr], "digits"), labels[tr])
    val = Split(_in_memory(images[va], "digits"), labels[va])
    mean, std = _stats(train, **geometry)
    return Dataset(spec, train, val, 10, mean, std, **geometry, class_names=DIGIT_CLASSES, mirror_safe=False)


# ---------------------------------------------------------------------------------------------------------------
# imagefolder


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        with os.scandir(_need_dir(split_dir)) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except PermissionError:
        raise DataError(f"{split_dir}: permission denied") from None


def _image_files(class_dir: Path) -> list[str]:
    """The image file names in one class folder, sorted (directory entries only: no file is opened or stat'ed)."""
    try:
        with os.scandir(class_dir) as entries:
            return sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                          and not e.name.startswith(".") and e.is_file())
    except PermissionError:
        raise DataError(f"{class_dir}: permission denied") from None


def _imagefolder(spec: str, root: Path, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """DIR/train/<class>/*.{jpg,jpeg,png} and DIR/val/<class>/...; classes are train/'s sorted folder names.
    Only the file names are read here; each image is decoded when a batch needs it."""
    _need_dir(root)
    names = _class_dirs(root / "train")
    if not names:
        raise DataError(f"{root / 'train'}: no class folders")
    extra = sorted(set(_class_dirs(root / "val")) - set(names))
    if extra:
        raise DataError(f"{root / 'val'}: class folder(s) {', '.join(extra)} not in {root / 'train'}")
    splits = []
    for split in ("train", "val"):
        files, labels = [], []
        for k, name in enumerate(names):
            if (root / split / name).is_dir():
                found = _image_files(root / split / name)
                files += [os.fsencode(f"{split}/{name}/{f}") for f in found]
                labels += [k] * len(found)
        _nonempty(len(files), f"{root / split} ({', '.join(s[1:] for s in IMAGE_SUFFIXES)} files in class folders)")
        images = FileImages(str(root), np.array(files, dtype=bytes))
        labels_arr = _check_labels(np.asarray(labels, np.int64), num_classes,
                                   lambda i, im=images: f"{im.path(i)} (class {im.path(i).parent.name!r})")
        splits.append(Split(images, labels_arr))
    return Dataset(spec, *splits, len(names), _gray(IMAGENET_MEAN, geometry["channels"]),
                   _gray(IMAGENET_STD, geometry["channels"]), **geometry, class_names=tuple(names))


# ---------------------------------------------------------------------------------------------------------------
# ref-bin


def _ref_bin_file(path: Path, num_classes: int | None) -> Split:
    """u32 little-endian count, then count records of 1 label byte + uint8 3xSxS pixels (S from the length)."""
    length = _size(path)
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
    part = ArrayPart(count, (3, s, s), path=str(path), offset=4, stride=pix, skip=1)
    return Split(ArrayImages((part,), str(path)), labels)


def _ref_bin(spec: str, root: Path, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """The reference system's preprocessed binary: DIR/train.bin and DIR/val.bin; ImageNet mean/std."""
    _need_dir(root)
    train = _ref_bin_file(root / "train.bin", num_classes)
    val = _ref_bin_file(root / "val.bin", num_classes)
    classes = int(max(train.labels.max(), val.labels.max())) + 1
    return Dataset(spec, train, val, classes, _gray(IMAGENET_MEAN, geometry["channels"]),
                   _gray(IMAGENET_STD, geometry["channels"]), **geometry)


# ---------------------------------------------------------------------------------------------------------------
# mnist


def _idx_path(root: Path, name: str) -> Path:
    for p in (root / name, root / f"{name}.gz"):
        if p.exists():
            return p
    raise DataError(f"{root / name}: no such file (nor {name}.gz)")


def _idx(path: Path, magic: int, dims: int) -> ArrayPart:
    """An IDX file of unsigned bytes with `dims` dimensions, checking its magic number and length; mapped in place
    (a .gz file is unpacked into the data cache first)."""
    data = _unpacked(path) if path.suffix == ".gz" else path
    length = _size(data)
    header = 4 + 4 * dims
    if length < header:
        raise DataError(f"{path}: file is {length} bytes, too short for an IDX header")
    found, *shape = (int(x) for x in np.fromfile(data, ">u4", count=1 + dims))
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found} (expected {magic})")
    record = int(np.prod(shape[1:], dtype=np.int64)) if dims > 1 else 1
    need = header + shape[0] * record
    if length < need:
        raise DataError(f"{path}: truncated: header says {shape[0]} records, the file ends in record "
                        f"{(length - header) // record}")
    if length > need:
        raise DataError(f"{path}: file length {length} exceeds the {need} bytes of {shape[0]} records")
    return ArrayPart(shape[0], tuple(shape[1:]), layout="NHW", path=str(data), offset=header, stride=record)


def _mnist_split(root: Path, prefix: str, num_classes: int | None) -> Split:
    ipath, lpath = _idx_path(root, f"{prefix}-images-idx3-ubyte"), _idx_path(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = _idx(ipath, 2051, 3), _idx(lpath, 2049, 1)
    if images.count != labels.count:
        raise DataError(f"{ipath} has {images.count} images but {lpath} has {labels.count} labels")
    _nonempty(images.count, str(ipath))
    values = labels.read(np.arange(labels.count)).reshape(-1)
    return Split(ArrayImages((images,), str(ipath)),
                 _check_labels(values, num_classes, lambda i: f"record {i} of {lpath}"))


def _mnist(spec: str, root: Path, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """MNIST IDX files (optionally .gz): train-* is train, t10k-* is val; mean 0.1307, std 0.3081."""
    _need_dir(root)
    train = _mnist_split(root, "train", num_classes)
    val = _mnist_split(root, "t10k", num_classes)
    channels = geometry["channels"]
    return Dataset(spec, train, val, 10, MNIST_MEAN * channels, MNIST_STD * channels, **geometry,
                   class_names=DIGIT_CLASSES, mirror_safe=False)


# ---------------------------------------------------------------------------------------------------------------
# cifar10


def _cifar_file(path: Path, num_classes: int | None) -> tuple[ArrayPart, np.ndarray]:
    length = _size(path)
    n, rest = divmod(length, CIFAR_RECORD)
    if rest:
        raise DataError(f"{path}: length {length} is not a multiple of {CIFAR_RECORD}-byte records: "
                        f"record {n} is partial ({rest} bytes)")
    _nonempty(n, str(path))
    labels = _check_labels(np.memmap(path, np.uint8, "r", shape=(n, CIFAR_RECORD))[:, 0],
                           num_classes if num_classes is not None else 10, lambda i: f"record {i} of {path}")
    return ArrayPart(n, (3, 32, 32), path=str(path), stride=CIFAR_RECORD, skip=1), labels


def _cifar10(spec: str, root: Path, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """CIFAR-10 binary: data_batch_{1..5}.bin (those present) train, test_batch.bin val (also under
    DIR/cifar-10-batches-bin, the tarball's folder); CIFAR-10 mean/std."""
    _need_dir(root)
    if not any(root.glob("data_batch_*.bin")) and (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    batches = [root / f"data_batch_{k}.bin" for k in range(1, 6) if (root / f"data_batch_{k}.bin").exists()]
    if not batches:
        raise DataError(f"{root}: no data_batch_1.bin .. data_batch_5.bin")
    parts = [_cifar_file(p, num_classes) for p in batches]
    train = Split(ArrayImages(tuple(p for p, _ in parts), f"{root}/data_batch_*.bin"),
                  np.concatenate([lb for _, lb in parts]))
    val_part, val_labels = _cifar_file(root / "test_batch.bin", num_classes)
    val = Split(ArrayImages((val_part,), str(root / "test_batch.bin")), val_labels)
    channels = geometry["channels"]
    return Dataset(spec, train, val, 10, _gray(CIFAR10_MEAN, channels), _gray(CIFAR10_STD, channels), **geometry,
                   class_names=CIFAR10_CLASSES)


# ---------------------------------------------------------------------------------------------------------------
# npz


def _npz_member(root: Path, z: zipfile.ZipFile, key: str) -> tuple[str, int, tuple[int, ...], np.dtype, bool]:
    """Where array `key` of an .npz lies, for mapping: (file, data offset, shape, dtype, fortran order). A stored
    member is mapped inside the archive; a deflated one (np.savez_compressed) is unpacked into the data cache."""
    info = z.getinfo(f"{key}.npy")
    if info.compress_type == zipfile.ZIP_STORED:
        path = root
        with open(root, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
    else:
        path, start = _unpacked(root, info.filename), 0
    with open(path, "rb") as f:
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        return str(path), f.tell(), shape, dtype, fortran


def _npz_images(root: Path, z: zipfile.ZipFile, key: str) -> ArrayPart:
    """A mapped part over uint8 or [0,1]-float images in NCHW, NHWC (C in 1, 3) or NHW."""
    path, offset, shape, dtype, fortran = _npz_member(root, z, key)
    if len(shape) == 3:
        layout = "NHW"
    elif len(shape) == 4 and shape[1] in (1, 3):
        layout = "NCHW"
    elif len(shape) == 4 and shape[3] in (1, 3):
        layout = "NHWC"
    elif len(shape) == 4:
        raise DataError(f"{root}: {key} has shape {shape}; expected NCHW or NHWC with 1 or 3 channels")
    else:
        raise DataError(f"{root}: {key} has shape {shape}; expected NCHW, NHWC or NHW images")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"{root}: {key} must be uint8 or float in [0, 1], got {dtype}")
    n, record = shape[0], tuple(shape[1:])
    if fortran:  # rare (np.save of a Fortran-ordered array): read it whole
        part = ArrayPart(n, record, layout, dtype.str, array=np.ascontiguousarray(z[key]))
    else:
        part = ArrayPart(n, record, layout, dtype.str, path=path, offset=offset,
                         stride=int(np.prod(record, dtype=np.int64)) * dtype.itemsize)
    if dtype != np.uint8:
        _check_unit_range(part, root, key)
    return part


def _check_unit_range(part: ArrayPart, root: Path, key: str) -> None:
    """Float images must be finite and within [0, 1]; checked in chunks over the whole array."""
    step = max(1, _CHUNK_BYTES // max(1, part.stride or 1))
    for k in range(0, part.count, step):
        x = part.read(np.arange(k, min(part.count, k + step)))
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{root}: {key} is float but not within [0, 1] (min {x.min()}, max {x.max()})")


def _npz(spec: str, root: Path, geometry: dict[str, int], num_classes: int | None) -> Dataset:
    """x_train, y_train, x_val, y_val (and optional class_names) from one .npz, its images mapped in place;
    mean/std from train."""
    _size(root)
    with open(root, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise DataError(f"{root}: not an .npz archive (a single .npy array?)")
    try:
        with zipfile.ZipFile(root) as z:
            keys = sorted(n.removesuffix(".npy") for n in z.namelist())
            for key in ("x_train", "y_train", "x_val", "y_val"):
                if key not in keys:
                    raise DataError(f"{root}: missing array {key!r} (has: {', '.join(keys) or 'none'})")
            with np.load(root, allow_pickle=False) as arrays:
                names = (tuple(str(s) for s in arrays["class_names"].reshape(-1)) if "class_names" in keys else ())
                ys = {k: arrays[k] for k in ("y_train", "y_val")}
            xs = {k: _npz_images(root, z, k) for k in ("x_train", "x_val")}
    except DataError:
        raise
    except (ValueError, zipfile.BadZipFile) as e:
        why = "not a zip archive" if isinstance(e, zipfile.BadZipFile) else str(e)
        raise DataError(f"{root}: not a readable .npz file ({why})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{root}: not a readable .npz file: {e}") from None
    bound = num_classes if num_classes is not None else (len(names) or None)
    splits = []
    for split in ("train", "val"):
        part, y = xs[f"x_{split}"], ys[f"y_{split}"]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{root}: y_{split} must be a 1-D integer array, got {y.dtype} {y.shape}")
        if len(y) != part.count:
            raise DataError(f"{root}: x_{split} has {part.count} images but y_{split} has {len(y)} labels")
        _nonempty(part.count, f"{root} (x_{split})")
        labels = _check_labels(y, bound, lambda i, k=f"y_{split}": f"record {i} of {root} ({k})")
        splits.append(Split(ArrayImages((part,), f"{root} (x_{split})"), labels))
    train, val = splits
    classes = len(names) or int(max(train.labels.max(), val.labels.max())) + 1
    mean, std = _stats(train, **geometry)
    return Dataset(spec, train, val, classes, mean, std, **geometry, class_names=names)


_LOADERS = {"imagefolder": _imagefolder, "ref-bin": _ref_bin, "mnist": _mnist, "cifar10": _cifar10, "npz": _npz}
