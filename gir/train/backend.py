"""Where the compiled train step runs: IREE (one device; parameters and optimizer state stay there
as DeviceArrays between steps) or JAX/XLA (one device or data-parallel over several: a Mesh over
the batch axis, parameters replicated). Both take and give the same names as the train-step graph.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from gir.ir.graph import Graph
from gir.lower.iree_compile import load_compiled
from gir.lower.iree_runtime import IreeSession
from gir.lower.pipeline import LoweredModule
from gir.lower.stablehlo import print_module
from gir.train.distributed import first_line

CARRIED_ROLES = ("param", "state")


class BackendError(Exception):
    """A backend that cannot run here: no such device, too few devices, a batch that does not split."""


class PeerLost(Exception):
    """A multi-process step or evaluation failed: another process died or cannot be reached."""


@attrs.frozen
class StepResult:
    loss: float
    grad_norm: float | None


def carried_names(graph: Graph) -> list[str]:
    """Inputs whose next values the step returns under the same name: parameters and state."""
    return [v.name for v in graph.inputs if v.role in CARRIED_ROLES]


def iree_module_text(train: LoweredModule | None, evaluate: LoweredModule | None, target: str) -> str:
    """The IREE backend's module: the train step and the eval function, each if given. On the CPU the
    caller keeps the transient storage: IREE's CPU device would malloc and zero-fill it on every
    step (550 MB at b8@224; 1.13x, docs/performance.md)."""
    functions = {name: m.primitive for name, m in (("train_step", train), ("eval", evaluate)) if m is not None}
    return print_module(functions, f"{next(iter(functions.values())).name}_module", transient_storage=target == "cpu")


def data_input(graph: Graph) -> str:
    """The name of the input a batch is fed to: `tokens` for a sequence net, else `images`."""
    return "tokens" if any(v.name == "tokens" for v in graph.inputs) else "images"


def float_type(graph: Graph) -> np.dtype:
    """The NumPy type of a graph's learning rate and float inputs: float32, or float64 for an f64 net."""
    return next(v.type.dtype.numpy for v in graph.inputs if v.role in CARRIED_ROLES and v.type.dtype.is_float)


def _fed(graph: Graph, x: np.ndarray, float_dtype: np.dtype) -> np.ndarray:
    """A batch as its input takes it: images in the net's float type, token ids as they are (int32)."""
    return x.astype(float_dtype, copy=False) if data_input(graph) == "images" else x


class IreeBackend:
    """The train step and the eval function in one IREE module on one device (either may be left out: sampling
    from a checkpoint needs only the eval function)."""

    def __init__(self, train: LoweredModule | None, evaluate: LoweredModule | None, target: str = "cpu",
                 chip: str | None = None, flags: tuple[str, ...] = (), vmfb: bytes | None = None):
        """`vmfb`: iree_module_text(train, evaluate, target) compiled beforehand, where this machine has no compiler
        (bench/gpu_check.py on a lent GPU)."""
        self.train = train.primitive if train is not None else None
        self.eval = evaluate.primitive if evaluate is not None else None
        self.session = (IreeSession(vmfb, target) if vmfb is not None else
                        load_compiled(iree_module_text(train, evaluate, target), target, chip, list(flags),
                                      lambda vmfb: IreeSession(vmfb, target)))
        main = self.train if self.train is not None else self.eval
        self.carried = carried_names(main)
        self.float = float_type(main)
        self.rows = slice(0, int(main.input(data_input(main)).type.shape[0]))  # one process feeds whole batches
        self.state: dict[str, Any] = {}

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        self.state = {k: self.session.to_device(values[k]) for k in self.carried}

    def step(self, inputs: np.ndarray, labels: np.ndarray, lr: float, step: int) -> StepResult:
        feed = {data_input(self.train): _fed(self.train, inputs, self.float), "labels": labels,
                "lr": self.float.type(lr), "step": np.int32(step)}
        args = [self.state[v.name] if v.name in self.state else self.session.to_device(feed[v.name])
                for v in self.train.inputs]
        out = dict(zip(self.train.outputs, self.session.call("train_step", *args)))
        self.state = {k: out[k] for k in self.carried}
        norm = out.get("grad_norm")
        return StepResult(float(self.session.to_host(out["loss"])),
                          None if norm is None else float(self.session.to_host(norm)))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        if self.eval is None:
            raise BackendError("this backend was built without an eval function")
        x = self.session.to_device(_fed(self.eval, inputs, self.float))
        args = [self.state[v.name] if v.name in self.state else x for v in self.eval.inputs]
        out = dict(zip(self.eval.outputs, self.session.call("eval", *args)))
        return self.session.to_host(out["logits"])

    def values(self) -> dict[str, np.ndarray]:
        return {k: self.session.to_host(v) for k, v in self.state.items()}


