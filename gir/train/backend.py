"""Where the compiled train step runs: IREE (one device; parameters and optimizer state stay there
as DeviceArrays between steps) or JAX/XLA (one device or data-parallel over several: a Mesh over
the batch axis, parameters replicated). Both take and give the same names as the train-step graph.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from gir.ir.graph import Graph
from gir.lower.iree_compile import load_compiled
from gir.lower.iree_runtime import IreeSession
from gir.lower.pipeline import LoweredModule
from gir.lower.stablehlo import print_module

CARRIED_ROLES = ("param", "state")


class BackendError(Exception):
    """A backend that cannot run here: no such device, too few devices, a batch that does not split."""


@attrs.frozen
class StepResult:
    loss: float
    grad_norm: float | None


def carried_names(graph: Graph) -> list[str]:
    """Inputs whose next values the step returns under the same name: parameters and state."""
    return [v.name for v in graph.inputs if v.role in CARRIED_ROLES]


def iree_module_text(train: LoweredModule, evaluate: LoweredModule | None, target: str) -> str:
    """The IREE backend's module: the train step and, if given, the eval function. On the CPU the
    caller keeps the transient storage: IREE's CPU device would malloc and zero-fill it on every
    step (550 MB at b8@224; 1.13x, docs/performance.md)."""
    functions = {"train_step": train.primitive, **({"eval": evaluate.primitive} if evaluate is not None else {})}
    return print_module(functions, f"{train.primitive.name}_module", transient_storage=target == "cpu")


def float_type(train: Graph) -> np.dtype:
    """The NumPy type a train step's images and learning rate are fed in: float32, or float64 for an f64 net."""
    return train.input("images").type.dtype.numpy


class IreeBackend:
    """The train step and the eval function in one IREE module on one device."""

    def __init__(self, train: LoweredModule, evaluate: LoweredModule | None, target: str = "cpu",
                 chip: str | None = None, flags: tuple[str, ...] = (), vmfb: bytes | None = None):
        """`vmfb`: iree_module_text(train, evaluate, target) compiled beforehand, where this machine has no compiler
        (bench/gpu_check.py on a lent GPU)."""
        self.train = train.primitive
        self.eval = evaluate.primitive if evaluate is not None else None
        self.session = (IreeSession(vmfb, target) if vmfb is not None else
                        load_compiled(iree_module_text(train, evaluate, target), target, chip, list(flags),
                                      lambda vmfb: IreeSession(vmfb, target)))
        self.carried = carried_names(self.train)
        self.float = float_type(self.train)
        self.state: dict[str, Any] = {}

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        self.state = {k: self.session.to_device(values[k]) for k in self.carried}

    def step(self, images: np.ndarray, labels: np.ndarray, lr: float, step: int) -> StepResult:
        feed = {"images": images.astype(self.float, copy=False), "labels": labels, "lr": self.float.type(lr),
                "step": np.int32(step)}
        args = [self.state[v.name] if v.name in self.state else self.session.to_device(feed[v.name])
                for v in self.train.inputs]
        out = dict(zip(self.train.outputs, self.session.call("train_step", *args)))
        self.state = {k: out[k] for k in self.carried}
        norm = out.get("grad_norm")
        return StepResult(float(self.session.to_host(out["loss"])),
                          None if norm is None else float(self.session.to_host(norm)))

    def logits(self, images: np.ndarray) -> np.ndarray:
        if self.eval is None:
            raise BackendError("this backend was built without an eval function")
        args = [self.state[v.name] if v.name in self.state else self.session.to_device(images.astype(self.float))
                for v in self.eval.inputs]
        out = dict(zip(self.eval.outputs, self.session.call("eval", *args)))
        return self.session.to_host(out["logits"])

    def values(self) -> dict[str, np.ndarray]:
        return {k: self.session.to_host(v) for k, v in self.state.items()}


class JaxBackend:
    """The same graphs through JAX: jit on one device, or a Mesh of `devices` with the batch split
    across them (parameters and state replicated; XLA inserts the cross-device reductions)."""

    def __init__(self, train: LoweredModule, evaluate: LoweredModule | None, devices: int = 1):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        from gir.lower.jax_backend import as_jax_function

        self.jax = jax
        self.train = train.primitive
        self.eval = evaluate.primitive if evaluate is not None else None
        self.carried = carried_names(self.train)
        available = jax.devices()
        if devices > len(available):
            raise BackendError(f"--devices {devices}: JAX sees {len(available)} {available[0].platform} device(s); "
                               f"on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
        batch = int(self.train.input("images").type.shape[0])
        if batch % devices:
            raise BackendError(f"batch {batch} does not split over {devices} devices; use a multiple of {devices}")
        mesh = Mesh(np.array(available[:devices]), ("batch",))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec("batch"))

        def shardings(g: Graph) -> dict[str, Any]:
            return {v.name: self.split if v.name in ("images", "labels") else self.replicated for v in g.inputs}

        self.float = float_type(self.train)
        self._step = jax.jit(as_jax_function(self.train), in_shardings=(shardings(self.train),))
        self._eval = (jax.jit(as_jax_function(self.eval), in_shardings=(shardings(self.eval),))
                      if self.eval is not None else None)
        self.state: dict[str, Any] = {}

    def _x64(self) -> contextlib.AbstractContextManager:
        """JAX's float64 around a float64 net's calls only (without it JAX computes them in float32), so other
        graphs in the process keep JAX's float32 default."""
        return self.jax.enable_x64(True) if self.float == np.float64 else contextlib.nullcontext()

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        with self._x64():
            self.state = {k: self.jax.device_put(np.asarray(values[k]), self.replicated) for k in self.carried}

    def step(self, images: np.ndarray, labels: np.ndarray, lr: float, step: int) -> StepResult:
        with self._x64():
            feed = {**self.state, "images": self.jax.device_put(images.astype(self.float, copy=False), self.split),
                    "labels": self.jax.device_put(labels, self.split), "lr": self.float.type(lr),
                    "step": np.int32(step)}
            out = self._step(feed)
        self.state = {k: out[k] for k in self.carried}
        norm = out.get("grad_norm")
        return StepResult(float(out["loss"]), None if norm is None else float(norm))

    def logits(self, images: np.ndarray) -> np.ndarray:
        if self._eval is None:
            raise BackendError("this backend was built without an eval function")
        with self._x64():
            feed = {**{v.name: self.state[v.name] for v in self.eval.inputs if v.name in self.state},
                    "images": self.jax.device_put(images.astype(self.float, copy=False), self.split)}
            return np.asarray(self._eval(feed)["logits"])

    def values(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.state.items()}
