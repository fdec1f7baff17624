"""MobileNetV2 train step (forward, backward from gir's adjoints, SGD update): front-end time (build,
differentiate, print), module size, iree-compile time, IREE vs JAX-backend step time interleaved in
one run, and the gradient's agreement with jax.grad. Writes a section of docs/performance.md."""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import as_jax_function, compile_jax
from gir.netfile import load_net_file
from gir.nn.params import init_params
from gir.rewrite import pipeline_for_backend
from gir.shapes.specialize import specialize
from gir.train.step import lower_train_step
from report import machine_line, publish

NET = os.path.join(os.path.dirname(__file__), "..", "nets", "mobilenet_v2.py")


def gradient_errors(net, cfg, mod, vals: dict, iree: dict, jx: dict, batch: int, image: int) -> dict:
    """Global relative L2 error of the gradients (the SGD momentum outputs) vs jax.grad of the forward
    graph, and how far jax.grad itself moves when the images are perturbed by 1e-6 (relative)."""
    fwd = specialize(net.build(mode="train", loss=True, label_smoothing=cfg.label_smoothing),
                     net.binding(batch=batch, image=image))
    f = as_jax_function(fwd)
    names = [v.name for v in fwd.params]
    fixed = {v.name: vals[v.name] for v in fwd.inputs if v.role != "param"}
    grad = jax.jit(jax.value_and_grad(lambda p, fx: f({**fx, **p})["loss"]))
    loss, ref = grad({k: vals[k] for k in names}, fixed)
    noisy = dict(fixed, images=fixed["images"] * (1 + 1e-6 * np.random.default_rng(1).standard_normal(
        fixed["images"].shape)).astype(np.float32))
    _, moved = grad({k: vals[k] for k in names}, noisy)
    flat = lambda d: np.concatenate([np.asarray(d[k]).ravel() for k in names])  # noqa: E731
    r = flat(ref)
    rel = lambda g: float(np.linalg.norm(g - r) / np.linalg.norm(r))  # noqa: E731
    return {"ref_loss": float(loss), "iree_grad": rel(flat({k: iree[f"momentum:{k}"] for k in names})),
            "jax_grad": rel(flat({k: jx[f"momentum:{k}"] for k in names})), "noise_grad": rel(flat(moved))}


def measure(batch: int, image: int, steps: int) -> dict:
    net, cfg = load_net_file(NET)
    cfg = cfg.replace(optimizer="sgd", weight_decay=0.0)
    t0 = time.perf_counter()
    mod = lower_train_step(net, cfg, batch=batch, image=image)
    front = time.perf_counter() - t0
    t0 = time.perf_counter()
    vmfb = compile_text(mod.text, "cpu", use_cache=False)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    vals = init_params(mod.primitive)
    vals["images"] = rng.standard_normal((batch, 3, image, image)).astype(np.float32)
    vals["labels"] = rng.integers(0, 10, batch).astype(np.int32)
    vals["lr"], vals["step"] = np.float32(0.01), np.int32(1)
    session = IreeSession(vmfb)
    args = [session.to_device(vals[v.name]) for v in mod.primitive.inputs]
    outs = list(mod.primitive.outputs)
    # the JAX backend runs its own default pipeline (no pointwise_matmul), as `gir train --backend jax` does
    jax_mod = lower_train_step(net, cfg, batch=batch, image=image, passes=pipeline_for_backend("default", "jax"))
    jax_fn = compile_jax(jax_mod.primitive)
    iree = dict(zip(outs, (a.to_host() for a in session.call("train_step", *args))))
    jx = jax_fn(vals)

    def iree_step():
        session.call("train_step", *args)[outs.index("loss")].to_host()

    def jax_step():
        jax.block_until_ready(jax_fn.jitted(vals)["loss"])

    times = {"iree": [], "jax": []}
    for _ in range(steps):
        for name, fn in (("iree", iree_step), ("jax", jax_step)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {"batch": batch, "image": image, "front_s": front, "chars": len(mod.text),
            "ops": len(mod.primitive.nodes), "compile_s": compile_s, "iree_loss": float(iree["loss"]),
            "jax_loss": float(jx["loss"]), **gradient_errors(net, cfg, mod, vals, iree, jx, batch, image),
            **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
            **{f"{k}_min": min(v) for k, v in times.items()}, **{f"{k}_max": max(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--write", action="store_true", help="replace the section in docs/performance.md")
    args = ap.parse_args()
    r = measure(8, 64, args.steps)
    title = "## MobileNetV2 train step: front end, size, compile, agreement (bench/train_step.py)"
    text = "\n".join([
        title, "",
        machine_line(f"batch 8 at 64x64, SGD with momentum, label smoothing 0.1; median of {args.steps} "
                     "interleaved steps after warm-up, parameters resident on the device."),
        "",
        "| measure | gir | reference figure |",
        "| --- | --- | --- |",
        f"| build + differentiate + print train_step.mlir | {r['front_s']:.2f} s | target < 2 s |",
        f"| train_step.mlir size | {r['chars']:,} chars, {r['ops']:,} ops | Lean reference 741,020; JAX export ~987,000 |",
        f"| iree-compile (llvm-cpu, host) | {r['compile_s']:.1f} s | JAX's export: 53-61 s |",
        f"| IREE step ms (min-max) | {r['iree_ms']:.1f} ({r['iree_min']:.1f}-{r['iree_max']:.1f}) | |",
        f"| JAX-backend jit step ms (min-max) | {r['jax_ms']:.1f} ({r['jax_min']:.1f}-{r['jax_max']:.1f}) | "
        f"JAX / IREE = {r['jax_ms'] / r['iree_ms']:.2f} |",
        f"| loss: IREE / JAX backend / jax.grad reference | {r['iree_loss']:.6f} / {r['jax_loss']:.6f} / "
        f"{r['ref_loss']:.6f} | within 1e-4 |",
        f"| gradient rel. L2 error vs jax.grad: JAX backend | {r['jax_grad']:.1e} | |",
        f"| gradient rel. L2 error vs jax.grad: IREE | {r['iree_grad']:.1e} | |",
        f"| jax.grad moved by a 1e-6 relative perturbation of the images | {r['noise_grad']:.1e} | |",
        "",
        "The gradient of this step is sensitive to rounding (ReLU6 units near their kinks, BN over 32 values "
        "in the last stages): a 1e-6 change of the input moves jax.grad's own gradient by the last row's "
        "amount, and gir's gradients on either backend differ from jax.grad by about that much. gir's BN "
        "backward applies 1/sqrt(var + eps) per channel after the sums (no full-size xhat), an order of "
        "operations the reference does not share; before that change the JAX backend agreed to 7e-3.",
    ])
    publish(title, text, args.write)


if __name__ == "__main__":
    main()