class JaxBackend:
    """The same graphs through JAX: jit on one device, or a Mesh of `devices` per process (of every process in a
    multi-process run) with the batch split across them (parameters and state replicated; XLA inserts the
    cross-device reductions). Each process feeds only `rows` of each global batch."""

    def __init__(self, train: LoweredModule, evaluate: LoweredModule | None, devices: int = 1):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        from gir.lower.jax_backend import as_jax_function

        self.jax = jax
        self.train = train.primitive
        self.eval = evaluate.primitive if evaluate is not None else None
        self.carried = carried_names(self.train)
        self.processes = jax.process_count()
        available = jax.local_devices()
        if devices > len(available):
            raise BackendError(f"--devices {devices}: JAX sees {len(available)} {available[0].platform} device(s); "
                               f"on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
        self.data = data_input(self.train)
        self.batch = int(self.train.input(self.data).type.shape[0])
        total = devices * self.processes
        if self.batch % total:
            where = f"{devices} devices" + (f" x {self.processes} processes" if self.processes > 1 else "")
            raise BackendError(f"batch {self.batch} does not split over {where}; use a multiple of {total}")
        mesh = Mesh(np.array(mesh_devices(jax.devices(), devices)), ("batch",))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec("batch"))
        self.rows = local_rows(self.split, self.batch)

        def shardings(g: Graph) -> dict[str, Any]:
            return {v.name: self.split if v.name in (self.data, "labels") else self.replicated for v in g.inputs}

        self.float = float_type(self.train)
        self._step = jax.jit(as_jax_function(self.train), in_shardings=(shardings(self.train),),
                             out_shardings=self.replicated)
        self._eval = (jax.jit(as_jax_function(self.eval), in_shardings=(shardings(self.eval),),
                              out_shardings=self.replicated) if self.eval is not None else None)
        self.state: dict[str, Any] = {}

    def _x64(self) -> contextlib.AbstractContextManager:
        """JAX's float64 around a float64 net's calls only (without it JAX computes them in float32), so other
        graphs in the process keep JAX's float32 default."""
        return self.jax.enable_x64(True) if self.float == np.float64 else contextlib.nullcontext()

    @contextlib.contextmanager
    def _collective(self, what: str):
        """A failed call in a multi-process run is a lost peer (its collectives fail), reported as one line."""
        try:
            yield
        except self.jax.errors.JaxRuntimeError as e:
            if self.processes == 1:
                raise
            raise PeerLost(f"process {self.jax.process_index()} of {self.processes}: {what} failed, a peer process "
                           f"died or cannot be reached ({first_line(e)})") from None

    def _batch(self, local: np.ndarray) -> Any:
        """The global batch array made of every process's `rows`."""
        return self.jax.make_array_from_process_local_data(self.split, local, (self.batch, *local.shape[1:]))

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        with self._x64():
            self.state = {k: self.jax.device_put(np.asarray(values[k]), self.replicated) for k in self.carried}

    def step(self, inputs: np.ndarray, labels: np.ndarray, lr: float, step: int) -> StepResult:
        """One step on this process's rows `inputs` and `labels` of the global batch."""
        with self._x64(), self._collective(f"step {step}"):
            feed = {**self.state, self.data: self._batch(_fed(self.train, inputs, self.float)),
                    "labels": self._batch(labels), "lr": self.float.type(lr), "step": np.int32(step)}
            out = self._step(feed)
            loss, norm = float(out["loss"]), out.get("grad_norm")
            result = StepResult(loss, None if norm is None else float(norm))
        self.state = {k: out[k] for k in self.carried}
        return result

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The whole batch's logits (every process gets all of them) from this process's rows `inputs`."""
        if self._eval is None:
            raise BackendError("this backend was built without an eval function")
        with self._x64(), self._collective("evaluation"):
            feed = {**{v.name: self.state[v.name] for v in self.eval.inputs if v.name in self.state},
                    self.data: self._batch(_fed(self.eval, inputs, self.float))}
            return np.asarray(self._eval(feed)["logits"])

    def values(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.state.items()}


def mesh_devices(devices: Sequence[Any], per_process: int) -> list[Any]:
    """The first `per_process` devices of each process, process by process: process p feeds one contiguous block
    of each batch."""
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    return [d for p in sorted({d.process_index for d in ordered})
            for d in [d for d in ordered if d.process_index == p][:per_process]]


def local_rows(split: Any, batch: int) -> slice:
    """The rows of a `batch`-row global array that `split` places on this process's devices (one block)."""
    blocks = sorted(index[0].indices(batch)[:2] for index in split.addressable_devices_indices_map((batch,)).values())
    start, stop = blocks[0][0], blocks[-1][1]
    if sum(b - a for a, b in blocks) != stop - start:
        raise BackendError(f"this process's devices hold rows {blocks} of the batch, not one block")
    return slice(start, stop)
