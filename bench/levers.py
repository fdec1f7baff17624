"""Levers on MobileNetV2's train step: emitted forms (rewrite passes) and IREE compiler flags. Each
variant is compiled, then all are timed in interleaved rounds (one step each per round) so the
ratios to the baseline come from one run. The host-heap setting is process-wide, so it is measured
by child processes with and without it, alternating.

It prints one run's table. docs/performance.md's "Levers" section files each run (Run 1, 2, ...)
with what was kept and why, so a run is added there by hand rather than replacing the section.

    python3 bench/levers.py [--batch 8] [--image 64] [--steps 10] [--only TEXT ...]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line  # noqa: E402

from gir.netfile import load_net_file  # noqa: E402
from gir.nn.params import init_params  # noqa: E402
from gir.rewrite import PIPELINES, Pass, register_pass  # noqa: E402
from gir.rewrite.conv_forms import CONV_FORMS, _depthwise_taps  # noqa: E402
from gir.train.backend import IreeBackend  # noqa: E402
from gir.train.step import lower_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# bench-only: conv_forms with strided depthwise taps read strided from the padded input (no phases)
register_pass(Pass("conv_forms_no_phases", "conv_forms, strided taps without the phase split", "primitive",
                   tuple(attrs.evolve(r, replace=functools.partial(_depthwise_taps, phases=False))
                         if r.name == "depthwise_conv_as_taps" else r for r in CONV_FORMS.rules)))
DEFAULT = PIPELINES["default"]


PASS_LABEL = {"default": "default"}


def variant(without: tuple[str, ...] = (), swap: tuple[str, str] | None = None) -> str:
    """The default pipeline without some passes, or with one pass swapped for another; files its
    label for the tables."""
    names = [swap[1] if swap and p == swap[0] else p for p in DEFAULT if p not in without]
    spec = ",".join(names)
    PASS_LABEL[spec] = " - ".join(("default", *without)) if without else f"default, {swap[1]} for {swap[0]}"
    return spec


ALL_NCHW = variant(without=("layout_cnhw_small",))
NO_POINTWISE = variant(without=("layout_cnhw_small", "pointwise_matmul"))
WITHOUT_CONV_FORMS = variant(without=("layout_cnhw_small", "conv_forms", "pointwise_matmul"))
NO_PHASES = variant(swap=("conv_forms", "conv_forms_no_phases"))
CNHW = variant(swap=("layout_cnhw_small", "layout_cnhw"))
NHWC = variant(swap=("layout_cnhw_small", "layout_nhwc"))
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {   # name -> (rewrite passes, iree-compile flags)
    "baseline: default passes, llvm-cpu host, gir's CPU flags (O3, im2col)": ("default", ()),
    "no pointwise_matmul: 1x1 convs stay convolutions (IREE makes them NHWC)": (NO_POINTWISE, ()),
    "no conv_forms, no pointwise_matmul: depthwise and 1x1 convs as convolutions": (WITHOUT_CONV_FORMS, ()),
    "strided depthwise forward taps read the padded input with strides (no phase split; weight gradients still split)": (NO_PHASES, ()),
    "activations stored NCHW throughout (no layout pass)": (ALL_NCHW, ()),
    "activations stored CNHW throughout (layout_cnhw)": (CNHW, ()),
    "activations stored NHWC throughout (layout_nhwc)": (NHWC, ()),
    "pads fused into their consumers": ("default", ("--iree-dispatch-creation-enable-fuse-padding-into-linalg-consumer-ops",)),
    "pads fused into their producers": ("default", ("--iree-dispatch-creation-enable-fuse-padding-into-linalg-producer-ops",)),
    "split reductions": ("default", ("--iree-dispatch-creation-enable-split-reduction",)),
    "aggressive fusion": ("default", ("--iree-dispatch-creation-enable-aggressive-fusion",)),
    "elementwise fusion of multi-reductions": ("default", ("--iree-dispatch-creation-element-wise-fuse-multi-reduction",)),
}


def setup(batch: int, image: int, passes: set[str]):
    net, cfg = load_net_file(str(ROOT / "nets" / "mobilenet_v2.py"))
    cfg = cfg.replace(optimizer="adamw", weight_decay=0.05, batch_size=batch, image_size=image)
    mods = {spec: lower_train_step(net, cfg, batch=batch, image=image, passes=spec) for spec in passes}
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, image, image)).astype(np.float32)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    return mods, init_params(mods["default"].primitive, 0), images, labels


def heap_child(batch: int, image: int, steps: int, retain: bool) -> None:
    """Prints the median ms of `steps` steps, with or without gir's host-heap setting."""
    import gir.lower.iree_runtime as rt
    if not retain:
        rt.retain_host_heap = lambda: False   # the session looks it up at creation
    mods, init, images, labels = setup(batch, image, {"default"})
    runner = IreeBackend(mods["default"], None, "cpu")
    runner.load(init)
    times = []
    for s in range(steps + 2):
        t0 = time.perf_counter()
        runner.step(images, labels, 1e-3, s + 1)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median_ms": 1e3 * statistics.median(times[2:])}))


