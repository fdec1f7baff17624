"""Where an IREE train step spends its time: every dispatch timed inside the running step (IREE's
HAL profiling, host-execution mode), summed by kind (matmul_like, reduction, elementwise, ...).

Isolated dispatch benchmarks (`--iree-hal-dump-executable-benchmarks-to`) run each dispatch on
warm caches and miss what the whole step pays (page faults, memory traffic); this measures the
real step. It found the levers of docs/performance.md's "Where the step's time goes" section.

    python3 bench/dispatches.py [--net nets/mobilenet_v2.py] [--batch 32] [--image 64] [--steps 10] [--top 15]
                                [--iree-flag=FLAG ...] [--write]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line, publish  # noqa: E402

from gir.lower.iree_compile import compile_text  # noqa: E402
from gir.netfile import load_net_file  # noqa: E402
from gir.nn.params import init_params  # noqa: E402
from gir.rewrite.pipelines import pipeline_for_backend  # noqa: E402
from gir.train.step import lower_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "## Where the step's time goes (bench/dispatches.py)"
HEAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}   # what gir's IREE session sets
KIND = re.compile(r"dispatch_\d+_([a-z]+(?:_like|_broadcast|_memcpy)?)")


def inputs(g, folder: Path) -> list[str]:
    """The step's arguments as .npy files (parameters from gir's initializer, random images)."""
    vals = init_params(g, 0)
    rng = np.random.default_rng(0)
    flags = []
    for i, v in enumerate(g.inputs):
        shape = tuple(int(d) for d in v.type.shape)
        if v.name in vals:
            a = np.asarray(vals[v.name])
        elif v.name == "images":
            a = rng.standard_normal(shape)
        elif v.name == "labels":
            a = rng.integers(0, 10, shape)
        else:   # lr, step
            a = np.asarray(1e-3 if v.name == "lr" else 1)
        path = folder / f"{i:04d}.npy"
        np.save(path, np.asarray(a, dtype=v.type.dtype.numpy).reshape(shape))
        flags.append(f"--input=@{path}")
    return flags


def profile(vmfb: Path, function: str, args: list[str], steps: int, folder: Path) -> tuple[float, list[dict]]:
    """(median ms per step, statistics rows) of `steps` runs of `function` under HAL profiling."""
    flagfile = folder / "flags.txt"
    flagfile.write_text("\n".join([f"--module={vmfb}", "--device=local-task", f"--function={function}", *args]))
    out = folder / "step.ireeprof"
    run = subprocess.run(["iree-benchmark-module", f"--flagfile={flagfile}", f"--benchmark_min_time={steps}x",
                          "--benchmark_format=json", "--device_profiling_mode=host-execution",
                          f"--device_profiling_output={out}"], capture_output=True, text=True,
                         env={**os.environ, **HEAP}, check=True)
    bench = json.loads(run.stdout[run.stdout.index("{"):])["benchmarks"][0]
    ms = bench["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[bench["time_unit"]]
    stats = subprocess.run(["iree-profile", "statistics", "--format=jsonl", str(out)], capture_output=True,
                           text=True, check=True).stdout
    return ms, [json.loads(line) for line in stats.splitlines() if line.strip()]


def per_dispatch(rows: list[dict], steps: int) -> dict[str, tuple[float, float]]:
    """(ms per step, calls per step) of each dispatch function (its host_execution_function row).

    IREE shares one function among dispatches of the same shape (e.g. every 96 -> 576 1x1 conv at
    14x14), so a function's time per step can be several calls'."""
    ms: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        name = r.get("function_name") or ""
        if r.get("row_type") == "host_execution_function" and "dispatch" in name:
            ms[name][0] += r["total_duration_ns"] / 1e6 / steps
            ms[name][1] += r["sample_count"] / steps
    return {name: (t, n) for name, (t, n) in ms.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default=str(ROOT / "nets" / "mobilenet_v2.py"), help="net file (default MobileNetV2)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--passes", default="default", help="rewrite pipeline or passes (see `gir passes`)")
    ap.add_argument("--iree-flag", action="append", default=[], help="an extra iree-compile flag (repeatable)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    args.passes = pipeline_for_backend(args.passes, "iree")   # what `gir train` runs on this host
    net, cfg = load_net_file(args.net)
    sized = net.image_sized   # a fixed-size input (mnist_cnn, mlp) takes no image size
    if not sized:
        args.image = int(net.input_type.shape[-1])
    cfg = cfg.replace(optimizer="adamw", weight_decay=0.05, label_smoothing=0.1, clip_norm=0.0,
                      batch_size=args.batch, image_size=args.image)
    mod = lower_train_step(net, cfg, batch=args.batch, image=args.image if sized else None, passes=args.passes)
    g = mod.primitive
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vmfb = folder / "step.vmfb"
        vmfb.write_bytes(compile_text(mod.text, extra_flags=args.iree_flag))   # gir's CPU flags, from the cache when compiled before
        step_ms, rows = profile(vmfb, "train_step", inputs(g, folder), args.steps, folder)
    ms = per_dispatch(rows, args.steps)
    total = sum(t for t, _ in ms.values())
    kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for name, (t, n) in ms.items():
        m = KIND.search(name)
        k = kinds[m.group(1) if m else "other"]
        k[0] += 1
        k[1] += n
        k[2] += t
    lines = [TITLE, "", machine_line(f"{net.name} train step (AdamW, label smoothing 0.1), batch {args.batch} at "
                                     f"{args.image}x{args.image}, gir -> IREE llvm-cpu with gir's flags and host heap "
                                     f"setting; passes `{args.passes}`; {args.steps} steps under IREE's HAL profiling "
                                     f"(host-execution)."), "",
             f"Step {step_ms:.1f} ms (median); dispatches {total:.1f} ms of it ({len(ms)} dispatch functions, "
             f"{sum(n for _, n in ms.values()):.0f} calls); the rest is outside the dispatches: IREE zero-filling the "
             f"step's transient buffers before them (this tool runs the step without caller-kept transient storage, "
             f"which gir's training backend passes; see Levers run 7) and the host's part between submissions.", "",
             "| dispatch kind | functions | calls per step | ms per step | share of dispatch time |",
             "| --- | --- | --- | --- | --- |"]
    for k, (f, n, t) in sorted(kinds.items(), key=lambda kv: -kv[1][2]):
        lines.append(f"| {k} | {f} | {n:.0f} | {t:.1f} | {100 * t / total:.0f}% |")
    lines += ["", f"The {args.top} dispatch functions taking the most time per step (a function can serve several "
              "dispatches of the same shape):", "", "| dispatch | calls per step | ms per step | ms per call |",
              "| --- | --- | --- | --- |"]
    for name, (t, n) in sorted(ms.items(), key=lambda kv: -kv[1][0])[:args.top]:
        lines.append(f"| `{name.split('train_step_', 1)[-1]}` | {n:.0f} | {t:.2f} | {t / n:.2f} |")
    text = "\n".join(lines)
    publish(TITLE, text, args.write)


if __name__ == "__main__":
    main()
