"""`gir bench`: time a net's compiled train step (IREE or JAX) on random data, the way the loop
runs it (parameters and state resident on the device, the loss read back every step)."""
from __future__ import annotations

import statistics
import time

import attrs
import numpy as np

from gir.lower.iree_runtime import device_config
from gir.nn.net import Net
from gir.nn.params import init_params
from gir.rewrite import pipeline_for_backend
from gir.shapes.macs import node_macs
from gir.ir.graph import Graph
from gir.train.backend import IreeBackend, JaxBackend, data_input
from gir.train.config import TrainConfig
from gir.train.step import lower_train_step


@attrs.frozen
class BenchResult:
    net: str
    backend: str
    target: str
    batch: int
    image: int | None   # H and W of an image net
    seq: int | None     # T of a sequence net
    steps: int
    warmup: int
    median_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float | None
    tokens_per_s: float | None
    gflop_per_step: float
    gflops: float
    front_end_s: float
    compile_s: float
    ops: int
    chars: int

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def step_flops(graph) -> int:
    """2 x the multiply-accumulates of every convolution and dot in a static graph."""
    return 2 * sum(int(node_macs(n)) for n in graph.nodes)


def random_batch(graph: Graph, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of a train step's shapes: standard normal images or token ids below `classes`."""
    name = data_input(graph)
    shape = tuple(int(d) for d in graph.input(name).type.shape)
    inputs = (rng.standard_normal(shape).astype(np.float32) if name == "images"
              else rng.integers(0, classes, shape).astype(np.int32))
    labels = rng.integers(0, classes, tuple(int(d) for d in graph.input("labels").type.shape)).astype(np.int32)
    return inputs, labels


def bench_train_step(net: Net, config: TrainConfig, batch: int, image: int | None, backend: str = "iree",
                     target: str = "cpu", chip: str | None = None, steps: int = 10, warmup: int = 2,
                     flags: tuple[str, ...] = (), passes: str = "default", seq: int | None = None) -> BenchResult:
    """Median, min and max wall time of `steps` train steps after `warmup` ones (which also compile
    JAX's jit), with the net's input at `batch` x `image` (or `batch` x `seq` tokens)."""
    if backend == "iree":
        device_config(target)
    tokens = net.input_name == "tokens"
    image, seq = (None, seq or config.seq_len) if tokens else (image or config.image_size, None)
    t0 = time.perf_counter()
    changes = {"seq_len": seq} if tokens else {"image_size": image}
    mod = lower_train_step(net, config.replace(batch_size=batch, **changes), batch=batch, image=image, seq=seq,
                           passes=pipeline_for_backend(passes, backend, target))
    front = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner = (IreeBackend(mod, None, target, chip, flags) if backend == "iree" else JaxBackend(mod, None))
    compile_s = time.perf_counter() - t0
    g = mod.primitive
    runner.load(init_params(g, config.seed))
    inputs, labels = random_batch(g, net.num_classes, np.random.default_rng(config.seed))
    times = []
    for step in range(1, warmup + steps + 1):
        t = time.perf_counter()
        runner.step(inputs, labels, 1e-3, step)
        if step > warmup:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    flops = step_flops(g)
    per_s = labels.size / median
    return BenchResult(net.name, backend, target if backend == "iree" else "jax", batch, image, seq, steps, warmup,
                       1e3 * median, 1e3 * min(times), 1e3 * max(times), None if tokens else per_s,
                       per_s if tokens else None, flops / 1e9, flops / median / 1e9, front, compile_s, len(g.nodes),
                       len(mod.text))