def heap_lever(batch: int, image: int, steps: int, rounds: int = 3) -> dict[bool, list[float]]:
    """Median ms per child process, children alternating with and without the heap setting."""
    out: dict[bool, list[float]] = {True: [], False: []}
    for i in range(2 * rounds):
        retain = i % 2 == 0
        run = subprocess.run([sys.executable, __file__, "--batch", str(batch), "--image", str(image), "--steps",
                              str(steps), "--heap-child", "on" if retain else "off"], capture_output=True, text=True,
                             check=True)
        out[retain].append(json.loads(run.stdout.strip().splitlines()[-1])["median_ms"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="run the baseline and the variants whose name contains TEXT (no host-heap lever)")
    ap.add_argument("--heap-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.heap_child:
        return heap_child(args.batch, args.image, args.steps, args.heap_child == "on")
    baseline = next(iter(VARIANTS))
    variants = {k: v for k, v in VARIANTS.items()
                if k == baseline or not args.only or any(t in k for t in args.only)}
    mods, init, images, labels = setup(args.batch, args.image, {p for p, _ in variants.values()})
    sizes = {spec: (len(m.primitive.nodes), len(m.text)) for spec, m in mods.items()}
    runners, compile_s, failed = {}, {}, {}
    for name, (spec, flags) in variants.items():
        print(f"compiling {name} ...", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            runners[name] = IreeBackend(mods[spec], None, "cpu", None, flags)
        except Exception as e:  # a flag this compiler rejects is a result too
            failed[name] = str(e).splitlines()[0][:160]
            continue
        compile_s[name] = time.perf_counter() - t0
        runners[name].load(init)
        for s in (1, 2):
            runners[name].step(images, labels, 1e-3, s)
    times: dict[str, list[float]] = {k: [] for k in runners}
    losses = {}
    for i in range(args.steps):
        order = list(runners) if i % 2 == 0 else list(runners)[::-1]
        for name in order:
            t0 = time.perf_counter()
            r = runners[name].step(images, labels, 1e-3, 3 + i)
            times[name].append(time.perf_counter() - t0)
            losses[name] = r.loss
    base = statistics.median(times[next(iter(runners))])
    del runners
    heap = None if args.only else heap_lever(args.batch, args.image, args.steps)
    lines = [machine_line(f"batch {args.batch} at {args.image}x{args.image}, AdamW; {args.steps} "
                          "interleaved rounds (one step of every variant per round, order alternating) "
                          "after 2 warm-up steps each."), "",
             "| variant | passes | flags | iree-compile (s) | step ms median (min-max) | baseline / variant | "
             "loss after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (spec, flags) in variants.items():
        if name in failed:
            lines.append(f"| {name} | {spec} | `{' '.join(flags)}` | rejected: {failed[name]} | | | |")
            continue
        t = times[name]
        med = statistics.median(t)
        lines.append(f"| {name} | {PASS_LABEL[spec]} | "
                     f"`{' '.join(flags) or '-'}` | {compile_s[name]:.1f} | {1e3 * med:.1f} "
                     f"({1e3 * min(t):.1f}-{1e3 * max(t):.1f}) | {base / med:.2f} | {losses[name]:.6f} |")
    if heap:
        on, off = statistics.median(heap[True]), statistics.median(heap[False])
        lines += ["", f"Host heap (gir.lower.iree_runtime.retain_host_heap: glibc keeps freed memory instead of "
                  f"unmapping IREE's per-step buffers: the outputs, and the transients of a module without caller-kept storage), child processes alternating, medians of their "
                  f"medians: with {on:.1f} ms ({', '.join(f'{t:.1f}' for t in heap[True])}), without {off:.1f} ms "
                  f"({', '.join(f'{t:.1f}' for t in heap[False])}); without / with = {off / on:.2f}."]
    lines += ["", "Module sizes: " + "; ".join(f"{PASS_LABEL[k]}: {n:,} ops, {c:,} chars" for k, (n, c) in
                                            sizes.items()) + "."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
