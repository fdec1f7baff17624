"""MobileNetV2's train step (10 classes, NCHW, f32, BN in train mode, label-smoothed cross-entropy,
backward, AdamW) against its peers, in one run and interleaved:

  1. gir -> IREE cpu          (gir's train_step.mlir, gir.train.backend.IreeBackend, as `gir bench`)
  2. gir -> JAX backend       (the same net through jax.jit, gir.train.backend.JaxBackend, default_jax passes)
  3. JAX jit                  (MobileNetV2 written below in jax.numpy / jax.lax, XLA CPU)
  4. JAX -> IREE              (that JAX step lowered to StableHLO text, compiled by the same IREE)
  5. PyTorch eager            (MobileNetV2 written below in torch.nn, torch.optim.AdamW)

For each shape every system is set up (front end, compiles) and warmed up (2 steps; the first
step's loss is kept as a sanity check), then `--steps` rounds run in which every system does one
step in turn (the order rotates each round). Reported per system: median, min and max ms per step,
GFLOP/s (the FLOP count of gir's primitive graph, `gir.bench.step_flops`, used for every system)
and its share of this machine's peak (the best float32 2048^3 matmul of numpy, JAX and PyTorch).
Also gir's front-end time, module sizes, iree-compile times of gir's and JAX's text, and, after
the rounds, `gir.bench.bench_train_step` (what `gir bench --json` prints) for gir's two rows.

    python3 bench/peers.py [--shapes b8@64,b32@64,b8@224] [--steps 10] [--steps-224 N] [--write]
                           [--save RAW.json] [--render RAW.json] [--no-gir-bench] [--no-torch-1thread]

About 15-20 minutes on 2 cores with the defaults (iree-compile of each shape's two modules is most of it).

PyTorch is the `bench` extra (pip install -e '.[bench]'), not a dependency of gir.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import numpy as np
from report import machine_line, publish

NET = os.path.join(os.path.dirname(__file__), "..", "nets", "mobilenet_v2.py")
TITLE = "## Train step against peers (bench/peers.py)"
DEFAULT_SHAPES = "b8@64,b32@64,b8@224"
SYSTEMS = ("gir -> IREE", "gir -> JAX backend", "JAX jit", "JAX -> IREE", "PyTorch eager", "PyTorch eager, 1 thread")
GIR = SYSTEMS[0]

# The recipe, the same for every system.
LR, WD, BETA1, BETA2, EPS, SMOOTH, BN_EPS, BN_MOMENTUM, CLASSES = 1e-3, 0.05, 0.9, 0.999, 1e-8, 0.1, 1e-5, 0.1, 10
# MobileNetV2: stem 3->32 stride 2, then (expansion t, channels c, blocks n, first stride s), head 1x1 -> 1280.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
WARMUP = 2
PAUSE_S = 0.02  # between two systems' steps, so one runtime's spinning worker threads do not eat into the next


def log(msg: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def blocks():
    """(in channels, out channels, expansion, stride) of every inverted-residual block."""
    ic = 32
    for t, c, n, s in STAGES:
        for i in range(n):
            yield ic, c, t, (s if i == 0 else 1)
            ic = c


def parse_shapes(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        b, _, s = part.strip().lower().partition("@")
        s = s.split("x")[0]
        if not b.startswith("b") or not s:
            raise SystemExit(f"peers.py: bad shape {part!r}; write e.g. b8@64 or b8@224x224")
        out.append((int(b[1:]), int(s)))
    return out


def label(batch: int, image: int) -> str:
    return f"b{batch} @ {image}x{image}"


# ---- peak ---------------------------------------------------------------------------------------

def measure_peak(n: int = 2048, reps: int = 8) -> dict[str, float]:
    """Best-of-`reps` GFLOP/s of an n x n x n float32 matmul in numpy, JAX and PyTorch."""
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jdot = jax.jit(jnp.dot)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    runs = {"numpy": lambda: a @ b, "jax": lambda: jdot(ja, jb).block_until_ready(), "torch": lambda: ta @ tb}
    out = {}
    for name, fn in runs.items():
        fn()
        best = min(_timed(fn) for _ in range(reps))
        out[name] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---- the hand-written JAX MobileNetV2 -----------------------------------------------------------

def jax_init(seed: int = 0) -> tuple[dict, dict]:
    """Parameters (He-normal convs, PyTorch-default dense, BN gamma 1 / beta 0) and BN running stats."""
    rng = np.random.default_rng(seed)
    params, stats = {}, {}

    def conv_bn(name: str, oc: int, icg: int, k: int) -> None:
        params[f"{name}.w"] = (rng.standard_normal((oc, icg, k, k)) * math.sqrt(2.0 / (icg * k * k))).astype(np.float32)
        params[f"{name}.gamma"] = np.ones(oc, np.float32)
        params[f"{name}.beta"] = np.zeros(oc, np.float32)
        stats[f"{name}.mean"] = np.zeros(oc, np.float32)
        stats[f"{name}.var"] = np.ones(oc, np.float32)

    conv_bn("stem", 32, 3, 3)
    for i, (ic, oc, t, _) in enumerate(blocks()):
        hidden = ic * t
        if t != 1:
            conv_bn(f"b{i:02d}.expand", hidden, ic, 1)
        conv_bn(f"b{i:02d}.dw", hidden, 1, 3)
        conv_bn(f"b{i:02d}.project", oc, hidden, 1)
    conv_bn("head", 1280, 320, 1)
    bound = 1280 ** -0.5
    params["fc.w"] = rng.uniform(-bound, bound, (1280, CLASSES)).astype(np.float32)
    params["fc.b"] = rng.uniform(-bound, bound, CLASSES).astype(np.float32)
    return params, stats


def jax_step_fn():
    """step(state, t, lr, images, labels) -> (state', loss), state = (params, bn stats, adam m, adam v)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv_bn(p, stats, new_stats, name, x, stride=1, groups=1, act=True):
        y = lax.conv_general_dilated(x, p[f"{name}.w"], (stride, stride), "SAME",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)
        mean = jnp.mean(y, axis=(0, 2, 3))
        centered = y - mean[None, :, None, None]
        var = jnp.mean(centered * centered, axis=(0, 2, 3))
        y = centered * (lax.rsqrt(var + BN_EPS) * p[f"{name}.gamma"])[None, :, None, None] \
            + p[f"{name}.beta"][None, :, None, None]
        count = y.size // y.shape[1]
        m, v = lax.stop_gradient(mean), lax.stop_gradient(var) * (count / (count - 1))
        new_stats[f"{name}.mean"] = (1 - BN_MOMENTUM) * stats[f"{name}.mean"] + BN_MOMENTUM * m
        new_stats[f"{name}.var"] = (1 - BN_MOMENTUM) * stats[f"{name}.var"] + BN_MOMENTUM * v
        return jnp.clip(y, 0.0, 6.0) if act else y

    def loss_fn(p, stats, images, labels):
        new_stats = {}
        x = conv_bn(p, stats, new_stats, "stem", images, stride=2)
        for i, (ic, oc, t, s) in enumerate(blocks()):
            y = x
            if t != 1:
                y = conv_bn(p, stats, new_stats, f"b{i:02d}.expand", y)
            y = conv_bn(p, stats, new_stats, f"b{i:02d}.dw", y, stride=s, groups=ic * t)
            y = conv_bn(p, stats, new_stats, f"b{i:02d}.project", y, act=False)
            x = x + y if s == 1 and ic == oc else y
        x = conv_bn(p, stats, new_stats, "head", x)
        logits = jnp.mean(x, axis=(2, 3)) @ p["fc.w"] + p["fc.b"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = jax.nn.one_hot(labels, CLASSES) * (1 - SMOOTH) + SMOOTH / CLASSES
        return -jnp.mean(jnp.sum(target * logp, axis=-1)), new_stats

    def step(state, t, lr, images, labels):
        params, stats, m, v = state
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, images, labels)
        tf = t.astype(jnp.float32)
        c1, c2 = 1 / (1 - BETA1 ** tf), 1 / (1 - BETA2 ** tf)
        m = jax.tree_util.tree_map(lambda m, g: BETA1 * m + (1 - BETA1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: BETA2 * v + (1 - BETA2) * g * g, v, grads)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m * c1 / (jnp.sqrt(v * c2) + EPS) + WD * p), params, m, v)
        return (params, new_stats, m, v), loss

    return step


