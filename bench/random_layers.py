"""What dropout costs in a train step: MobileNetV2 with torchvision's classifier dropout (p 0.2 before the last
dense layer) and ViT-Tiny with torchvision's encoder-input dropout (p 0.1 after the patch embedding), each against
the stock net, on gir -> IREE cpu, the two built and timed alternately in the same run.

    python3 bench/random_layers.py [--rounds 3] [--write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, publish  # noqa: E402

from gir.bench import bench_train_step  # noqa: E402
from gir.netfile import load_net_file  # noqa: E402
from gir.nn import Net, dropout  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {"mobilenet_v2": (-1, 0.2, 8, 64), "vit_tiny": (1, 0.1, 4, 224)}
"""net -> (where dropout goes in the layer list, p, batch, image)."""


def with_dropout(net: Net, at: int, p: float) -> Net:
    layers = list(net.layers)
    layers.insert(at if at >= 0 else len(layers) + at, dropout(p))
    return Net(f"{net.name}_dropout", layers, net.input_type.shape, net.num_classes, net.constraints)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--write", action="store_true", help="replace the section in docs/performance.md")
    args = ap.parse_args()
    rows = []
    for name, (at, p, batch, image) in CASES.items():
        net, config = load_net_file(str(ROOT / "nets" / f"{name}.py"))
        variants = {"stock": net, f"dropout {p}": with_dropout(net, at, p)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for label, n in variants.items():
                r = bench_train_step(n, config, batch, image, steps=args.steps)
                times[label].append(r.median_ms)
                print(name, label, f"{r.median_ms:.1f} ms", file=sys.stderr)
        base, drop = (statistics.median(v) for v in times.values())
        rows.append(f"| {name} | b{batch}@{image} | {p} | {base:.1f} | {drop:.1f} | {drop / base:.3f} |")
    title = "## What dropout costs in a train step (bench/random_layers.py)"
    text = "\n".join([title, "", machine_line(f"gir -> IREE cpu train step, median ms of {args.steps} steps, median "
                                              f"of {args.rounds} alternating rounds."), "",
                      "| net | shape | p | stock ms | with dropout ms | ratio |", "| --- | --- | --- | --- | --- | --- |",
                      *rows])
    publish(title, text, args.write)


if __name__ == "__main__":
    main()
