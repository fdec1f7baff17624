"""Every net in nets/ (globbed: a new net file is picked up) trained for a few steps by three systems
in one process, interleaved, at the net's config batch and image size:

  1. gir -> IREE     gir's train step on IREE (gir.train.backend.IreeBackend, `default` pipeline: `gir bench`)
  2. gir -> JAX      the same train step through jax.jit (JaxBackend, `default_jax` pipeline)
  3. PyTorch eager   the net's layer graph op by op in PyTorch with torch.optim (bench/torch_graph.py)

Nets whose train step at the config's size is over BIG_GFLOP GFLOP also run at batch 8, 64x64 (or
batch 8 at their fixed input size, e.g. ViT-Tiny's 224x224). All three start from the same
parameters (gir.nn.params.init_params) and step on the same random batch with the config's optimizer
and learning rate. The first step's losses must agree to AGREE (relative); a mismatch is flagged.
Then rounds in which each system takes a turn, the order rotating: `--steps` rounds, fewer
(at least MIN_ROUNDS) where a round would take the case past `--budget` seconds. A turn is one timed
step where steps take TURN_S or more; shorter steps run in bursts, as a training loop runs them: an
untimed lead-in step, then enough steps back to back to fill TURN_S, timed together (a runtime's first
step after an idle pause pays its thread pool's wake-up, a few ms, which would dominate a 3 ms step). Reported: median,
min and max ms per step; the faster peer's median over gir -> IREE's (>= 1 means gir -> IREE is at
least as fast as both); GFLOP/s from one FLOP count for all systems (gir.bench.step_flops of the
IREE module's primitive graph) and their share of this machine's float32 peak (bench/peak.py);
gir's front-end and iree-compile seconds (a fresh IREE cache: real compiles) and JAX's first step
(its jit compile).

    pip install -e '.[bench]'      # PyTorch
    python3 bench/catalogue.py [--nets mlp,mobilenet_v2] [--steps 10] [--budget 20] [--write]

--write replaces this script's section of docs/performance.md (bench/report.py).
"""
from __future__ import annotations

import argparse
import gc
import glob
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from peak import measure_peaks
from peers import gir_commit, label
from report import machine_line, publish

from gir.netfile import load_net_file
from gir.nn.net import Net
from gir.train.config import TrainConfig

TITLE = "## Catalogue: every net's train step against its peers (bench/catalogue.py)"
NETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nets")
SYSTEMS = ("gir -> IREE", "gir -> JAX", "PyTorch eager")
IREE, JAX, TORCH = SYSTEMS
BIG_GFLOP = 10.0          # a train step above this at the config's size is also run at EXTRA_BATCH, EXTRA_IMAGE
EXTRA_BATCH, EXTRA_IMAGE = 8, 64
WARMUP = 2                # untimed steps per system; their losses are the agreement check
MIN_ROUNDS = 3
AGREE = 1e-3              # relative first-step loss difference above which a row is flagged
PAUSE_S = 0.02            # between two systems' turns, so one runtime's spinning threads do not slow the next
TURN_S = 0.2              # steps shorter than this are timed in bursts of consecutive steps filling it
MAX_BURST = 50