# ---- the PyTorch MobileNetV2 --------------------------------------------------------------------

def torch_model():
    import torch
    from torch import nn

    def conv_bn(ic, oc, k=1, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(ic, oc, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(oc, eps=BN_EPS, momentum=BN_MOMENTUM)]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, ic, oc, t, stride):
            super().__init__()
            hidden = ic * t
            self.residual = stride == 1 and ic == oc
            self.body = nn.Sequential(*([conv_bn(ic, hidden)] if t != 1 else []),
                                      conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                      conv_bn(hidden, oc, act=False))

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 32, 3, 2), *(Block(*b) for b in blocks()), conv_bn(320, 1280))
            self.fc = nn.Linear(1280, CLASSES)
            for mod in self.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")

        def forward(self, x):
            return self.fc(torch.mean(self.features(x), dim=(2, 3)))

    torch.manual_seed(0)
    return MobileNetV2()


# ---- the five systems -----------------------------------------------------------------------------

class System:
    """One system at one shape: `setup()` builds and compiles, `step()` runs one train step and
    returns its loss (read back to the host)."""

    def __init__(self, name: str):
        self.name = name
        self.info: dict = {}
        self.times: list[float] = []
        self.losses: list[float] = []
        self.error: str | None = None

    def setup(self) -> None:
        raise NotImplementedError

    def step(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class GirSystem(System):
    def __init__(self, name, backend, ctx):
        super().__init__(name)
        self.backend, self.ctx, self.t = backend, ctx, 0

    def setup(self):
        from gir.train.backend import IreeBackend, JaxBackend
        mod = self.ctx["mod" if self.backend == "iree" else "mod_jax"]
        t0 = time.perf_counter()
        self.runner = IreeBackend(mod, None, "cpu") if self.backend == "iree" else JaxBackend(mod, None)
        self.info["setup_s"] = time.perf_counter() - t0
        self.runner.load(self.ctx["init"])

    def step(self):
        self.t += 1
        return self.runner.step(self.ctx["images"], self.ctx["labels"], LR, self.t).loss

    def close(self):
        self.runner = None


class JaxJitSystem(System):
    def __init__(self, ctx):
        super().__init__("JAX jit")
        self.ctx, self.t = ctx, 0

    def setup(self):
        import jax
        t0 = time.perf_counter()
        lowered = jax.jit(jax_step_fn()).lower(*self.ctx["jax_args"](1))
        self.ctx["jax_lowered"] = lowered
        self.fn = lowered.compile()
        self.info["setup_s"] = time.perf_counter() - t0
        self.state = jax.device_put(self.ctx["jax_state"])

    def step(self):
        self.t += 1
        self.state, loss = self.fn(self.state, np.int32(self.t), np.float32(LR), self.ctx["images"],
                                   self.ctx["labels"])
        return float(loss)

    def close(self):
        self.fn = self.state = None


class JaxIreeSystem(System):
    def __init__(self, ctx):
        super().__init__("JAX -> IREE")
        self.ctx, self.t = ctx, 0

    def setup(self):
        import jax

        from gir.lower.iree_compile import compile_text
        from gir.lower.iree_runtime import IreeSession
        lowered = self.ctx.get("jax_lowered")
        if lowered is None:
            lowered = jax.jit(jax_step_fn()).lower(*self.ctx["jax_args"](1))
        t0 = time.perf_counter()
        text = lowered.as_text(dialect="stablehlo")
        self.info["export_s"] = time.perf_counter() - t0
        self.info["chars"] = len(text)
        t0 = time.perf_counter()
        vmfb = compile_text(text, "cpu", use_cache=False)
        self.info["compile_s"] = time.perf_counter() - t0
        self.info["vmfb_bytes"] = len(vmfb)
        self.info["setup_s"] = self.info["export_s"] + self.info["compile_s"]
        self.session = IreeSession(vmfb, "cpu")
        self.fname = next(n for n in ("main", "jit_step") if self._has(n))
        leaves = jax.tree_util.tree_leaves(self.ctx["jax_state"])
        self.n_state = len(leaves)
        self.state = [self.session.to_device(np.asarray(a)) for a in leaves]

    def _has(self, name):
        try:
            self.session.function(name)
            return True
        except KeyError:
            return False

    def step(self):
        self.t += 1
        feed = [self.session.to_device(a) for a in (np.int32(self.t), np.float32(LR), self.ctx["images"],
                                                    self.ctx["labels"])]
        out = self.session.call(self.fname, *self.state, *feed)
        self.state = out[:self.n_state]
        return float(np.asarray(out[self.n_state].to_host()))

    def close(self):
        self.session = self.state = None


class TorchSystem(System):
    """threads: os.cpu_count() for the peer itself; 1 for a diagnostic row (OpenMP's barriers suffer most
    when another process takes a core)."""

    def __init__(self, ctx, threads: int):
        super().__init__("PyTorch eager" if threads == os.cpu_count() else f"PyTorch eager, {threads} thread"
                         + ("s" if threads > 1 else ""))
        self.ctx, self.threads = ctx, threads

    def setup(self):
        import torch
        self.torch = torch
        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        self.model = torch_model().train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD)
        self.crit = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTH)
        self.x = torch.from_numpy(self.ctx["images"])
        self.y = torch.from_numpy(self.ctx["labels"].astype(np.int64))
        self.info["setup_s"] = time.perf_counter() - t0
        self.info["threads"] = torch.get_num_threads()

    def step(self):
        self.torch.set_num_threads(self.threads)  # the setting is per process; the other torch row changes it
        self.opt.zero_grad(set_to_none=True)
        loss = self.crit(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def close(self):
        self.model = self.opt = None


# ---- one shape --------------------------------------------------------------------------------------

def gir_config(batch: int, image: int):
    """MobileNetV2's net and the recipe above as gir's TrainConfig at one shape."""
    from gir.netfile import load_net_file
    net, cfg = load_net_file(NET)
    return net, cfg.replace(optimizer="adamw", weight_decay=WD, label_smoothing=SMOOTH, clip_norm=0.0, beta1=BETA1,
                            beta2=BETA2, eps=EPS, batch_size=batch, image_size=image, bf16=False, bf16_conv=False)


def step_inputs(batch: int, image: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The batch every system steps on (random images and labels, seed 0) and the JAX model's
    state: (params, BN stats, AdamW first and second moments)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, image, image)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch).astype(np.int32)
    params, stats = jax_init(0)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    return images, labels, (params, stats, zeros, {k: z.copy() for k, z in zeros.items()})


