"""MobileNetV2 forward: front-end time (build + lower), module size, iree-compile time, and IREE vs
JAX forward time per batch, interleaved in one run. Writes a section of docs/performance.md.

    python3 bench/lower_forward.py [--steps 10] [--write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import compile_jax
from gir.lower.pipeline import lower_net
from gir.netfile import load_net_file
from gir.nn.params import init_params
from report import machine_line, publish

NET = os.path.join(os.path.dirname(__file__), "..", "nets", "mobilenet_v2.py")


def measure(batch: int, image: int, steps: int) -> dict:
    net, _ = load_net_file(NET)
    t0 = time.perf_counter()
    mod = lower_net(net, batch=batch, image=image)["forward"]
    front = time.perf_counter() - t0
    t0 = time.perf_counter()
    vmfb = compile_text(mod.text, "cpu", use_cache=False)
    compile_s = time.perf_counter() - t0
    params = init_params(mod.graph)
    images = np.random.default_rng(0).standard_normal((batch, 3, image, image)).astype(np.float32)
    feeds = {v.name: (images if v.role == "data" else params[v.name]) for v in mod.primitive.inputs}
    session = IreeSession(vmfb)
    args = [session.to_device(feeds[v.name]) for v in mod.primitive.inputs]  # resident inputs
    jax_fn = compile_jax(mod.graph)

    def iree_step():
        out = session.call("forward", *args)
        out[0].to_host()

    def jax_step():
        out = jax_fn(feeds)
        np.asarray(out["logits"])

    for f in (iree_step, jax_step):  # warm-up (JAX compiles here)
        f()
    times = {"iree": [], "jax": []}
    for _ in range(steps):  # interleaved so machine noise hits both alike
        for name, f in (("iree", iree_step), ("jax", jax_step)):
            t0 = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {"batch": batch, "image": image, "front_s": front, "chars": len(mod.text), "ops": len(mod.primitive.nodes),
            "compile_s": compile_s, **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
            **{f"{k}_min": min(v) for k, v in times.items()}, **{f"{k}_max": max(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--write", action="store_true", help="replace the section in docs/performance.md")
    args = ap.parse_args()
    rows = [measure(8, 64, args.steps), measure(8, 224, args.steps)]
    lines = [
        "## MobileNetV2 forward: lowering and execution (bench/lower_forward.py)",
        "",
        machine_line(f"median of {args.steps} interleaved steps after warm-up, f32, BN in training mode."),
        "",
        "| batch x image | build + lower (s) | forward.mlir chars | ops | iree-compile (s) | IREE ms (min-max) "
        "| JAX jit ms (min-max) | JAX / IREE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} x {r['image']}x{r['image']} | {r['front_s']:.2f} | {r['chars']:,} | {r['ops']} | "
                     f"{r['compile_s']:.1f} | {r['iree_ms']:.1f} ({r['iree_min']:.1f}-{r['iree_max']:.1f}) | "
                     f"{r['jax_ms']:.1f} ({r['jax_min']:.1f}-{r['jax_max']:.1f}) | {r['jax_ms'] / r['iree_ms']:.2f} |")
    text = "\n".join(lines) + "\n"
    publish(lines[0], text, args.write)


if __name__ == "__main__":
    main()