def log(msg: str) -> None:
    print(f"[catalogue {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class System:
    """One system at one shape: how to build its runner, then what it measured."""
    name: str
    build: Callable[[], object]
    runner: object | None = None
    setup_s: float | None = None
    warm_s: list[float] = field(default_factory=list)  # the warm-up steps' seconds (the first includes JAX's jit)
    losses: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # ms
    error: str | None = None

    def step(self, data: tuple[np.ndarray, np.ndarray], lr: float) -> float:
        return self.runner.step(*data, lr, len(self.losses) + 1).loss

    def record(self) -> dict:
        return {"name": self.name, "setup_s": self.setup_s, "warm_s": self.warm_s, "losses": self.losses,
                "times": self.times, "error": self.error}


# ---- which nets at which shapes ---------------------------------------------------------------

def net_files(only: str | None) -> list[str]:
    """nets/*.py, restricted to the comma-separated stems in `only`."""
    files = sorted(glob.glob(os.path.join(NETS, "*.py")))
    if only:
        want = {n.strip().removesuffix(".py") for n in only.split(",") if n.strip()}
        unknown = want - {os.path.basename(f)[:-3] for f in files}
        if unknown:
            raise SystemExit(f"catalogue.py: no net {', '.join(sorted(unknown))} in nets/")
        files = [f for f in files if os.path.basename(f)[:-3] in want]
    return files


def extra_image(net: Net) -> int:
    """EXTRA_IMAGE, or the net's own size when its input size is fixed."""
    fixed = [d for d in net.input_type.shape[2:] if isinstance(d, int)]
    return fixed[0] if fixed else EXTRA_IMAGE


# ---- one net at one shape ----------------------------------------------------------------------

def set_up(s: System, init: dict[str, np.ndarray], data: tuple[np.ndarray, np.ndarray], lr: float) -> None:
    """Builds (timed), loads the common initial values and runs the warm-up steps; a failure is kept."""
    try:
        t0 = time.perf_counter()
        s.runner = s.build()
        s.setup_s = time.perf_counter() - t0
        s.runner.load(init)
        for _ in range(WARMUP):
            t0 = time.perf_counter()
            s.losses.append(s.step(data, lr))
            s.warm_s.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 (a system that fails is reported, not fatal)
        s.error = first_line(e)
        traceback.print_exc(file=sys.stderr)
        s.runner = None


def burst_for(live: list[System]) -> int:
    """Timed steps per turn: 1 where the fastest system's warm step takes TURN_S or more, else enough of its steps
    to fill TURN_S (at most MAX_BURST); the same for every system, so each runs the same work per turn."""
    fastest = min(s.warm_s[-1] for s in live)
    return 1 if fastest >= TURN_S else min(MAX_BURST, math.ceil(TURN_S / fastest))


def rounds_for(live: list[System], burst: int, steps: int, budget: float) -> int:
    """`steps`, or fewer (not under MIN_ROUNDS) where rounds at the last warm-up steps' pace overrun `budget` s."""
    per_turn = burst + (burst > 1)
    return max(MIN_ROUNDS, min(steps, int(budget / sum(s.warm_s[-1] * per_turn + PAUSE_S for s in live))))


def interleave(live: list[System], rounds: int, burst: int, data: tuple[np.ndarray, np.ndarray], lr: float) -> None:
    """`rounds` rounds of one turn per system, the order rotating each round; a turn's time per step is recorded
    (with `burst` > 1, after an untimed lead-in step)."""
    for r in range(rounds):
        for s in live[r % len(live):] + live[:r % len(live)]:
            if burst > 1:
                s.losses.append(s.step(data, lr))
            t0 = time.perf_counter()
            for _ in range(burst):
                s.losses.append(s.step(data, lr))
            s.times.append(1e3 * (time.perf_counter() - t0) / burst)
            time.sleep(PAUSE_S)


def sizes(net: Net, size: int) -> dict[str, int | None]:
    """`size` as the image size of an image net or the sequence length of a sequence net."""
    tokens = net.input_name == "tokens"
    return {"image": None if tokens else size, "seq": size if tokens else None}


def case_label(case: dict) -> str:
    return label(case["batch"], case["image"]) if case.get("seq") is None else f"b{case['batch']} @ T={case['seq']}"


def measure_case(net: Net, config: TrainConfig, batch: int, size: int, steps: int, budget: float) -> dict:
    """One net at one shape: gir's front end, the three systems set up, checked and stepped in rounds."""
    import jax
    from torch_graph import TorchGraphBackend

    from gir.bench import random_batch, step_flops
    from gir.nn.params import init_params
    from gir.rewrite import pipeline_for_backend
    from gir.train.backend import IreeBackend, JaxBackend
    from gir.train.step import lower_train_step

    shape = sizes(net, size)
    cfg = config.replace(batch_size=batch, **({"seq_len": size} if shape["seq"] else {"image_size": size}))
    case = {"net": net.name, "batch": batch, **shape, "optimizer": cfg.optimizer, "lr": cfg.learning_rate}
    where = f"{net.name} {case_label(case)}"
    log(f"{where}: gir front end")
    t0 = time.perf_counter()
    mod = lower_train_step(net, cfg, batch=batch, **shape, passes=pipeline_for_backend("default", "iree"))
    case["front_s"] = time.perf_counter() - t0
    case["flops"] = step_flops(mod.primitive)

    def jax_runner() -> JaxBackend:
        return JaxBackend(lower_train_step(net, cfg, batch=batch, **shape,
                                           passes=pipeline_for_backend("default", "jax")), None)

    systems = [System(IREE, lambda: IreeBackend(mod, None, "cpu")), System(JAX, jax_runner),
               System(TORCH, lambda: TorchGraphBackend(net, cfg, batch, **shape))]
    init = init_params(mod.primitive, cfg.seed)
    data = random_batch(mod.primitive, net.num_classes, np.random.default_rng(cfg.seed))
    for s in systems:
        log(f"{where}: set up {s.name}")
        set_up(s, init, data, cfg.learning_rate)
        log(f"  {s.name}: " + (f"FAILED: {s.error}" if s.error else f"set-up {s.setup_s:.1f} s, warm-up steps "
                               f"{', '.join(f'{x:.2f}' for x in s.warm_s)} s, losses "
                               f"{', '.join(f'{x:.5f}' for x in s.losses)}"))
    if systems[2].runner is not None:
        systems[2].runner.native_random = True   # timed with torch's own dropout masks, as a PyTorch user's net
    live = [s for s in systems if s.error is None]
    case["burst"] = burst_for(live) if live else 1
    case["rounds"] = rounds_for(live, case["burst"], steps, budget) if live else 0
    log(f"{where}: {case['rounds']} rounds of {case['burst']} timed steps per turn")
    interleave(live, case["rounds"], case["burst"], data, cfg.learning_rate)
    case["systems"] = [s.record() for s in systems]
    for s in systems:
        s.runner = None
    gc.collect()
    jax.clear_caches()
    return case


def run_case(net: Net, config: TrainConfig, batch: int, size: int, steps: int, budget: float) -> dict:
    """measure_case, or the error that stopped gir's front end."""
    try:
        return measure_case(net, config, batch, size, steps, budget)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        return {"net": net.name, "batch": batch, **sizes(net, size), "error": first_line(e)}


def measure_net(net: Net, config: TrainConfig, steps: int, budget: float) -> list[dict]:
    """The net at its config's batch and image size (or sequence length) and, when that step is big, at the extra
    shape (image nets)."""
    own = config.seq_len if net.input_name == "tokens" else config.image_size
    cases = [run_case(net, config, config.batch_size, own, steps, budget)]
    extra = (EXTRA_BATCH, extra_image(net))
    if net.input_name == "images" and cases[0].get("flops", 0) > BIG_GFLOP * 1e9 and extra != (config.batch_size, own):
        cases.append(run_case(net, config, *extra, steps, budget))
    return cases


def measure(args: argparse.Namespace) -> dict:
    """Every case, with the peak measured before and after (the best of both is kept)."""
    try:
        import torch
    except ImportError:
        raise SystemExit("catalogue.py: PyTorch is missing; pip install -e '.[bench]'") from None
    torch.set_num_threads(os.cpu_count())
    nets = [load_net_file(f) for f in net_files(args.nets)]  # a broken net file stops the run before it starts
    start = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="gir-catalogue-iree-")
    os.environ["GIR_CACHE_DIR"] = cache  # a fresh IREE cache: every iree-compile time is a real compile
    try:
        log("measuring the float32 peak (bench/peak.py)")
        peaks = measure_peaks()
        cases = [case for net, config in nets for case in measure_net(net, config, args.steps, args.budget)]
        log("measuring the peak again")
        peaks = {k: max(v, peaks.get(k, 0.0)) for k, v in measure_peaks().items()}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    wall = time.perf_counter() - start
    log(f"done in {wall / 60:.1f} min")
    return {"machine": machine_line(f"CPU {cpu_model()}"), "versions": versions(), "commit": gir_commit(),
            "wall_s": wall, "peaks": peaks, "steps": args.steps, "budget": args.budget, "cases": cases}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's word for it."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"
    return f"IREE {one('iree-base-compiler')}, JAX {one('jax')}, PyTorch {one('torch')}"