def measure_shape(batch: int, image: int, steps: int, gir_bench: bool, torch_1t: bool) -> dict:
    import jax

    from gir.bench import bench_train_step, step_flops
    from gir.nn.params import init_params
    from gir.rewrite import pipeline_for_backend
    from gir.train.step import lower_train_step

    net, cfg = gir_config(batch, image)
    load0 = os.getloadavg()[0]
    log(f"{label(batch, image)}: gir front end (load average {load0:.2f})")
    t0 = time.perf_counter()
    mod = lower_train_step(net, cfg, batch=batch, image=image)
    front = time.perf_counter() - t0
    images, labels, jax_state = step_inputs(batch, image)
    mod_jax = lower_train_step(net, cfg, batch=batch, image=image, passes=pipeline_for_backend("default", "jax"))
    ctx = {"mod": mod, "mod_jax": mod_jax, "init": init_params(mod.primitive, cfg.seed), "images": images,
           "labels": labels,
           "jax_state": jax_state,
           "jax_args": lambda t: (jax_state, np.int32(t), np.float32(LR), images, labels)}
    flops = step_flops(mod.primitive)
    systems = [GirSystem(GIR, "iree", ctx), GirSystem("gir -> JAX backend", "jax", ctx), JaxJitSystem(ctx),
               JaxIreeSystem(ctx), TorchSystem(ctx, os.cpu_count())]
    if torch_1t:
        systems.append(TorchSystem(ctx, 1))
    live = []
    for s in systems:
        log(f"{label(batch, image)}: set up {s.name}")
        try:
            s.setup()
            for _ in range(WARMUP):
                t0 = time.perf_counter()
                s.losses.append(s.step())
                s.info.setdefault("first_step_s", time.perf_counter() - t0)
            live.append(s)
            log(f"  {s.name}: setup {s.info.get('setup_s', 0):.1f} s, first step {s.info['first_step_s']:.2f} s, "
                f"losses {', '.join(f'{x:.4f}' for x in s.losses)}")
        except Exception as e:  # noqa: BLE001 (a peer that fails is reported, not fatal)
            s.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:400]
            log(f"  {s.name} FAILED: {s.error}")
            traceback.print_exc(file=sys.stderr)
            s.close()
    for r in range(steps):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for s in order:
            t0 = time.perf_counter()
            s.losses.append(s.step())
            s.times.append(1e3 * (time.perf_counter() - t0))
            time.sleep(PAUSE_S)
        log(f"{label(batch, image)}: round {r + 1}/{steps}: "
            + ", ".join(f"{s.name} {s.times[-1]:.0f} ms" for s in live))
    for s in systems:
        s.close()
    gc.collect()
    jax.clear_caches()
    bench = {}
    if gir_bench:
        for backend in ("iree", "jax"):
            log(f"{label(batch, image)}: gir.bench.bench_train_step backend={backend}, {steps} steps")
            try:
                bench[backend] = bench_train_step(net, cfg, batch, image, backend=backend, steps=steps,
                                                  warmup=WARMUP).to_dict()
            except Exception as e:  # noqa: BLE001
                bench[backend] = {"error": f"{type(e).__name__}: {e}"[:400]}
            gc.collect()
        jax.clear_caches()
    return {"batch": batch, "image": image, "flops": flops, "load": (load0, os.getloadavg()[0]), "front_s": front, "gir_chars": len(mod.text),
            "gir_ops": len(mod.primitive.nodes), "bench": bench,
            "systems": [{"name": s.name, "info": s.info, "times": s.times, "losses": s.losses, "error": s.error}
                        for s in systems]}


