"""Images/s of gir's input pipeline against torchvision's (DataLoader + ImageFolder + the same transforms) on the
same folder of ImageNet-shaped JPEGs (500x375), at 224x224, with 1 and N worker processes, in interleaved rounds.

Both pipelines deliver normalized float32 batches: random-resized crop (scale 0.08-1, ratio 3/4-4/3) of the decoded
original, horizontal flip, normalize. Steady-state images/s (after the first batch) and the seconds to the first
batch (starting the workers included) are reported, with medians over the rounds.

    python3 bench/input_pipeline.py [--images 768] [--batch 32] [--rounds 3] [--folder DIR] [--write]

torchvision is the peer (`pip install torchvision==0.28.0`, the build for torch 2.13.0). Where torch is a CPU-only
build and torchvision's compiled ops do not load, its registration of those ops (detection ops, which ImageFolder
and the PIL transforms never call) is made lenient so the pure-Python parts import.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, publish  # noqa: E402

from gir.train.augment import Augment  # noqa: E402
from gir.train.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset  # noqa: E402
from gir.train.pipeline import BatchMaker, Loader  # noqa: E402

SIZE = 224


def write_folder(root: Path, images: int, classes: int = 8) -> None:
    """`images` 500x375 JPEGs (quality 90: smooth gradients with noise, photo-like sizes of ~60-90 KB) in class
    folders under train/, and a few under val/."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            a, b, c = rng.uniform(0.005, 0.05, 3)
            base = np.stack([np.sin(a * x + i), np.cos(b * y), np.sin(c * (x + y))], -1) * 100 + 128
            pixels = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def gir_pipeline(root: Path, batch: int, workers: int, batches: int) -> tuple[float, float]:
    """(seconds to the first batch, images/s after it) of gir's Loader, normalization in the main process included."""
    data = load_dataset(f"imagefolder:{root}", SIZE, 3)
    t0 = time.perf_counter()
    with Loader(BatchMaker(data, batch, 0, Augment(crop="resized")), workers) as loader:
        it = loader.train(1, batches)
        data.normalize(next(it)[0])
        t1 = time.perf_counter()
        for images, _, _ in it:
            data.normalize(images)
        t2 = time.perf_counter()
    return t1 - t0, batch * (batches - 1) / (t2 - t1)


def _import_torchvision():
    import torch.library

    strict = torch.library.register_fake

    def lenient(*args, **kwargs):
        register = strict(*args, **kwargs)

        def apply(fn):
            try:
                return register(fn)
            except RuntimeError:  # the compiled op is missing from a CPU-only torch: nothing here calls it
                return fn
        return apply

    torch.library.register_fake = lenient
    try:
        import torchvision
    finally:
        torch.library.register_fake = strict
    return torchvision


def torchvision_pipeline(root: Path, batch: int, workers: int, batches: int) -> tuple[float, float]:
    import torch

    tv = _import_torchvision()
    t = tv.transforms
    transform = t.Compose([t.RandomResizedCrop(SIZE), t.RandomHorizontalFlip(), t.ToTensor(),
                           t.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    data = tv.datasets.ImageFolder(str(root / "train"), transform=transform)
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         prefetch_factor=2 if workers else None)
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    for _ in range(batches - 1):
        next(it)
    t2 = time.perf_counter()
    del it
    return t1 - t0, batch * (batches - 1) / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=768, help="JPEGs to generate (ignored with --folder)")
    ap.add_argument("--folder", type=Path, help="an existing imagefolder (DIR/train/<class>/*.jpg, DIR/val/...)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default=f"1,{os.cpu_count()}", help="worker counts to compare")
    ap.add_argument("--write", action="store_true", help="replace the section in docs/performance.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or Path(tmp)
        if args.folder is None:
            write_folder(root, args.images)
        batches = args.images // args.batch if args.folder is None else 24
        counts = [int(w) for w in args.workers.split(",")]
        runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for w in counts:
                for name, fn in (("gir", gir_pipeline), ("torchvision", torchvision_pipeline)):
                    runs.setdefault((name, w), []).append(fn(root, args.batch, w, batches))
                    print(name, w, runs[(name, w)][-1], file=sys.stderr)
    title = "## Input pipeline: images/s against torchvision (bench/input_pipeline.py)"
    lines = [title, "", machine_line(f"{batches} batches of {args.batch} random-resized crops at {SIZE}x{SIZE} from "
                                     f"500x375 JPEGs, flipped and normalized to float32; median of {args.rounds} "
                                     f"interleaved rounds."), "",
             "| workers | gir images/s | torchvision images/s | gir / torchvision | gir first batch s | "
             "torchvision first batch s |", "| --- | --- | --- | --- | --- | --- |"]
    for w in counts:
        g_first, g_rate = (statistics.median(v) for v in zip(*runs[("gir", w)]))
        t_first, t_rate = (statistics.median(v) for v in zip(*runs[("torchvision", w)]))
        lines.append(f"| {w} | {g_rate:.0f} | {t_rate:.0f} | {g_rate / t_rate:.2f} | {g_first:.2f} | {t_first:.2f} |")
    publish(title, "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