# ---- report ------------------------------------------------------------------------------------

def ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def medians(case: dict) -> dict[str, float | None]:
    return {s["name"]: statistics.median(s["times"]) if s["times"] else None for s in case["systems"]}


def disagreement(case: dict) -> float | None:
    """The largest relative difference of a first-step loss from the first system's (gir -> IREE's)."""
    losses = [s["losses"][0] for s in case["systems"] if s["losses"]]
    if len(losses) < 2:
        return None
    return max(abs(x - losses[0]) / max(abs(losses[0]), 1e-12) for x in losses[1:])


def agree_cell(case: dict) -> str:
    d = disagreement(case)
    return "n/a" if d is None else f"yes ({d:.0e})" if d <= AGREE else f"**NO** ({d:.1e})"


def summary_row(case: dict, peak: float) -> str:
    """Medians, the faster peer over gir -> IREE, GFLOP/s and share of the peak, front end and compile."""
    head = f"| {case['net']} | {case_label(case)} |"
    if "error" in case:
        return f"{head} failed: {case['error']} |" + " |" * 9
    med, flops = medians(case), case["flops"]
    peers = [m for n, m in med.items() if n != IREE and m]
    ratio = f"{min(peers) / med[IREE]:.2f}" if peers and med[IREE] else "n/a"
    rates = " / ".join(f"{flops / m / 1e6:.1f} ({flops / m / 1e4 / peak:.1f}%)" if m else "-" for m in med.values())
    compile_s = case["systems"][0]["setup_s"]
    return (f"{head} {flops / 1e9:.2f} | " + " | ".join(ms(m) if m else "failed" for m in med.values())
            + f" | {ratio} | {rates} | {case['front_s']:.2f} | "
            + (f"{compile_s:.1f}" if compile_s is not None else "failed") + f" | {agree_cell(case)} |")


