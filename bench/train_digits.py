"""Accuracy floors of `gir train` on the built-in digits data: MobileNetV2, the newer vision nets (ResNet-18,
MobileNetV3-Large, MobileNetV4-Conv-S, EfficientNetV2-S, ConvNeXt-T), each at 32x32 with its own recipe, and the small
digits CNN, each trained end to end on IREE cpu; per-epoch validation accuracy, time.

    python3 bench/train_digits.py [--write] [--nets mobilenet_v2,digits_cnn]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, publish  # noqa: E402

from gir.netfile import load_net_file  # noqa: E402
from gir.train.loop import RunOptions, train  # noqa: E402
from gir.train.runlog import read_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"mobilenet_v2": 0.90, "digits_cnn": 0.97, "resnet18": 0.95, "mobilenet_v3_large": 0.90,
          "mobilenet_v4_conv_s": 0.90, "efficientnet_v2_s": 0.85, "convnext_tiny": 0.85}


def run(name: str) -> dict:
    net, cfg = load_net_file(str(ROOT / "nets" / f"{name}.py"))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        m = train(net, cfg, RunOptions(out=Path(out), progress=False), net_file=f"nets/{name}.py")
        wall = time.perf_counter() - t0
        evals = [r for r in read_trace(Path(out) / "trace.jsonl") if r.get("eval")]
    return {"name": name, "cfg": cfg, "metrics": m, "wall": wall, "evals": evals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default=",".join(FLOORS))
    ap.add_argument("--write", action="store_true", help="replace the section in docs/performance.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GIR_CACHE_DIR"] = cache   # a cold IREE cache: the compile time is real
        results = [run(n) for n in args.nets.split(",")]
    title = "## Training on the built-in digits data (bench/train_digits.py)"
    lines = [title, "", machine_line("`gir train NET` with each net file's own config, IREE cpu, data `digits` "
                                     "(1,442 train / 355 val images, resized to the net's input)."), "",
             "| net | recipe | steps | val top-1 | val top-5 | floor | compile s | train s | wall s | images/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c, m = r["cfg"], r["metrics"]
        recipe = (f"{c.optimizer} lr {c.learning_rate}, batch {c.batch_size}, {c.epochs} epochs, {c.image_size}x"
                  f"{c.image_size}{', augment' if c.augment else ''}")
        floor = FLOORS.get(r["name"])
        ok = "" if floor is None else f">= {100 * floor:.0f}% {'met' if m['val_top1'] >= floor else 'MISSED'}"
        lines.append(f"| {r['name']} | {recipe} | {m['steps']} | {100 * m['val_top1']:.2f}% | "
                     f"{100 * m['val_top5']:.2f}% | {ok} | {m['compile_time_s']:.1f} | {m['train_time_s']:.1f} | "
                     f"{r['wall']:.1f} | {m['images_per_s']:.0f} |")
    lines += ["", "Validation top-1 by epoch:", ""]
    for r in results:
        lines.append(f"- {r['name']}: " + ", ".join(f"{100 * e['top1']:.1f}" for e in r["evals"]))
    text = "\n".join(lines)
    publish(title, text, args.write)


if __name__ == "__main__":
    main()