# ---- report -----------------------------------------------------------------------------------------

def ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def stats_of(s: dict) -> dict | None:
    if s["error"] or not s["times"]:
        return None
    t = s["times"]
    return {"median": statistics.median(t), "min": min(t), "max": max(t)}


def shape_section(r: dict, peak: float) -> list[str]:
    by = {s["name"]: s for s in r["systems"]}
    gir = stats_of(by[GIR])
    lines = [f"### {label(r['batch'], r['image'])}: {r['flops'] / 1e9:.2f} GFLOP per step", "",
             ("| system | median ms | min ms | max ms | GFLOP/s | % of peak | ms / gir -> IREE ms | set-up s | "
              "first-step loss |"), "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in (n for n in SYSTEMS if n in by):
        s = by[name]
        st = stats_of(s)
        setup = s["info"].get("setup_s")
        setup_txt = f"{setup:.1f}" if setup is not None else ""
        if name in ("gir -> JAX backend", "JAX jit") and "first_step_s" in s["info"]:
            setup_txt = (f"{setup:.1f} + " if setup and setup > 0.05 else "") + \
                f"{s['info']['first_step_s']:.1f} (first step)"
        if st is None:
            lines.append(f"| {name} | failed: {s['error']} | | | | | | {setup_txt} | |")
            continue
        gflops = r["flops"] / (st["median"] / 1e3) / 1e9
        ratio = f"{st['median'] / gir['median']:.2f}" if gir else ""
        lines.append(f"| {name} | {ms(st['median'])} | {ms(st['min'])} | {ms(st['max'])} | {gflops:.1f} | "
                     f"{100 * gflops / peak:.1f}% | {ratio} | {setup_txt} | {s['losses'][0]:.4f} |")
    for backend, name in (("iree", "`gir bench` (alone), IREE"), ("jax", "`gir bench` (alone), JAX backend")):
        b = r["bench"].get(backend)
        if b is None:
            continue
        if "error" in b:
            lines.append(f"| {name} | failed: {b['error']} | | | | | | | |")
            continue
        ratio = f"{b['median_ms'] / gir['median']:.2f}" if gir else ""
        lines.append(f"| {name} | {ms(b['median_ms'])} | {ms(b['min_ms'])} | {ms(b['max_ms'])} | {b['gflops']:.1f} | "
                     f"{100 * b['gflops'] / peak:.1f}% | {ratio} | "
                     f"{'cached' if backend == 'iree' else 'in first step'} | |")
    jx = by["JAX -> IREE"]["info"]
    warm = r["bench"].get("iree", {}).get("front_end_s")
    lines += ["", f"gir front end (build, differentiate, rewrite, print train_step.mlir): {r['front_s']:.2f} s"
                  + (f" (again in `gir bench`: {warm:.2f} s)" if warm else "") + "; "
                  f"train_step.mlir {r['gir_chars']:,} chars ({r['gir_ops']:,} ops) vs JAX's exported StableHLO "
                  + (f"{jx['chars']:,} chars" if "chars" in jx else "(not exported)") + "; iree-compile (llvm-cpu, host) "
                  f"of gir's text {by[GIR]['info'].get('setup_s', float('nan')):.1f} s vs JAX's "
                  + (f"{jx['compile_s']:.1f} s" if "compile_s" in jx else "(failed)") + "."]
    return lines


def summary(results: list[dict], peak: float) -> list[str]:
    head = "| system | " + " | ".join(label(r["batch"], r["image"]) for r in results) + " |"
    lines = ["Median ms per train step (all from this run):", "", head,
             "| --- |" + " --- |" * len(results)]
    present = [n for n in SYSTEMS if any(s["name"] == n for s in results[0]["systems"])]
    for name in present:
        cells = []
        for r in results:
            st = stats_of(next(s for s in r["systems"] if s["name"] == name))
            cells.append(ms(st["median"]) if st else "failed")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", ("Peer / gir -> IREE in the same run, median over median (and min over min, the figure least "
                   "moved by other processes on the machine); above 1 means gir -> IREE is faster:"), "", head,
              "| --- |" + " --- |" * len(results)]
    for name in present[1:]:
        cells = []
        for r in results:
            g = stats_of(next(s for s in r["systems"] if s["name"] == GIR))
            st = stats_of(next(s for s in r["systems"] if s["name"] == name))
            cells.append(f"{st['median'] / g['median']:.2f} ({st['min'] / g['min']:.2f})" if st and g else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| gir vs JAX export | " + " | ".join(label(r["batch"], r["image"]) for r in results) + " |",
              "| --- |" + " --- |" * len(results)]

    def row(title, fn):
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("n/a")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    info = lambda r, n: next(s for s in r["systems"] if s["name"] == n)["info"]
    row("gir front end s: first in process / again", lambda r: f"{r['front_s']:.2f} / "
        + (f"{r['bench']['iree']['front_end_s']:.2f}" if "front_end_s" in r["bench"].get("iree", {}) else "n/a"))
    row("module chars: gir / JAX", lambda r: f"{r['gir_chars']:,} / {info(r, 'JAX -> IREE')['chars']:,}")
    row("iree-compile s: gir / JAX", lambda r: f"{info(r, GIR)['setup_s']:.1f} / {info(r, 'JAX -> IREE')['compile_s']:.1f}")
    row(".vmfb bytes: JAX", lambda r: f"{info(r, 'JAX -> IREE')['vmfb_bytes']:,}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated bB@S (default {DEFAULT_SHAPES})")
    ap.add_argument("--steps", type=int, default=10, help="timed interleaved rounds per shape (default 10)")
    ap.add_argument("--steps-224", type=int, default=None,
                    help="rounds for shapes with images >= 224 (default: --steps)")
    ap.add_argument("--no-gir-bench", action="store_true", help="skip the separate bench_train_step runs")
    ap.add_argument("--no-torch-1thread", action="store_true", help="skip the 1-thread PyTorch diagnostic row")
    ap.add_argument("--save", metavar="FILE", help="also write the raw measurements as JSON")
    ap.add_argument("--render", metavar="FILE", help="measure nothing: render the report from a --save file")
    ap.add_argument("--write", action="store_true", help="replace this script's section of docs/performance.md")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            run = json.load(f)
    else:
        run = measure(args)
        if args.save:
            with open(args.save, "w") as f:
                json.dump(run, f, indent=1)
    out = render(run)
    publish(TITLE, out, args.write)


