"""What the CPU flag fallback is worth per net: each net's train step compiled with the flag sets
gir tries in turn (`CPU_SPEED_FLAG_SETS`: the first one IREE accepts wins) against the fallback gir
had before (all speed flags, else none), timed alternately in one process (`gir bench`'s measurement,
`rounds` times each, medians of the rounds' medians).

    python3 bench/cpu_flags.py [--nets digits_cnn,mnist_cnn,cifar_cnn,resnet34] [--batch 32] [--steps 5]
                               [--rounds 2] [--write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, publish  # noqa: E402

from gir.bench import bench_train_step  # noqa: E402
from gir.lower import iree_compile  # noqa: E402
from gir.netfile import load_net_file  # noqa: E402
from gir.train.backend import iree_module_text  # noqa: E402
from gir.train.step import lower_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "## The CPU flag fallback per net (bench/cpu_flags.py)"
VARIANTS = {"before (all speed flags, else none)": (iree_compile.CPU_SPEED_FLAG_SETS[0], ()),
            "now (CPU_SPEED_FLAG_SETS in turn)": iree_compile.CPU_SPEED_FLAG_SETS}


def accepted(text: str) -> str:
    """The first flag set of CPU_SPEED_FLAG_SETS that iree-compile accepts for `text`."""
    for flags in iree_compile.CPU_SPEED_FLAG_SETS:
        if iree_compile.first_accepted(text, [[*iree_compile.target_flags("cpu"), *flags]], 1)[0] is not None:
            return " ".join(f.removeprefix("--iree-") for f in flags) or "none"
    return "none accepted"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="digits_cnn,mnist_cnn,cifar_cnn,resnet34")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = ["| net | shape | flags now | ms before | ms now | speedup |", "| --- | --- | --- | --- | --- | --- |"]
    for name in args.nets.split(","):
        net, config = load_net_file(str(ROOT / "nets" / f"{name}.py"))
        batch, image = min(args.batch, config.batch_size), config.image_size
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for variant, sets in VARIANTS.items():
                    os.environ["GIR_CACHE_DIR"] = os.path.join(tmp, variant[:3])   # one compile per variant
                    iree_compile.CPU_SPEED_FLAG_SETS = sets
                    r = bench_train_step(net, config, batch, image, steps=args.steps)
                    times[variant].append(r.median_ms)
        iree_compile.CPU_SPEED_FLAG_SETS = VARIANTS["now (CPU_SPEED_FLAG_SETS in turn)"]
        text = iree_module_text(lower_train_step(net, config.replace(batch_size=batch), batch=batch, image=image),
                                None, "cpu")
        before, now = (statistics.median(t) for t in times.values())
        rows.append(f"| {name} | b{batch}@{image} | {accepted(text)} | {before:.1f} | {now:.1f} | "
                    f"{before / now:.2f}x |")
        print(rows[-1], file=sys.stderr, flush=True)
    publish(TITLE, "\n".join([TITLE, "", machine_line(f"train step, gir bench's timing ({args.steps} steps after 2 "
                                                      f"warm-up, {args.rounds} alternating rounds, medians)."),
                              "", *rows]), args.write)


if __name__ == "__main__":
    main()
