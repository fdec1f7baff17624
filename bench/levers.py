"""Levers on MobileNetV2's train step: emitted forms (rewrite passes) and IREE compiler flags. Each
variant is compiled, then all are timed in interleaved rounds (one step each per round) so the
ratios to the baseline come from one run.

    python3 bench/levers.py [--batch 8] [--image 64] [--steps 10] [--write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, write_section  # noqa: E402

from gir.netfile import load_net_file  # noqa: E402
from gir.nn.params import init_params  # noqa: E402
from gir.rewrite import Pass, register_pass  # noqa: E402
from gir.rewrite.conv_forms import CONV_FORMS  # noqa: E402
from gir.train.backend import IreeBackend  # noqa: E402
from gir.train.step import lower_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# conv_forms' two rules measured apart: a bench-only pass with just the weight-gradient rule
register_pass(Pass("conv_forms_wgrad_only", "conv_forms' depthwise weight-gradient rule alone", "primitive",
                   tuple(r for r in CONV_FORMS.rules if r.name == "depthwise_weight_grad_as_taps")))
WITHOUT_CONV_FORMS = "cse,bn_fold,simplify,fold,fusion,fold,cse,simplify,dce"
WGRAD_ONLY = "cse,bn_fold,simplify,fold,fusion,fold,conv_forms_wgrad_only,cse,simplify,dce"
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {   # name -> (rewrite passes, iree-compile flags)
    "baseline: default passes (conv_forms), llvm-cpu host, gir's CPU flags (O3, im2col)": ("default", ()),
    "no conv_forms: depthwise convs and their gradients as grouped convolutions": (WITHOUT_CONV_FORMS, ()),
    "conv_forms on depthwise weight gradients only": (WGRAD_ONLY, ()),
    "data tiling": ("default", ("--iree-opt-data-tiling",)),
    "ukernels all": ("default", ("--iree-llvmcpu-enable-ukernels=all",)),
}


PASS_LABEL = {"default": "default", WITHOUT_CONV_FORMS: "default - conv_forms", WGRAD_ONLY: "default, wgrad taps only"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    net, cfg = load_net_file(str(ROOT / "nets" / "mobilenet_v2.py"))
    cfg = cfg.replace(optimizer="adamw", weight_decay=0.05, batch_size=args.batch, image_size=args.image)
    mods = {spec: lower_train_step(net, cfg, batch=args.batch, image=args.image, passes=spec)
            for spec in {p for p, _ in VARIANTS.values()}}
    sizes = {spec: (len(m.primitive.nodes), len(m.text)) for spec, m in mods.items()}
    init = init_params(mods["default"].primitive, 0)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 3, args.image, args.image)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch).astype(np.int32)
    runners, compile_s, failed = {}, {}, {}
    for name, (spec, flags) in VARIANTS.items():
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
    title = "## IREE compiler flags on the MobileNetV2 train step (bench/levers.py)"
    lines = [title, "", machine_line(f"batch {args.batch} at {args.image}x{args.image}, AdamW; {args.steps} "
                                     "interleaved rounds (one step of every variant per round, order alternating) "
                                     "after 2 warm-up steps each."), "",
             "| variant | passes | flags | iree-compile (s) | step ms median (min-max) | baseline / variant | "
             "loss after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (spec, flags) in VARIANTS.items():
        if name in failed:
            lines.append(f"| {name} | {spec} | `{' '.join(flags)}` | rejected: {failed[name]} | | | |")
            continue
        t = times[name]
        med = statistics.median(t)
        lines.append(f"| {name} | {PASS_LABEL[spec]} | "
                     f"`{' '.join(flags) or '-'}` | {compile_s[name]:.1f} | {1e3 * med:.1f} "
                     f"({1e3 * min(t):.1f}-{1e3 * max(t):.1f}) | {base / med:.2f} | {losses[name]:.6f} |")
    lines += ["", "Module sizes: " + "; ".join(f"{PASS_LABEL[k]}: {n:,} ops, {c:,} chars" for k, (n, c) in
                                            sizes.items()) + "."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(title, text)


if __name__ == "__main__":
    main()