def measure(args) -> dict:
    shapes = parse_shapes(args.shapes)
    start = time.perf_counter()
    # A fresh IREE cache: both iree-compile times below are real compiles, not cache hits.
    cache = tempfile.mkdtemp(prefix="gir-peers-iree-")
    os.environ["GIR_CACHE_DIR"] = cache
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
        log("measuring the float32 matmul peak (2048^3, best of 8) with numpy, JAX and PyTorch")
        first_peaks = measure_peak()
        log("peak GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in first_peaks.items()))
        results = []
        for batch, image in shapes:
            n = args.steps_224 if (args.steps_224 and image >= 224) else args.steps
            results.append(measure_shape(batch, image, n, not args.no_gir_bench, not args.no_torch_1thread))
        log("measuring the matmul peak again (the best of both measurements is used)")
        last_peaks = measure_peak()
        log("peak GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in last_peaks.items()))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    wall = time.perf_counter() - start
    log(f"done in {wall / 60:.1f} min")

    import iree.compiler
    import jax
    versions = (f"JAX {jax.__version__}, PyTorch {torch.__version__}, IREE "
                f"{getattr(iree.compiler, '__version__', None) or _version('iree-base-compiler')}")
    return {"machine": machine_line(""), "versions": versions, "gir_commit": gir_commit(), "wall_s": wall,
            "cpus": os.cpu_count(),
            "peaks": {k: max(first_peaks[k], last_peaks[k]) for k in first_peaks}, "results": results}


def render(run: dict) -> str:
    results, peaks, wall = run["results"], run["peaks"], run["wall_s"]
    peak = max(peaks.values())
    step_txt = ", ".join(f"{len(next(s for s in r['systems'] if s['name'] == GIR)['times'])} at "
                         f"{label(r['batch'], r['image'])}" for r in results)
    text = [TITLE, "",
            run["machine"].rstrip(", ") + f", MobileNetV2 train step (10 classes, NCHW, f32, BN in train mode with "
            f"running-statistics update, label smoothing {SMOOTH}, AdamW lr {LR:g} wd {WD:g} eps {EPS:g}); "
            f"gir at {run.get('gir_commit', 'an unrecorded commit')}; {run['versions']}; run time {wall / 60:.1f} min.",
            "",
            "Five systems (and a sixth, diagnostic PyTorch row) in one process, one shape at a time: each is set "
            f"up and warmed up ({WARMUP} steps), then rounds in which every system runs one step in turn (order "
            f"rotating each round, {PAUSE_S * 1e3:.0f} ms pause between steps); rounds: {step_txt}. Every step "
            "uses the same random batch; parameters and optimizer state stay on the device between steps and the "
            "loss is read back every step. gir -> IREE and gir -> JAX backend are "
            "`gir.train.backend.IreeBackend`/`JaxBackend` on `lower_train_step` with each backend's default "
            "pipeline (`default`, `default_jax`: what `gir bench` and `gir train` run); the "
            "`gir bench` (alone) rows are `gir.bench.bench_train_step` run afterwards on its own (not "
            "interleaved). JAX jit and PyTorch eager are MobileNetV2 written in bench/peers.py (He-normal convs, "
            "PyTorch-default dense; PyTorch: torch.optim.AdamW defaults otherwise, "
            f"torch.set_num_threads({run['cpus']}); the 'PyTorch eager, 1 thread' row is a second copy at 1 "
            "thread, a diagnostic for a shared machine, where OpenMP's barriers wait on a descheduled thread); "
            "JAX -> IREE is that JAX step's `jax.jit(step).lower(...).as_text(dialect='stablehlo')` compiled by "
            "the same IREE as gir (`compile_text(text, 'cpu')`, llvm-cpu, target-cpu host) and run with "
            "`IreeSession`. GFLOP/s use one FLOP count for all systems: `gir.bench.step_flops` of gir's "
            "primitive graph (2 x MACs of every convolution and dot, forward and backward). Peak: best of 8 "
            "float32 2048x2048 @ 2048x2048 matmuls, measured at the start and again at the end of the run, best "
            "of both: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
            + f" GFLOP/s; the peak used is the best, {peak:.0f} GFLOP/s. Set-up is gir's iree-compile (gir -> "
            "IREE, fresh cache), JAX's export + iree-compile (JAX -> IREE), or jit compile and the first step. "
            "First-step losses differ because the initializations differ (same scheme, different draws); "
            "they are there to show every system computes a sane step. Other processes (test runs) may have "
            "shared this 2-core machine during the run, so absolute times are noisy; the ratios come from "
            "the same rounds. 1-minute load average at the start and end of each shape: "
            + "; ".join(f"{label(r['batch'], r['image'])} {r['load'][0]:.1f} -> {r['load'][1]:.1f}" for r in results)
            + ".", ""]
    text += summary(results, peak)
    for r in results:
        text += [""] + shape_section(r, peak)
    errors = [(r, s) for r in results for s in r["systems"] if s["error"]]
    if errors:
        text += ["", "Failures: " + "; ".join(f"{s['name']} at {label(r['batch'], r['image'])}: {s['error']}"
                                              for r, s in errors)]
    return "\n".join(text)


def gir_commit() -> str:
    """The checkout's commit, marked when gir/ or nets/ have uncommitted changes."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "gir", "nets"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"{head} (+ uncommitted changes in gir/ or nets/)" if dirty else head


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()