def detail_row(case: dict) -> str:
    """Spread, set-up times, JAX's jit and the warm-up losses of every system."""
    def each(fn: Callable[[dict], str]) -> str:
        return " / ".join("-" if s["error"] else fn(s) for s in case["systems"])

    jax_warm = {s["name"]: s["warm_s"] for s in case["systems"]}[JAX]
    return (f"| {case['net']} | {case_label(case)} | {case['optimizer']} {case['lr']:g} | "
            f"{case['rounds']} x {case.get('burst', 1)} | "
            + each(lambda s: f"{ms(min(s['times']))}-{ms(max(s['times']))}")
            + " | " + each(lambda s: f"{s['setup_s']:.1f}") + " | "
            + (f"{jax_warm[0]:.1f}" if jax_warm else "-") + " | "
            + " | ".join(each(lambda s, i=i: f"{s['losses'][i]:.5f}") for i in range(WARMUP)) + " |")


def table(header: list[str], rows: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *rows]


def intro(run: dict) -> str:
    """What was run, how, on what: the section's first paragraph."""
    peaks, steps = run["peaks"], run["steps"]
    capped = [f"{c['net']} {case_label(c)}: {c['rounds']}" for c in run["cases"]
              if c.get("rounds", steps) < steps]
    return (
        f"{run['machine']}; gir at {run['commit']}; {run['versions']}; run time {run['wall_s'] / 60:.1f} min. "
        f"Every net in nets/ at its config's batch and image size, and the nets whose train step there is over "
        f"{BIG_GFLOP:g} GFLOP also at batch {EXTRA_BATCH}, {EXTRA_IMAGE}x{EXTRA_IMAGE} (batch {EXTRA_BATCH} at "
        "their own size where the input size is fixed). Three systems train each net from the same initial values "
        "on the same random batch with the config's optimizer and learning rate (no schedule), in one process: "
        "gir -> IREE (`IreeBackend`, `default` pipeline: `gir bench`), gir -> JAX (`JaxBackend`, `default_jax`) "
        "and PyTorch eager (bench/torch_graph.py: the net's layer graph op by op in torch.nn.functional, batch "
        "norm by F.batch_norm in training mode with running statistics as nn.BatchNorm2d, F.pad first where gir's "
        "'same' padding is asymmetric; dropout and drop-path masks from gir's threefry generator op by op in the "
        "warm-up steps, so the first-step losses compare, and from torch's own generator in the timed rounds, "
        "as nn.Dropout draws them; torch.optim's optimizer for the config; "
        f"torch.set_num_threads({os.cpu_count()})). After {WARMUP} warm-up steps, rounds of one turn per system "
        f"(order rotating, {PAUSE_S * 1e3:.0f} ms pause between turns): one timed step per turn where the fastest "
        f"system's step takes {TURN_S * 1e3:.0f} ms or more; where it is shorter, an untimed lead-in step and then "
        f"enough steps back to back to fill {TURN_S * 1e3:.0f} ms (at most {MAX_BURST}, the same number for every "
        "system), timed together, as a training loop runs them (a step after an idle pause pays the runtime's "
        f"thread wake-up, a few ms; see \"The smallest nets\" below); {steps} rounds"
        + (f", fewer (at least {MIN_ROUNDS}) where they would take over {run['budget']:g} s" if steps > MIN_ROUNDS
           else "") + (f" ({'; '.join(capped)})" if capped else "") + ". GFLOP/s use one FLOP count for all systems, "
        "`gir.bench.step_flops` of gir's primitive train-step graph (2 x MACs of every convolution and dot, "
        "forward and backward), against this machine's float32 peak from bench/peak.py (start and end of the run, "
        "best of both: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + f" GFLOP/s; peak {max(peaks.values()):.0f}). Faster peer / IREE: the faster peer's median over "
        "gir -> IREE's (1 or more: gir -> IREE at least as fast as both). iree-compile s: gir's module with a "
        "fresh cache, including any tries IREE rejected before a CPU flag set it accepts (the fallback in "
        "gir/lower/iree_compile.py, as `gir bench` and `gir train` pay it). First-step losses (the forward "
        "pass) must agree to "
        f"{AGREE:g} relative; second-step losses also show the update, where rounding differences can flip an "
        "activation at a ReLU6 clamp or grow through a batch norm over few values, so they may differ more. "
        "Run: `pip install -e '.[bench]'` (PyTorch), then `python3 bench/catalogue.py --write` "
        "(`--nets a,b` for some nets).")


