"""Wall time of gir's CPU compile (the flag sets of CPU_SPEED_FLAG_SETS until IREE accepts one) with the sets
compiled in turn against side by side (gir.lower.iree_compile.parallel_attempts), alternating, no cache, on each
net's train step as `gir bench` compiles it.

    python3 bench/compile_attempts.py [--nets convnext_tiny@b64@32,mobilenet_v2@b64@32] [--rounds 2] [--write]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from report import publish, table_section

from gir.lower import iree_compile
from gir.netfile import load_net_file
from gir.train.backend import iree_module_text
from gir.train.step import lower_train_step

ROOT = Path(__file__).resolve().parents[1]
TITLE = "## CPU flag sets in turn or side by side: iree-compile wall time (bench/compile_attempts.py)"
MODES = {"in turn": 1, "side by side": 2}


def module_text(spec: str) -> str:
    """`name@bB@I`: the net's train step at batch B and image size I, as gir's IREE backend prints it."""
    name, batch, image = spec.split("@")
    net, config = load_net_file(str(ROOT / "nets" / f"{name}.py"))
    batch, image = int(batch.removeprefix("b")), int(image)
    return iree_module_text(lower_train_step(net, config.replace(batch_size=batch), batch=batch, image=image),
                            None, "cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="convnext_tiny@b64@32,convnext_tiny@b8@64,efficientnet_v2_s@b64@32,"
                                      "mobilenet_v2@b64@32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = []
    for spec in args.nets.split(","):
        text = module_text(spec)
        attempts = iree_compile._attempts(text, "cpu", None, ())
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            for mode in (list(MODES) if r % 2 == 0 else list(reversed(MODES))):
                t0 = time.perf_counter()
                accepted, _ = iree_compile.first_accepted(text, attempts, MODES[mode])
                times[mode].append(time.perf_counter() - t0)
                print(f"{spec}: {mode} {times[mode][-1]:.1f} s", file=sys.stderr, flush=True)
        turn, side = (statistics.median(times[m]) for m in MODES)
        rows.append(f"| {spec.replace('@', ' ', 1)} | {accepted + 1} | "
                    f"{', '.join(f'{t:.1f}' for t in times['in turn'])} | "
                    f"{', '.join(f'{t:.1f}' for t in times['side by side'])} | {turn / side:.2f} |")
    text = table_section(
        TITLE, f"train steps; each compiled {args.rounds} times per mode without the cache, alternating (order "
               "reversed every round); 'in turn' is GIR_COMPILE_JOBS=1, 'side by side' 2; the flag set IREE accepts "
               "is 1 for the module's first.",
        ["net, shape", "flag set IREE accepts", "in turn s", "side by side s", "in turn / side by side (median)"],
        rows)
    publish(TITLE, text, args.write)


if __name__ == "__main__":
    main()
