"""iree-compile time of gir's MobileNetV2 train step against JAX's export of the same step
(bench/peers.py's hand-written JAX model), compiled alternately several times each with the same
IREE and flags and no cache, so that one slow compile on a shared machine does not decide the
comparison that bench/peers.py makes once per shape.

    python3 bench/compile_times.py [--shapes b8@64,b32@64,b8@224] [--repeats 3] [--write]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from peers import LR, gir_config, jax_step_fn, label, log, parse_shapes, step_inputs
from report import publish, table_section

from gir.lower.iree_compile import compile_text
from gir.train.backend import iree_module_text
from gir.train.step import lower_train_step

TITLE = "## iree-compile time: gir's train step against JAX's export (bench/compile_times.py)"


def texts(batch: int, image: int) -> dict[str, str]:
    """The two modules as bench/peers.py compiles them: gir's as its IREE training backend prints
    it (train step only), JAX's from jax.jit(...).lower(...).as_text()."""
    net, cfg = gir_config(batch, image)
    gir = iree_module_text(lower_train_step(net, cfg, batch=batch, image=image), None, "cpu")
    images, labels, state = step_inputs(batch, image)
    lowered = jax.jit(jax_step_fn()).lower(state, np.int32(1), np.float32(LR), images, labels)
    return {"gir": gir, "JAX": lowered.as_text(dialect="stablehlo")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="b8@64,b32@64,b8@224")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = []
    for batch, image in parse_shapes(args.shapes):
        mods = texts(batch, image)
        times: dict[str, list[float]] = {k: [] for k in mods}
        for r in range(args.repeats):
            for name in (list(mods) if r % 2 == 0 else list(reversed(mods))):
                t0 = time.perf_counter()
                compile_text(mods[name], "cpu", use_cache=False)
                times[name].append(time.perf_counter() - t0)
                log(f"{label(batch, image)}: {name} {times[name][-1]:.1f} s")
        g, j = statistics.median(times["gir"]), statistics.median(times["JAX"])
        rows.append(f"| {label(batch, image)} | {len(mods['gir']):,} / {len(mods['JAX']):,} | "
                    f"{', '.join(f'{t:.1f}' for t in times['gir'])} | {', '.join(f'{t:.1f}' for t in times['JAX'])} | "
                    f"{g:.1f} / {j:.1f} | {j / g:.2f} |")
    text = table_section(
        TITLE, f"MobileNetV2 train step; each module compiled {args.repeats} times, alternating (order reversed every "
               "round), iree-compile (llvm-cpu, host, gir's CPU flags) without the cache.",
        ["shape", "module chars: gir / JAX", "gir s", "JAX s", "median s: gir / JAX", "JAX / gir"], rows)
    publish(TITLE, text, args.write)


if __name__ == "__main__":
    main()