def render(run: dict) -> str:
    cases, peak = run["cases"], max(run["peaks"].values())
    text = [TITLE, "", intro(run), ""]
    text += table(["net", "shape", "GFLOP / step", *(f"{n} ms" for n in SYSTEMS), "faster peer / IREE",
                   "GFLOP/s (% of peak): IREE / JAX / PyTorch", "gir front end s", "iree-compile s",
                   "first-step losses agree"], [summary_row(c, peak) for c in cases])
    ok = [c for c in cases if "error" not in c]
    text += [""] + table(["net", "shape", "optimizer, lr", "rounds x timed steps per turn",
                          "min-max ms: IREE / JAX / PyTorch",
                          "set-up s: IREE (iree-compile) / JAX (lowering) / PyTorch", "JAX first step s (jit)",
                          "first-step loss: IREE / JAX / PyTorch", "second-step loss: IREE / JAX / PyTorch"],
                         [detail_row(c) for c in ok])
    failures = [f"{c['net']} {case_label(c)} {s['name']}: {s['error']}"
                for c in ok for s in c["systems"] if s["error"]]
    return "\n".join(text + (["", "Failures: " + "; ".join(failures) + "."] if failures else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", help="comma-separated net names (files in nets/); default: all")
    ap.add_argument("--steps", type=int, default=10, help="timed interleaved rounds per case (default 10)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help=f"seconds of rounds per case, beyond which rounds are cut (not below {MIN_ROUNDS}); "
                         "default 20")
    ap.add_argument("--write", action="store_true", help="replace this script's section of docs/performance.md")
    args = ap.parse_args()
    publish(TITLE, render(measure(args)), args.write)


if __name__ == "__main__":
    main()
